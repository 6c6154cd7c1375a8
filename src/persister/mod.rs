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
//! With [`PersisterConfig::consolidate_by_size`] (the default) the full monitor is also written in
//! place of an update once the update objects stored after the channel's monitor would weigh as
//! much as the monitor: a startup then reads at most about twice a monitor's bytes, and the writes
//! cost at most twice LDK's bytes. Every reader, LDK's included, reads the stored monitor and then
//! the updates after its id, so a full monitor at any id is valid. At shutdown,
//! [`MonitorPersister::consolidate`] writes every channel's full monitor, so that the next start
//! reads one object per monitor.
//!
//! While a channel's monitor is small ([`PersisterConfig::full_monitors_up_to`], default 64 KiB)
//! every update writes the full monitor instead of an update object, and prunes nothing when no
//! update object was stored after the last full monitor. An object store charges a request
//! whatever it carries (AWS counts requests under 512 KB as small, with a median latency of tens
//! of milliseconds; 64 KiB more on one connection at 50 MB/s adds about 1.3 ms to a 20–30 ms PUT),
//! so an update costs what it cost before, and a startup, after a crash too, reads one object for
//! the channel and finds no update object after it. In async mode the full monitors of one
//! channel are written one after another, and one queued behind a running one is replaced by the
//! next (see "Writing" below): a burst of updates becomes at most two writes, and the durable
//! full monitor reports every update it holds. A fresh channel's monitor is about 8 KB and grows
//! by a few hundred bytes per payment with HTLCs (BENCHMARKS.md's fixtures: 64 KB after 382
//! payments); routing channels with monitors of 1–4 MB keep update objects, as LDK writes them.
//!
//! Every full write reads the monitor's update id before it serializes the monitor, so the bytes
//! stored are at least as new as the id they are stored under: an update that the `ChainMonitor`
//! applies in between (it needs only its shared lock, so it can run beside `consolidate`) is in
//! the bytes, and its own object, above that id, is neither pruned nor reported as held by the
//! full write.
//!
//! # Writing
//!
//! Built with [`MonitorPersister::new`], the persister is synchronous: each `Persist` call returns
//! `Completed` once the object is durable (after the store's retries; `UnrecoverableError` if it
//! still fails, which stops LDK as its own persister does).
//!
//! Built with [`MonitorPersister::new_async`], each call returns `InProgress` at once and nothing
//! inside `Persist` waits for I/O, the archive included. This rests on LDK's asynchronous
//! persistence, which LDK itself calls beta and warns may lead to loss of funds if misused; prefer
//! the synchronous persister unless `Persist` latency matters to you. In async mode:
//! - writes of all channels run concurrently on the store's runtime, at most
//!   [`PersisterConfig::max_requests_in_flight`] requests at once, and by default no more than
//!   the store takes ([`PersisterConfig::adaptive_concurrency`]);
//! - each durable update is reported exactly once, from a thread of the persister's own that
//!   nothing else waits on (never from a store worker, so a `ChainMonitor` lock taken in the
//!   report cannot hold up any I/O): pushed to the `ChainMonitor`
//!   ([`bind_chain_monitor`](MonitorPersister::bind_chain_monitor)), or queued for it to pull,
//!   with [`get_update_future`](MonitorPersister::get_update_future) woken;
//! - a write that fails is retried in the background with capped backoff until it succeeds, or
//!   until a later full monitor of the channel is durable: that monitor holds the update, so every
//!   pending update of the channel up to its id is reported then (as LDK's `Persist` docs allow).
//!   [`health`](MonitorPersister::health) says which writes are failing, so the application can
//!   shut down rather than run with a frozen channel;
//! - a full-monitor write that a newer one of the same channel replaces before it starts is not
//!   sent, so at most one full monitor per channel waits in memory besides the one being written;
//!   one that keeps failing while a newer one waits gives up, and the newer one deletes the update
//!   objects both make stale once it is durable.
//!
//! Writes to one monitor keep their call order, so a full monitor never regresses to an older one.
//!
//! In both modes, before a channel's first write in this process lands, the update objects an
//! earlier run left at or above the first new update id are deleted: the channel's
//! `monitor_updates/<key>/` is listed once and every such id goes, whatever
//! `maximum_pending_updates` that run had. Otherwise an old object above a gap would be read after
//! this run's updates (LDK 0.3's persister applies every listed update above the monitor), or, with
//! fencing, refuse this run's object of the same id. No write of the channel starts before the
//! clear has succeeded: in sync mode a failed clear fails the write (`UnrecoverableError`, and the
//! next call tries again); in async mode the clear is retried in the background as a failing write
//! is, and the channel's writes wait for it.
//!
//! # Reading at startup
//!
//! [`MonitorPersister::read_all_channel_monitors_with_updates`] lists `monitors/`, and reads the
//! monitors in parallel, at most [`PersisterConfig::max_monitors_loading`] at once, their requests
//! within the persister's bound on requests in flight (by default adaptive: it grows from 32
//! while the store answers at a flat latency and nothing is throttled, and backs off on
//! `SlowDown`, other 5xx answers and latency growth; see
//! [`PersisterConfig::adaptive_concurrency`]). For each it
//! strips the sentinel, decodes the monitor, checks that its `persistence_key()` is the key it was
//! stored under, then applies the updates `update_id + 1, + 2, …` until one is absent; it never
//! applies past a gap. Any error but "not found" fails the load, naming the key. Loading writes
//! nothing. By default ([`LoadMode::List`]) the update ids come from one listing of
//! `monitor_updates/` made beside that of `monitors/` (one request per 1,000 update objects), so a
//! monitor with no update object after it costs one read; [`LoadMode::Probe`] reads the next id
//! instead, as LDK does, for a store whose listings may miss a new object. The blocking variant decodes and applies on [`PersisterConfig::load_threads`] threads
//! (every core by default); the async one on the task that awaits it.
//!
//! The startup sequence with a `ChainMonitor`:
//!
//! 1. build the persister, then the `ChainMonitor` with it (`ChainMonitor::new`);
//! 2. in async mode, [`bind_chain_monitor`](MonitorPersister::bind_chain_monitor) it;
//! 3. `read_all_channel_monitors_with_updates()`;
//! 4. read the `ChannelManager` with `ChannelManagerReadArgs` over those monitors;
//! 5. hand each monitor to `ChainMonitor::load_existing_monitor` (no re-persist happens);
//! 6. start syncing the chain and the background processor.
//!
//! At shutdown, after the background processor has returned:
//! [`consolidate`](MonitorPersister::consolidate) (it also waits for the async writes in flight,
//! as [`flush`](MonitorPersister::flush) does), then drop the persister. Both wait for as long as
//! a write keeps failing (a 403 on `archived_monitors/` fails for good); where shutdown must end,
//! [`consolidate_within`](MonitorPersister::consolidate_within) and
//! [`flush_within`](MonitorPersister::flush_within) return when their time is up, with the
//! [`Pending`] work: the objects, how many updates LDK still waits for, and the last error.
//!
//! # Maintenance
//!
//! [`cleanup_stale_updates`](MonitorPersister::cleanup_stale_updates) deletes update objects at or
//! below each stored monitor's id, and those of archived channels. A stored monitor that LDK no
//! longer reads (last updated before 0.0.118 and resolved; every loader skips it) is skipped with
//! its update objects, as LDK's own cleanup does. An archive that cannot tell whether the archived
//! copy exists (a 403 or a 5xx on reading it) fails with that error, and is retried; only "not
//! found" on both the monitor and the archived copy means "neither stored nor archived".

