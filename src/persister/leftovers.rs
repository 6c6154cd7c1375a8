//! Clearing an earlier run's update objects before a channel's first write of this run.
//!
//! A run can end with update objects stored above a gap: async writes of one channel run
//! concurrently, so a crash can leave update `n + 2` stored while `n + 1` is not, and an earlier
//! run may have used a larger `maximum_pending_updates`. The next load stops at the gap, and LDK
//! makes new updates from `n + 1` on. An old object above the new ones must then go before any of
//! them lands: a reader would apply the old `n + 2` after the new `n + 1` (LDK 0.3's persister
//! applies every listed update above the monitor without checking for a gap), and with
//! create-only update objects (fencing) the old `n + 2` would refuse the new `n + 2` as another
//! writer's.
//!
//! So on a channel's first write in this process, its `monitor_updates/<key>/` namespace is listed
//! once and every update id at or above the first new id is deleted, whatever
//! `maximum_pending_updates` an earlier run had; none of this run's writes of the channel starts
//! before that is done, so the clear never deletes an object of this run. The first new id is
//! that of the channel's first write: LDK makes a channel's `Persist` calls one at a time, in id
//! order (under the channel's lock in the `ChainMonitor`).
//!
//! In sync mode the clear runs inside that first `Persist` call, and a failure fails the write
//! (`UnrecoverableError`), so a later call tries again. In async mode it runs in the background,
//! retried as a failing write is, and the channel's writes wait for it (see `background`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use lightning::io;

use super::names::{parse_update_key, UPDATES};
use crate::runtime::block_on;
use crate::ObjectKvStore;

/// Deletes the update objects of `monitor_key` whose id is `first` or more. Keys that are not
/// decimal update ids are not update objects of ours and are left alone.
pub(crate) async fn clear_from(
	store: ObjectKvStore, monitor_key: String, first: u64,
) -> Result<(), io::Error> {
	let listed = store.start_list(UPDATES, &monitor_key).await?;
	let doomed: Vec<String> = listed
		.into_iter()
		.filter(|key| parse_update_key(&monitor_key, key).is_ok_and(|id| id >= first))
		.collect();
	if !doomed.is_empty() {
		store.start_remove_many(UPDATES, &monitor_key, &doomed).await?;
	}
	Ok(())
}

/// Sync mode: which channels are cleared in this process. One lock per channel, held through
/// its clear, so that a second first write of the channel waits for the clear rather than
/// writing beside it.
#[derive(Debug, Default)]
pub(crate) struct Cleared(Mutex<HashMap<String, Arc<Mutex<bool>>>>);

impl Cleared {
	fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Mutex<bool>>>> {
		self.0.lock().unwrap_or_else(PoisonError::into_inner)
	}

	/// Clears `monitor_key`'s leftovers from `first` on unless that is done already, blocking
	/// until it is. An error leaves the channel uncleared, so the next write tries again.
	pub(crate) fn ensure(
		&self, store: &ObjectKvStore, monitor_key: &str, first: u64,
	) -> Result<(), io::Error> {
		let channel = {
			let mut channels = self.lock();
			match channels.get(monitor_key) {
				Some(channel) => Arc::clone(channel),
				None => Arc::clone(channels.entry(monitor_key.to_owned()).or_default()),
			}
		};
		let mut cleared = channel.lock().unwrap_or_else(PoisonError::into_inner);
		if !*cleared {
			block_on(clear_from(store.clone(), monitor_key.to_owned(), first))?;
			*cleared = true;
		}
		Ok(())
	}

	/// The channel is archived: it is not written again.
	pub(crate) fn forget(&self, monitor_key: &str) {
		self.lock().remove(monitor_key);
	}
}
