//! Conditional writes that refuse to overwrite another writer's data.
//!
//! Two processes pointed at the same prefix by mistake would each overwrite the other's channel
//! state; for a Lightning node that can lose money. With fencing on, the store remembers the
//! version (ETag) of every object it has read or written, and writes only if the object is still
//! at that version (`If-Match`), or still absent when it has never seen it (`If-None-Match: *`).
//! Monitor update objects are only ever created, never replaced. A write that finds the object
//! changed fails with [`FailureKind::Fenced`], before anything is
//! overwritten; to LDK that is a failed write, which stops the node.
//!
//! The one exception is our own write landing twice: a request that timed out on our side can
//! still land, so when a condition fails the store reads the object, and if it already holds
//! exactly the bytes being written, the write has succeeded. That also makes a late, stale
//! request harmless: it carries the condition of its time and fails once anything newer landed.
//!
//! Backends: S3 (AWS, MinIO, LocalStack, SeaweedFS), GCS, Azure and in-memory stores support both
//! conditions. A local directory supports only create-only writes, so replacing an object there
//! fails as unsupported. Servers that ignore the conditional headers (s3rver, Garage) cannot
//! fence at all: `ldk-object-store doctor` tells.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{
	ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
};

use crate::error::FailureKind;

/// Why a conditional write was refused.
#[derive(Debug, thiserror::Error)]
#[error(
	"another writer changed {path} since this store last read or wrote it; refusing to \
	 overwrite it (is a second node running on the same prefix?)"
)]
pub struct FencedError {
	/// The object.
	pub path: String,
}

/// The versions this store has seen, per object.
#[derive(Debug, Default)]
pub(crate) struct Fencing {
	versions: Mutex<HashMap<Path, UpdateVersion>>,
}

impl Fencing {
	fn lock(&self) -> MutexGuard<'_, HashMap<Path, UpdateVersion>> {
		self.versions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
	}

	/// Remembers the version of an object just read.
	pub(crate) fn observe(&self, meta: &ObjectMeta) {
		let version = UpdateVersion { e_tag: meta.e_tag.clone(), version: meta.version.clone() };
		self.lock().insert(meta.location.clone(), version);
	}

	/// Forgets an object that was removed: the next write must find it absent.
	pub(crate) fn forget(&self, path: &Path) {
		self.lock().remove(path);
	}

	/// Writes `bytes` at `path` on the condition that nobody else changed it. `create_only` for
	/// objects that are never replaced (monitor updates).
	pub(crate) async fn put(
		&self, backend: &dyn ObjectStore, path: &Path, bytes: &Bytes, create_only: bool,
	) -> Result<(), object_store::Error> {
		let known = self.lock().get(path).cloned();
		let mode = match known {
			Some(version) if !create_only => PutMode::Update(version),
			_ => PutMode::Create,
		};
		let options = PutOptions { mode, ..Default::default() };
		match backend.put_opts(path, PutPayload::from(bytes.clone()), options).await {
			Ok(result) => {
				if result.e_tag.is_none() && result.version.is_none() {
					return Err(unsupported(path, "the backend returns no ETag or version"));
				}
				let version = UpdateVersion { e_tag: result.e_tag, version: result.version };
				self.lock().insert(path.clone(), version);
				Ok(())
			},
			Err(err)
				if matches!(
					FailureKind::of(&err),
					FailureKind::AlreadyExists | FailureKind::Precondition
				) =>
			{
				// Our own earlier attempt may have landed; anything else is someone else's.
				let current = backend.get(path).await?;
				let meta = current.meta.clone();
				if current.bytes().await? == *bytes {
					self.observe(&meta);
					Ok(())
				} else {
					Err(object_store::Error::Precondition {
						path: path.to_string(),
						source: Box::new(FencedError { path: path.to_string() }),
					})
				}
			},
			Err(err) => Err(err),
		}
	}
}

fn unsupported(path: &Path, why: &str) -> object_store::Error {
	object_store::Error::NotSupported {
		source: format!("fencing {path} is impossible: {why}").into(),
	}
}
