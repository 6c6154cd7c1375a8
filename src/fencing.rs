//! Conditional writes that refuse to overwrite another writer's data.
//!
//! Two processes pointed at the same prefix would each overwrite the other's channel state; for a
//! Lightning node that can lose money. The writer lease keeps a second instance from starting,
//! and ends every request of an instance that lost it; fencing is the part the server enforces:
//! with it, the store remembers the version (ETag) of every object it has read or written, and
//! writes only if the object is still at that version (`If-Match`), or still absent when it knows
//! it absent or has never seen it (`If-None-Match: *`). An object it has neither read, written
//! nor removed since it started but that exists (one an earlier run of this node left, say: the
//! archived copy of a monitor written just before a crash) is then looked up with a HEAD request,
//! and the write is conditioned on what is there now: an earlier copy of our own is not another
//! writer's. (So a second writer without the lease is refused on every object the first has
//! seen since it started; the lease keeps it from starting at all.) Monitor update
//! objects are only ever created, never replaced. A write that finds the object changed fails
//! with [`FailureKind::Fenced`], before anything is overwritten; to LDK that is a failed write,
//! which stops the node. So a request of an earlier instance that is still in the network when
//! its successor writes the same object is refused by the server, whatever its delay.
//!
//! On by default wherever the writer lease is an object lease (taking it proved that the backend
//! honours conditional writes); see [`StoreBuilder::with_fencing`](crate::StoreBuilder::with_fencing).
//!
//! The one exception is our own writes landing unannounced: a request that timed out on our side,
//! or whose answer was lost, can still land. So when a condition fails the store reads the
//! object: if it already holds exactly the bytes being written, the write has succeeded; if it
//! holds the bytes of an earlier write of ours that reported an error (the store keeps a SHA-256
//! digest of each such write until the object's version is known again), that write landed after
//! all, and the store adopts its version and tries the condition once more; if it is gone after
//! a remove of ours that reported an error, the write becomes a create. Only anything else is
//! another writer's. A late, stale request stays harmless: it carries the condition of its time
//! and fails once anything newer landed.
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

/// What this store knows of one object.
#[derive(Debug, Default)]
struct Known {
	/// The version it last read or wrote, if any.
	version: Option<UpdateVersion>,
	/// Digests of contents it wrote whose outcome it does not know: a request that reported an
	/// error (a lost answer, a timeout, an outage that outlasted the retries) may still have
	/// landed. Cleared once a write or read tells the current version.
	unconfirmed: Vec<[u8; 32]>,
	/// A remove reported an error: the object may be gone.
	remove_unconfirmed: bool,
}

/// Whether the store has seen an object (read, written or removed it) since it started. What it
/// has not seen may be an earlier run's copy of its own.
fn unseen(versions: &HashMap<Path, Known>, path: &Path) -> bool {
	!versions.contains_key(path)
}

/// How many unconfirmed writes of one object are remembered.
const MAX_UNCONFIRMED: usize = 8;

fn digest(bytes: &[u8]) -> [u8; 32] {
	use sha2::Digest;
	sha2::Sha256::digest(bytes).into()
}

/// The versions this store has seen, per object.
#[derive(Debug, Default)]
pub(crate) struct Fencing {
	versions: Mutex<HashMap<Path, Known>>,
}

