//! Paths that could stop a node for good, each run under a watchdog: the test fails (instead of
//! hanging) if the operation does not return in time.
//!
//! - An archive in async mode while completions of other channels are being delivered: LDK holds
//!   the `ChainMonitor`'s monitors lock for writing while it archives, and a completion needs that
//!   lock for reading. Two real LDK nodes make the monitors; a real `ChainMonitor` runs the
//!   archive over a store whose every request takes 20 ms, with 1, 2 and 4 store workers, with
//!   completions pushed and pulled.
//! - Batch deletes with a duplicate key, and two batches with overlapping keys in opposite orders.
//! - `flush` after a completion sink panicked.
//! - Requests queued behind the bound on requests in flight do not time out before they are sent.
//! - Many synchronous calls made from inside one task of a Tokio runtime (as ldk-node makes some
//!   from inside its runtime): each returns, however many that task makes in one go.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::backends;
use common::dual_flow::{async_chain_monitor, config, ours_async, Monitor};
use common::ldk_flow::{force_close_and_confirm, open_channel, with_network};
use common::watch::watchdog;
use common::wrappers::{FixedLatency, Hooked};
use ldk_object_store::persister::MonitorUpdateSink;
use ldk_object_store::{LoadMode, RetryPolicy, StoreBuilder};
use lightning::chain::channelmonitor::{ANTI_REORG_DELAY, ARCHIVAL_DELAY_BLOCKS};
use lightning::chain::{ChannelMonitorUpdateStatus, Watch};
use lightning::ln::functional_test_utils::*;
use lightning::ln::types::ChannelId;
use lightning::util::persist::KVStoreSync;
use lightning::util::ser::{ReadableArgs, Writeable};
use lightning::util::test_utils::TestKeysInterface;
use object_store::memory::InMemory;

/// Node 1's monitors from a real two-node flow: the first channel force-closed by node 0 and, on
/// node 1, past `ARCHIVAL_DELAY_BLOCKS` after its balances cleared (fully resolved); the others
/// open. Taken from node 1's live `ChainMonitor`.
struct Monitors {
	resolved: Vec<u8>,
	open: Vec<Vec<u8>>,
}

const OPEN_CHANNELS: usize = 4;

fn monitors() -> &'static Monitors {
	static MONITORS: OnceLock<Monitors> = OnceLock::new();
	MONITORS.get_or_init(|| {
		let stores = [backends::memory("wedge-0").store(), backends::memory("wedge-1").store()];
		with_network(&stores, |nodes| {
			let resolved = open_channel(nodes, 100_000);
			let open: Vec<ChannelId> =
				(0..OPEN_CHANNELS).map(|_| open_channel(nodes, 100_000)).collect();
			force_close_and_confirm(nodes, resolved, 100_000, "archive test");
			connect_blocks(&nodes[1], ANTI_REORG_DELAY);
			// LDK notes the height at which the balances cleared when it first checks; it may
			// archive the monitor ARCHIVAL_DELAY_BLOCKS later.
			nodes[1].chain_monitor.chain_monitor.archive_fully_resolved_channel_monitors();
			assert_eq!(
				nodes[1].chain_monitor.chain_monitor.list_monitors().len(),
				1 + OPEN_CHANNELS
			);
			connect_blocks(&nodes[1], ARCHIVAL_DELAY_BLOCKS);
			// Node 1's output of the closed channel, handed out once its balance cleared.
			let events = nodes[1].chain_monitor.chain_monitor.get_and_clear_pending_events();
			assert!(!events.is_empty(), "no SpendableOutputs for the closed channel");
			let live = &nodes[1].chain_monitor.chain_monitor;
			let bytes = |id: ChannelId| live.get_monitor(id).expect("monitor").encode();
			Monitors { resolved: bytes(resolved), open: open.into_iter().map(bytes).collect() }
		})
	})
}

/// Node 1's keys, for good (async persisters share their arguments with background tasks).
fn node1_cfg() -> &'static TestChanMonCfg {
	let mut cfgs = create_chanmon_cfgs(2);
	let mut keys = TestKeysInterface::new(&[1; 32], bitcoin::Network::Testnet);
	keys.disable_all_state_policy_checks = true;
	cfgs[1].keys_manager = keys;
	Box::leak(Box::new(cfgs.remove(1)))
}

fn decode(bytes: &[u8], cfg: &TestChanMonCfg) -> Monitor {
	let keys = &cfg.keys_manager;
	<(bitcoin::BlockHash, Monitor)>::read(&mut &bytes[..], (keys, keys)).expect("monitor").1
}

