//! Consolidation: the persister writes a small channel's full monitor for every update, a larger
//! one's in place of an update object once the update objects stored after it would weigh as much
//! as the monitor, and
//! `MonitorPersister::consolidate` writes every channel's full monitor at shutdown, so that the
//! next startup reads one object per monitor. Real two-node LDK flows; every store is reloaded by
//! LDK's own `MonitorUpdatingPersister` and by ours, and must give the live monitors.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use common::backends::{self, Backend};
use common::dual_flow::*;
use common::ldk_flow::{open_channel, pay, with_network_of};
use common::wrappers::{CountRequests, Guard, Hook, Hooked, Request};
use ldk_object_store::{LoadMode, ObjectKvStore, PersisterConfig};
use lightning::chain::{ChannelMonitorUpdateStatus, Watch};
use lightning::ln::functional_test_utils::*;
use lightning::util::persist::KVStoreSync;

const MAX_PENDING: u64 = 100;

/// Consolidation by size alone: the test monitors are small, and would otherwise be written whole
/// for every update.
fn consolidating() -> PersisterConfig {
	PersisterConfig::default().with_maximum_pending_updates(MAX_PENDING).with_full_monitors_up_to(0)
}

/// The stored monitor's size, and the number and total size of the update objects after it.
fn stored_weights(store: &ObjectKvStore) -> (usize, usize, usize) {
	let (key, _, pending) = stored_layout(store);
	let monitor = KVStoreSync::read(store, "monitors", "", &key).unwrap().len();
	let bytes = pending
		.iter()
		.map(|id| KVStoreSync::read(store, "monitor_updates", &key, &id.to_string()).unwrap().len())
		.sum();
	(monitor, pending.len(), bytes)
}

/// Loads `backend` with a counted reader in `mode`: the monitors and the requests it took.
fn counted_load(
	backend: &Backend, cfg: &TestChanMonCfg, mode: LoadMode,
) -> (Vec<Monitor>, Arc<CountRequests>) {
	let counter = Arc::new(CountRequests::default());
	let counted = backend.wrapped(|s| Hooked::wrap(s, Arc::clone(&counter)));
	let persister = ours(&counted.reader(), cfg, config(MAX_PENDING, mode));
	let loaded = persister.read_all_channel_monitors_with_updates_blocking().unwrap();
	(loaded.into_iter().map(|(_, monitor)| monitor).collect(), counter)
}

/// With the default configuration the update objects after a stored monitor never weigh more
/// than the monitor, long before `maximum_pending_updates` forces a full write; both LDK's reader
/// and ours load the live monitors from the result. At shutdown `consolidate` leaves no update
/// object, so that probing costs two reads per monitor and list mode one; a second call writes
/// nothing.
#[test]
fn updates_are_consolidated_by_size_and_at_shutdown() {
	let chanmon_cfgs = create_chanmon_cfgs(2);
	let backends = [backends::memory("by-size-0"), backends::memory("by-size-1")];
	let stores = [backends[0].store(), backends[1].store()];
	let persisters = [0, 1].map(|i| ours(&stores[i], &chanmon_cfgs[i], consolidating()));
	with_network_of(&chanmon_cfgs, [&persisters[0], &persisters[1]], |nodes| {
		open_channel(nodes, 1_000_000);
		let mut consolidations = 0;
		let mut last_monitor_id = stored_layout(&stores[0]).1;
		for n in 0..30 {
			let (from, to) = if n % 2 == 0 { (0, 1) } else { (1, 0) };
			pay(&nodes[from], &nodes[to], 1_000_000 + n * 1_000, n, None);
			for store in &stores {
				let (monitor, count, bytes) = stored_weights(store);
				assert!(
					bytes < monitor,
					"payment {n}: {count} updates of {bytes} B after {monitor} B"
				);
			}
			let monitor_id = stored_layout(&stores[0]).1;
			if monitor_id != last_monitor_id {
				// LDK's own rule writes the full monitor at multiples of `MAX_PENDING` only.
				consolidations += usize::from(!monitor_id.is_multiple_of(MAX_PENDING));
				last_monitor_id = monitor_id;
			}
		}
		assert!(consolidations >= 2, "{consolidations} consolidations by size");
		for i in 0..2 {
			reload_and_compare(&backends[i], &nodes[i], &chanmon_cfgs[i], MAX_PENDING, "by size");
		}

		let chain_monitor = &nodes[0].chain_monitor.chain_monitor;
		assert!(stored_weights(&stores[0]).1 > 0, "no update pending before the shutdown");
		assert_eq!(persisters[0].consolidate(chain_monitor).unwrap(), 1);
		assert_eq!(stored_weights(&stores[0]).1, 0, "update objects left after consolidate");
		assert_eq!(persisters[0].consolidate(chain_monitor).unwrap(), 0, "wrote again");
		reload_and_compare(&backends[0], &nodes[0], &chanmon_cfgs[0], MAX_PENDING, "shutdown");
		for (mode, gets, lists) in [(LoadMode::Probe, 2, 1), (LoadMode::List, 1, 2)] {
			let (loaded, counter) = counted_load(&backends[0], &chanmon_cfgs[0], mode);
			assert_eq!(loaded.len(), 1);
			assert_eq!(
				(counter.count(Request::Get), counter.count(Request::List)),
				(gets, lists),
				"{mode:?}: reads and listings after consolidate"
			);
		}
	});
}

