//! The write path: `Persist` for [`MonitorPersister`], consolidation and pruning, archiving, and
//! the cleanup of stale and orphaned update objects.

use std::ops::Deref;
use std::time::{Duration, Instant};

use lightning::chain::chaininterface::{BroadcasterInterface, FeeEstimator};
use lightning::chain::chainmonitor::{ChainMonitor, Persist};
use lightning::chain::channelmonitor::{ChannelMonitor, ChannelMonitorUpdate};
use lightning::chain::{ChannelMonitorUpdateStatus, Filter};
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
use super::MonitorPersister;
use crate::runtime::block_on;
use crate::ObjectKvStore;

/// The update id LDK before 0.1 gave every update after a channel closed.
const LEGACY_CLOSED_CHANNEL_UPDATE_ID: u64 = u64::MAX;

/// The buffer a channel's first full monitor of a run starts in: a fresh channel's monitor
/// (about 8 KB with anchors) fits.
const FIRST_FULL_CAPACITY: usize = 16 * 1024;

/// Which update objects a full-monitor write makes stale.
#[derive(Debug, Clone)]
pub(crate) enum Prune {
	/// `start..=end`, as LDK's persister prunes after a consolidation.
	Range(u64, u64),
	/// Everything up to `latest`: the channel is closed (legacy id `u64::MAX`).
	AllUpTo(u64),
}

impl Prune {
	/// The pruning of two full writes when only the later one is made: every update object at or
	/// below a durable monitor's id is stale, so the union (and the gap between) may go.
	pub(crate) fn merge(older: Option<Prune>, newer: Option<Prune>) -> Option<Prune> {
		match (older, newer) {
			(None, newer) => newer,
			(older, None) => older,
			(Some(Prune::Range(start, _)), Some(Prune::Range(other_start, end))) => {
				Some(Prune::Range(start.min(other_start), end))
			},
			(Some(Prune::AllUpTo(a)), Some(Prune::AllUpTo(b))) => Some(Prune::AllUpTo(a.max(b))),
			(Some(Prune::AllUpTo(latest)), Some(Prune::Range(_, end)))
			| (Some(Prune::Range(_, end)), Some(Prune::AllUpTo(latest))) => {
				Some(Prune::AllUpTo(latest.max(end)))
			},
		}
	}
}

/// What a `Persist` call writes.
enum Write {
	/// One update object.
	Update { update_id: u64, bytes: Vec<u8> },
	/// The full monitor (serialized once, sentinel included), then the pruning of what it makes
	/// stale.
	Full { bytes: Vec<u8>, monitor_id: u64, prune: Option<Prune> },
}

