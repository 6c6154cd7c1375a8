//! Real LDK flows over `ObjectKvStore`: two nodes of LDK's functional-test harness whose
//! `ChainMonitor`s persist through the store, a channel, payments both ways, the managers,
//! graphs and scorers written under LDK's keys, a force-close, then a restart from fresh store
//! instances that reloads every monitor and `ChannelManager` (see `common/ldk_flow.rs`).
//!
//! Backends: memory (one shared `InMemory` so the restart sees the data), a local directory, and
//! LocalStack when `LDK_OS_TEST_LOCALSTACK_URL` is set. Also: `lightning-background-processor`'s
//! `process_events_async` writing through the async trait, and the flow run from inside
//! current-thread and multi-thread tokio runtimes.

#[path = "common/ldk_flow.rs"]
mod ldk_flow;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ldk_object_store::{ObjectKvStore, StoreBuilder};
use lightning::events::{Event, ReplayEvent};
use lightning::ln::functional_test_utils::{Node, TestChannelManager};
use lightning::ln::peer_handler::{IgnoringMessageHandler, PeerManager, SocketDescriptor};
use lightning::routing::gossip::NetworkGraph;
use lightning::routing::scoring::{ProbabilisticScorer, ProbabilisticScoringDecayParameters};
use lightning::sign::{ChangeDestinationSource, KeysManager};
use lightning::util::async_poll::AsyncResult;
use lightning::util::persist::{
	KVStore, KVStoreSync, MigratableKVStore, CHANNEL_MANAGER_PERSISTENCE_KEY,
	CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE, CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
	CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE, CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE,
	NETWORK_GRAPH_PERSISTENCE_KEY, SCORER_PERSISTENCE_KEY,
};
use lightning::util::ser::{ReadableArgs, Writeable};
use lightning::util::sweep::OutputSweeper;
use lightning::util::test_utils::{
	SyncBroadcaster, TestBroadcaster, TestChainSource, TestFeeEstimator, TestKeysInterface,
	TestLogger,
};
use lightning_background_processor::{process_events_async, GossipSync};
use lightning_liquidity::utils::time::DefaultTimeProvider;
use lightning_liquidity::LiquidityManager;
use object_store::memory::InMemory;
use object_store::ObjectStore;