/// The keys of every update object in `store`.
fn update_objects(store: &ObjectKvStore) -> Vec<String> {
	let monitors = KVStoreSync::list(store, "monitors", "").unwrap();
	let mut keys = Vec::new();
	for monitor in &monitors {
		for id in KVStoreSync::list(store, "monitor_updates", monitor).unwrap() {
			keys.push(format!("{monitor}/{id}"));
		}
	}
	keys
}

/// With the defaults, every update of a small channel (below 64 KiB) writes its full monitor: a
/// node that stops without `consolidate` (as after a crash) leaves no update object, nothing was
/// ever pruned, its restart reads one object per monitor beside the two listings, and LDK's own
/// persister loads the same monitors, at the live update ids.
#[test]
fn small_monitors_are_written_whole_so_a_restart_after_a_crash_reads_one_object_each() {
	let chanmon_cfgs = create_chanmon_cfgs(2);
	let backends = [backends::memory("whole-0"), backends::memory("whole-1")];
	let counters = [(); 2].map(|_| Arc::new(CountRequests::default()));
	let stores =
		[0, 1].map(|i| backends[i].wrapped(|s| Hooked::wrap(s, Arc::clone(&counters[i]))).store());
	let persisters = [0, 1].map(|i| ours(&stores[i], &chanmon_cfgs[i], PersisterConfig::default()));
	with_network_of(&chanmon_cfgs, [&persisters[0], &persisters[1]], |nodes| {
		let channels = 3;
		for _ in 0..channels {
			open_channel(nodes, 1_000_000);
		}
		for n in 0..12 {
			let (from, to) = if n % 2 == 0 { (0, 1) } else { (1, 0) };
			pay(&nodes[from], &nodes[to], 1_000_000 + n * 1_000, n, None);
		}
		for i in 0..2 {
			// No `consolidate`: the store as a crash leaves it.
			let live = nodes[i].chain_monitor.chain_monitor.list_monitors();
			assert_eq!(live.len(), channels);
			let updates: u64 = live
				.iter()
				.map(|id| nodes[i].chain_monitor.chain_monitor.get_monitor(*id).unwrap())
				.map(|monitor| monitor.get_latest_update_id())
				.sum();
			assert!(updates > 40, "node {i}: only {updates} updates");
			assert_eq!(update_objects(&stores[i]), Vec::<String>::new(), "node {i}");
			assert_eq!(counters[i].count(Request::BulkDelete), 0, "node {i}: pruned");
			reload_and_compare(&backends[i], &nodes[i], &chanmon_cfgs[i], MAX_PENDING, "crash");

			let counter = Arc::new(CountRequests::default());
			let counted = backends[i].wrapped(|s| Hooked::wrap(s, Arc::clone(&counter)));
			let loaded = ours(&counted.reader(), &chanmon_cfgs[i], PersisterConfig::default())
				.read_all_channel_monitors_with_updates_blocking()
				.unwrap();
			assert_eq!(loaded.len(), channels);
			assert_eq!(
				(counter.count(Request::Get), counter.count(Request::List)),
				(channels, 2),
				"node {i}: reads and listings of a restart"
			);
		}
	});
}

