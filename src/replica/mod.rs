//! A second copy of the node's state in another region, cloud or directory, with RPO 0.
//!
//! A replica is a second store location of any backend ([`StoreBuilder::with_replica`], or
//! `LDK_OBJECT_STORE_REPLICA_URL`). Encryption, the key layout and the persister are the same
//! above it: every key is stored at the same place below each copy's root.
//!
//! # What a replica guarantees
//! - **Acknowledged means on both.** A write or remove completes only when the primary and the
//!   replica both acknowledged it. It is sent to both at once (its latency is that of the slower
//!   copy, not the sum), and a failure of either fails it as a failure of the primary alone would
//!   (LDK's retry or stop rules in sync mode; the background retry and `health()` in async mode).
//! - **Per-key order on both copies.** A key's next operation starts only when the previous one
//!   has ended on both.
//! - **Reads come from the primary.** The replica is only read to fill, repair or verify it.
//! - **One writer for the pair.** The writer lease is held on both copies, each renewed, and an
//!   instance that loses either loses both (see RELIABILITY.md).
//! - **Never promoted stale.** A replica's record says whether it is in sync; [`promote`] refuses
//!   one that is not (unless forced), and the promoted copy's record and the retired primary's
//!   carry a new generation, so that no node starts on the old primary again.
//!
//! # Filling and repairing
//! When a node starts with a replica that is new, was being filled, or is not recorded in sync
//! with the primary's generation, writes go to both copies at once and a background fill makes
//! the replica equal to the primary: every key of either copy is compared inside its turn (a
//! write or remove of that key called meanwhile waits, so an older copy never lands after a newer
//! one) and copied or removed where they differ. The fill repeats until a whole pass finds no
//! difference (the verifying pass), and only then records the replica in sync, on the replica
//! first, then on the primary. A fill interrupted by a crash starts again at the next start and
//! copies only what still differs. [`ObjectKvStore::replica_health`] shows its progress. A start
//! after an instance that ended without closing (its lease left unreleased; on `file://`, whose
//! OS lock ends alike at a crash and at a clean stop, its running mark left in the directory)
//! compares the replica in full as well: a write cut off by the crash may have reached one copy
//! only, and the node may read it from the primary and build on it.
//!
//! # Key layout
//! Besides the writer lease (`<root>/.ldk-object-store-lease`), each copy holds one record at
//! `<root>/.ldk-object-store-replica` (see [`ReplicaRecord`]), for example:
//!
//! ```text
//! ldk-object-store replica record v1
//! role=primary
//! generation=1
//! sync=in-sync
//! updated_unix_ms=1796618295289
//! ```
//!
//! A copy's role is `primary`, `replica` or `retired` (a primary whose replica was promoted);
//! `sync` is, on a primary, its replica's state, and on a replica, its own. A `file://` primary
//! also holds `<root>/.ldk-object-store-running`, an empty file, while a store with a replica
//! runs on it (see above).
//!
//! [`StoreBuilder::with_replica`]: crate::StoreBuilder::with_replica

mod compare;
mod fill;
mod promote;
mod record;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::error::ConfigError;
use crate::{Error, ObjectKvStore};

pub use compare::{compare, Difference, ObjectDigest};
pub use promote::{detach, journal, promote, read_record, Promoted};
pub(crate) use record::journal_key;
pub use record::{
	journal_path, record_path, ReplicaRecord, Role, SyncState, JOURNAL_FOLDER, REPLICA_RECORD,
};

/// What a store does when its replica cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplicaMode {
	/// The default: a write or remove the replica did not acknowledge fails, as a failure of the
	/// primary would. The replica can be promoted at any moment without asking the primary.
	#[default]
	Strict,
	/// A risk, taken knowingly: when the replica fails, the node goes on with the primary alone.
	/// Before such a write is acknowledged, the primary's record marks the replica stale and a
	/// journal entry on the primary names the key; a background task brings the replica back in
	/// sync when it answers again (the journal's keys, then a full verifying pass). Meanwhile
	/// the replica misses acknowledged updates and cannot know it, so it is promoted only on the
	/// primary's word, under the primary's writer lease (or with `--force`, accepting the loss).
	/// The writer lease is held on the primary only.
	LagWhenUnreachable,
}