use ldk_flow::{
	open_channel, pay, run_persist_phase, run_restart_phase, snapshot_nodes, with_network,
	FlowOptions, MonitorMatch, PersistSummary, RestartSummary, NODE_NAMES,
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Stores for the two nodes over one shared in-memory backend, one prefix per node. Two
/// `memory://` builds would be two separate stores, so the restart could not see the data.
fn memory_factory() -> impl Fn(&str) -> ObjectKvStore {
	let backend: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
	move |name| {
		StoreBuilder::from_store(Arc::clone(&backend))
			.with_prefix(name)
			.build()
			.expect("building a store over the shared InMemory")
	}
}

/// Stores for the two nodes in subdirectories of `dir`, through `file://` URLs.
fn file_factory(dir: &std::path::Path) -> impl Fn(&str) -> ObjectKvStore {
	let dir = dir.to_path_buf();
	move |name| {
		let url = format!("file://{}/{name}", dir.display());
		StoreBuilder::from_url(&url)
			.create_if_missing(true)
			.build()
			.unwrap_or_else(|e| panic!("building {url}: {e}"))
	}
}

const LOCALSTACK_URL: &str = "LDK_OS_TEST_LOCALSTACK_URL";
const LOCALSTACK_ENDPOINT: &str = "LDK_OS_TEST_LOCALSTACK_ENDPOINT";
const REQUIRE_SERVERS: &str = "LDK_OS_TEST_REQUIRE_SERVERS";

/// A prefix no other test run uses, so tests can share a bucket.
fn unique_prefix(test: &str) -> String {
	static COUNTER: AtomicUsize = AtomicUsize::new(0);
	let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
	let n = COUNTER.fetch_add(1, Ordering::Relaxed);
	format!("ldk-node-tests/{test}-{}-{nanos:x}-{n}", std::process::id())
}

/// Stores on LocalStack below a unique prefix, or `None` (after saying so) when
/// `LDK_OS_TEST_LOCALSTACK_URL` is not set. With `LDK_OS_TEST_REQUIRE_SERVERS=1` a missing
/// server configuration fails the test instead. Credentials and region come from `AWS_*`.
fn localstack_factory(test: &str) -> Option<impl Fn(&str) -> ObjectKvStore> {
	let url = match std::env::var(LOCALSTACK_URL) {
		Ok(url) if !url.is_empty() => url,
		_ => {
			if std::env::var(REQUIRE_SERVERS).is_ok_and(|v| v == "1") {
				panic!("{test}: {LOCALSTACK_URL} not set but {REQUIRE_SERVERS}=1");
			}
			println!("skipping {test}: {LOCALSTACK_URL} not set");
			return None;
		},
	};
	let endpoint = std::env::var(LOCALSTACK_ENDPOINT).ok().filter(|e| !e.is_empty());
	let prefix = unique_prefix(test);
	println!("{test}: using {url} below {prefix}");
	Some(move |name: &str| {
		let mut builder = StoreBuilder::from_url(&url).with_prefix(format!("{prefix}/{name}"));
		if let Some(endpoint) = &endpoint {
			builder =
				builder.with_option("aws_endpoint", endpoint).with_option("aws_allow_http", "true");
		}
		builder.build().unwrap_or_else(|e| panic!("building a store for {url}: {e}"))
	})
}

/// Deletes everything the two nodes stored (for shared buckets).
fn clean_up(open_store: &dyn Fn(&str) -> ObjectKvStore) {
	for name in NODE_NAMES {
		let store = open_store(name);
		for (p, s, k) in MigratableKVStore::list_all_keys(&store).expect("listing for clean-up") {
			KVStoreSync::remove(&store, &p, &s, &k, false).expect("removing for clean-up");
		}
		assert!(MigratableKVStore::list_all_keys(&store).unwrap().is_empty());
	}
}

/// Ends the test process if a test is stuck (a deadlock would otherwise hang CI silently).
struct Watchdog(Option<mpsc::Sender<()>>);

impl Watchdog {
	fn new(test: &'static str, limit: Duration) -> Self {
		let (tx, rx) = mpsc::channel::<()>();
		std::thread::spawn(move || {
			if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
				eprintln!(
					"{test}: still running after {limit:?}; the store is probably deadlocked"
				);
				std::process::exit(101);
			}
		});
		Watchdog(Some(tx))
	}
}

impl Drop for Watchdog {
	fn drop(&mut self) {
		drop(self.0.take());
	}
}

const TEST_LIMIT: Duration = Duration::from_secs(600);

