//! The background fill: makes the replica equal to the primary while the node runs, then records
//! it in sync.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use std::sync::atomic::Ordering;

use super::{write_own, Lag, ReplicaRecord, Role, SyncState, Tracker};
use crate::error::{ConfigError, Error};
use crate::store::Copied;
use crate::ObjectKvStore;

/// Keys compared at once (each takes its key's turn and one request per copy).
const CONCURRENCY: usize = 32;
/// Passes before the fill gives up for a while: each pass after the first only finds what
/// changed under it, which dual writes make impossible, so a second difference means a fault.
const MAX_PASSES: u32 = 4;
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(60);

/// Fills until a pass finds no difference, then records the replica in sync (replica first,
/// then primary); retries after a failure with growing pauses, and stops when the store stops
/// writing. In a pair that may lag it then waits for the replica to go stale again, and catches
/// it up each time.
pub(super) async fn run(store: ObjectKvStore, tracker: Arc<Tracker>, generation: u64) {
	let lag = store.replica_lag().cloned();
	let mut pause = FIRST_PAUSE;
	loop {
		let outcome = match &lag {
			None => match fill(&store, &tracker).await {
				Ok(()) => record_in_sync(&store, generation, false).await,
				Err(err) => Err(err.to_string()),
			},
			Some(lag) => catch_up(&store, &tracker, lag, generation).await,
		};
		match outcome {
			Ok(()) => {
				tracker.update(|health| {
					health.sync = SyncState::InSync;
					health.last_error = None;
					health.lag_keys = 0;
				});
				tracing::info!(generation, "the replica is in sync");
				pause = FIRST_PAUSE;
				let Some(lag) = &lag else { return };
				// Until the replica fails again (or the store stops writing).
				if until_stale(&store, lag).await {
					continue;
				}
				return;
			},
			Err(err) => {
				tracing::warn!(error = %err, ?pause, "bringing the replica in sync failed; retrying");
				tracker.update(|health| health.last_error = Some(err));
			},
		}
		tokio::select! {
			() = tokio::time::sleep(pause) => {},
			() = stopped(&store) => return,
		}
		pause = (pause * 2).min(LONGEST_PAUSE);
	}
}

/// For a pair that may lag and starts in sync: waits for the replica to go stale, then catches it
/// up as [`run`] does.
pub(super) async fn watch(store: ObjectKvStore, tracker: Arc<Tracker>, lag: Arc<Lag>) {
	if !until_stale(&store, &lag).await {
		return;
	}
	let generation = lag.generation.load(Ordering::SeqCst);
	run(store, tracker, generation).await
}

/// Waits until the replica is stale (true), or the store stops writing (false). A wake left by
/// an episode that a catch-up already handled is not enough: a catch-up started without a new
/// failure would record the replica filling while the primary's record still says in sync, and
/// a close during it would leave the two records saying so.
async fn until_stale(store: &ObjectKvStore, lag: &Lag) -> bool {
	loop {
		if lag.is_stale() {
			return true;
		}
		tokio::select! {
			() = lag.wake.notified() => {},
			() = stopped(store) => return false,
		}
	}
}

/// Resolves when the store stops writing (closed, or its lease lost).
async fn stopped(store: &ObjectKvStore) {
	match store.writer_lease() {
		Some(lease) => lease.lost().await,
		None => std::future::pending().await,
	}
}

/// Brings a replica that may lag back in sync: tells it that it is being filled (which fails
/// while it is still unreachable), sends writes to both copies again, repairs the keys its
/// journal names, then fills; records it in sync only if it did not go stale again meanwhile.
async fn catch_up(
	store: &ObjectKvStore, tracker: &Tracker, lag: &Lag, generation: u64,
) -> Result<(), String> {
	let filling = ReplicaRecord::new(Role::Replica, generation, SyncState::Filling).lagging(true);
	write_own(store, true, filling.encode()).await.map_err(|err| err.to_string())?;
	let episode = lag.episodes.load(Ordering::SeqCst);
	lag.stale.store(false, Ordering::SeqCst);
	let journaled = store.start_list_journal().await.map_err(|err| err.to_string())?;
	let mut repairs = futures::stream::iter(journaled)
		.map(|key| store.start_replica_copy(key, true))
		.buffer_unordered(CONCURRENCY);
	while let Some(repaired) = repairs.next().await {
		repaired.map_err(|err| err.to_string())?;
		tracker.update(|health| health.lag_keys = health.lag_keys.saturating_sub(1));
	}
	drop(repairs);
	fill(store, tracker).await.map_err(|err| err.to_string())?;
	let mut recorded = lag.recorded.lock().await;
	if lag.episodes.load(Ordering::SeqCst) != episode || lag.is_stale() {
		return Err("the replica failed again while it was being brought in sync".into());
	}
	record_in_sync(store, generation, true).await?;
	*recorded = false;
	lag.journaled.store(0, Ordering::SeqCst);
	Ok(())
}

/// Passes over every key of either copy until one finds them all equal.
async fn fill(store: &ObjectKvStore, tracker: &Tracker) -> Result<(), Error> {
	for pass in 1..=MAX_PASSES {
		let (primary, replica) =
			futures::join!(store.start_list_copy(false), store.start_list_copy(true));
		let mut keys = primary?;
		keys.extend(replica?);
		keys.sort_unstable();
		keys.dedup();
		tracker.update(|health| {
			health.pass = pass;
			health.keys_total = keys.len() as u64;
			health.keys_checked = 0;
		});
		let mut differed = 0u64;
		let mut copies = futures::stream::iter(keys)
			.map(|key| store.start_replica_copy(key, false))
			.buffer_unordered(CONCURRENCY);
		while let Some(copied) = copies.next().await {
			let copied = copied?;
			differed += u64::from(copied != Copied::Equal);
			tracker.update(|health| {
				health.keys_checked += 1;
				match copied {
					Copied::Written => health.copied += 1,
					Copied::Removed => health.removed += 1,
					Copied::Equal => {},
				}
			});
		}
		tracing::info!(pass, differed, "replica fill pass done");
		if differed == 0 {
			return Ok(());
		}
	}
	Err(Error::Storage {
		operation: crate::Operation::Write,
		target: "the replica".into(),
		kind: crate::FailureKind::Backend,
		attempts: MAX_PASSES,
		source: object_store::Error::Generic {
			store: "ldk-object-store",
			source: format!("the copies still differed after {MAX_PASSES} passes").into(),
		},
	})
}

async fn record_in_sync(
	store: &ObjectKvStore, generation: u64, may_lag: bool,
) -> Result<(), String> {
	let in_sync =
		|role| ReplicaRecord::new(role, generation, SyncState::InSync).lagging(may_lag).encode();
	let recorded = async {
		write_own(store, true, in_sync(Role::Replica)).await?;
		write_own(store, false, in_sync(Role::Primary)).await
	};
	recorded.await.map_err(|err: ConfigError| err.to_string())
}