impl Fencing {
	fn lock(&self) -> MutexGuard<'_, HashMap<Path, Known>> {
		self.versions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
	}

	/// Whether it remembers anything of `path`.
	#[cfg(test)]
	pub(crate) fn knows(&self, path: &Path) -> bool {
		self.lock().contains_key(path)
	}

	/// Remembers the version of an object just read.
	pub(crate) fn observe(&self, meta: &ObjectMeta) {
		let version = UpdateVersion { e_tag: meta.e_tag.clone(), version: meta.version.clone() };
		self.lock()
			.insert(meta.location.clone(), Known { version: Some(version), ..Default::default() });
	}

	/// Records the outcome of a remove: after a success the next write must find the object
	/// absent (remembered only where `remember`: not for monitor updates, which are only ever
	/// created, and of which there are too many to remember); after a failure it may be either
	/// way.
	pub(crate) fn removed(&self, path: &Path, confirmed: bool, remember: bool) {
		let mut versions = self.lock();
		match (confirmed, remember) {
			(true, true) => {
				versions.insert(path.clone(), Known::default());
			},
			(true, false) => {
				versions.remove(path);
			},
			(false, _) => versions.entry(path.clone()).or_default().remove_unconfirmed = true,
		}
	}

	/// Writes `bytes` at `path` on the condition that nobody else changed it. `create_only` for
	/// objects that are never replaced (monitor updates).
	pub(crate) async fn put(
		&self, backend: &dyn ObjectStore, path: &Path, bytes: &Bytes, create_only: bool,
	) -> Result<(), object_store::Error> {
		let (unseen, known) = {
			let versions = self.lock();
			(unseen(&versions, path), versions.get(path).and_then(|known| known.version.clone()))
		};
		let mode = match known {
			Some(version) if !create_only => PutMode::Update(version),
			_ => PutMode::Create,
		};
		// What it would remember of an object only ever created is never used.
		match self.put_once(backend, path, bytes, mode, !create_only).await {
			Err(err)
				if unseen
					&& !create_only && FailureKind::of(&err) == FailureKind::AlreadyExists =>
			{
				// Not seen since this store started: an earlier run's copy (of a monitor
				// archived just before a crash, say). Condition the write on what is there now.
				match self.adopt(backend, path, bytes).await {
					Err(err) if is_condition(&err) => {},
					other => return other,
				}
			},
			Err(err) if is_condition(&err) => {},
			other => return other,
		}
		// Our own earlier attempt may have landed; anything else is someone else's.
		let (meta, current) = match backend.get(path).await {
			Ok(current) => {
				let meta = current.meta.clone();
				(meta, current.bytes().await?)
			},
			Err(err) if FailureKind::of(&err) == FailureKind::NotFound => {
				// Gone: fine if a remove of ours may have landed, and we still expected it.
				let ours = self.lock().get(path).is_some_and(|known| known.remove_unconfirmed);
				if ours && !create_only {
					return self.put_once(backend, path, bytes, PutMode::Create, true).await;
				}
				return Err(fenced(path));
			},
			Err(err) => return Err(err),
		};
		if current == *bytes {
			self.observe(&meta);
			return Ok(());
		}
		let landed = self
			.lock()
			.get(path)
			.is_some_and(|known| known.unconfirmed.contains(&digest(&current)));
		if landed && !create_only {
			// A write of ours that reported an error landed after all: adopt its version and
			// try the condition once more.
			let version =
				UpdateVersion { e_tag: meta.e_tag.clone(), version: meta.version.clone() };
			return self.put_once(backend, path, bytes, PutMode::Update(version), true).await;
		}
		Err(fenced(path))
	}

	/// Writes over an object this store had not seen, on the condition that it is still at the
	/// version a HEAD request finds now (or still absent).
	async fn adopt(
		&self, backend: &dyn ObjectStore, path: &Path, bytes: &Bytes,
	) -> Result<(), object_store::Error> {
		let mode = match backend.head(path).await {
			Ok(meta) => {
				self.observe(&meta);
				PutMode::Update(UpdateVersion { e_tag: meta.e_tag, version: meta.version })
			},
			Err(err) if FailureKind::of(&err) == FailureKind::NotFound => PutMode::Create,
			Err(err) => return Err(err),
		};
		self.put_once(backend, path, bytes, mode, true).await
	}

	/// One conditional PUT; with `remember`, what it tells of the object's version is kept.
	async fn put_once(
		&self, backend: &dyn ObjectStore, path: &Path, bytes: &Bytes, mode: PutMode, remember: bool,
	) -> Result<(), object_store::Error> {
		let options = PutOptions { mode, ..Default::default() };
		match backend.put_opts(path, PutPayload::from(bytes.clone()), options).await {
			Ok(result) => {
				if result.e_tag.is_none() && result.version.is_none() {
					return Err(unsupported(path, "the backend returns no ETag or version"));
				}
				if remember {
					let version = UpdateVersion { e_tag: result.e_tag, version: result.version };
					self.lock().insert(
						path.clone(),
						Known { version: Some(version), ..Default::default() },
					);
				}
				Ok(())
			},
			Err(err) => {
				if remember && !is_condition(&err) {
					// It may still land.
					let mut versions = self.lock();
					let known = versions.entry(path.clone()).or_default();
					if known.unconfirmed.len() >= MAX_UNCONFIRMED {
						known.unconfirmed.remove(0);
					}
					known.unconfirmed.push(digest(bytes));
				}
				Err(err)
			},
		}
	}
}

fn is_condition(err: &object_store::Error) -> bool {
	// An `If-Match` on an object that is gone fails as "not found" on some servers.
	matches!(
		FailureKind::of(err),
		FailureKind::AlreadyExists | FailureKind::Precondition | FailureKind::NotFound
	)
}

fn fenced(path: &Path) -> object_store::Error {
	object_store::Error::Precondition {
		path: path.to_string(),
		source: Box::new(FencedError { path: path.to_string() }),
	}
}

fn unsupported(path: &Path, why: &str) -> object_store::Error {
	object_store::Error::NotSupported {
		source: format!("fencing {path} is impossible: {why}").into(),
	}
}