/// The checks common to every backend: what a restart read back matches what was written.
fn assert_restart_matches(persisted: &PersistSummary, restarted: &RestartSummary) {
	assert!(restarted.compared_with_live);
	assert_eq!(restarted.nodes.len(), 2);
	for (written, read) in persisted.nodes.iter().zip(&restarted.nodes) {
		assert_eq!(read.node_id, written.node_id);
		assert_eq!(read.keys, written.keys, "{}: keys", read.name);
		// Exactly LDK's layout: manager, graph, scorer, one monitor, no update objects (the
		// blanket `Persist` writes full monitors only).
		let names: Vec<String> = read.keys.iter().map(|k| k.to_string()).collect();
		let top: Vec<&str> = read
			.keys
			.iter()
			.filter(|k| k.primary_namespace.is_empty())
			.map(|k| k.key.as_str())
			.collect();
		let mut expected_top = vec![CHANNEL_MANAGER_PERSISTENCE_KEY];
		if persisted.options.write_graph_and_scorer {
			expected_top.extend([NETWORK_GRAPH_PERSISTENCE_KEY, SCORER_PERSISTENCE_KEY]);
		}
		expected_top.sort();
		assert_eq!(top, expected_top, "{}: {names:?}", read.name);
		let monitors = read
			.keys
			.iter()
			.filter(|k| k.primary_namespace == CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE)
			.count();
		assert_eq!(monitors, 1, "{}: {names:?}", read.name);
		assert_eq!(read.keys.len(), top.len() + 1, "{}: {names:?}", read.name);

		assert_eq!(read.monitors.len(), 1);
		let (m, live) = (&read.monitors[0], &written.monitors[0]);
		assert_eq!(
			(m.key.as_str(), m.latest_update_id),
			(live.key.as_str(), live.latest_update_id)
		);
		if persisted.force_closed.is_some() {
			// See `MonitorMatch::EqualExceptReleasedEvents`.
			assert!(
				matches!(
					m.equals_live,
					Some(MonitorMatch::Equal | MonitorMatch::EqualExceptReleasedEvents)
				),
				"{:?}",
				m.equals_live
			);
		} else {
			assert_eq!(m.equals_live, Some(MonitorMatch::Equal));
		}
		assert_eq!(read.channels, written.channels, "{}: channels", read.name);
	}
	// Each payment makes at least 5 monitor updates on both sides (commitment dance + claim).
	let min_updates = u64::from(persisted.payments_made) * 5;
	for node in &restarted.nodes {
		assert!(node.monitors[0].latest_update_id >= min_updates, "{restarted}");
	}
	if let Some(closed) = persisted.force_closed {
		for node in &restarted.nodes {
			assert!(
				node.channels.is_empty(),
				"{}: the reloaded manager still has channels",
				node.name
			);
			assert_eq!(node.monitors[0].channel_id, closed);
			// The force-closed channel's funds are now claimable on chain, per the monitor.
			assert!(node.monitors[0].claimable_sat > 0, "{restarted}");
		}
	} else {
		for (node, written) in restarted.nodes.iter().zip(&persisted.nodes) {
			assert_eq!(node.channels.len(), 1, "{}: channels after restart", node.name);
			let c = &node.channels[0];
			assert_eq!(c.value_sat, persisted.options.channel_value_sat);
			assert!(c.outbound_capacity_msat > 0 && c.inbound_capacity_msat > 0, "{c:?}");
			assert_eq!(c.channel_id, node.monitors[0].channel_id);
			assert_eq!(node.node_id, written.node_id);
		}
	}
}

fn persist_and_restart(
	backend: &str, open_store: &dyn Fn(&str) -> ObjectKvStore, options: FlowOptions,
) -> RestartSummary {
	let started = Instant::now();
	let persisted = run_persist_phase(open_store, &options);
	let persisted_in = started.elapsed();
	let restarted = run_restart_phase(open_store, Some(&persisted))
		.unwrap_or_else(|e| panic!("{backend}: restart failed: {e}"));
	println!(
		"{backend}: persist phase {persisted_in:?}, restart {:?}\n{restarted}",
		started.elapsed() - persisted_in
	);
	assert_restart_matches(&persisted, &restarted);
	restarted
}

// ---------------------------------------------------------------------------------------------
// The flow on each backend

#[test]
fn memory_force_close_then_restart() {
	let _watchdog = Watchdog::new("memory_force_close_then_restart", TEST_LIMIT);
	persist_and_restart("memory", &memory_factory(), FlowOptions::default());
}

#[test]
fn memory_open_channel_survives_restart() {
	let _watchdog = Watchdog::new("memory_open_channel_survives_restart", TEST_LIMIT);
	let options = FlowOptions { force_close: false, payments: 9, ..FlowOptions::default() };
	persist_and_restart("memory (open channel)", &memory_factory(), options);
}

#[test]
fn local_directory_force_close_then_restart() {
	let _watchdog = Watchdog::new("local_directory_force_close_then_restart", TEST_LIMIT);
	let dir = tempfile::tempdir().unwrap();
	let restarted = persist_and_restart("file", &file_factory(dir.path()), FlowOptions::default());
	// The objects are plain files in LDK's `FilesystemStore` layout.
	for node in &restarted.nodes {
		let root = dir.path().join(&node.name);
		for key in &node.keys {
			let mut path = root.clone();
			for part in [&key.primary_namespace, &key.secondary_namespace, &key.key] {
				if !part.is_empty() {
					path.push(part);
				}
			}
			let len = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{path:?}: {e}")).len();
			assert_eq!(len as usize, key.bytes, "{path:?}");
		}
		assert!(root.join("manager").is_file());
		assert!(root.join("monitors").join(&node.monitors[0].key).is_file());
	}
}