/// The state of a pair in [`ReplicaMode::LagWhenUnreachable`], shared by the store's clones.
#[derive(Debug, Default)]
pub(crate) struct Lag {
	/// Writes skip the replica and go to the journal.
	pub(crate) stale: AtomicBool,
	/// Whether the primary's record says the replica is stale; held while that record is
	/// written, so that going stale and being recorded in sync never cross.
	pub(crate) recorded: tokio::sync::Mutex<bool>,
	/// Incremented every time the replica goes stale: a fill pass that saw it change proves
	/// nothing.
	pub(crate) episodes: AtomicU64,
	/// The pair's generation (for the primary's record).
	pub(crate) generation: AtomicU64,
	/// Keys journaled since the replica went stale (the lag).
	pub(crate) journaled: AtomicU64,
	/// Wakes the catch-up task when the replica goes stale.
	pub(crate) wake: tokio::sync::Notify,
	/// The store's tracker, which shows the lag.
	pub(crate) tracker: Arc<Tracker>,
}

impl Lag {
	pub(crate) fn is_stale(&self) -> bool {
		self.stale.load(Ordering::SeqCst)
	}

	pub(crate) fn go_stale(&self) {
		if !self.stale.swap(true, Ordering::SeqCst) {
			self.episodes.fetch_add(1, Ordering::SeqCst);
			self.wake.notify_one();
		}
	}
}

/// The replica as a running store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaHealth {
	/// The pair's generation.
	pub generation: u64,
	/// Whether the replica holds everything acknowledged (`InSync`), or is being filled.
	pub sync: SyncState,
	/// The fill's current pass (1 the copying pass, 2 and later the verifying ones); 0 before it.
	pub pass: u32,
	/// Keys compared in this pass, of `keys_total`.
	pub keys_checked: u64,
	/// Keys listed on either copy at the start of this pass.
	pub keys_total: u64,
	/// Objects the fill wrote to the replica, over all passes.
	pub copied: u64,
	/// Objects the fill removed from the replica, over all passes.
	pub removed: u64,
	/// The last failure of the fill, which retries it; `None` since it last succeeded.
	pub last_error: Option<String>,
	/// In [`ReplicaMode::LagWhenUnreachable`]: keys written or removed on the primary alone
	/// since the replica went stale (its journal), not yet repaired.
	pub lag_keys: u64,
}

impl Default for ReplicaHealth {
	fn default() -> Self {
		ReplicaHealth {
			generation: 0,
			sync: SyncState::Filling,
			pass: 0,
			keys_checked: 0,
			keys_total: 0,
			copied: 0,
			removed: 0,
			last_error: None,
			lag_keys: 0,
		}
	}
}

/// A running store's knowledge of its replica, shared by its clones.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
	health: watch::Sender<ReplicaHealth>,
}

impl Tracker {
	pub(crate) fn update(&self, change: impl FnOnce(&mut ReplicaHealth)) {
		self.health.send_modify(change);
	}
}

impl ObjectKvStore {
	/// The replica's state, when the store has one: in sync, or being filled (with progress).
	pub fn replica_health(&self) -> Option<ReplicaHealth> {
		self.replica_tracker().map(|tracker| tracker.health.borrow().clone())
	}

