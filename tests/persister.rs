//! The monitor persister with real LDK flows: two nodes, a channel, payments both ways and a
//! force-close, persisted at the same time through LDK's own `MonitorUpdatingPersister` (into one
//! store) and this crate's `MonitorPersister` (into another), so that every stored object can be
//! compared byte for byte, and each store loaded with the other's reader. The flow stops to reload
//! from the bucket in the middle and at the end; the reloaded monitors must equal the live ones.
//!
//! The async mode cannot drive LDK's functional-test harness (its helpers expect each monitor
//! update to complete inside the call), so it replays the recorded `Persist` calls of a real flow,
//! with real monitor bytes, against a store with random latency.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::BlockHash;
use common::backends::{self, Backend};
use common::dual_flow::*;
use common::ldk_flow::{compare_monitors, MonitorMatch};
use common::wrappers::{CountInFlight, CountRequests, Hooked, InFlight, RandomLatency, Request};
use ldk_object_store::persister::MonitorUpdateSink;
use ldk_object_store::LoadMode;
use lightning::chain::chainmonitor::Persist;
use lightning::chain::ChannelMonitorUpdateStatus;
use lightning::ln::functional_test_utils::*;
use lightning::ln::types::ChannelId;
use lightning::util::persist::KVStoreSync;
use lightning::util::test_channel_signer::TestChannelSigner;

#[test]
fn dual_flow_memory() {
	run_dual_flow(backends::memory);
}

#[test]
fn dual_flow_localstack() {
	if backends::s3("LOCALSTACK", "persister").is_some() {
		run_dual_flow(|name| backends::s3("LOCALSTACK", name).unwrap());
	}
}

#[test]
fn full_monitors_only_when_maximum_pending_updates_is_zero() {
	let make = backends::memory;
	let flow = dual_flow(&[make("a"), make("b")], &[make("c"), make("d")], 0, 4);
	assert!(!flow.calls.is_empty());
}

/// Records every completion it is told about.
#[derive(Default)]
struct RecordingSink(Mutex<Vec<(ChannelId, u64)>>);

impl MonitorUpdateSink for RecordingSink {
	fn monitor_update_completed(&self, channel_id: ChannelId, update_id: u64) {
		self.0.lock().unwrap().push((channel_id, update_id));
	}
}

/// The completions LDK waits for: every new monitor and every update that came with one.
fn expected_completions(calls: &[Call], channel_id: ChannelId) -> Vec<(ChannelId, u64)> {
	let keys = replay_keys();
	calls
		.iter()
		.filter_map(|call| match call {
			Call::New { monitor, .. } => {
				Some((channel_id, decode(monitor, &keys).get_latest_update_id()))
			},
			Call::Update { update: Some(update), .. } => Some((channel_id, update.update_id)),
			Call::Update { update: None, .. } => None,
		})
		.collect()
}