#[test]
fn localstack_force_close_then_restart() {
	let Some(open_store) = localstack_factory("localstack_force_close_then_restart") else {
		return;
	};
	let _watchdog = Watchdog::new("localstack_force_close_then_restart", TEST_LIMIT);
	persist_and_restart("localstack", &open_store, FlowOptions::default());
	clean_up(&open_store);
}

#[test]
fn localstack_open_channel_survives_restart() {
	let Some(open_store) = localstack_factory("localstack_open_channel_survives_restart") else {
		return;
	};
	let _watchdog = Watchdog::new("localstack_open_channel_survives_restart", TEST_LIMIT);
	let options = FlowOptions { force_close: false, ..FlowOptions::default() };
	persist_and_restart("localstack (open channel)", &open_store, options);
	clean_up(&open_store);
}

// ---------------------------------------------------------------------------------------------
// Inside tokio runtimes, as ldk-node calls the sync trait

/// Reads and lists the node's store through the async trait until told to stop, while the flow
/// writes through the sync trait. Only reads, so the flow's own key checks stay exact. Returns
/// the number of operations done; any error other than "not found" fails.
async fn async_reader(store: ObjectKvStore, stop: Arc<std::sync::atomic::AtomicBool>) -> usize {
	let mut ops = 0;
	while !stop.load(Ordering::Relaxed) {
		match KVStore::read(
			&store,
			CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
			CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
			CHANNEL_MANAGER_PERSISTENCE_KEY,
		)
		.await
		{
			Ok(_) => {},
			Err(e) if e.kind() == lightning::io::ErrorKind::NotFound => {},
			Err(e) => panic!("async read during the flow: {e}"),
		}
		let monitors = KVStore::list(
			&store,
			CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
			CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE,
		)
		.await
		.expect("async list during the flow");
		for key in monitors {
			KVStore::read(
				&store,
				CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
				CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE,
				&key,
			)
			.await
			.expect("async monitor read during the flow");
		}
		ops += 1;
		tokio::task::yield_now().await;
	}
	ops
}

/// The flow with the sync trait called from a runtime thread, while a task of the same runtime
/// reads the same store (same instance: clones share the store's runtime and queues) through
/// the async trait.
async fn flow_inside_runtime(name: &'static str) {
	let _watchdog = Watchdog::new(name, TEST_LIMIT);
	let open = memory_factory();
	let node0 = open(NODE_NAMES[0]);
	let node1 = open(NODE_NAMES[1]);
	let factory = |n: &str| if n == NODE_NAMES[0] { node0.clone() } else { node1.clone() };

	let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
	let reader = tokio::spawn(async_reader(node0.clone(), Arc::clone(&stop)));
	// Let the reader start (on a current-thread runtime it runs only while this task waits).
	tokio::time::sleep(Duration::from_millis(20)).await;

	let started = Instant::now();
	let persisted = run_persist_phase(&factory, &FlowOptions::default());
	tokio::task::yield_now().await;
	let restarted = run_restart_phase(&factory, Some(&persisted)).expect("restart");
	assert_restart_matches(&persisted, &restarted);
	// The async trait, awaited right here on the runtime thread, also works.
	let manager = KVStore::read(
		&node1,
		CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
		CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
		CHANNEL_MANAGER_PERSISTENCE_KEY,
	)
	.await
	.expect("async read of the manager");
	assert_eq!(manager.len(), restarted.nodes[1].manager_bytes);

	tokio::time::sleep(Duration::from_millis(20)).await;
	stop.store(true, Ordering::Relaxed);
	let ops = reader.await.expect("the async reader panicked");
	println!(
		"{name}: flow and restart in {:?}; {ops} async read rounds meanwhile",
		started.elapsed()
	);
	assert!(ops > 0, "the async reader never ran");
}