mod background;
mod completion;
mod config;
mod ledger;
mod leftovers;
pub(crate) mod names;
mod read;
pub(crate) mod write;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use lightning::chain::chaininterface::{BroadcasterInterface, FeeEstimator};
use lightning::sign::{EntropySource, SignerProvider};
use lightning::util::logger::Logger;
use tokio::sync::watch;

pub use background::{Pending, PersisterHealth};
pub use completion::MonitorUpdateSink;
pub use config::{PersistMode, PersisterConfig};
pub use read::{LoadMode, LoadedMonitor};

use crate::ObjectKvStore;
use background::AsyncWrites;

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
	/// Present in async mode only.
	background: Option<Arc<AsyncWrites>>,
	/// Per channel: the newest full write, and the update bytes stored after it.
	ledger: ledger::Ledger,
	/// Sync mode: the channels whose earlier run's leftovers are cleared (see `leftovers`).
	cleared: leftovers::Cleared,
	#[cfg(feature = "_test_hooks")]
	hooks: TestHooks,
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
			.field("mode", &self.mode())
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
	/// A synchronous persister over `store`, with the same arguments as LDK's
	/// `MonitorUpdatingPersister::new` but a [`PersisterConfig`] in place of
	/// `maximum_pending_updates`: each `Persist` call returns once its write is durable.
	///
	/// The persister needs the store's own machinery (its per-key queues, batch deletes and
	/// runtime), so it takes an [`ObjectKvStore`] rather than any `KVStore`. To record, meter or
	/// fault requests, wrap the object store below it instead:
	/// `StoreBuilder::from_store(Arc::new(MyLayer(inner)))`.
	pub fn new(
		store: &ObjectKvStore, config: PersisterConfig, logger: L, entropy_source: ES,
		signer_provider: SP, broadcaster: BI, fee_estimator: FE,
	) -> Self {
		MonitorPersister {
			store: store.limited_to(config.max_requests_in_flight, config.adaptive_concurrency),
			config,
			background: None,
			ledger: Default::default(),
			cleared: Default::default(),
			#[cfg(feature = "_test_hooks")]
			hooks: Default::default(),
			logger,
			entropy_source,
			signer_provider,
			broadcaster,
			fee_estimator,
		}
	}

	/// Sync or async, by the constructor used.
	pub fn mode(&self) -> PersistMode {
		match self.background {
			Some(_) => PersistMode::Async,
			None => PersistMode::Sync,
		}
	}

	/// The configuration.
	pub fn config(&self) -> &PersisterConfig {
		&self.config
	}

	/// In async mode, report each durable update straight to `chain_monitor`, starting with any
	/// that completed before this call. Until it is called, the `ChainMonitor` collects
	/// completions itself when it next releases monitor events; either way each is reported once.
	/// The persister keeps only a weak reference (the `ChainMonitor` owns the persister). Reports
	/// are made from the persister's own delivery thread. Does nothing in sync mode.
	///
	/// ```ignore
	/// let chain_monitor = Arc::new(ChainMonitor::new(None, broadcaster, logger, fees, persister.clone(), keys, storage_key));
	/// persister.bind_chain_monitor(&chain_monitor);
	/// ```
	pub fn bind_chain_monitor<S: MonitorUpdateSink + Send + Sync + 'static>(
		&self, chain_monitor: &Arc<S>,
	) {
		let weak = Arc::downgrade(chain_monitor);
		self.bind(completion::Sink::Weak(weak));
	}

	/// [`Self::bind_chain_monitor`] for a sink the persister may hold for good: a
	/// `&'static ChainMonitor`, or a forwarder of your own (a channel to the thread that owns
	/// the `ChainMonitor`, say). Do not hand it an `Arc` of the `ChainMonitor` that owns this
	/// persister: that cycle is never freed.
	pub fn bind_sink(&self, sink: impl MonitorUpdateSink + Send + Sync + 'static) {
		self.bind(completion::Sink::Strong(Arc::new(sink)));
	}

	fn bind(&self, sink: completion::Sink) {
		if let Some(background) = &self.background {
			background.completions().bind(sink);
		}
	}

	/// A future that completes when a durable update is queued for the `ChainMonitor` to pull
	/// (async mode, before [`Self::bind_chain_monitor`]): fold it into the background processor's
	/// sleeper so the node notices at once rather than at its next timer.
	pub fn get_update_future(&self) -> lightning::util::wakers::Future {
		match &self.background {
			Some(background) => background.completions().get_update_future(),
			// Nothing is ever queued in sync mode; a notifier nobody notifies never completes.
			None => lightning::util::wakers::Notifier::new().get_future(),
		}
	}

	/// How the asynchronous writes are doing: the writes failing and being retried, and the last
	/// failure. Always healthy in sync mode (failures are returned to LDK there).
	pub fn health(&self) -> PersisterHealth {
		match &self.background {
			Some(background) => background.health(),
			None => PersisterHealth::default(),
		}
	}

	/// A receiver that sees every change of [`Self::health`] (async mode; in sync mode it never
	/// changes).
	pub fn subscribe_health(&self) -> watch::Receiver<PersisterHealth> {
		match &self.background {
			Some(background) => background.subscribe_health(),
			None => watch::channel(PersisterHealth::default()).1,
		}
	}

	/// Waits until every asynchronous write and archive has finished (those started while it
	/// waits included): durable, or given up because another writer took the store over; and
	/// until their completions are delivered (to the bound `ChainMonitor`, or queued for it). A
	/// write that keeps failing is retried, so this waits for the backend to come back, however
	/// long; where shutdown must not wait, use [`Self::flush_within`] (LDK replays unreported
	/// updates from the `ChannelManager` on the next start). Call it at shutdown, after the
	/// background processor has returned and before the persister is dropped: dropping the
	/// persister stops its retries. Returns at once in sync mode.
	pub async fn flush(&self) {
		if let Some(background) = &self.background {
			background.flush().await;
		}
	}

	/// [`Self::flush`] for synchronous callers.
	pub fn flush_blocking(&self) {
		crate::runtime::block_on(self.flush());
	}

	/// [`Self::flush`] for at most `limit`: `Ok` once everything is finished, or, when the time
	/// is up, the work still [`Pending`] (the objects, how many updates LDK still waits for, and
	/// the last error), which goes on in the background. Awaitable on any executor.
	pub async fn flush_within(&self, limit: Duration) -> Result<(), Pending> {
		match &self.background {
			Some(background) => background.flush_within(limit).await,
			None => Ok(()),
		}
	}

	/// [`Self::flush_within`] for synchronous callers.
	pub fn flush_within_blocking(&self, limit: Duration) -> Result<(), Pending> {
		crate::runtime::block_on(self.flush_within(limit))
	}

	/// Test hook: runs `hook` once, inside the next full-monitor write, between reading the
	/// monitor's update id and serializing the monitor. Not part of the API.
	#[cfg(feature = "_test_hooks")]
	#[doc(hidden)]
	pub fn set_full_write_hook(&self, hook: impl FnOnce() + Send + 'static) {
		*self.hooks.full_write.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(hook));
	}
}