	/// Waits until the replica is recorded in sync with the primary (at once if it is), and
	/// returns its state; `on_progress` sees every change meanwhile. Fails if the store has no
	/// replica, or stops writing (closed, or its lease lost) first.
	pub async fn replica_in_sync(
		&self, mut on_progress: impl FnMut(&ReplicaHealth),
	) -> Result<ReplicaHealth, lightning::io::Error> {
		let no = |why: &str| crate::error::io_error(lightning::io::ErrorKind::Other, why);
		let tracker = self.replica_tracker().ok_or_else(|| no("this store has no replica"))?;
		let mut health = tracker.health.subscribe();
		let lease = self.writer_lease();
		loop {
			let now = health.borrow_and_update().clone();
			on_progress(&now);
			if now.sync == SyncState::InSync {
				return Ok(now);
			}
			let ended = async {
				match &lease {
					Some(lease) => lease.lost().await,
					None => std::future::pending().await,
				}
			};
			tokio::select! {
				changed = health.changed() => {
					if changed.is_err() {
						return Err(no("the store stopped"));
					}
				},
				() = ended => return Err(no("the store stopped writing before the replica was in sync")),
			}
		}
	}
}

/// Starts a store with a replica: checks both copies' records (refusing a start that could put
/// two writers on one copy or overwrite another node's state), and either finds the replica in
/// sync or records it as filling and starts the fill. `repair` fills even a replica recorded in
/// sync (a full comparison).
pub(crate) async fn start(store: &ObjectKvStore, repair: bool) -> Result<(), ConfigError> {
	let tracker = store
		.replica_tracker()
		.ok_or_else(|| ConfigError::Replica("the store was built without its replica".into()))?;
	let lag = store.replica_lag().cloned();
	let may_lag = lag.is_some();
	store.mark_running().await?;
	let primary = read_own(store, false).await?;
	let generation = match &primary {
		None => 1,
		Some(record) => refuse_as_primary(record)?,
	};
	if let Some(lag) = &lag {
		lag.generation.store(generation, Ordering::SeqCst);
	}
	let replica = match (read_own(store, true).await, &lag) {
		(Ok(replica), _) => replica,
		// A pair that may lag starts without its replica: stale until it answers again.
		(Err(err), Some(lag)) => {
			tracing::error!(error = %err, "the replica cannot be read: starting with the primary alone, the replica marked stale (LagWhenUnreachable)");
			let stale = ReplicaRecord::new(Role::Primary, generation, SyncState::Stale);
			write_own(store, false, stale.lagging(true).encode()).await?;
			*lag.recorded.lock().await = true;
			lag.go_stale();
			tracker.update(|health| {
				health.generation = generation;
				health.sync = SyncState::Stale;
			});
			drop(store.spawn(fill::run(store.clone(), Arc::clone(tracker), generation)));
			return Ok(());
		},
		(Err(err), None) => return Err(err),
	};
	match &replica {
		Some(record) if record.role == Role::Primary => {
			return Err(ConfigError::Replica(format!(
				"the replica's location holds a primary ({record}): it was promoted, or it is \
				 another node's store. Start the node on it, or give a new location as the replica"
			)))
		},
		Some(record) if record.generation > generation => {
			return Err(ConfigError::Replica(format!(
				"the replica's record ({record}) is of a later generation than the primary's \
				 ({generation}): the replica was promoted after this copy was last used. Start \
				 on the promoted copy"
			)))
		},
		Some(_) => {},
		None => {
			let held = store.start_list_copy(true).await.map_err(ConfigError::from_store)?;
			if let Some(key) = held.first() {
				return Err(ConfigError::Replica(format!(
					"the replica's location holds {} key(s) ({key}, …) but no replica record: it \
					 may be another node's store, which a fill would overwrite. Give an empty \
					 location as the replica",
					held.len()
				)));
			}
		},
	}
	// After a crash a write cut off midway may be on one copy only (never acknowledged, but the
	// node may read it from the primary and build on it): compare everything again.
	let in_sync = !repair
		&& !store.predecessor_crashed()
		&& primary
			.as_ref()
			.is_some_and(|record| record.sync == SyncState::InSync && record.may_lag == may_lag)
		&& replica.as_ref().is_some_and(|record| {
			record.role == Role::Replica
				&& record.sync == SyncState::InSync
				&& record.generation == generation
		});
	if in_sync {
		tracker.update(|health| {
			health.generation = generation;
			health.sync = SyncState::InSync;
		});
		if let Some(lag) = &lag {
			// Waits for the replica to fail, to catch it up then.
			drop(store.spawn(fill::watch(store.clone(), Arc::clone(tracker), Arc::clone(lag))));
		}
		return Ok(());
	}
	// Filling from now on, on both records, before anything else is written: a crash from here
	// on restarts the fill.
	let filling =
		|role| ReplicaRecord::new(role, generation, SyncState::Filling).lagging(may_lag).encode();
	write_own(store, true, filling(Role::Replica)).await?;
	write_own(store, false, filling(Role::Primary)).await?;
	if let Some(lag) = &lag {
		*lag.recorded.lock().await = true;
		let journaled = store.start_list_journal().await.map_err(ConfigError::from_store)?;
		tracker.update(|health| health.lag_keys = journaled.len() as u64);
	}
	tracker.update(|health| {
		health.generation = generation;
		health.sync = SyncState::Filling;
	});
	drop(store.spawn(fill::run(store.clone(), Arc::clone(tracker), generation)));
	Ok(())
}