/// The archive of a fully resolved channel, while `OPEN_CHANNELS` new channels' first writes are
/// in flight and every request takes 20 ms. `archive_fully_resolved_channel_monitors` must return,
/// every completion must reach the `ChainMonitor`, and the archive must be carried out.
fn archive_during_completions(workers: usize, push: bool) {
	let data = monitors();
	let cfg = node1_cfg();
	let memory = Arc::new(InMemory::new());
	let slow = Hooked::wrap(memory, Arc::new(FixedLatency(Duration::from_millis(20))));
	let store = StoreBuilder::from_store(slow)
		.with_prefix(format!("wedge-{workers}-{push}"))
		.with_worker_threads(workers)
		.build()
		.unwrap();
	let resolved = decode(&data.resolved, cfg);
	let resolved_key = resolved.persistence_key().to_string();
	let mut stored = vec![0xff, 0xff];
	stored.extend_from_slice(&data.resolved);
	KVStoreSync::write(&store, "monitors", "", &resolved_key, stored).unwrap();

	let (persister, chain_monitor) = async_chain_monitor(&store, cfg, config(5, LoadMode::Probe));
	if push {
		persister.bind_chain_monitor(&chain_monitor);
	}
	let resolved_id = resolved.channel_id();
	assert_eq!(
		chain_monitor.load_existing_monitor(resolved_id, resolved),
		Ok(ChannelMonitorUpdateStatus::Completed)
	);
	// Events the stored monitor still holds (LDK hands them out again after a restart).
	chain_monitor.release_pending_monitor_events();

	// New channels' monitors: each write returns InProgress and completes 20 ms or more later,
	// while the archive below holds the monitors lock.
	for bytes in &data.open {
		let monitor = decode(bytes, cfg);
		let status = chain_monitor.watch_channel(monitor.channel_id(), monitor);
		assert_eq!(status, Ok(ChannelMonitorUpdateStatus::InProgress));
	}
	let archiving = Arc::clone(&chain_monitor);
	watchdog("archive_fully_resolved_channel_monitors", Duration::from_secs(30), move || {
		archiving.archive_fully_resolved_channel_monitors()
	});
	assert!(
		chain_monitor.get_monitor(resolved_id).is_err(),
		"the resolved monitor was not archived"
	);
	watchdog("flush", Duration::from_secs(60), move || persister.flush_blocking());

	// Every new channel's completion arrived: pushed, or pulled by the ChainMonitor here.
	let deadline = std::time::Instant::now() + Duration::from_secs(30);
	loop {
		if !push {
			chain_monitor.release_pending_monitor_events();
		}
		let pending = chain_monitor.list_pending_monitor_updates();
		if pending.values().all(Vec::is_empty) {
			break;
		}
		assert!(std::time::Instant::now() < deadline, "still pending: {pending:?}");
		std::thread::sleep(Duration::from_millis(10));
	}
	// The archive happened, in the background.
	assert!(KVStoreSync::read(&store, "archived_monitors", "", &resolved_key).is_ok());
	let left = KVStoreSync::list(&store, "monitors", "").unwrap();
	assert!(!left.contains(&resolved_key), "monitor still stored after the archive: {left:?}");
	assert_eq!(left.len(), OPEN_CHANNELS, "every new channel's monitor is stored");
}

#[test]
fn archive_in_async_mode_never_waits_for_a_completion() {
	for workers in [1, 2, 4] {
		for push in [true, false] {
			archive_during_completions(workers, push);
		}
	}
}

/// A sink that panics on its first report and counts the others.
#[derive(Default)]
struct PanickyOnce(AtomicUsize);

impl MonitorUpdateSink for PanickyOnce {
	fn monitor_update_completed(&self, _channel_id: ChannelId, _update_id: u64) {
		if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
			panic!("a sink that panics");
		}
	}
}

#[test]
fn flush_returns_after_a_sink_panicked_and_later_reports_still_arrive() {
	let data = monitors();
	let cfg = node1_cfg();
	let store = backends::memory("panicky").store();
	let persister = ours_async(&store, cfg, config(5, LoadMode::Probe));
	let sink = Arc::new(PanickyOnce::default());
	persister.bind_chain_monitor(&sink);
	for bytes in &data.open {
		let monitor = decode(bytes, cfg);
		let name = monitor.persistence_key();
		let status = lightning::chain::chainmonitor::Persist::persist_new_channel(
			&persister, name, &monitor,
		);
		assert_eq!(status, ChannelMonitorUpdateStatus::InProgress);
	}
	let persister = Arc::new(persister);
	let flushing = Arc::clone(&persister);
	watchdog("flush", Duration::from_secs(30), move || flushing.flush_blocking());
	let deadline = std::time::Instant::now() + Duration::from_secs(10);
	while sink.0.load(Ordering::SeqCst) < OPEN_CHANNELS {
		assert!(std::time::Instant::now() < deadline, "reports stopped after the panic");
		std::thread::sleep(Duration::from_millis(5));
	}
}

