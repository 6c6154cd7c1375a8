//! Verification: both copies compared key by key, by listing and content digest.

use std::fmt;
use std::time::Duration;

use futures::StreamExt;
use hex_conservative::DisplayHex;
use sha2::Digest;

use crate::error::Error;
use crate::keys::KvKey;
use crate::{FailureKind, ObjectKvStore};

/// Keys read at once on each copy.
const CONCURRENCY: usize = 32;
/// How long a difference is given to settle before it is reported: a running node's write may
/// have reached one copy and not yet the other when the first look was taken.
const SETTLE: Duration = Duration::from_secs(2);

/// One object as a copy holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDigest {
	/// Its length in bytes (as the store reads it: decrypted, with encryption).
	pub size: u64,
	/// The SHA-256 of its contents, in lowercase hex.
	pub sha256: String,
}

/// A key the two copies do not hold alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
	/// The key, as `primary_namespace/secondary_namespace/key`.
	pub key: String,
	/// The primary's object; `None` if absent there.
	pub primary: Option<ObjectDigest>,
	/// The replica's object; `None` if absent there.
	pub replica: Option<ObjectDigest>,
}

impl fmt::Display for Difference {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		match (&self.primary, &self.replica) {
			(Some(p), None) => write!(f, "{}: only on the primary ({} bytes)", self.key, p.size),
			(None, Some(r)) => write!(f, "{}: only on the replica ({} bytes)", self.key, r.size),
			(Some(p), Some(r)) => write!(
				f,
				"{}: contents differ (primary {} bytes sha256 {}, replica {} bytes sha256 {})",
				self.key, p.size, p.sha256, r.size, r.sha256
			),
			(None, None) => write!(f, "{}: absent on both", self.key),
		}
	}
}

/// Compares every key of two stores (the primary and its replica, each opened on its own) and
/// returns the keys they do not hold alike, sorted. `on_progress(done, total)` follows the
/// comparison. A difference is looked at twice, two seconds apart, so that a write of a running
/// node caught between its two copies is not reported.
pub async fn compare(
	primary: &ObjectKvStore, replica: &ObjectKvStore, mut on_progress: impl FnMut(u64, u64),
) -> Result<Vec<Difference>, Error> {
	let (listed_primary, listed_replica) =
		futures::join!(primary.start_list_all(), replica.start_list_all());
	let mut keys = listed_primary?;
	keys.extend(listed_replica?);
	keys.sort_unstable();
	keys.dedup();
	let total = keys.len() as u64;
	let mut differing = Vec::new();
	let mut done = 0;
	let mut looks = futures::stream::iter(keys)
		.map(|key| async move { look(primary, replica, &key).await.map(|d| d.map(|_| key)) })
		.buffer_unordered(CONCURRENCY);
	while let Some(key) = looks.next().await {
		differing.extend(key?);
		done += 1;
		on_progress(done, total);
	}
	drop(looks);
	let mut settled = Vec::new();
	if differing.is_empty() {
		return Ok(settled);
	}
	tokio::time::sleep(SETTLE).await;
	for key in differing {
		settled.extend(look(primary, replica, &key).await?);
	}
	settled.sort_unstable_by(|a, b| a.key.cmp(&b.key));
	Ok(settled)
}

async fn look(
	primary: &ObjectKvStore, replica: &ObjectKvStore, key: &KvKey,
) -> Result<Option<Difference>, Error> {
	let (p, r) = futures::join!(digest(primary, key), digest(replica, key));
	let (p, r) = (p?, r?);
	Ok((p != r).then(|| Difference { key: key.to_string(), primary: p, replica: r }))
}

async fn digest(store: &ObjectKvStore, key: &KvKey) -> Result<Option<ObjectDigest>, Error> {
	let read = store.start_read(&key.primary_namespace, &key.secondary_namespace, &key.key).await;
	match read {
		Ok(data) => Ok(Some(ObjectDigest {
			size: data.len() as u64,
			sha256: sha2::Sha256::digest(&data)[..].to_lower_hex_string(),
		})),
		Err(err) if err.failure_kind() == Some(FailureKind::NotFound) => Ok(None),
		Err(err) => Err(err),
	}
}