#[tokio::test(flavor = "current_thread")]
async fn flow_from_current_thread_runtime() {
	flow_inside_runtime("flow_from_current_thread_runtime").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_from_multi_thread_runtime() {
	flow_inside_runtime("flow_from_multi_thread_runtime").await;
}

// ---------------------------------------------------------------------------------------------
// lightning-background-processor through the async trait

/// A socket nobody connects: the background processor needs a `PeerManager`, but the harness
/// delivers the nodes' messages itself.
#[derive(Clone, Hash, PartialEq, Eq)]
struct NoSocket;

impl SocketDescriptor for NoSocket {
	fn send_data(&mut self, _data: &[u8], _continue_read: bool) -> usize {
		0
	}
	fn disconnect_socket(&mut self) {}
}

/// Only to name the sweeper type for `None`.
struct NoChangeDestination;

impl ChangeDestinationSource for NoChangeDestination {
	fn get_change_destination_script<'a>(&'a self) -> AsyncResult<'a, bitcoin::ScriptBuf, ()> {
		Box::pin(async { Err(()) })
	}
}

/// A scorer the background processor can own: its `WriteableScore` bound is higher-ranked, so
/// the scorer must be `'static`, unlike the harness's graph. It scores over a copy of the graph.
type StaticScorer =
	RwLock<ProbabilisticScorer<Arc<NetworkGraph<Arc<TestLogger>>>, Arc<TestLogger>>>;

fn static_scorer(node: &Node<'_, '_, '_>) -> StaticScorer {
	let logger = Arc::new(TestLogger::with_id("scorer".to_owned()));
	let graph = node.network_graph.encode();
	let graph = NetworkGraph::read(&mut &graph[..], Arc::clone(&logger)).unwrap();
	RwLock::new(ProbabilisticScorer::new(
		ProbabilisticScoringDecayParameters::default(),
		Arc::new(graph),
		logger,
	))
}

/// Runs `process_events_async` for both nodes with their stores as `kv_store`, makes payments
/// while they run, waits until each processor has written the post-payment `ChannelManager`
/// through the async trait, then stops them through the sleeper. Returns the time the stored
/// managers took to catch up.
async fn run_background_processors(
	nodes: &Vec<Node<'_, '_, '_>>, stores: &[ObjectKvStore; 2],
) -> Duration {
	let (exit_tx, exit_rx) = tokio::sync::watch::channel(());
	let sleeper = |rx: tokio::sync::watch::Receiver<()>| {
		move |d: Duration| {
			let mut rx = rx.clone();
			Box::pin(async move {
				tokio::select! {
					_ = tokio::time::sleep(d) => false,
					_ = rx.changed() => true,
				}
			})
		}
	};
	let peer_managers: Vec<_> = nodes
		.iter()
		.map(|n| {
			PeerManager::<NoSocket, _, _, _, _, _, _, _>::new_routing_only(
				IgnoringMessageHandler {},
				0,
				&[7; 32],
				n.logger,
				n.keys_manager,
			)
		})
		.collect();
	let scorers: Vec<StaticScorer> = nodes.iter().map(|n| static_scorer(n)).collect();
	let processor = |i: usize| {
		process_events_async(
			&stores[i],
			|_: Event| async { Ok::<(), ReplayEvent>(()) },
			&nodes[i].chain_monitor.chain_monitor,
			nodes[i].node,
			Some(&nodes[i].onion_messenger),
			GossipSync::p2p(&nodes[i].gossip_sync),
			&peer_managers[i],
			None::<
				&LiquidityManager<
					&TestKeysInterface,
					&TestKeysInterface,
					&TestChannelManager<'_, '_>,
					&TestChainSource,
					&ObjectKvStore,
					&DefaultTimeProvider,
					&TestBroadcaster,
				>,
			>,
			None::<
				&OutputSweeper<
					&dyn SyncBroadcaster,
					&NoChangeDestination,
					&TestFeeEstimator,
					&TestChainSource,
					&ObjectKvStore,
					&TestLogger,
					&KeysManager,
				>,
			>,
			nodes[i].logger,
			Some(&scorers[i]),
			sleeper(exit_rx.clone()),
			false,
			|| Some(SystemTime::now().duration_since(UNIX_EPOCH).unwrap()),
		)
	};

	let driver = async {
		// Let both processors start and settle.
		tokio::time::sleep(Duration::from_millis(100)).await;
		let before: Vec<Option<Vec<u8>>> = {
			let mut out = Vec::new();
			for store in stores {
				out.push(read_manager_async(store).await);
			}
			out
		};
		// The harness drives each payment to completion synchronously; the processors run
		// only when this task waits, so they never take the harness's events.
		for n in 0..4u64 {
			let (from, to) = if n % 2 == 0 { (0, 1) } else { (1, 0) };
			pay(&nodes[from], &nodes[to], 2_000_000 + n * 1000, 1000 + n, None);
		}
		let started = Instant::now();
		for (i, store) in stores.iter().enumerate() {
			let live = nodes[i].node.encode();
			assert_ne!(before[i].as_ref(), Some(&live), "the payments changed the manager");
			loop {
				if read_manager_async(store).await.as_ref() == Some(&live) {
					break;
				}
				assert!(
					started.elapsed() < Duration::from_secs(30),
					"{}: the background processor did not write the manager",
					NODE_NAMES[i]
				);
				tokio::time::sleep(Duration::from_millis(10)).await;
			}
		}
		let caught_up = started.elapsed();
		exit_tx.send(()).expect("stopping the processors");
		caught_up
	};
	let (r0, r1, caught_up) = tokio::join!(processor(0), processor(1), driver);
	r0.expect("node 0's background processor failed");
	r1.expect("node 1's background processor failed");
	caught_up
}

