//! [`MonitorPersister`]: LDK's differential `ChannelMonitor` format (full monitors plus one object
//! per `ChannelMonitorUpdate`), written concurrently and read back in parallel.
//!
//! # Format
//!
//! Byte for byte the format of LDK's `MonitorUpdatingPersister`, so a node can move between the
//! two in either direction without converting anything:
//!
//! ```text
//! monitors/<monitor key>                          0xFF 0xFF ‖ ChannelMonitor (sentinel, then LDK encoding)
//! monitor_updates/<monitor key>/<update id>       ChannelMonitorUpdate (update id in decimal)
//! archived_monitors/<monitor key>                 ChannelMonitor with its updates applied, no sentinel
//! ```
//!
//! With `maximum_pending_updates == 0` monitors are written without the sentinel and no update
//! objects exist. An update is written on its own unless `update_id % maximum_pending_updates == 0`
//! or it is the legacy closed-channel id `u64::MAX`; then the full monitor is written and, once it
//! is durable, the update objects it makes stale are deleted in one batch request.
//!
//! # Writing
//!
//! In [`PersistMode::Sync`] each `Persist` call returns `Completed` once the object is durable
//! (after retries; `UnrecoverableError` if it still fails, which stops LDK as its own persister
//! does). In [`PersistMode::Async`] each call returns `InProgress` at once; the write runs on the
//! store's runtime, writes of all channels concurrently up to
//! [`PersisterConfig::max_concurrent_writes`], and every durable update is reported to the
//! `ChainMonitor` exactly once (see [`MonitorPersister::bind_chain_monitor`]). A write that still
//! fails after retries is logged with the monitor key and update id and never reported, so the
//! channel stays frozen rather than advancing on state that is not stored. Writes to one monitor
//! keep their call order, so a full monitor never regresses to an older one.
//!
//! # Reading at startup
//!
//! [`MonitorPersister::read_all_channel_monitors_with_updates`] lists `monitors/`, and reads the
//! monitors in parallel, at most [`PersisterConfig::load_concurrency`] at once. For each it strips
//! the sentinel, decodes the monitor, checks that its `persistence_key()` is the key it was stored
//! under, then applies the updates `update_id + 1, + 2, …` until one is absent; it never applies
//! past a gap. Any error but "not found" fails the load, naming the key. Loading writes nothing.
//!
//! The startup sequence with a `ChainMonitor`:
//!
//! 1. build the persister, then the `ChainMonitor` with it (`ChainMonitor::new`);
//! 2. in async mode, [`bind_chain_monitor`](MonitorPersister::bind_chain_monitor) it;
//! 3. `read_all_channel_monitors_with_updates()`;
//! 4. read the `ChannelManager` with `ChannelManagerReadArgs` over those monitors;
//! 5. hand each monitor to `ChainMonitor::load_existing_monitor` (no re-persist happens);
//! 6. start syncing the chain and the background processor.

mod completion;
mod names;
mod read;
mod write;

use std::ops::Deref;
use std::sync::Arc;

use lightning::chain::chaininterface::{BroadcasterInterface, FeeEstimator};
use lightning::sign::{EntropySource, SignerProvider};
use lightning::util::logger::Logger;

pub use completion::{MonitorUpdateSink, SinkRef};
pub use read::{LoadMode, LoadedMonitor};

use crate::ObjectKvStore;
use completion::Completions;

/// Counts asynchronous writes in flight, so that [`MonitorPersister::flush`] can wait for them.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
	count: std::sync::atomic::AtomicUsize,
	idle: tokio::sync::Notify,
}

impl InFlight {
	pub(crate) fn start(&self) {
		self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
	}

	pub(crate) fn finish(&self) {
		if self.count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
			self.idle.notify_waiters();
		}
	}

	async fn wait_idle(&self) {
		loop {
			// Registered before the check, so a finish in between is not missed.
			let idle = self.idle.notified();
			if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
				return;
			}
			idle.await;
		}
	}
}

/// Whether `Persist` calls wait for the write or return at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistMode {
	/// Return `Completed` after the object is durable.
	Sync,
	/// Return `InProgress` and report completion to the `ChainMonitor` later.
	Async,
}

/// How the persister writes and loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersisterConfig {
	/// Updates between two full-monitor writes (LDK's `maximum_pending_updates`); `0` writes the
	/// full monitor every time. Default 100.
	pub maximum_pending_updates: u64,
	/// Sync or async `Persist` calls. Default [`PersistMode::Sync`].
	pub mode: PersistMode,
	/// Most monitor writes and deletes in flight at once, across all channels. Default 32.
	pub max_concurrent_writes: usize,
	/// Most monitors being read at once at startup; memory for raw objects stays within this
	/// bound, whatever the number of monitors. Default 32.
	pub load_concurrency: usize,
	/// How pending updates are found at startup. Default [`LoadMode::Probe`].
	pub load_mode: LoadMode,
}

