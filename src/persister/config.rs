//! The persister's settings.

use std::time::Duration;

use super::LoadMode;

/// Whether `Persist` calls wait for the write or return at once: chosen by the constructor,
/// [`MonitorPersister::new`](super::MonitorPersister::new) or
/// [`MonitorPersister::new_async`](super::MonitorPersister::new_async).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistMode {
	/// Return `Completed` after the object is durable.
	Sync,
	/// Return `InProgress` and report completion to the `ChainMonitor` later (LDK's beta
	/// asynchronous persistence).
	Async,
}

/// The default of [`PersisterConfig::full_monitors_up_to`].
const FULL_MONITORS_UP_TO: usize = 64 * 1024;

/// How the persister writes and loads. Start from [`PersisterConfig::default`] and change what
/// you need with the `with_*` setters:
///
/// ```
/// use ldk_object_store::PersisterConfig;
///
/// let config = PersisterConfig::default().with_maximum_pending_updates(50);
/// assert_eq!(config.max_requests_in_flight, 128);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PersisterConfig {
	/// Updates between two full-monitor writes (LDK's `maximum_pending_updates`); `0` writes the
	/// full monitor every time. Default 100.
	pub maximum_pending_updates: u64,
	/// Also write the full monitor in place of an update object once the channel's update
	/// objects would weigh as much as its monitor (see the module docs). Keeps startup reads at
	/// most about twice the monitors' size and costs at most twice LDK's write bytes. Default
	/// `true`; `false` writes exactly where LDK's `MonitorUpdatingPersister` does.
	pub consolidate_by_size: bool,
	/// While a channel's monitor is at most this many bytes, every update writes the full
	/// monitor instead of an update object (see the module docs): a startup, after a crash too,
	/// then reads one object for the channel, and an object store charges a request, not bytes.
	/// Default 64 KiB (why: the module docs); `0` writes update objects at any size, as LDK
	/// does.
	pub full_monitors_up_to: usize,
	/// Most requests the persister has in flight at once: monitor and update writes, deletes,
	/// and the reads of a startup load. They take their places within the store's own bound
	/// ([`StoreBuilder::with_max_in_flight`](crate::StoreBuilder::with_max_in_flight)), never
	/// beside it: the store's bound is the total, and this one keeps the persister from taking
	/// all of it. Default 128: at S3's typical 20–30 ms per small request that is 4,000–6,500
	/// requests a second, about what S3 serves per key prefix (5,500 GETs, 3,500 PUTs and
	/// DELETEs), while the keys of different channels lie under different prefixes; S3's
	/// `SlowDown` answers are retried with backoff.
	pub max_requests_in_flight: usize,
	/// Most monitors being loaded at once at startup; memory for raw objects stays within this
	/// bound, whatever the number of monitors. Default 128, so that probing (one request in
	/// flight per monitor) can use all of [`Self::max_requests_in_flight`].
	pub max_monitors_loading: usize,
	/// Threads that decode monitors and apply their updates in
	/// [`read_all_channel_monitors_with_updates_blocking`](super::MonitorPersister::read_all_channel_monitors_with_updates_blocking);
	/// `0` (the default) uses every core the process may use
	/// (`std::thread::available_parallelism`). The async loader decodes on the task that
	/// awaits it.
	pub load_threads: usize,
	/// How pending updates are found at startup. Default [`LoadMode::List`]: one listing of
	/// `monitor_updates/` beside that of `monitors/`, so a monitor without update objects costs
	/// one read.
	pub load_mode: LoadMode,
	/// Async mode: the longest pause between two background attempts of a write that keeps
	/// failing (pauses start at 1 s and double). Default 30 s.
	pub max_retry_backoff: Duration,
}

impl Default for PersisterConfig {
	fn default() -> Self {
		PersisterConfig {
			maximum_pending_updates: 100,
			consolidate_by_size: true,
			full_monitors_up_to: FULL_MONITORS_UP_TO,
			max_requests_in_flight: 128,
			max_monitors_loading: 128,
			load_threads: 0,
			load_mode: LoadMode::List,
			max_retry_backoff: Duration::from_secs(30),
		}
	}
}

impl PersisterConfig {
	/// Sets [`Self::maximum_pending_updates`].
	pub fn with_maximum_pending_updates(mut self, updates: u64) -> Self {
		self.maximum_pending_updates = updates;
		self
	}

	/// Sets [`Self::consolidate_by_size`].
	pub fn with_consolidate_by_size(mut self, consolidate: bool) -> Self {
		self.consolidate_by_size = consolidate;
		self
	}

	/// Sets [`Self::full_monitors_up_to`] (`0`: update objects at any size, as LDK writes).
	pub fn with_full_monitors_up_to(mut self, bytes: usize) -> Self {
		self.full_monitors_up_to = bytes;
		self
	}

	/// Sets [`Self::load_threads`] (`0`: every core the process may use).
	pub fn with_load_threads(mut self, threads: usize) -> Self {
		self.load_threads = threads;
		self
	}

	/// The threads a blocking load decodes on.
	pub(crate) fn decode_threads(&self) -> usize {
		match self.load_threads {
			0 => std::thread::available_parallelism().map_or(1, usize::from),
			threads => threads,
		}
	}

	/// Sets [`Self::max_requests_in_flight`] (at least 1).
	pub fn with_max_requests_in_flight(mut self, requests: usize) -> Self {
		self.max_requests_in_flight = requests.max(1);
		self
	}

	/// Sets [`Self::max_monitors_loading`] (at least 1).
	pub fn with_max_monitors_loading(mut self, monitors: usize) -> Self {
		self.max_monitors_loading = monitors.max(1);
		self
	}

	/// Sets [`Self::load_mode`].
	pub fn with_load_mode(mut self, load_mode: LoadMode) -> Self {
		self.load_mode = load_mode;
		self
	}

	/// Sets [`Self::max_retry_backoff`].
	pub fn with_max_retry_backoff(mut self, backoff: Duration) -> Self {
		self.max_retry_backoff = backoff;
		self
	}
}