#[test]
fn a_batch_naming_a_key_twice_removes_it_once() {
	let store = backends::memory("duplicate").store();
	let keys: Vec<String> = ["7", "8", "7"].iter().map(|k| k.to_string()).collect();
	for key in &keys {
		KVStoreSync::write(&store, "monitor_updates", "m", key, vec![1]).unwrap();
	}
	let batch = store.remove_many("monitor_updates", "m", &keys);
	watchdog("a batch with a duplicate key", Duration::from_secs(10), move || {
		futures::executor::block_on(batch).unwrap()
	});
	// Later operations on the key are not stuck behind the batch.
	let after = store.clone();
	watchdog("a write after the batch", Duration::from_secs(10), move || {
		KVStoreSync::write(&after, "monitor_updates", "m", "7", vec![2]).unwrap()
	});
	assert_eq!(KVStoreSync::list(&store, "monitor_updates", "m").unwrap(), vec!["7".to_string()]);
}

#[test]
fn batches_with_keys_in_opposite_orders_never_wait_on_each_other() {
	let store = backends::memory("opposite").store();
	// Listing order ("10" < "9") in one, numeric order reversed in the other.
	let mut forward: Vec<String> = (1..=24).map(|i| i.to_string()).collect();
	forward.sort();
	let backward: Vec<String> = (1..=24).rev().map(|i| i.to_string()).collect();
	const ROUNDS: usize = 3000;
	let run = |keys: Vec<String>| {
		let store = store.clone();
		move || {
			for _ in 0..ROUNDS {
				futures::executor::block_on(store.remove_many("monitor_updates", "m", &keys))
					.unwrap();
			}
		}
	};
	let (a, b) = (run(forward), run(backward));
	watchdog("two threads of overlapping batches", Duration::from_secs(120), move || {
		let a = std::thread::spawn(a);
		let b = std::thread::spawn(b);
		a.join().unwrap();
		b.join().unwrap();
	});
}

/// With one request in flight at a time, each taking 150 ms, and a per-attempt timeout of
/// 400 ms with no retries, eight writes queue for up to a second: none may time out waiting.
#[test]
fn waiting_for_a_place_in_flight_is_not_part_of_the_attempt_timeout() {
	let memory = Arc::new(InMemory::new());
	let slow = Hooked::wrap(memory, Arc::new(FixedLatency(Duration::from_millis(150))));
	let retry = RetryPolicy { attempt_timeout: Duration::from_millis(400), ..RetryPolicy::none() };
	let store =
		StoreBuilder::from_store(slow).with_max_in_flight(1).with_retry(retry).build().unwrap();
	let writes: Vec<_> = (0..8)
		.map(|i| {
			lightning::util::persist::KVStore::write(&store, "ns", "", &format!("k{i}"), vec![1])
		})
		.collect();
	let results = watchdog("queued writes", Duration::from_secs(30), move || {
		futures::executor::block_on(futures::future::join_all(writes))
	});
	for (i, result) in results.into_iter().enumerate() {
		assert!(result.is_ok(), "write {i} failed in the queue: {:?}", result.err());
	}
}

/// A task of a Tokio runtime that makes many `KVStoreSync` calls without yielding: Tokio's
/// cooperative budget (128 polls of its resources per task poll) must not make a later call
/// wait for a wake-up that only yielding would bring (it did: the call's join handle answered
/// "pending" and woke itself, forever, once the task's budget was spent).
#[test]
fn many_sync_calls_from_one_task_of_a_runtime_all_return() {
	let backend = backends::memory("sync-in-task");
	let store = backend.builder().without_writer_lease().build().unwrap();
	let finished = watchdog("1,000 sync calls from one task", Duration::from_secs(60), move || {
		let runtime = tokio::runtime::Builder::new_multi_thread()
			.worker_threads(2)
			.enable_all()
			.build()
			.unwrap();
		runtime.block_on(async move {
			let task = tokio::spawn(async move {
				for i in 0..500u32 {
					let key = format!("k{i}");
					KVStoreSync::write(&store, "p", "s", &key, i.to_be_bytes().to_vec()).unwrap();
					assert_eq!(KVStoreSync::read(&store, "p", "s", &key).unwrap(), i.to_be_bytes());
				}
				KVStoreSync::list(&store, "p", "s").unwrap().len()
			});
			task.await.unwrap()
		})
	});
	assert_eq!(finished, 500);
}