/// Holds every PUT of a full monitor while closed, and counts them.
#[derive(Debug)]
struct HoldFullWrites {
	open: tokio::sync::watch::Sender<bool>,
	puts: AtomicUsize,
}

#[async_trait]
impl Hook for HoldFullWrites {
	async fn enter(
		&self, request: Request, path: &object_store::path::Path,
	) -> object_store::Result<Guard> {
		if request == Request::Put && path.as_ref().contains("/monitors/") {
			self.puts.fetch_add(1, Ordering::SeqCst);
			let mut open = self.open.subscribe();
			// The sender lives as long as the hook.
			let _ = open.wait_for(|open| *open).await;
		}
		Ok(Box::new(()))
	}
}

/// In async mode a burst of updates of one small channel, arriving while its full monitor is
/// being written, becomes one more full write: the one queued is replaced by the next, and the
/// newest, once durable, reports every update it holds. No update object is written.
#[test]
fn a_burst_of_updates_becomes_one_full_write_in_async_mode() {
	let flow = run_dual_flow(backends::memory);
	let updates: Vec<_> = flow
		.calls
		.iter()
		.filter_map(|call| match call {
			Call::Update { update: Some(update), .. } => Some(update),
			_ => None,
		})
		.collect();
	assert!(updates.len() > 10, "only {} updates", updates.len());
	let hold =
		Arc::new(HoldFullWrites { open: tokio::sync::watch::channel(true).0, puts: 0.into() });
	let backend = backends::memory("burst").wrapped(|s| Hooked::wrap(s, Arc::clone(&hold)));
	let cfg = static_replay_cfg();
	let (persister, chain_monitor) =
		async_chain_monitor(&backend.store(), cfg, PersisterConfig::default());
	persister.bind_chain_monitor(&chain_monitor);
	watch_recorded_channel(&chain_monitor, &flow, cfg);
	persister.flush_blocking();
	assert_eq!(hold.puts.load(Ordering::SeqCst), 1, "the new channel's monitor");

	hold.open.send_replace(false);
	let first = updates[0];
	chain_monitor.update_channel(flow.channel_id, first);
	// The first update's full write is being sent (held) before the burst arrives.
	let deadline = Instant::now() + Duration::from_secs(30);
	while hold.puts.load(Ordering::SeqCst) < 2 {
		assert!(Instant::now() < deadline, "the first full write never started");
		std::thread::sleep(Duration::from_millis(5));
	}
	for update in &updates[1..] {
		assert_eq!(
			chain_monitor.update_channel(flow.channel_id, update),
			ChannelMonitorUpdateStatus::InProgress
		);
	}
	hold.open.send_replace(true);
	let deadline = Instant::now() + Duration::from_secs(60);
	while chain_monitor.list_pending_monitor_updates().values().any(|ids| !ids.is_empty()) {
		assert!(Instant::now() < deadline, "updates still pending");
		std::thread::sleep(Duration::from_millis(10));
	}
	persister.flush_blocking();
	assert_eq!(hold.puts.load(Ordering::SeqCst), 3, "new channel, the held write, the burst's");
	let store = backend.reader();
	assert_eq!(update_objects(&store), Vec::<String>::new());
	let live = chain_monitor.get_monitor(flow.channel_id).unwrap().get_latest_update_id();
	assert_eq!(stored_layout(&store).1, live);
	let reference = ldk(&store, cfg, MAX_PENDING).read_all_channel_monitors_with_updates().unwrap();
	assert_eq!(reference[0].1.get_latest_update_id(), live, "LDK's own load");
}

