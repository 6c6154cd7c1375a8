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
/// assert_eq!(config.max_requests_in_flight, 1024);
/// assert!(config.adaptive_concurrency);
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
	/// The cap on requests the persister has in flight at once: monitor and update writes,
	/// deletes, and the reads of a startup load. With [`Self::adaptive_concurrency`] (the
	/// default) the persister keeps fewer in flight, as many as the store's answers show it
	/// takes, and this is the most it ever grows to; without, it is the bound itself. They take
	/// their places within the store's own bound
	/// ([`StoreBuilder::with_max_in_flight`](crate::StoreBuilder::with_max_in_flight)), never
	/// beside it: the store's bound is the total, and this one keeps the persister from taking
	/// all of it. Default 1,024: a store with no throughput limit of its own (a 20 ms round trip
	/// and nothing else) loads 1,000 monitors about as fast as with no bound at all, and the
	/// adaptive limit is what keeps a real S3 prefix (5,500 GETs, 3,500 PUTs and DELETEs a
	/// second) from answering a storm of `SlowDown`.
	pub max_requests_in_flight: usize,
	/// Find the store's rate rather than holding [`Self::max_requests_in_flight`] in flight: the
	/// limit starts at 32 and doubles per round trip while latency stays flat and nothing is
	/// throttled, then grows by its square root per round trip; an answer that says the store
	/// is overloaded (`503 SlowDown`, another 5xx, a timeout, a dropped connection) cuts it at
	/// once (at least by half, to the share of answers served in a storm), and so does latency
	/// beyond twice the lowest recent (a queue at the server or in the connection pool). A
	/// request's latency is its wait on the server, not a busy process's delay in getting back
	/// to its answer. It stays between 8 and the cap. It applies to every request of the
	/// persister, writes included: a single update is never held up (one request is far below
	/// the floor), and a burst of async writes finds the rate as a load does. Default `true`;
	/// `false` holds the cap as a fixed bound (the behaviour before this setting, whose default
	/// cap was 128).
	pub adaptive_concurrency: bool,
	/// Most monitors being loaded at once at startup; memory for raw objects stays within this
	/// bound, whatever the number of monitors, and the requests in flight within
	/// [`Self::max_requests_in_flight`] (adaptive or not). Default 1,024, to match that cap: a
	/// probing load has one request in flight per monitor being loaded, so this is what lets
	/// it use all of the adaptive limit. A monitor being loaded holds its decoded monitor (which
	/// the result holds anyway) and at most one raw object at a time when probing; in the list
	/// modes it reads its listed updates up to its share of [`Self::max_requests_in_flight`] at
	/// once (at least 4), so reads waiting for a place never pile up.
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
			max_requests_in_flight: 1024,
			adaptive_concurrency: true,
			max_monitors_loading: 1024,
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

	/// Sets [`Self::max_requests_in_flight`], the cap (at least 1).
	pub fn with_max_requests_in_flight(mut self, requests: usize) -> Self {
		self.max_requests_in_flight = requests.max(1);
		self
	}

	/// Sets [`Self::adaptive_concurrency`]: `false` for a fixed bound of
	/// [`Self::max_requests_in_flight`].
	pub fn with_adaptive_concurrency(mut self, adaptive: bool) -> Self {
		self.adaptive_concurrency = adaptive;
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