impl<L: Deref, ES: Deref, SP: Deref, BI: Deref, FE: Deref> MonitorPersister<L, ES, SP, BI, FE>
where
	L::Target: Logger,
	ES::Target: EntropySource + Sized,
	SP::Target: SignerProvider + Sized,
	BI::Target: BroadcasterInterface,
	FE::Target: FeeEstimator,
{
	/// A full write of `monitor`: the update id it is written under, and its object. Every full
	/// write goes through here. The id is read before the monitor is serialized, so the bytes are
	/// at least as new as the id: an update applied in between (the `ChainMonitor` applies
	/// updates under its shared lock, beside [`Self::consolidate`]) is then in the bytes, and its
	/// own object, above the id, is neither pruned nor reported as held by this write.
	fn full_write<S: EcdsaChannelSigner>(
		&self, monitor_key: &str, monitor: &ChannelMonitor<S>,
	) -> (u64, Vec<u8>) {
		let monitor_id = monitor.get_latest_update_id();
		#[cfg(feature = "_test_hooks")]
		self.hooks.between_id_and_bytes();
		(monitor_id, self.full_bytes(monitor_key, monitor))
	}

	/// The full monitor's object: the sentinel, then the monitor, serialized in one pass into a
	/// buffer sized from the channel's previous full monitor (sizing it exactly would cost a
	/// second serialization; growing a buffer only copies bytes). Only [`Self::full_write`]
	/// calls it.
	fn full_bytes<S: EcdsaChannelSigner>(
		&self, monitor_key: &str, monitor: &ChannelMonitor<S>,
	) -> Vec<u8> {
		// Without update objects a monitor is always complete, so it carries no sentinel.
		let sentinel: &[u8] = if self.config.maximum_pending_updates != 0 {
			MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL
		} else {
			&[]
		};
		let previous = self.ledger.lock().get(monitor_key).and_then(|channel| channel.full_len);
		// A monitor grows by a few hundred bytes per update at most: 1/16 leaves room for that.
		let capacity = previous.map_or(FIRST_FULL_CAPACITY, |len| len + len / 16);
		let mut bytes = Vec::with_capacity(capacity);
		bytes.extend_from_slice(sentinel);
		// A `Vec` takes every write.
		let written = monitor.write(&mut bytes);
		debug_assert!(written.is_ok(), "writing into a Vec failed");
		bytes
	}

	/// Whether an update is stored as its own object rather than by a full-monitor write.
	fn writes_update_object(&self, update_id: u64) -> bool {
		let max = self.config.maximum_pending_updates;
		update_id != LEGACY_CLOSED_CHANNEL_UPDATE_ID && max != 0 && !update_id.is_multiple_of(max)
	}

	/// Whether the channel's monitor is small enough to be written whole for every update
	/// ([`PersisterConfig::full_monitors_up_to`](super::PersisterConfig::full_monitors_up_to)).
	fn writes_small_monitor_whole(&self, monitor_key: &str) -> bool {
		let limit = self.config.full_monitors_up_to;
		self.ledger.lock().get(monitor_key).map_or(limit != 0, |channel| channel.is_small(limit))
	}

	/// Whether an update of `update_len` bytes is better stored by writing the full monitor
	/// ([`PersisterConfig::consolidate_by_size`](super::PersisterConfig::consolidate_by_size)).
	fn consolidates_by_size(&self, monitor_key: &str, update_len: usize) -> bool {
		self.config.consolidate_by_size
			&& self
				.ledger
				.lock()
				.get(monitor_key)
				.is_some_and(|channel| channel.update_reaches_monitor_size(update_len))
	}

	/// Carries out `write` for `monitor_key`: in sync mode now, returning `Completed` once it is
	/// durable; in async mode in the background, returning `InProgress` at once and reporting
	/// `report` (an update id) once it is durable.
	fn persist(
		&self, monitor_key: String, channel_id: ChannelId, report: Option<u64>, mut write: Write,
	) -> ChannelMonitorUpdateStatus {
		if self.background.is_none() {
			// The channel's first write in this process clears an earlier run's update objects
			// from the first new id on (see `leftovers`); until that succeeds nothing of the
			// channel is written. (In async mode the background does it.)
			let first = match &write {
				Write::Update { update_id, .. } => *update_id,
				Write::Full { monitor_id, .. } => monitor_id.saturating_add(1),
			};
			if let Err(error) = self.cleared.ensure(&self.store, &monitor_key, first) {
				tracing::error!(
					monitor = %monitor_key, first_update_id = first, %error,
					"clearing an earlier run's update objects failed; the write is not made"
				);
				return ChannelMonitorUpdateStatus::UnrecoverableError;
			}
		}
		// LDK may serialize a monitor for a chain-sync write (no update) on one thread while
		// another applies a newer update and writes it: never write an older monitor after a
		// newer one (equal ids: the later bytes, which may hold newer chain data). The check and
		// the write's place in its key's order are taken under one lock, so that order is the
		// order of the ids.
		let mut ledger = self.ledger.lock();
		let channel = ledger.entry(monitor_key.clone()).or_default();
		match &mut write {
			Write::Full { monitor_id, bytes, prune } => {
				let newest = channel.highest_full.get_or_insert(*monitor_id);
				if report.is_none() && *newest > *monitor_id {
					// A newer monitor is written or queued; LDK tracks no chain-sync completion.
					return match self.background {
						Some(_) => ChannelMonitorUpdateStatus::InProgress,
						None => ChannelMonitorUpdateStatus::Completed,
					};
				}
				*newest = (*newest).max(*monitor_id);
				if !channel.has_pending() {
					// No update object was stored after the last full monitor this run wrote or
					// loaded (those below it had their own pruning): a small monitor written
					// whole for every update costs no delete.
					*prune = None;
				}
				channel.note_full(bytes.len());
			},
			Write::Update { bytes, .. } => channel.note_update(bytes.len()),
		}
		if let Some(background) = &self.background {
			match write {
				Write::Update { update_id, bytes } => {
					background.write_update(monitor_key, channel_id, update_id, bytes.into())
				},
				Write::Full { bytes, monitor_id, prune } => background.write_full(
					monitor_key,
					channel_id,
					report,
					bytes.into(),
					monitor_id,
					prune,
				),
			}
			return ChannelMonitorUpdateStatus::InProgress;
		}
		let (object, result) = match write {
			Write::Update { update_id, bytes } => {
				let id = update_id.to_string();
				let written = self.store.start_write(UPDATES, &monitor_key, &id, bytes);
				drop(ledger);
				(update_id, block_on(written))
			},
			Write::Full { bytes, monitor_id, prune } => {
				let written =
					self.store.start_write(MONITORS, MONITORS_SECONDARY, &monitor_key, bytes);
				drop(ledger);
				let written = block_on(written);
				if let (Ok(()), Some(prune)) = (&written, prune) {
					// Only once the full monitor is durable may the updates it holds go.
					block_on(prune_after(self.store.clone(), monitor_key.clone(), prune));
				}
				(monitor_id, written)
			},
		};
		match result {
			Ok(()) => ChannelMonitorUpdateStatus::Completed,
			Err(error) => {
				tracing::error!(monitor = %monitor_key, update_id = object, %error, "monitor write failed");
				ChannelMonitorUpdateStatus::UnrecoverableError
			},
		}
	}

	/// Writes the full monitor of every channel of `chain_monitor` that may have update objects
	/// stored after its monitor, and waits until each is durable (in async mode, with every
	/// other write: [`Self::flush`]); the update objects it makes stale are deleted. The next
	/// startup then reads one object per monitor and finds no update after it. Returns how many
	/// monitors were written.
	///
	/// Call it at shutdown, after the background processor has returned, from a thread that may
	/// block (not from inside an async task: use `spawn_blocking`). Each monitor is serialized
	/// under the `ChainMonitor`'s lock and written after the lock is released. Channels loaded
	/// by this persister, or consolidated since, are skipped when nothing was stored after their
	/// monitor; others are written.
	///
	/// Like [`Self::flush`] it waits for as long as a write keeps failing; where shutdown must
	/// not wait, use [`Self::consolidate_within`].
	pub fn consolidate<CS, C, T, F, CL, P, CES>(
		&self, chain_monitor: &ChainMonitor<CS, C, T, F, CL, P, CES>,
	) -> Result<usize, io::Error>
	where
		CS: EcdsaChannelSigner,
		C: Deref,
		C::Target: Filter,
		T: Deref,
		T::Target: BroadcasterInterface,
		F: Deref,
		F::Target: FeeEstimator,
		CL: Deref,
		CL::Target: Logger,
		P: Deref,
		P::Target: Persist<CS>,
		CES: Deref,
		CES::Target: EntropySource,
	{
		self.consolidate_until(chain_monitor, None)
	}

	/// [`Self::consolidate`], returning after at most about `limit`: then with an error of kind
	/// `TimedOut` that carries the [`Pending`](super::Pending) work (`error.get_ref()` downcasts to it; its text
	/// names the objects). In async mode the monitors are queued at once and the rest of the
	/// time goes to waiting, as in [`Self::flush_within`]; the writes named go on in the
	/// background. In sync mode each write returns after the store's own retries, and the
	/// monitors not reached by the deadline are named as pending, unwritten.
	pub fn consolidate_within<CS, C, T, F, CL, P, CES>(
		&self, chain_monitor: &ChainMonitor<CS, C, T, F, CL, P, CES>, limit: Duration,
	) -> Result<usize, io::Error>
	where
		CS: EcdsaChannelSigner,
		C: Deref,
		C::Target: Filter,
		T: Deref,
		T::Target: BroadcasterInterface,
		F: Deref,
		F::Target: FeeEstimator,
		CL: Deref,
		CL::Target: Logger,
		P: Deref,
		P::Target: Persist<CS>,
		CES: Deref,
		CES::Target: EntropySource,
	{
		self.consolidate_until(chain_monitor, Some(Instant::now() + limit))
	}

	fn consolidate_until<CS, C, T, F, CL, P, CES>(
		&self, chain_monitor: &ChainMonitor<CS, C, T, F, CL, P, CES>, deadline: Option<Instant>,
	) -> Result<usize, io::Error>
	where
		CS: EcdsaChannelSigner,
		C: Deref,
		C::Target: Filter,
		T: Deref,
		T::Target: BroadcasterInterface,
		F: Deref,
		F::Target: FeeEstimator,
		CL: Deref,
		CL::Target: Logger,
		P: Deref,
		P::Target: Persist<CS>,
		CES: Deref,
		CES::Target: EntropySource,
	{
		let mut written = 0;
		let mut unwritten = Vec::new();
		for channel_id in chain_monitor.list_monitors() {
			let (monitor_key, monitor_id, bytes) = {
				// Archived since the listing: nothing to consolidate.
				let Ok(monitor) = chain_monitor.get_monitor(channel_id) else { continue };
				let monitor_key = monitor.persistence_key().to_string();
				if !self.ledger.has_pending(&monitor_key) {
					continue;
				}
				if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
					// Out of time (in sync mode each write waits; in async mode serializing many
					// large monitors takes a while too): named, not written.
					unwritten.push(format!("{MONITORS}/{monitor_key}"));
					continue;
				}
				let (monitor_id, bytes) = self.full_write(&monitor_key, &monitor);
				(monitor_key, monitor_id, bytes)
			};
			let prune = self.prune_for(monitor_id);
			let write = Write::Full { bytes, monitor_id, prune: Some(prune) };
			match self.persist(monitor_key.clone(), channel_id, None, write) {
				ChannelMonitorUpdateStatus::UnrecoverableError => {
					return Err(crate::error::io_error(
						io::ErrorKind::Other,
						format!("consolidating monitor {monitor_key} failed"),
					));
				},
				_ => written += 1,
			}
		}
		let mut timed_out = None;
		if self.background.is_some() {
			match deadline {
				None => self.flush_blocking(),
				Some(deadline) => {
					let left = deadline.saturating_duration_since(Instant::now());
					timed_out = self.flush_within_blocking(left).err();
				},
			}
		}
		if timed_out.is_some() || !unwritten.is_empty() {
			let mut pending = timed_out.unwrap_or_default();
			pending.objects.extend(unwritten);
			pending.objects.sort_unstable();
			return Err(pending.into());
		}
		if self.background.is_some() {
			let health = self.health();
			if health.abandoned_writes > 0 {
				return Err(crate::error::io_error(
					io::ErrorKind::Other,
					format!(
						"consolidation abandoned: another writer took the store over ({})",
						health.last_error.unwrap_or_default()
					),
				));
			}
		}
		Ok(written)
	}

	/// The update objects a full monitor at `monitor_id` makes stale: those since the previous
	/// full monitor, which was at most `maximum_pending_updates` ids before it.
	fn prune_for(&self, monitor_id: u64) -> Prune {
		if monitor_id == LEGACY_CLOSED_CHANNEL_UPDATE_ID {
			Prune::AllUpTo(monitor_id)
		} else {
			Prune::Range(monitor_id.saturating_sub(self.config.maximum_pending_updates), monitor_id)
		}
	}

	/// Deletes update objects at or below each stored monitor's update id, and the update
	/// namespaces of archived monitors. Returns how many objects were deleted. Safe while the
	/// node runs: an update namespace without a monitor is deleted only when the monitor is
	/// checked absent again right before and an archived copy of it exists, because a new
	/// channel's update objects can be durable (in async mode) before its monitor object is.
	/// A stored monitor that decodes as one LDK no longer reads (last updated before 0.0.118,
	/// fully resolved; the loaders skip it) is skipped with its update objects, as LDK's own
	/// cleanup does.
	pub async fn cleanup_stale_updates(&self) -> Result<usize, io::Error> {
		let store = &self.store;
		let live: std::collections::HashSet<String> =
			store.start_list(MONITORS, MONITORS_SECONDARY).await?.into_iter().collect();
		let mut deleted = 0;
		for monitor_key in store.start_list_secondary_namespaces(UPDATES).await? {
			let monitor = if live.contains(&monitor_key) {
				match self.maybe_read_monitor(&monitor_key).await {
					Ok(Some(((_, monitor), _))) => Some(monitor.get_latest_update_id()),
					// A monitor LDK no longer reads (last updated before 0.0.118 and resolved):
					// LDK's cleanup and every loader skip it, so its update objects stay as they
					// are, as LDK leaves them.
					Ok(None) => continue,
					// Archived since the listing: handled as any namespace without a monitor.
					Err(error) if error.kind() == io::ErrorKind::NotFound => None,
					Err(error) => return Err(error),
				}
			} else {
				None
			};
			let keys = match monitor {
				Some(latest) => stale_update_keys(store, &monitor_key, latest).await?,
				None if orphan_is_archived(store, &monitor_key).await? => {
					store.start_list(UPDATES, &monitor_key).await?
				},
				None => continue,
			};
			if !keys.is_empty() {
				store.start_remove_many(UPDATES, &monitor_key, &keys).await?;
				deleted += keys.len();
			}
		}
		Ok(deleted)
	}

	/// [`Self::cleanup_stale_updates`] for synchronous callers.
	pub fn cleanup_stale_updates_blocking(&self) -> Result<usize, io::Error> {
		block_on(self.cleanup_stale_updates())
	}

	/// Archives a monitor: writes it with its updates applied to `archived_monitors/`, then
	/// removes it and all its update objects. Safe to repeat: a monitor that is already gone
	/// only has its leftover update objects removed.
	pub(crate) async fn archive(&self, monitor_key: &str) -> Result<(), io::Error> {
		let store = &self.store;
		match self.read_channel_monitor_with_updates(monitor_key).await {
			Ok((_, monitor)) => {
				store
					.start_write(ARCHIVE, ARCHIVE_SECONDARY, monitor_key, monitor.encode())
					.await?;
				store.start_remove(MONITORS, MONITORS_SECONDARY, monitor_key).await?;
			},
			Err(error) if error.kind() == io::ErrorKind::NotFound => {
				match store.start_read(ARCHIVE, ARCHIVE_SECONDARY, monitor_key).await {
					Ok(_) => {},
					Err(error) if error.failure_kind() == Some(crate::FailureKind::NotFound) => {
						return Err(crate::error::io_error(
							io::ErrorKind::NotFound,
							format!("monitor {monitor_key} is neither stored nor archived"),
						));
					},
					// A 403 or a 5xx says nothing about the archive's existence.
					Err(error) => return Err(error.into()),
				}
			},
			Err(error) => return Err(error),
		}
		let keys = store.start_list(UPDATES, monitor_key).await?;
		store.start_remove_many(UPDATES, monitor_key, &keys).await?;
		Ok(())
	}
}