/// Replays node 0's recorded calls into an async-mode persister over `backend` with random latency
/// and a bound of 3 writes in flight. Each completion arrives exactly once; the bounds hold; the
/// stored state loads (all modes) to the final monitor.
fn async_replay(backend: &Backend, calls: &[Call], channel_id: ChannelId, bind: bool) {
	let cfg = static_replay_cfg();
	let keys = &cfg.keys_manager;
	let counter = Arc::new(InFlight::default());
	let slow = backend
		.wrapped(|s| Hooked::wrap(s, Arc::new(RandomLatency { max: Duration::from_millis(4) })))
		.wrapped(|s| Hooked::wrap(s, Arc::new(CountInFlight(Arc::clone(&counter)))));
	let async_config = config(5, LoadMode::Probe).with_max_requests_in_flight(3);
	let persister = ours_async(&slow.store(), cfg, async_config);
	let sink = Arc::new(RecordingSink::default());
	if bind {
		persister.bind_chain_monitor(&sink);
	}

	for call in calls {
		let status = match call {
			Call::New { name, monitor } => {
				persister.persist_new_channel(*name, &decode(monitor, keys))
			},
			Call::Update { name, update, monitor } => {
				persister.update_persisted_channel(*name, update.as_ref(), &decode(monitor, keys))
			},
		};
		assert_eq!(status, ChannelMonitorUpdateStatus::InProgress);
	}

	let mut expected = expected_completions(calls, channel_id);
	// `flush` returns once every write has finished, so a bound sink has heard of every update.
	persister.flush_blocking();
	if bind {
		assert_eq!(sink.0.lock().unwrap().len(), expected.len(), "flush returned early");
	}
	let deadline = Instant::now() + Duration::from_secs(120);
	let mut pulled = Vec::new();
	loop {
		if !bind {
			pulled
				.extend(Persist::<TestChannelSigner>::get_and_clear_completed_updates(&persister));
		}
		let got = if bind { sink.0.lock().unwrap().len() } else { pulled.len() };
		if got >= expected.len() || Instant::now() > deadline {
			break;
		}
		std::thread::sleep(Duration::from_millis(20));
	}
	// Let any duplicate show up before comparing.
	std::thread::sleep(Duration::from_millis(200));
	if !bind {
		pulled.extend(Persist::<TestChannelSigner>::get_and_clear_completed_updates(&persister));
	}
	let mut got = if bind { sink.0.lock().unwrap().clone() } else { pulled };
	got.sort();
	expected.sort();
	assert_eq!(got, expected, "each completion exactly once");

	let (max_total, max_per_key) = counter.maxima();
	assert!(max_total <= 3, "{max_total} writes in flight with a bound of 3");
	assert_eq!(max_per_key, 1, "two requests for one object were in flight");

	let Some(Call::Update { monitor: last, .. }) = calls.last() else {
		panic!("no updates recorded")
	};
	let live = decode(last, keys);
	for mode in MODES {
		let reader = ours(&backend.reader(), cfg, config(5, mode));
		let loaded = reader.read_all_channel_monitors_with_updates_blocking().unwrap();
		assert_eq!(loaded.len(), 1);
		assert_eq!(loaded[0].1.get_latest_update_id(), live.get_latest_update_id(), "{mode:?}");
		assert_ne!(
			compare_monitors(&loaded[0].1, &live, keys),
			MonitorMatch::Different,
			"{mode:?}"
		);
	}
}

#[test]
fn async_mode_reports_each_durable_update_once() {
	let flow = run_dual_flow(backends::memory);
	async_replay(&backends::memory("async-push"), &flow.calls, flow.channel_id, true);
	async_replay(&backends::memory("async-pull"), &flow.calls, flow.channel_id, false);
	if let Some(localstack) = backends::s3("LOCALSTACK", "async") {
		async_replay(&localstack, &flow.calls, flow.channel_id, true);
	}
}

type LoadResult = Result<Vec<(BlockHash, Monitor)>, lightning::io::Error>;

fn load_counted(backend: &Backend, mode: LoadMode) -> (LoadResult, Arc<CountRequests>) {
	let mut cfgs = create_chanmon_cfgs(1);
	cfgs[0].keys_manager = replay_keys();
	let counter = Arc::new(CountRequests::default());
	let counted = backend.wrapped(|s| Hooked::wrap(s, Arc::clone(&counter)));
	let persister = ours(&counted.reader(), &cfgs[0], config(1000, mode));
	(persister.read_all_channel_monitors_with_updates_blocking(), counter)
}

