//! The write path: `Persist` for [`MonitorPersister`], consolidation and pruning, archiving, and
//! the cleanup of stale and orphaned update objects.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;

use lightning::chain::chaininterface::{BroadcasterInterface, FeeEstimator};
use lightning::chain::chainmonitor::Persist;
use lightning::chain::channelmonitor::{ChannelMonitor, ChannelMonitorUpdate};
use lightning::chain::ChannelMonitorUpdateStatus;
use lightning::io;
use lightning::ln::types::ChannelId;
use lightning::sign::ecdsa::EcdsaChannelSigner;
use lightning::sign::{EntropySource, SignerProvider};
use lightning::util::logger::Logger;
use lightning::util::persist::{MonitorName, MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL};
use lightning::util::ser::Writeable;

use super::names::{
	parse_update_key, ARCHIVE, ARCHIVE_SECONDARY, MONITORS, MONITORS_SECONDARY, UPDATES,
};
use super::{MonitorPersister, PersistMode};
use crate::runtime::block_on;
use crate::ObjectKvStore;

/// The update id LDK before 0.1 gave every update after a channel closed.
const LEGACY_CLOSED_CHANNEL_UPDATE_ID: u64 = u64::MAX;

type WriteFuture = Pin<Box<dyn Future<Output = Result<(), io::Error>> + Send + 'static>>;

/// Which update objects a full-monitor write makes stale.
enum Prune {
	/// `start..=end`, as LDK's persister prunes after a consolidation.
	Range(u64, u64),
	/// Everything up to `latest`: the channel is closed (legacy id `u64::MAX`).
	AllUpTo(u64),
}

impl<L: Deref, ES: Deref, SP: Deref, BI: Deref, FE: Deref> MonitorPersister<L, ES, SP, BI, FE>
where
	L::Target: Logger,
	ES::Target: EntropySource + Sized,
	SP::Target: SignerProvider + Sized,
	BI::Target: BroadcasterInterface,
	FE::Target: FeeEstimator,
{
	/// Starts the write of a full monitor; its place in the monitor key's order is fixed now.
	fn start_full_write<S: EcdsaChannelSigner>(
		&self, monitor_key: &str, monitor: &ChannelMonitor<S>,
	) -> WriteFuture {
		let mut bytes = Vec::with_capacity(2 + monitor.serialized_length());
		// Without update objects a monitor is always complete, so it carries no sentinel.
		if self.config.maximum_pending_updates != 0 {
			bytes.extend_from_slice(MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL);
		}
		bytes.extend_from_slice(&monitor.encode());
		let write = self.store.start_write(MONITORS, MONITORS_SECONDARY, monitor_key, bytes);
		Box::pin(async move { write.await.map_err(io::Error::from) })
	}

	/// Whether an update is stored as its own object rather than by a full-monitor write.
	fn writes_update_object(&self, update_id: u64) -> bool {
		let max = self.config.maximum_pending_updates;
		update_id != LEGACY_CLOSED_CHANNEL_UPDATE_ID && max != 0 && !update_id.is_multiple_of(max)
	}

	/// Waits for `write` (sync mode) or lets it finish on the store's runtime and reports
	/// `completion` once it is durable (async mode).
	fn conclude(
		&self, write: WriteFuture, monitor_key: String, update_id: u64,
		completion: Option<(ChannelId, u64)>,
	) -> ChannelMonitorUpdateStatus {
		match self.config.mode {
			PersistMode::Sync => match block_on(write) {
				Ok(()) => ChannelMonitorUpdateStatus::Completed,
				Err(error) => {
					tracing::error!(monitor = %monitor_key, update_id, %error, "monitor write failed");
					ChannelMonitorUpdateStatus::UnrecoverableError
				},
			},
			PersistMode::Async => {
				let completions = Arc::clone(&self.completions);
				let in_flight = Arc::clone(&self.in_flight);
				in_flight.start();
				// Dropping the handle detaches the task; it reports through `completions`.
				drop(self.store.spawn(async move {
					match write.await {
						Ok(()) => {
							if let Some((channel_id, update_id)) = completion {
								completions.complete(channel_id, update_id);
							}
						},
						Err(error) => tracing::error!(
							monitor = %monitor_key, update_id, %error,
							"monitor write failed after retries; the channel stays frozen until restart"
						),
					}
					in_flight.finish();
				}));
				ChannelMonitorUpdateStatus::InProgress
			},
		}
	}

	/// Deletes update objects at or below each stored monitor's update id, and the update
	/// namespaces of monitors that no longer exist (archived or removed). Returns how many
	/// objects were deleted.
	pub async fn cleanup_stale_updates(&self) -> Result<usize, io::Error> {
		let store = &self.store;
		let live: std::collections::HashSet<String> =
			store.start_list(MONITORS, MONITORS_SECONDARY).await?.into_iter().collect();
		let mut deleted = 0;
		for monitor_key in store.start_list_secondary_namespaces(UPDATES).await? {
			let keys = if live.contains(&monitor_key) {
				let (_, monitor) = self.read_monitor_without_updates(&monitor_key).await?;
				stale_update_keys(store, &monitor_key, monitor.get_latest_update_id()).await?
			} else {
				store.start_list(UPDATES, &monitor_key).await?
			};
			if !keys.is_empty() {
				store.start_remove_many(UPDATES, &monitor_key, &keys).await?;
				deleted += keys.len();
			}
		}
		Ok(deleted)
	}

	/// Archives a monitor: writes it with its updates applied to `archived_monitors/`, then
	/// removes it and all its update objects. Safe to repeat: a monitor that is already gone
	/// only has its leftover update objects removed.
	async fn archive(&self, monitor_key: &str) -> Result<(), io::Error> {
		let store = &self.store;
		match self.read_channel_monitor_with_updates(monitor_key).await {
			Ok((_, monitor)) => {
				store
					.start_write(ARCHIVE, ARCHIVE_SECONDARY, monitor_key, monitor.encode())
					.await?;
				store.start_remove(MONITORS, MONITORS_SECONDARY, monitor_key).await?;
			},
			Err(error) if error.kind() == io::ErrorKind::NotFound => {
				store.start_read(ARCHIVE, ARCHIVE_SECONDARY, monitor_key).await.map_err(|_| {
					crate::error::io_error(
						io::ErrorKind::NotFound,
						format!("monitor {monitor_key} is neither stored nor archived"),
					)
				})?;
			},
			Err(error) => return Err(error),
		}
		let keys = store.start_list(UPDATES, monitor_key).await?;
		store.start_remove_many(UPDATES, monitor_key, &keys).await?;
		Ok(())
	}
}