impl Default for PersisterConfig {
	fn default() -> Self {
		PersisterConfig {
			maximum_pending_updates: 100,
			mode: PersistMode::Sync,
			max_concurrent_writes: 32,
			load_concurrency: 32,
			load_mode: LoadMode::Probe,
		}
	}
}

/// Persists `ChannelMonitor`s differentially in an [`ObjectKvStore`]; a replacement for LDK's
/// `MonitorUpdatingPersister` that takes the same arguments (see the module docs).
pub struct MonitorPersister<L: Deref, ES: Deref, SP: Deref, BI: Deref, FE: Deref>
where
	L::Target: Logger,
	ES::Target: EntropySource + Sized,
	SP::Target: SignerProvider + Sized,
	BI::Target: BroadcasterInterface,
	FE::Target: FeeEstimator,
{
	store: ObjectKvStore,
	config: PersisterConfig,
	completions: Arc<Completions>,
	in_flight: Arc<InFlight>,
	logger: L,
	entropy_source: ES,
	signer_provider: SP,
	broadcaster: BI,
	fee_estimator: FE,
}

impl<L: Deref, ES: Deref, SP: Deref, BI: Deref, FE: Deref> std::fmt::Debug
	for MonitorPersister<L, ES, SP, BI, FE>
where
	L::Target: Logger,
	ES::Target: EntropySource + Sized,
	SP::Target: SignerProvider + Sized,
	BI::Target: BroadcasterInterface,
	FE::Target: FeeEstimator,
{
	fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
		f.debug_struct("MonitorPersister")
			.field("store", &self.store)
			.field("config", &self.config)
			.field("completions", &self.completions)
			.finish_non_exhaustive()
	}
}

impl<L: Deref, ES: Deref, SP: Deref, BI: Deref, FE: Deref> MonitorPersister<L, ES, SP, BI, FE>
where
	L::Target: Logger,
	ES::Target: EntropySource + Sized,
	SP::Target: SignerProvider + Sized,
	BI::Target: BroadcasterInterface,
	FE::Target: FeeEstimator,
{
	/// A persister over `store`, with the same arguments as LDK's `MonitorUpdatingPersister::new`
	/// but a [`PersisterConfig`] in place of `maximum_pending_updates`.
	pub fn new(
		store: &ObjectKvStore, config: PersisterConfig, logger: L, entropy_source: ES,
		signer_provider: SP, broadcaster: BI, fee_estimator: FE,
	) -> Self {
		MonitorPersister {
			store: store.with_max_in_flight(config.max_concurrent_writes),
			config,
			completions: Arc::default(),
			in_flight: Arc::default(),
			logger,
			entropy_source,
			signer_provider,
			broadcaster,
			fee_estimator,
		}
	}

	/// The configuration.
	pub fn config(&self) -> &PersisterConfig {
		&self.config
	}

	/// In async mode, report each durable update straight to `chain_monitor`, starting with any
	/// that completed before this call. Until it is called, the `ChainMonitor` collects
	/// completions itself when it next releases monitor events; either way each is reported once.
	/// The persister keeps only a weak reference (the `ChainMonitor` owns the persister).
	///
	/// ```ignore
	/// let chain_monitor = Arc::new(ChainMonitor::new(None, broadcaster, logger, fees, persister.clone(), keys, storage_key));
	/// persister.bind_chain_monitor(&chain_monitor);
	/// ```
	pub fn bind_chain_monitor<S: MonitorUpdateSink + Send + Sync + 'static>(
		&self, chain_monitor: &Arc<S>,
	) {
		let weak: SinkRef = Arc::downgrade(chain_monitor) as SinkRef;
		self.completions.bind(weak);
	}

	/// Waits until every asynchronous write started so far has finished (durable, or failed and
	/// logged). Call it at shutdown, after the background processor has returned and before the
	/// persister is dropped: dropping the store's last handle stops its runtime and abandons
	/// writes still in flight (LDK replays them from the `ChannelManager` on the next start,
	/// but a clean stop should not need that).
	pub async fn flush(&self) {
		self.in_flight.wait_idle().await;
	}

	/// [`Self::flush`] for synchronous callers.
	pub fn flush_blocking(&self) {
		crate::runtime::block_on(self.flush());
	}
}