/// Probing stops at the first absent update, whether that is the end or a gap, with exactly one
/// failed read; the list mode finds the same run with one listing; errors other than "not found"
/// fail the load.
#[test]
fn probing_stops_at_not_found_and_at_a_gap() {
	let make = backends::memory;
	let ours_backends = [make("o0"), make("o1")];
	dual_flow(&[make("l0"), make("l1")], &ours_backends, 1000, 6);
	let backend = &ours_backends[0];
	let store = backend.store();
	let (key, stored_id, pending) = stored_layout(&store);
	assert!(pending.len() >= 6, "the flow left {} pending updates", pending.len());
	let last = *pending.last().unwrap();
	assert_eq!(pending, (stored_id + 1..=last).collect::<Vec<_>>());

	for (mode, gets) in [
		(LoadMode::Probe, 1 + pending.len() + 1),
		(LoadMode::List, 1 + pending.len()),
		(LoadMode::ListEach, 1 + pending.len()),
	] {
		let (loaded, counter) = load_counted(backend, mode);
		assert_eq!(loaded.unwrap()[0].1.get_latest_update_id(), last, "{mode:?}");
		assert_eq!(counter.count(Request::Get), gets, "{mode:?}: reads");
	}

	let gap = pending[pending.len() / 2];
	KVStoreSync::remove(&store, "monitor_updates", &key, &gap.to_string(), false).unwrap();
	let applied = (gap - 1 - stored_id) as usize;
	for mode in MODES {
		let (loaded, counter) = load_counted(backend, mode);
		assert_eq!(
			loaded.unwrap()[0].1.get_latest_update_id(),
			gap - 1,
			"{mode:?}: applied past the gap"
		);
		match mode {
			LoadMode::Probe => assert_eq!(counter.count(Request::Get), 1 + applied + 1),
			LoadMode::List | LoadMode::ListEach => {
				assert_eq!(counter.count(Request::Get), 1 + applied);
				assert_eq!(
					counter.count(Request::List),
					2,
					"one listing of monitors, one of updates"
				);
			},
			LoadMode::Pipelined { window } => {
				assert!(counter.count(Request::Get) <= 1 + applied + window)
			},
		}
	}

	// A 403 for the missing update is not the end of the updates: a probing load fails, naming
	// the key. (The list mode never reads an id that the listing does not show.)
	let forbidding =
		backend.wrapped(|s| Hooked::wrap(s, Arc::new(common::wrappers::MissingAnswers::Forbidden)));
	for mode in [LoadMode::Probe, LoadMode::Pipelined { window: 8 }] {
		let Err(err) = load_counted(&forbidding, mode).0 else {
			panic!("{mode:?}: loaded despite a 403")
		};
		assert_eq!(err.kind(), lightning::io::ErrorKind::PermissionDenied, "{mode:?}: {err}");
		assert!(err.to_string().contains(&key), "{err}");
	}
}

/// Pruning after a consolidation is one bulk request, where LDK's persister sends one delete per
/// update object.
#[test]
fn stale_updates_are_deleted_in_batches() {
	let (ours_count, ldk_count) =
		(Arc::new(CountRequests::default()), Arc::new(CountRequests::default()));
	let counted = |name: &str, counter: &Arc<CountRequests>| {
		backends::memory(name).wrapped(|s| Hooked::wrap(s, Arc::clone(counter)))
	};
	dual_flow(
		&[counted("l0", &ldk_count), counted("l1", &ldk_count)],
		&[counted("o0", &ours_count), counted("o1", &ours_count)],
		5,
		8,
	);
	let (ours, theirs) =
		(ours_count.count(Request::BulkDelete), ldk_count.count(Request::BulkDelete));
	println!("delete requests: ours {ours}, LDK's {theirs}");
	assert!(ours > 0, "no consolidation happened");
	assert_eq!(theirs, 6 * ours, "LDK deletes 6 objects one by one per consolidation");
}

/// Archiving writes the monitor with its updates applied, removes it and its update objects,
/// and can be repeated; the cleanup removes stale and orphaned update objects only.
#[test]
fn archive_and_cleanup() {
	let make = backends::memory;
	let ours_backends = [make("o0"), make("o1")];
	dual_flow(&[make("l0"), make("l1")], &ours_backends, 1000, 4);
	let backend = &ours_backends[0];
	let store = backend.store();
	let (key, stored_id, pending) = stored_layout(&store);
	let mut cfgs = create_chanmon_cfgs(1);
	cfgs[0].keys_manager = replay_keys();
	let persister = ours(&store, &cfgs[0], config(1000, LoadMode::Probe));

	// An archived channel's leftover update goes; one of a channel neither stored nor archived
	// stays (tests/no_loss.rs covers that rule).
	let orphan = "ab".repeat(32);
	KVStoreSync::write(&store, "archived_monitors", "", &orphan, vec![1]).unwrap();
	KVStoreSync::write(&store, "monitor_updates", &orphan, "7", vec![1]).unwrap();
	KVStoreSync::write(&store, "monitor_updates", &key, &stored_id.to_string(), vec![2]).unwrap();
	let deleted = persister.cleanup_stale_updates_blocking().unwrap();
	assert!(deleted >= 2, "deleted {deleted}");
	assert!(KVStoreSync::list(&store, "monitor_updates", &orphan).unwrap().is_empty());
	KVStoreSync::remove(&store, "archived_monitors", "", &orphan, false).unwrap();
	assert_eq!(stored_layout(&store).2, pending, "pending updates must survive the cleanup");

	let before = persister.read_all_channel_monitors_with_updates_blocking().unwrap();
	let name = before[0].1.persistence_key();
	for _ in 0..2 {
		Persist::<TestChannelSigner>::archive_persisted_channel(&persister, name);
		assert!(KVStoreSync::list(&store, "monitors", "").unwrap().is_empty());
		assert!(KVStoreSync::list(&store, "monitor_updates", &key).unwrap().is_empty());
		let archived = KVStoreSync::read(&store, "archived_monitors", "", &key).unwrap();
		let archived = decode(&archived, &cfgs[0].keys_manager);
		assert_eq!(archived.get_latest_update_id(), before[0].1.get_latest_update_id());
	}
}