/// `consolidate` in async mode: after a real flow's updates went through a real `ChainMonitor`,
/// it writes the full monitor, waits until it is durable, and leaves no update object; the load
/// gives the live monitor.
#[test]
fn consolidate_in_async_mode_waits_until_durable() {
	use lightning::chain::Watch;

	let flow = run_dual_flow(backends::memory);
	let cfg = static_replay_cfg();
	let backend = backends::memory("async-consolidate");
	let (persister, chain_monitor) =
		async_chain_monitor(&backend.store(), cfg, config(MAX_PENDING, LoadMode::Probe));
	persister.bind_chain_monitor(&chain_monitor);
	watch_recorded_channel(&chain_monitor, &flow, cfg);
	for call in &flow.calls[1..] {
		if let Call::Update { update: Some(update), .. } = call {
			chain_monitor.update_channel(flow.channel_id, update);
		}
	}
	let deadline = Instant::now() + Duration::from_secs(60);
	while chain_monitor.list_pending_monitor_updates().values().any(|ids| !ids.is_empty()) {
		assert!(Instant::now() < deadline, "updates still pending");
		std::thread::sleep(Duration::from_millis(10));
	}
	let store = backend.reader();
	assert!(stored_weights(&store).1 > 0, "no update object before consolidate");
	assert_eq!(persister.consolidate(&*chain_monitor).unwrap(), 1);
	// Returned only once durable: no flush needed before looking.
	let (_, monitor_id, pending) = stored_layout(&store);
	let live = chain_monitor.get_monitor(flow.channel_id).unwrap();
	assert_eq!((monitor_id, pending), (live.get_latest_update_id(), vec![]));
	let loaded = ours(&backend.reader(), cfg, config(MAX_PENDING, LoadMode::Probe))
		.read_all_channel_monitors_with_updates_blocking()
		.unwrap();
	assert_eq!(loaded[0].1.get_latest_update_id(), live.get_latest_update_id());
}

/// A load spread over several threads returns exactly what one thread returns, in every mode,
/// and fails, naming the object, when one monitor's update does not decode.
#[test]
fn loads_on_several_threads_match_one_thread() {
	let chanmon_cfgs = create_chanmon_cfgs(2);
	let backends = [backends::memory("threads-0"), backends::memory("threads-1")];
	let stores = [backends[0].store(), backends[1].store()];
	let no_consolidation = config(MAX_PENDING, LoadMode::Probe);
	let persisters = [0, 1].map(|i| ours(&stores[i], &chanmon_cfgs[i], no_consolidation.clone()));
	let channels = with_network_of(&chanmon_cfgs, [&persisters[0], &persisters[1]], |nodes| {
		let channels: Vec<_> = (0..6).map(|_| open_channel(nodes, 1_000_000)).collect();
		for n in 0..12 {
			pay(&nodes[0], &nodes[1], 1_000_000 + n * 1_000, n, None);
		}
		channels.len()
	});
	let load = |threads: usize, mode: LoadMode, backend: &Backend| {
		let config = config(MAX_PENDING, mode).with_load_threads(threads);
		ours(&backend.reader(), &chanmon_cfgs[0], config)
			.read_all_channel_monitors_with_updates_blocking()
	};
	let one = load(1, LoadMode::Probe, &backends[0]).unwrap();
	assert_eq!(one.len(), channels);
	for mode in MODES {
		for threads in [2, 3, 8] {
			let many = load(threads, mode, &backends[0]).unwrap();
			// `PartialEq`: a monitor re-encodes differently after a round trip.
			assert!(many == one, "{threads} threads, {mode:?}");
		}
	}

	// The first pending update of a channel that has some (pruned stores hold only pending ones).
	let (key, first) = KVStoreSync::list(&stores[0], "monitors", "")
		.unwrap()
		.into_iter()
		.find_map(|key| {
			let ids = KVStoreSync::list(&stores[0], "monitor_updates", &key).unwrap();
			let first = ids.iter().map(|id| id.parse::<u64>().unwrap()).min()?;
			Some((key, first))
		})
		.expect("no pending update to spoil");
	let spoiled = first.to_string();
	// Spoiled behind the node's back (update objects are create-only for the node itself).
	KVStoreSync::write(
		&backends[0].reader(),
		"monitor_updates",
		&key,
		&spoiled,
		b"not an update".to_vec(),
	)
	.unwrap();
	for threads in [1, 4] {
		let Err(error) = load(threads, LoadMode::Probe, &backends[0]) else {
			panic!("{threads} threads: a spoiled update loaded");
		};
		let message = error.to_string();
		assert!(message.contains(&format!("monitor_updates/{key}/{spoiled}")), "{message}");
	}
}
