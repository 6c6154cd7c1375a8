//! A flow that persists every `ChannelMonitor` call through LDK's own `MonitorUpdatingPersister`
//! (into one store) and this crate's `MonitorPersister` (into another) at once, checking along the
//! way that both stores hold the same bytes and load to the live monitors. Used by the persister
//! tests and, for realistic data, by the CLI tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bitcoin::{BlockHash, Network};
use ldk_object_store::{LoadMode, MonitorPersister, ObjectKvStore, PersisterConfig};
use lightning::chain::chainmonitor::Persist;
use lightning::chain::channelmonitor::{ChannelMonitor, ChannelMonitorUpdate};
use lightning::chain::ChannelMonitorUpdateStatus;
use lightning::ln::functional_test_utils::*;
use lightning::ln::types::ChannelId;
use lightning::util::persist::{
	KVStoreSync, MigratableKVStore, MonitorName, MonitorUpdatingPersister,
};
use lightning::util::ser::{ReadableArgs, Writeable};
use lightning::util::test_channel_signer::TestChannelSigner;
use lightning::util::test_utils::{
	TestBroadcaster, TestFeeEstimator, TestKeysInterface, TestLogger,
};

use super::backends::Backend;
use super::ldk_flow::{
	compare_monitors, force_close_and_confirm, open_channel, pay, with_network_of, MonitorMatch,
};
use super::wrappers::{CountRequests, Hooked, Request};

pub type Monitor = ChannelMonitor<TestChannelSigner>;
pub type Ours<'a> = MonitorPersister<
	&'a TestLogger,
	&'a TestKeysInterface,
	&'a TestKeysInterface,
	&'a TestBroadcaster,
	&'a TestFeeEstimator,
>;
pub type Ldk<'a> = MonitorUpdatingPersister<
	&'a ObjectKvStore,
	&'a TestLogger,
	&'a TestKeysInterface,
	&'a TestKeysInterface,
	&'a TestBroadcaster,
	&'a TestFeeEstimator,
>;

pub const MODES: [LoadMode; 4] =
	[LoadMode::Probe, LoadMode::Pipelined { window: 8 }, LoadMode::List, LoadMode::ListEach];

/// Writes where LDK's persister writes (no consolidation by size, update objects whatever the
/// monitor's size), so that both stores hold the same objects byte for byte.
pub fn config(max_pending: u64, load_mode: LoadMode) -> PersisterConfig {
	PersisterConfig::default()
		.with_maximum_pending_updates(max_pending)
		.with_load_mode(load_mode)
		.with_consolidate_by_size(false)
		.with_full_monitors_up_to(0)
}

pub fn ours<'a>(
	store: &ObjectKvStore, cfg: &'a TestChanMonCfg, config: PersisterConfig,
) -> Ours<'a> {
	MonitorPersister::new(
		store,
		config,
		&cfg.logger,
		&cfg.keys_manager,
		&cfg.keys_manager,
		&cfg.tx_broadcaster,
		&cfg.fee_estimator,
	)
}

/// An async persister: its arguments are shared with background tasks, so they live for good.
pub fn ours_async(
	store: &ObjectKvStore, cfg: &'static TestChanMonCfg, config: PersisterConfig,
) -> Ours<'static> {
	MonitorPersister::new_async(
		store,
		config,
		&cfg.logger,
		&cfg.keys_manager,
		&cfg.keys_manager,
		&cfg.tx_broadcaster,
		&cfg.fee_estimator,
	)
	.expect("starting the completion thread")
}

/// A real `ChainMonitor` over an async persister, as a node holds it (no chain source).
pub type AsyncChainMonitor = lightning::chain::chainmonitor::ChainMonitor<
	TestChannelSigner,
	&'static lightning::util::test_utils::TestChainSource,
	&'static TestBroadcaster,
	&'static TestFeeEstimator,
	&'static TestLogger,
	&'static Ours<'static>,
	&'static TestKeysInterface,
>;