async fn read_manager_async(store: &ObjectKvStore) -> Option<Vec<u8>> {
	match KVStore::read(
		store,
		CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
		CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
		CHANNEL_MANAGER_PERSISTENCE_KEY,
	)
	.await
	{
		Ok(bytes) => Some(bytes),
		Err(e) if e.kind() == lightning::io::ErrorKind::NotFound => None,
		Err(e) => panic!("reading the manager: {e}"),
	}
}

#[test]
fn background_processor_writes_through_async_store() {
	let _watchdog = Watchdog::new("background_processor_writes_through_async_store", TEST_LIMIT);
	let open = memory_factory();
	let stores = [open(NODE_NAMES[0]), open(NODE_NAMES[1])];
	let started = Instant::now();
	let (caught_up, expected) = with_network(&stores, |nodes| {
		open_channel(nodes, 1_000_000);
		// The harness's nodes are not `Send`: run both processors on a current-thread runtime
		// in this thread.
		let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
		let caught_up = runtime.block_on(run_background_processors(nodes, &stores));
		// On exit the processors wrote the manager once more, and the graph and scorer.
		for (i, store) in stores.iter().enumerate() {
			let stored = KVStoreSync::read(
				store,
				CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
				CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
				CHANNEL_MANAGER_PERSISTENCE_KEY,
			)
			.unwrap();
			assert!(stored == nodes[i].node.encode(), "{}: final manager write", NODE_NAMES[i]);
			for key in [NETWORK_GRAPH_PERSISTENCE_KEY, SCORER_PERSISTENCE_KEY] {
				assert!(!KVStoreSync::read(store, "", "", key).unwrap().is_empty(), "{key}");
			}
		}
		(caught_up, snapshot_nodes(nodes, &stores, true))
	});
	let expected = PersistSummary {
		options: FlowOptions { force_close: false, payments: 4, ..FlowOptions::default() },
		nodes: expected,
		payments_made: 4,
		force_closed: None,
		monitor_checks: 0,
	};
	// A restart from fresh store instances reloads what the processors wrote. The first
	// instances stop first, as a restarted node's would: each holds its prefix's writer lease.
	drop(stores);
	let restarted = run_restart_phase(&open, Some(&expected)).expect("restart");
	assert_restart_matches(&expected, &restarted);
	println!(
		"background processors: stored managers caught up {caught_up:?} after the payments; \
		 whole test {:?}\n{restarted}",
		started.elapsed()
	);
}
