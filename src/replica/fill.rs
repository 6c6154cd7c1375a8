//! The background fill: makes the replica equal to the primary while the node runs, then records
//! it in sync.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::{write_own, ReplicaRecord, Role, SyncState, Tracker};
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
/// writing.
pub(super) async fn run(store: ObjectKvStore, tracker: Arc<Tracker>, generation: u64) {
	let mut pause = FIRST_PAUSE;
	loop {
		let outcome = match fill(&store, &tracker).await {
			Ok(()) => record_in_sync(&store, generation).await,
			Err(err) => Err(err.to_string()),
		};
		match outcome {
			Ok(()) => {
				tracker.update(|health| {
					health.sync = SyncState::InSync;
					health.last_error = None;
				});
				tracing::info!(generation, "the replica is in sync");
				return;
			},
			Err(err) => {
				tracing::warn!(error = %err, ?pause, "filling the replica failed; retrying");
				tracker.update(|health| health.last_error = Some(err));
			},
		}
		let stopped = async {
			match store.writer_lease() {
				Some(lease) => lease.lost().await,
				None => std::future::pending().await,
			}
		};
		tokio::select! {
			() = tokio::time::sleep(pause) => {},
			() = stopped => return,
		}
		pause = (pause * 2).min(LONGEST_PAUSE);
	}
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
			.map(|key| store.start_replica_copy(key))
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

async fn record_in_sync(store: &ObjectKvStore, generation: u64) -> Result<(), String> {
	let in_sync = |role| ReplicaRecord::new(role, generation, SyncState::InSync).encode();
	let recorded = async {
		write_own(store, true, in_sync(Role::Replica)).await?;
		write_own(store, false, in_sync(Role::Primary)).await
	};
	recorded.await.map_err(|err: ConfigError| err.to_string())
}