/// Deletes the update objects that `prune` names, in batch requests.
pub(crate) async fn prune_after(store: ObjectKvStore, monitor_key: String, prune: Prune) {
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

/// Whether the update namespace of `monitor_key` belongs to an archived channel: its monitor is
/// absent now (read again, not taken from an earlier listing) and an archived copy exists. Only
/// then may all of its update objects go.
pub(crate) async fn orphan_is_archived(
	store: &ObjectKvStore, monitor_key: &str,
) -> Result<bool, io::Error> {
	let absent = |result: Result<Vec<u8>, crate::Error>| match result {
		Ok(_) => Ok(false),
		Err(error) if error.failure_kind() == Some(crate::FailureKind::NotFound) => Ok(true),
		Err(error) => Err(io::Error::from(error)),
	};
	if !absent(store.start_read(MONITORS, MONITORS_SECONDARY, monitor_key).await)? {
		return Ok(false);
	}
	Ok(!absent(store.start_read(ARCHIVE, ARCHIVE_SECONDARY, monitor_key).await)?)
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
		let (monitor_id, bytes) = self.full_write(&monitor_key, monitor);
		let write = Write::Full { bytes, monitor_id, prune: None };
		self.persist(monitor_key, monitor.channel_id(), Some(monitor_id), write)
	}

	fn update_persisted_channel(
		&self, monitor_name: MonitorName, update: Option<&ChannelMonitorUpdate>,
		monitor: &ChannelMonitor<S>,
	) -> ChannelMonitorUpdateStatus {
		let (monitor_key, channel_id) = (monitor_name.to_string(), monitor.channel_id());
		let Some(update) = update else {
			// A chain-sync re-persist: the full monitor, nothing to report. It holds every
			// update up to its id, so it prunes as an update's full write does: otherwise update
			// objects stored before it would stay behind once later updates write small
			// monitors whole, which prune nothing.
			let (monitor_id, bytes) = self.full_write(&monitor_key, monitor);
			let prune = Some(self.prune_for(monitor_id));
			return self.persist(
				monitor_key,
				channel_id,
				None,
				Write::Full { bytes, monitor_id, prune },
			);
		};
		let report = Some(update.update_id);
		if self.writes_update_object(update.update_id)
			&& !self.writes_small_monitor_whole(&monitor_key)
		{
			let bytes = update.encode();
			if !self.consolidates_by_size(&monitor_key, bytes.len()) {
				let write = Write::Update { update_id: update.update_id, bytes };
				return self.persist(monitor_key, channel_id, report, write);
			}
		}
		let (monitor_id, bytes) = self.full_write(&monitor_key, monitor);
		let prune = self.prune_for(monitor_id);
		self.persist(
			monitor_key,
			channel_id,
			report,
			Write::Full { bytes, monitor_id, prune: Some(prune) },
		)
	}

	fn archive_persisted_channel(&self, monitor_name: MonitorName) {
		let monitor_key = monitor_name.to_string();
		self.ledger.forget(&monitor_key);
		self.cleared.forget(&monitor_key);
		match &self.background {
			// Never wait here: LDK holds the ChainMonitor's monitors lock for writing, which a
			// completion being delivered may be waiting for. The archive runs after the
			// channel's queued full writes, in the background, as LDK's own async persister does.
			Some(background) => {
				let channel_id = match monitor_name {
					MonitorName::V1Channel(outpoint) => {
						ChannelId::v1_from_funding_outpoint(outpoint)
					},
					MonitorName::V2Channel(channel_id) => channel_id,
				};
				background.archive(monitor_key, channel_id);
			},
			None => {
				if let Err(error) = block_on(self.archive(&monitor_key)) {
					tracing::error!(monitor = %monitor_key, %error, "archiving the monitor failed");
				}
			},
		}
	}

	fn get_and_clear_completed_updates(&self) -> Vec<(ChannelId, u64)> {
		match &self.background {
			Some(background) => background.completions().take_queued(),
			None => Vec::new(),
		}
	}
}