/// Deletes the update objects that `prune` names, in batch requests.
async fn prune_after(store: ObjectKvStore, monitor_key: String, prune: Prune) {
	let keys: Result<Vec<String>, io::Error> = match prune {
		Prune::Range(start, end) => Ok((start..=end).map(|id| id.to_string()).collect()),
		Prune::AllUpTo(latest) => stale_update_keys(&store, &monitor_key, latest).await,
	};
	let result = match keys {
		Ok(keys) => {
			store.start_remove_many(UPDATES, &monitor_key, &keys).await.map_err(io::Error::from)
		},
		Err(error) => Err(error),
	};
	if let Err(error) = result {
		// Stale updates are never applied (they are at or below the monitor's id);
		// `cleanup_stale_updates` removes what is left.
		tracing::warn!(monitor = %monitor_key, %error, "pruning stale monitor updates failed");
	}
}

/// The update keys of a monitor at or below `latest`.
async fn stale_update_keys(
	store: &ObjectKvStore, monitor_key: &str, latest: u64,
) -> Result<Vec<String>, io::Error> {
	let mut stale = Vec::new();
	for key in store.start_list(UPDATES, monitor_key).await? {
		if parse_update_key(monitor_key, &key)? <= latest {
			stale.push(key);
		}
	}
	Ok(stale)
}

impl<S, L: Deref, ES: Deref, SP: Deref, BI: Deref, FE: Deref> Persist<S>
	for MonitorPersister<L, ES, SP, BI, FE>
where
	S: EcdsaChannelSigner,
	L::Target: Logger,
	ES::Target: EntropySource + Sized,
	SP::Target: SignerProvider + Sized,
	BI::Target: BroadcasterInterface,
	FE::Target: FeeEstimator,
{
	fn persist_new_channel(
		&self, monitor_name: MonitorName, monitor: &ChannelMonitor<S>,
	) -> ChannelMonitorUpdateStatus {
		let monitor_key = monitor_name.to_string();
		let update_id = monitor.get_latest_update_id();
		let write = self.start_full_write(&monitor_key, monitor);
		self.conclude(write, monitor_key, update_id, Some((monitor.channel_id(), update_id)))
	}

	fn update_persisted_channel(
		&self, monitor_name: MonitorName, update: Option<&ChannelMonitorUpdate>,
		monitor: &ChannelMonitor<S>,
	) -> ChannelMonitorUpdateStatus {
		let monitor_key = monitor_name.to_string();
		let Some(update) = update else {
			// A chain-sync re-persist: the full monitor, nothing to report.
			let write = self.start_full_write(&monitor_key, monitor);
			return self.conclude(write, monitor_key, monitor.get_latest_update_id(), None);
		};
		let completion = Some((monitor.channel_id(), update.update_id));
		if self.writes_update_object(update.update_id) {
			let update_key = update.update_id.to_string();
			let write = self.store.start_write(UPDATES, &monitor_key, &update_key, update.encode());
			let write = Box::pin(async move { write.await.map_err(io::Error::from) });
			return self.conclude(write, monitor_key, update.update_id, completion);
		}
		let latest = monitor.get_latest_update_id();
		let prune = if latest == LEGACY_CLOSED_CHANNEL_UPDATE_ID {
			Prune::AllUpTo(latest)
		} else {
			Prune::Range(latest.saturating_sub(self.config.maximum_pending_updates), latest)
		};
		let full_write = self.start_full_write(&monitor_key, monitor);
		let (store, key) = (self.store.clone(), monitor_key.clone());
		let write = Box::pin(async move {
			full_write.await?;
			// Only once the full monitor is durable may the updates it contains go.
			prune_after(store, key, prune).await;
			Ok(())
		});
		self.conclude(write, monitor_key, update.update_id, completion)
	}

	fn archive_persisted_channel(&self, monitor_name: MonitorName) {
		let monitor_key = monitor_name.to_string();
		if let Err(error) = block_on(self.archive(&monitor_key)) {
			tracing::error!(monitor = %monitor_key, %error, "archiving the monitor failed");
		}
	}

	fn get_and_clear_completed_updates(&self) -> Vec<(ChannelId, u64)> {
		self.completions.take_queued()
	}
}