/// Starts a store without a replica: refuses a copy retired by a promotion, a replica (start on
/// it only after promoting it), and a primary whose replica is attached (starting without it
/// would leave the replica recorded in sync while it misses updates).
pub(crate) async fn start_alone(store: &ObjectKvStore) -> Result<(), ConfigError> {
	let Some(record) = read_own(store, false).await? else { return Ok(()) };
	refuse_as_primary(&record)?;
	if matches!(record.sync, SyncState::InSync | SyncState::Filling) {
		return Err(ConfigError::Replica(format!(
			"this store has a replica ({record}); start it with its replica \
			 (LDK_OBJECT_STORE_REPLICA_URL or `StoreBuilder::with_replica`), or detach the \
			 replica first (`ldk-object-store replica detach`), which marks it stale"
		)));
	}
	Ok(())
}

/// The primary's generation, unless its record refuses a node's start on it.
fn refuse_as_primary(record: &ReplicaRecord) -> Result<u64, ConfigError> {
	match record.role {
		Role::Primary => Ok(record.generation),
		Role::Retired => Err(ConfigError::Replica(format!(
			"this copy was retired when its replica was promoted (generation {}): it misses \
			 every update since. Start on the promoted copy; to use this one again, give it as \
			 the promoted copy's replica, which fills it",
			record.generation
		))),
		Role::Replica => Err(ConfigError::Replica(format!(
			"this copy is a replica ({record}); a node starts on it only after `ldk-object-store \
			 replica promote`"
		))),
	}
}

async fn read_own(
	store: &ObjectKvStore, replica: bool,
) -> Result<Option<ReplicaRecord>, ConfigError> {
	let bytes = store.start_record_read(replica).await.map_err(ConfigError::from_store)?;
	bytes.map(|bytes| parse_record(&bytes, replica)).transpose()
}

fn parse_record(bytes: &[u8], replica: bool) -> Result<ReplicaRecord, ConfigError> {
	std::str::from_utf8(bytes).ok().and_then(ReplicaRecord::parse).ok_or_else(|| {
		let copy = if replica { "the replica" } else { "the primary" };
		ConfigError::Replica(format!(
			"{REPLICA_RECORD} on {copy} is not a replica record this version understands"
		))
	})
}

async fn write_own(store: &ObjectKvStore, replica: bool, text: String) -> Result<(), ConfigError> {
	store.start_record_write(replica, text).await.map_err(ConfigError::from_store)
}

impl ConfigError {
	fn from_store(err: Error) -> Self {
		ConfigError::Replica(err.to_string())
	}
}