/// An async persister over `store` and a real `ChainMonitor` over it, both for good (the
/// persister's background tasks share its arguments). Not bound: the caller decides.
pub fn async_chain_monitor(
	store: &ObjectKvStore, cfg: &'static TestChanMonCfg, config: PersisterConfig,
) -> (&'static Ours<'static>, Arc<AsyncChainMonitor>) {
	let persister: &'static Ours<'static> = Box::leak(Box::new(ours_async(store, cfg, config)));
	(persister, chain_monitor_over(persister, cfg))
}

/// A real `ChainMonitor` over `persister` (sync or async), for good. Not bound.
pub fn chain_monitor_over(
	persister: &'static Ours<'static>, cfg: &'static TestChanMonCfg,
) -> Arc<AsyncChainMonitor> {
	use lightning::sign::NodeSigner;
	Arc::new(lightning::chain::chainmonitor::ChainMonitor::new(
		None,
		&cfg.tx_broadcaster,
		&cfg.logger,
		&cfg.fee_estimator,
		persister,
		&cfg.keys_manager,
		cfg.keys_manager.get_peer_storage_key(),
	))
}

/// One node's test configuration with [`replay_keys`], for good (async persisters need that).
pub fn static_replay_cfg() -> &'static TestChanMonCfg {
	Box::leak(Box::new({
		let mut cfgs = create_chanmon_cfgs(1);
		cfgs[0].keys_manager = replay_keys();
		cfgs.remove(0)
	}))
}

pub fn ldk<'a>(store: &'a ObjectKvStore, cfg: &'a TestChanMonCfg, max_pending: u64) -> Ldk<'a> {
	MonitorUpdatingPersister::new(
		store,
		&cfg.logger,
		max_pending,
		&cfg.keys_manager,
		&cfg.keys_manager,
		&cfg.tx_broadcaster,
		&cfg.fee_estimator,
	)
}

/// One `Persist` call as LDK made it, with the monitor's bytes at that moment.
#[derive(Clone)]
pub enum Call {
	New { name: MonitorName, monitor: Vec<u8> },
	Update { name: MonitorName, update: Option<ChannelMonitorUpdate>, monitor: Vec<u8> },
}

/// Hands every call to LDK's persister and to ours, and records it.
pub struct Dual<'a> {
	ldk: Ldk<'a>,
	ours: Ours<'a>,
	calls: Mutex<Vec<Call>>,
}

impl Persist<TestChannelSigner> for Dual<'_> {
	fn persist_new_channel(
		&self, name: MonitorName, monitor: &Monitor,
	) -> ChannelMonitorUpdateStatus {
		self.calls.lock().unwrap().push(Call::New { name, monitor: monitor.encode() });
		let theirs = self.ldk.persist_new_channel(name, monitor);
		let mine = self.ours.persist_new_channel(name, monitor);
		assert_eq!(
			(theirs, mine),
			(ChannelMonitorUpdateStatus::Completed, ChannelMonitorUpdateStatus::Completed)
		);
		mine
	}

	fn update_persisted_channel(
		&self, name: MonitorName, update: Option<&ChannelMonitorUpdate>, monitor: &Monitor,
	) -> ChannelMonitorUpdateStatus {
		let call = Call::Update { name, update: update.cloned(), monitor: monitor.encode() };
		self.calls.lock().unwrap().push(call);
		let theirs = self.ldk.update_persisted_channel(name, update, monitor);
		let mine = self.ours.update_persisted_channel(name, update, monitor);
		assert_eq!(
			(theirs, mine),
			(ChannelMonitorUpdateStatus::Completed, ChannelMonitorUpdateStatus::Completed)
		);
		mine
	}

	fn archive_persisted_channel(&self, name: MonitorName) {
		Persist::<TestChannelSigner>::archive_persisted_channel(&self.ldk, name);
		Persist::<TestChannelSigner>::archive_persisted_channel(&self.ours, name);
	}
}

/// Every object of a store, by `primary/secondary/key`.
pub fn objects(store: &ObjectKvStore) -> BTreeMap<String, Vec<u8>> {
	store
		.list_all_keys()
		.unwrap()
		.into_iter()
		.map(|(p, s, k)| (format!("{p}/{s}/{k}"), KVStoreSync::read(store, &p, &s, &k).unwrap()))
		.collect()
}