impl<L, ES, SP, BI, FE> MonitorPersister<L, ES, SP, BI, FE>
where
	L: Deref + Clone + Send + Sync + 'static,
	ES: Deref + Clone + Send + Sync + 'static,
	SP: Deref + Clone + Send + Sync + 'static,
	BI: Deref + Clone + Send + Sync + 'static,
	FE: Deref + Clone + Send + Sync + 'static,
	L::Target: Logger,
	ES::Target: EntropySource + Sized,
	SP::Target: SignerProvider + Sized,
	<SP::Target as SignerProvider>::EcdsaSigner: Send,
	BI::Target: BroadcasterInterface,
	FE::Target: FeeEstimator,
{
	/// An asynchronous persister over `store`: each `Persist` call returns `InProgress` at once
	/// and the write completes in the background (see the module docs, and LDK's warning that
	/// asynchronous persistence is beta). The arguments are shared with background tasks, hence
	/// `Clone + Send + Sync + 'static` (the `Arc`s a node holds are). Fails only if the thread
	/// that delivers completions cannot be started.
	pub fn new_async(
		store: &ObjectKvStore, config: PersisterConfig, logger: L, entropy_source: ES,
		signer_provider: SP, broadcaster: BI, fee_estimator: FE,
	) -> std::io::Result<Self> {
		let mut persister = MonitorPersister::new(
			store,
			config,
			logger,
			entropy_source,
			signer_provider,
			broadcaster,
			fee_estimator,
		);
		// Archiving reads the monitor with its updates applied, which needs LDK's arguments; a
		// synchronous twin on the same view of the store (the same bound on requests in flight)
		// does it on the background's behalf.
		let twin = Arc::new(MonitorPersister {
			store: persister.store.clone(),
			config: persister.config.clone(),
			background: None,
			ledger: Default::default(),
			cleared: Default::default(),
			#[cfg(feature = "_test_hooks")]
			hooks: Default::default(),
			logger: persister.logger.clone(),
			entropy_source: persister.entropy_source.clone(),
			signer_provider: persister.signer_provider.clone(),
			broadcaster: persister.broadcaster.clone(),
			fee_estimator: persister.fee_estimator.clone(),
		});
		let archiver: background::Archiver = Arc::new(move |monitor_key: String| {
			let twin = Arc::clone(&twin);
			Box::pin(async move { twin.archive(&monitor_key).await })
		});
		persister.background =
			Some(AsyncWrites::new(persister.store.clone(), &persister.config, archiver)?);
		Ok(persister)
	}
}

/// Test hooks (feature `_test_hooks`).
#[cfg(feature = "_test_hooks")]
#[derive(Default)]
struct TestHooks {
	/// Runs once, in a full write, between reading the id and serializing the monitor.
	full_write: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

#[cfg(feature = "_test_hooks")]
impl TestHooks {
	fn between_id_and_bytes(&self) {
		// Taken before it runs: the hook may itself cause a full write.
		let hook = self.full_write.lock().unwrap_or_else(|p| p.into_inner()).take();
		if let Some(hook) = hook {
			hook();
		}
	}
}

impl<L: Deref, ES: Deref, SP: Deref, BI: Deref, FE: Deref> Drop
	for MonitorPersister<L, ES, SP, BI, FE>
where
	L::Target: Logger,
	ES::Target: EntropySource + Sized,
	SP::Target: SignerProvider + Sized,
	BI::Target: BroadcasterInterface,
	FE::Target: FeeEstimator,
{
	fn drop(&mut self) {
		if let Some(background) = &self.background {
			// Background retries would otherwise keep the store's runtime alive for good.
			background.stop();
		}
	}
}