/// The async mode wired to a real `ChainMonitor`, as a node would: the recorded channel of a real
/// flow is registered and updated through the `ChainMonitor`, every call returns `InProgress`, and
/// the persister's reports through `bind_chain_monitor` clear every pending update.
#[test]
fn async_mode_completes_updates_in_a_real_chain_monitor() {
	use lightning::chain::Watch;

	let flow = run_dual_flow(backends::memory);
	// 'static parts, as a node's `Arc`s would be, so the persister can hold a weak reference.
	let cfg = static_replay_cfg();
	let backend = backends::memory("chain-monitor");
	let (persister, chain_monitor) =
		async_chain_monitor(&backend.store(), cfg, config(5, LoadMode::Probe));
	persister.bind_chain_monitor(&chain_monitor);

	watch_recorded_channel(&chain_monitor, &flow, cfg);
	let mut updates = 0;
	for call in &flow.calls[1..] {
		if let Call::Update { update: Some(update), .. } = call {
			let status = chain_monitor.update_channel(flow.channel_id, update);
			assert_eq!(status, ChannelMonitorUpdateStatus::InProgress);
			updates += 1;
		}
	}
	assert!(updates > 20, "{updates} updates replayed");

	let deadline = Instant::now() + Duration::from_secs(60);
	while chain_monitor.list_pending_monitor_updates().values().any(|ids| !ids.is_empty()) {
		assert!(
			Instant::now() < deadline,
			"updates still pending: {:?}",
			chain_monitor.list_pending_monitor_updates()
		);
		std::thread::sleep(Duration::from_millis(10));
	}
	let loaded = ours(&backend.reader(), cfg, config(5, LoadMode::Probe))
		.read_all_channel_monitors_with_updates_blocking()
		.unwrap();
	let live = chain_monitor.get_monitor(flow.channel_id).unwrap();
	assert_eq!(loaded[0].1.get_latest_update_id(), live.get_latest_update_id());
}

/// In async mode a full-monitor write that a newer one of the same channel replaced before it
/// started is not sent: twenty chain-sync re-persists made while a write takes 2 s cost a few
/// PUTs, and the stored monitor is the newest.
#[test]
fn superseded_full_writes_are_not_sent() {
	use common::wrappers::FixedLatency;
	let flow = run_dual_flow(backends::memory);
	let cfg = static_replay_cfg();
	let counter = Arc::new(CountRequests::default());
	let backend = backends::memory("superseded")
		.wrapped(|s| Hooked::wrap(s, Arc::new(FixedLatency(Duration::from_secs(2)))))
		.wrapped(|s| Hooked::wrap(s, Arc::clone(&counter)));
	let persister = ours_async(&backend.store(), cfg, config(1000, LoadMode::Probe));
	let Some(Call::Update { name, monitor: last, .. }) = flow.calls.last() else {
		panic!("no update recorded")
	};
	let live = decode(last, &cfg.keys_manager);
	counter.reset();
	for _ in 0..20 {
		let status = persister.update_persisted_channel(*name, None, &live);
		assert_eq!(status, ChannelMonitorUpdateStatus::InProgress);
	}
	persister.flush_blocking();
	let puts = counter.count(Request::Put);
	println!("PUTs for 20 queued full writes: {puts}");
	assert!(puts <= 3, "{puts} PUTs: superseded full writes were sent");
	let loaded = ours(&backend.reader(), cfg, config(1000, LoadMode::Probe))
		.read_all_channel_monitors_with_updates_blocking()
		.unwrap();
	assert_eq!(loaded[0].1.get_latest_update_id(), live.get_latest_update_id());
}