/// Loads `backend` as a node restarting from the bucket would (a new store instance), in every
/// mode, and checks: the loaded monitors are those LDK's own persister loads from the same objects,
/// at the live update ids, equal to the live monitors wherever LDK's own load is, all modes agree,
/// and loading sent no write or delete.
///
/// (LDK does not write a monitor again for every block it processes, so after blocks the stored
/// state can lag the live one by design; LDK's own load shows the same lag.)
pub fn reload_and_compare(
	backend: &Backend, node: &Node<'_, '_, '_>, cfg: &TestChanMonCfg, max_pending: u64, label: &str,
) {
	let reference_store = backend.reader();
	let reference =
		ldk(&reference_store, cfg, max_pending).read_all_channel_monitors_with_updates().unwrap();
	let live_ids = node.chain_monitor.chain_monitor.list_monitors();
	assert_eq!(reference.len(), live_ids.len(), "{label}: LDK's load");
	let mut by_mode = Vec::new();
	for mode in MODES {
		let counter = Arc::new(CountRequests::default());
		let counted = backend.wrapped(|s| Hooked::wrap(s, Arc::clone(&counter)));
		let persister = ours(&counted.reader(), cfg, config(max_pending, mode));
		let loaded = persister.read_all_channel_monitors_with_updates_blocking().unwrap();
		assert_eq!(loaded.len(), live_ids.len(), "{label} {mode:?}: monitors loaded");
		for (_, monitor) in &loaded {
			let live = node.chain_monitor.chain_monitor.get_monitor(monitor.channel_id()).unwrap();
			assert_eq!(
				monitor.get_latest_update_id(),
				live.get_latest_update_id(),
				"{label} {mode:?}"
			);
			let (_, theirs) =
				reference.iter().find(|(_, m)| m.channel_id() == monitor.channel_id()).unwrap();
			let keys = &cfg.keys_manager;
			assert_eq!(
				compare_monitors(monitor, theirs, keys),
				MonitorMatch::Equal,
				"{label} {mode:?}: not LDK's load"
			);
			if compare_monitors(theirs, &live, keys) != MonitorMatch::Different {
				assert_ne!(
					compare_monitors(monitor, &live, keys),
					MonitorMatch::Different,
					"{label} {mode:?}"
				);
			}
		}
		assert_eq!(counter.count(Request::Put), 0, "{label} {mode:?}: loading wrote");
		assert_eq!(counter.count(Request::BulkDelete), 0, "{label} {mode:?}: loading deleted");
		by_mode.push(loaded.into_iter().map(|(_, m)| m).collect::<Vec<_>>());
	}
	assert!(by_mode.windows(2).all(|w| w[0] == w[1]), "{label}: load modes disagree");
}

/// What a dual flow leaves behind for further checks.
pub struct FlowRecord {
	pub calls: Vec<Call>,
	pub channel_id: ChannelId,
}

/// Runs the dual flow: `ldk_backends[i]` receives node i's monitors through LDK's persister,
/// `our_backends[i]` through ours; both with `max_pending`. Checks byte identity and reloads along
/// the way. Returns node 0's recorded calls.
pub fn dual_flow(
	ldk_backends: &[Backend; 2], our_backends: &[Backend; 2], max_pending: u64, payments: u64,
) -> FlowRecord {
	let chanmon_cfgs = create_chanmon_cfgs(2);
	let ldk_stores = [ldk_backends[0].store(), ldk_backends[1].store()];
	let our_stores = [our_backends[0].store(), our_backends[1].store()];
	let duals: Vec<Dual> = (0..2)
		.map(|i| Dual {
			ldk: ldk(&ldk_stores[i], &chanmon_cfgs[i], max_pending),
			ours: ours(&our_stores[i], &chanmon_cfgs[i], config(max_pending, LoadMode::Probe)),
			calls: Mutex::default(),
		})
		.collect();
	with_network_of(&chanmon_cfgs, [&duals[0], &duals[1]], |nodes| {
		let check = |label: &str| {
			for i in 0..2 {
				let (theirs, mine) = (objects(&ldk_stores[i]), objects(&our_stores[i]));
				assert_eq!(
					theirs.keys().collect::<Vec<_>>(),
					mine.keys().collect::<Vec<_>>(),
					"{label}: node {i} stores different keys"
				);
				for (key, bytes) in &theirs {
					assert!(
						mine[key] == *bytes,
						"{label}: node {i}: {key} differs from LDK's bytes"
					);
				}
				let updates = mine.keys().filter(|k| k.starts_with("monitor_updates/")).count();
				assert!(
					updates as u64 <= max_pending.max(1),
					"{label}: {updates} update objects kept"
				);
				// Each store loads with either reader, to the same monitors.
				let label = format!("{label}, node {i}");
				reload_and_compare(
					&ldk_backends[i],
					&nodes[i],
					&chanmon_cfgs[i],
					max_pending,
					&label,
				);
				reload_and_compare(
					&our_backends[i],
					&nodes[i],
					&chanmon_cfgs[i],
					max_pending,
					&label,
				);
			}
		};

		let channel_id = open_channel(nodes, 1_000_000);
		check("after opening");
		for n in 0..payments {
			let (from, to) = if n % 2 == 0 { (0, 1) } else { (1, 0) };
			pay(&nodes[from], &nodes[to], 1_000_000 + n * 1_000, n, None);
			if n % 7 == 3 {
				check(&format!("after payment {n}"));
			}
		}

		force_close_and_confirm(nodes, channel_id, 1_000_000, "persister test");
		check("after the force-close");

		let calls = duals[0].calls.lock().unwrap().clone();
		FlowRecord { calls, channel_id }
	})
}

pub fn run_dual_flow(make: impl Fn(&str) -> Backend) -> FlowRecord {
	let ldk_backends = [make("ldk-0"), make("ldk-1")];
	let our_backends = [make("ours-0"), make("ours-1")];
	dual_flow(&ldk_backends, &our_backends, 5, 16)
}

/// Keys that decode monitors of node 0 in any order (the test signer otherwise refuses to go back
/// to an older commitment state).
pub fn replay_keys() -> TestKeysInterface {
	let mut keys = TestKeysInterface::new(&[0; 32], Network::Testnet);
	keys.disable_all_state_policy_checks = true;
	keys
}

pub fn decode(bytes: &[u8], keys: &TestKeysInterface) -> Monitor {
	<(BlockHash, Monitor)>::read(&mut &bytes[..], (keys, keys)).unwrap().1
}

/// The first monitor key of a store, the update id of the stored monitor object itself, and the
/// ids of the update objects above it.
pub fn stored_layout(store: &ObjectKvStore) -> (String, u64, Vec<u64>) {
	let key = KVStoreSync::list(store, "monitors", "").unwrap().into_iter().min().unwrap();
	let bytes = KVStoreSync::read(store, "monitors", "", &key).unwrap();
	let body = bytes.strip_prefix(&[0xff, 0xff][..]).expect("sentinel");
	let stored_id = decode(body, &replay_keys()).get_latest_update_id();
	let mut pending: Vec<u64> = KVStoreSync::list(store, "monitor_updates", &key)
		.unwrap()
		.iter()
		.map(|k| k.parse().unwrap())
		.filter(|id| *id > stored_id)
		.collect();
	pending.sort();
	(key, stored_id, pending)
}

/// Hands the flow's new channel, as recorded, to `chain_monitor` (an async persister's: the
/// answer is `InProgress`).
pub fn watch_recorded_channel(
	chain_monitor: &AsyncChainMonitor, flow: &FlowRecord, cfg: &TestChanMonCfg,
) {
	use lightning::chain::Watch;
	let Some(Call::New { monitor, .. }) = flow.calls.first() else { panic!("no new channel") };
	let status = chain_monitor.watch_channel(flow.channel_id, decode(monitor, &cfg.keys_manager));
	assert_eq!(status, Ok(lightning::chain::ChannelMonitorUpdateStatus::InProgress));
}
