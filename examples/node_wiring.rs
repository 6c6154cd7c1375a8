//! How to wire `ldk-object-store` into a real LDK node, without any test harness.
//!
//! ```text
//! cargo run --example node_wiring [-- [<store URL>] [--seed-file PATH] [--run-secs N] [--wipe]]
//! ```
//!
//! The node is built from LDK's production types (`KeysManager`, `ChainMonitor`,
//! `ChannelManager`, `NetworkGraph`, `ProbabilisticScorer`, `DefaultRouter`,
//! `DefaultMessageRouter`, `OnionMessenger`, `PeerManager`) with two pieces of this crate:
//!
//! - one [`ObjectKvStore`] for everything the node stores; `lightning-background-processor`
//!   writes the `ChannelManager`, the network graph and the scorer through its async `KVStore`;
//! - a [`MonitorPersister`] in [`PersistMode::Async`] as the `ChainMonitor`'s persister, writing
//!   `ChannelMonitor`s in LDK's differential format and reporting completions back to the
//!   `ChainMonitor`.
//!
//! Async mode rests on LDK's asynchronous monitor persistence
//! ([`ChannelMonitorUpdateStatus::InProgress`]), which LDK 0.2 calls beta: "a handful of
//! edge-cases remain. Until the remaining cases are fixed, in rare cases, *using this feature may
//! lead to funds loss*." It is shown here because its wiring (binding the `ChainMonitor`,
//! flushing at shutdown) is the part a node gets wrong; a node that does not need it should use
//! [`PersistMode::Sync`], which needs neither (`cargo run --example ldk_node_flow` runs it).
//!
//! One invocation runs the node twice on the same store:
//!
//! - phase 1 starts the node (creating it if the store holds no `ChannelManager`), runs the
//!   background processor for a few seconds on a tokio runtime, stops it, drops everything and
//!   lists the keys in the store;
//! - phase 2 restarts from the store with the startup sequence of the README (persister, chain
//!   monitor, binding, monitors, `ChannelManager`, `load_existing_monitor`), prints what it loaded,
//!   and checks that the node id is the one phase 1 had.
//!
//! Run it again on the same URL and both phases restart the node created by the first run.
//!
//! There is no chain backend: fees are a constant, transactions are logged and dropped, and no
//! blocks are connected, so no channel can be opened. Everything else is what a node runs.
//!
//! The default store is `file://<current directory>/node-wiring-data`. Any URL the builder knows
//! works (`s3://bucket/prefix` with the `AWS_*` variables, `gs://…`, `az://…`, `file:///…`). The
//! node's seed lives in a local file, never in the store (see [`load_or_create_seed`]); both the
//! default directory and the default seed file (`node-wiring-seed`) are git-ignored.
//! `RUST_LOG=ldk=debug,ldk_object_store=debug` shows LDK's log and one line per store operation.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::secp256k1::PublicKey;
use bitcoin::{BlockHash, Network, ScriptBuf, Transaction};
use ldk_object_store::{MonitorPersister, ObjectKvStore, PersisterConfig, StoreBuilder};
use lightning::chain::chaininterface::{
	BroadcasterInterface, ConfirmationTarget, FeeEstimator, FEERATE_FLOOR_SATS_PER_KW,
};
use lightning::chain::chainmonitor::ChainMonitor;
use lightning::chain::{BestBlock, ChannelMonitorUpdateStatus, Filter};
use lightning::events::{Event, ReplayEvent};
use lightning::ln::channelmanager::{
	ChainParameters, ChannelManagerReadArgs, SimpleArcChannelManager,
};
use lightning::ln::peer_handler::{
	IgnoringMessageHandler, MessageHandler, PeerManager, SocketDescriptor,
};
use lightning::onion_message::messenger::{DefaultMessageRouter, OnionMessenger};
use lightning::routing::gossip::{NetworkGraph, P2PGossipSync};
use lightning::routing::router::DefaultRouter;
use lightning::routing::scoring::{
	ProbabilisticScorer, ProbabilisticScoringDecayParameters, ProbabilisticScoringFeeParameters,
};
use lightning::routing::utxo::UtxoLookup;
use lightning::sign::{
	ChangeDestinationSource, EntropySource, InMemorySigner, KeysManager, NodeSigner,
};
use lightning::util::async_poll::AsyncResult;
use lightning::util::config::UserConfig;
use lightning::util::logger::{Level, Logger, Record};
use lightning::util::persist::{
	KVStore, KVStoreSync, MigratableKVStore, CHANNEL_MANAGER_PERSISTENCE_KEY,
	CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE, CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
	NETWORK_GRAPH_PERSISTENCE_KEY, NETWORK_GRAPH_PERSISTENCE_PRIMARY_NAMESPACE,
	NETWORK_GRAPH_PERSISTENCE_SECONDARY_NAMESPACE, SCORER_PERSISTENCE_KEY,
	SCORER_PERSISTENCE_PRIMARY_NAMESPACE, SCORER_PERSISTENCE_SECONDARY_NAMESPACE,
};
use lightning::util::ser::{ReadableArgs, Writeable};
use lightning::util::sweep::OutputSweeper;
use lightning_background_processor::{process_events_async, GossipSync};
use lightning_liquidity::utils::time::DefaultTimeProvider;
use lightning_liquidity::LiquidityManager;

const DEFAULT_DIR: &str = "node-wiring-data";
const DEFAULT_SEED_FILE: &str = "node-wiring-seed";
/// The network only fixes the chain hash and the genesis block here: nothing is connected.
const NETWORK: Network = Network::Regtest;

// ---------------------------------------------------------------------------------------------
// The node's types. LDK's `SimpleArc*` aliases fill in the standard components (KeysManager,
// DefaultRouter over a ProbabilisticScorer, DefaultMessageRouter); we supply the chain
// interfaces, the logger and, as the ChainMonitor's persister, this crate's MonitorPersister.

/// The persister the `ChainMonitor` owns (through an `Arc`; we keep a clone to bind and load).
type Persister = MonitorPersister<
	Arc<NodeLogger>,
	Arc<KeysManager>,
	Arc<KeysManager>,
	Arc<Broadcaster>,
	Arc<FeeEstimatorStub>,
>;

type ChainMonitorT = ChainMonitor<
	InMemorySigner,
	Arc<dyn Filter + Send + Sync>,
	Arc<Broadcaster>,
	Arc<FeeEstimatorStub>,
	Arc<NodeLogger>,
	Arc<Persister>,
	Arc<KeysManager>,
>;

type ChannelManagerT =
	SimpleArcChannelManager<ChainMonitorT, Broadcaster, FeeEstimatorStub, NodeLogger>;

type Graph = NetworkGraph<Arc<NodeLogger>>;
type Scorer = RwLock<ProbabilisticScorer<Arc<Graph>, Arc<NodeLogger>>>;
type GossipSyncT = P2PGossipSync<Arc<Graph>, Arc<dyn UtxoLookup + Send + Sync>, Arc<NodeLogger>>;
type MessageRouterT = DefaultMessageRouter<Arc<Graph>, Arc<NodeLogger>, Arc<KeysManager>>;
type Router = DefaultRouter<
	Arc<Graph>,
	Arc<NodeLogger>,
	Arc<KeysManager>,
	Arc<Scorer>,
	ProbabilisticScoringFeeParameters,
	ProbabilisticScorer<Arc<Graph>, Arc<NodeLogger>>,
>;

/// The `ChannelManager` handles offers (BOLT 12) and async-payment messages; DNS resolution
/// (BIP 353) and custom onion messages are ignored.
type OnionMessengerT = OnionMessenger<
	Arc<KeysManager>,
	Arc<KeysManager>,
	Arc<NodeLogger>,
	Arc<ChannelManagerT>,
	Arc<MessageRouterT>,
	Arc<ChannelManagerT>,
	Arc<ChannelManagerT>,
	IgnoringMessageHandler,
	IgnoringMessageHandler,
>;

type PeerManagerT = PeerManager<
	NoSocket,
	Arc<ChannelManagerT>,
	Arc<GossipSyncT>,
	Arc<OnionMessengerT>,
	Arc<NodeLogger>,
	IgnoringMessageHandler,
	Arc<KeysManager>,
	Arc<ChainMonitorT>,
>;

/// Everything a running node holds.
struct Node {
	store: Arc<ObjectKvStore>,
	logger: Arc<NodeLogger>,
	keys_manager: Arc<KeysManager>,
	chain_monitor: Arc<ChainMonitorT>,
	channel_manager: Arc<ChannelManagerT>,
	network_graph: Arc<Graph>,
	gossip_sync: Arc<GossipSyncT>,
	scorer: Arc<Scorer>,
	onion_messenger: Arc<OnionMessengerT>,
	peer_manager: Arc<PeerManagerT>,
	persister: Arc<Persister>,
}

/// What a start found in the store.
struct Started {
	node: Node,
	node_id: PublicKey,
	/// `None` for a new node, else the block the stored `ChannelManager` was last synced to.
	manager_best_block: Option<BlockHash>,
	monitors_loaded: usize,
	graph_loaded: bool,
	scorer_loaded: bool,
}

// ---------------------------------------------------------------------------------------------
// Startup

/// Builds the node on `store`: a new one if the store holds no `ChannelManager`, otherwise the
/// stored one, in the order the README's startup sequence gives.
async fn start_node(store: Arc<ObjectKvStore>, seed: &[u8; 32]) -> Result<Started, String> {
	// The chain interfaces. A real node passes its chain backend here (bitcoind, Esplora,
	// Electrum); they are stubs because this example connects no blocks.
	let fee_estimator = Arc::new(FeeEstimatorStub);
	let broadcaster = Arc::new(Broadcaster);
	let logger = Arc::new(NodeLogger);

	// All keys derive from the seed. `starting_time` must differ on every start (it only seeds
	// ephemeral randomness); the node id depends on the seed alone.
	let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?;
	// `true`: LDK 0.2's `v2_remote_key_derivation` (what a counterparty's force-close pays us goes
	// to a small static set of scripts the seed alone can find); never downgrade below LDK 0.2.
	let keys_manager = Arc::new(KeysManager::new(seed, now.as_secs(), now.subsec_nanos(), true));

	// 1. The monitor persister, over the same store as everything else. `new_async`: `Persist`
	//    calls return `InProgress` at once and the write runs on the store's runtime; the
	//    ChainMonitor learns of each durable update afterwards (see the binding below). Channel
	//    operations then never wait for a round trip to the bucket while holding LDK's locks.
	//    This rests on LDK's asynchronous persistence, which LDK calls beta and warns may lead to
	//    loss of funds if misused; `MonitorPersister::new` is the synchronous choice.
	let persister: Arc<Persister> = Arc::new(
		MonitorPersister::new_async(
			&store,
			PersisterConfig::default(),
			Arc::clone(&logger),
			Arc::clone(&keys_manager),
			Arc::clone(&keys_manager),
			Arc::clone(&broadcaster),
			Arc::clone(&fee_estimator),
		)
		.map_err(|e| format!("starting the monitor persister: {e}"))?,
	);

	// 2. The ChainMonitor, which owns the persister. No `Filter`: there is no chain source to
	//    register outputs with (a node on Esplora or Electrum passes its `Filter` here).
	let chain_monitor: Arc<ChainMonitorT> = Arc::new(ChainMonitor::new(
		None,
		Arc::clone(&broadcaster),
		Arc::clone(&logger),
		Arc::clone(&fee_estimator),
		Arc::clone(&persister),
		Arc::clone(&keys_manager),
		keys_manager.get_peer_storage_key(),
	));

	// 3. Async mode only: give the persister a weak reference to the ChainMonitor, which could
	//    not exist when the persister was built. From now on each durable monitor update is
	//    reported at once with `ChainMonitor::channel_monitor_updated`, which also wakes the
	//    background processor so the `ChannelManager` moves on (and gets persisted) promptly.
	//    Weak, so that the persister inside the ChainMonitor does not keep it alive in a cycle.
	//    Without this call completions still arrive, but only when the ChainMonitor next polls
	//    its persister. Bind right after building the ChainMonitor, before any channel runs.
	persister.bind_chain_monitor(&chain_monitor);

	// The network graph and the scorer, as the background processor left them (or new ones).
	let graph_bytes = read_optional(
		&store,
		NETWORK_GRAPH_PERSISTENCE_PRIMARY_NAMESPACE,
		NETWORK_GRAPH_PERSISTENCE_SECONDARY_NAMESPACE,
		NETWORK_GRAPH_PERSISTENCE_KEY,
	)
	.await?;
	let graph_loaded = graph_bytes.is_some();
	let network_graph = Arc::new(match graph_bytes {
		Some(bytes) => NetworkGraph::read(&mut &bytes[..], Arc::clone(&logger))
			.map_err(|e| format!("decoding the stored network graph: {e:?}"))?,
		None => NetworkGraph::new(NETWORK, Arc::clone(&logger)),
	});
	let scorer_bytes = read_optional(
		&store,
		SCORER_PERSISTENCE_PRIMARY_NAMESPACE,
		SCORER_PERSISTENCE_SECONDARY_NAMESPACE,
		SCORER_PERSISTENCE_KEY,
	)
	.await?;
	let scorer_loaded = scorer_bytes.is_some();
	let decay = ProbabilisticScoringDecayParameters::default();
	let scorer = Arc::new(RwLock::new(match scorer_bytes {
		Some(bytes) => ProbabilisticScorer::read(
			&mut &bytes[..],
			(decay, Arc::clone(&network_graph), Arc::clone(&logger)),
		)
		.map_err(|e| format!("decoding the stored scorer: {e:?}"))?,
		None => ProbabilisticScorer::new(decay, Arc::clone(&network_graph), Arc::clone(&logger)),
	}));

	let router: Arc<Router> = Arc::new(DefaultRouter::new(
		Arc::clone(&network_graph),
		Arc::clone(&logger),
		Arc::clone(&keys_manager),
		Arc::clone(&scorer),
		ProbabilisticScoringFeeParameters::default(),
	));
	let message_router =
		Arc::new(DefaultMessageRouter::new(Arc::clone(&network_graph), Arc::clone(&keys_manager)));
	let config = UserConfig::default();

	// 4. The monitors, with their pending update objects applied, read in parallel. Read-only:
	//    nothing is written back at startup.
	let monitors = persister
		.read_all_channel_monitors_with_updates()
		.await
		.map_err(|e| format!("loading the channel monitors: {e}"))?;
	let monitors_loaded = monitors.len();

	// 5. The ChannelManager: read over the monitors if the store has one, else a new one.
	let manager_bytes = read_optional(
		&store,
		CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
		CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
		CHANNEL_MANAGER_PERSISTENCE_KEY,
	)
	.await?;
	let (channel_manager, manager_best_block) = match manager_bytes {
		Some(bytes) => {
			let read_args = ChannelManagerReadArgs::new(
				Arc::clone(&keys_manager),
				Arc::clone(&keys_manager),
				Arc::clone(&keys_manager),
				Arc::clone(&fee_estimator),
				Arc::clone(&chain_monitor),
				Arc::clone(&broadcaster),
				Arc::clone(&router),
				Arc::clone(&message_router),
				Arc::clone(&logger),
				config,
				monitors.iter().map(|(_, monitor)| monitor).collect(),
			);
			// Fails if the stored node id is not this seed's (a wrong seed file).
			let (best_block, manager) =
				<(BlockHash, Arc<ChannelManagerT>)>::read(&mut &bytes[..], read_args).map_err(
					|e| {
						format!(
							"decoding the stored ChannelManager: {e:?} (LDK refuses a manager \
							 written under another seed: is this the node's seed file?)"
						)
					},
				)?;
			(manager, Some(best_block))
		},
		None if !monitors.is_empty() => {
			// A new ChannelManager next to existing monitors would abandon those channels.
			return Err(format!(
				"the store holds {} channel monitor(s) but no ChannelManager; refusing to create a \
				 new node over them",
				monitors.len()
			));
		},
		None => {
			// A new node starts at the genesis block; a real node passes the chain tip it syncs
			// from, so that it does not have to scan the whole chain.
			let params =
				ChainParameters { network: NETWORK, best_block: BestBlock::from_network(NETWORK) };
			let manager = Arc::new(ChannelManagerT::new(
				Arc::clone(&fee_estimator),
				Arc::clone(&chain_monitor),
				Arc::clone(&broadcaster),
				router,
				Arc::clone(&message_router),
				Arc::clone(&logger),
				Arc::clone(&keys_manager),
				Arc::clone(&keys_manager),
				Arc::clone(&keys_manager),
				config,
				params,
				now.as_secs() as u32,
			));
			(manager, None)
		},
	};

	// 6. Only now hand the monitors to the ChainMonitor. `load_existing_monitor` writes nothing
	//    (monitors last written by LDK 0.1 or later); `watch_channel` would re-persist each one.
	for (_best_block, monitor) in monitors {
		let channel_id = monitor.channel_id();
		match chain_monitor.load_existing_monitor(channel_id, monitor) {
			Ok(ChannelMonitorUpdateStatus::Completed) => {},
			// Only for monitors written before LDK 0.1, which are re-persisted (asynchronously).
			Ok(ChannelMonitorUpdateStatus::InProgress) => {},
			Ok(ChannelMonitorUpdateStatus::UnrecoverableError) | Err(()) => {
				return Err(format!("the ChainMonitor refused the monitor of {channel_id}"));
			},
		}
	}

	// 7. A real node now connects the blocks since each monitor's and the manager's best block
	//    (lightning-block-sync, or lightning-transaction-sync's `Confirm` for Esplora/Electrum),
	//    and only then starts the background processor and accepts peers.

	// Networking: gossip, onion messages and the peer manager. Without a UTXO lookup, gossip
	// channels are accepted unverified.
	let gossip_sync = Arc::new(P2PGossipSync::new(
		Arc::clone(&network_graph),
		None::<Arc<dyn UtxoLookup + Send + Sync>>,
		Arc::clone(&logger),
	));
	let onion_messenger: Arc<OnionMessengerT> = Arc::new(OnionMessenger::new(
		Arc::clone(&keys_manager),
		Arc::clone(&keys_manager),
		Arc::clone(&logger),
		Arc::clone(&channel_manager),
		message_router,
		Arc::clone(&channel_manager),
		Arc::clone(&channel_manager),
		IgnoringMessageHandler {},
		IgnoringMessageHandler {},
	));
	let peer_manager = Arc::new(PeerManager::new(
		MessageHandler {
			chan_handler: Arc::clone(&channel_manager),
			route_handler: Arc::clone(&gossip_sync),
			onion_message_handler: Arc::clone(&onion_messenger),
			custom_message_handler: IgnoringMessageHandler {},
			send_only_message_handler: Arc::clone(&chain_monitor),
		},
		now.as_secs() as u32,
		&keys_manager.get_secure_random_bytes(),
		Arc::clone(&logger),
		Arc::clone(&keys_manager),
	));

	let node_id = channel_manager.get_our_node_id();
	Ok(Started {
		node: Node {
			store,
			logger,
			keys_manager,
			chain_monitor,
			channel_manager,
			network_graph,
			gossip_sync,
			scorer,
			onion_messenger,
			peer_manager,
			persister,
		},
		node_id,
		manager_best_block,
		monitors_loaded,
		graph_loaded,
		scorer_loaded,
	})
}

/// Reads a key through the async `KVStore`; `None` only when it is really absent (this store
/// never answers "not found" for a permission or server error).
async fn read_optional(
	store: &ObjectKvStore, primary: &str, secondary: &str, key: &str,
) -> Result<Option<Vec<u8>>, String> {
	match KVStore::read(store, primary, secondary, key).await {
		Ok(bytes) => Ok(Some(bytes)),
		Err(e) if e.kind() == lightning::io::ErrorKind::NotFound => Ok(None),
		Err(e) => Err(format!("reading {key}: {e}")),
	}
}

// ---------------------------------------------------------------------------------------------
// Running

/// Runs `process_events_async` for `run_for`, then stops it through its sleeper and waits for
/// it to return. It writes the `ChannelManager` whenever it needs persisting, the network graph
/// and the scorer on their timers, and all three once more on exit, all through `KVStore` (the
/// async trait) of the same `ObjectKvStore`.
async fn run_background_processor(node: &Node, run_for: Duration) -> Result<(), String> {
	// The sleeper is LDK's only way to stop the processor: each sleep ends after its duration
	// (`false`) or as soon as the exit signal arrives (`true`, and the processor returns).
	let (exit_tx, exit_rx) = tokio::sync::watch::channel(());
	let sleeper = move |duration: Duration| {
		let mut exit = exit_rx.clone();
		Box::pin(async move {
			tokio::select! {
				_ = tokio::time::sleep(duration) => false,
				_ = exit.changed() => true,
			}
		})
	};
	// Events a node acts on (funding, payments, spendable outputs for the sweeper, …). A
	// channel-less node gets none; `Err(ReplayEvent())` would have LDK hand the event again.
	let logger = Arc::clone(&node.logger);
	let event_handler = move |event: Event| {
		let logger = Arc::clone(&logger);
		async move {
			lightning::log_info!(logger, "event: {event:?}");
			Ok::<(), ReplayEvent>(())
		}
	};

	// Owned clones, so that the processor can run as a task of its own, as in a real node.
	let processor = process_events_async(
		Arc::clone(&node.store),
		event_handler,
		Arc::clone(&node.chain_monitor),
		Arc::clone(&node.channel_manager),
		Some(Arc::clone(&node.onion_messenger)),
		GossipSync::p2p(Arc::clone(&node.gossip_sync)),
		Arc::clone(&node.peer_manager),
		// No LSPS client or service. The type only names what would be there; its `KVStore` is
		// the same store.
		None::<Arc<LiquidityManagerT>>,
		// A real node passes its `OutputSweeper` (over the same store, key `output_sweeper`)
		// to claim on-chain funds after closes; it needs a wallet for change addresses.
		None::<Arc<SweeperT>>,
		Arc::clone(&node.logger),
		Some(Arc::clone(&node.scorer)),
		sleeper,
		false,
		|| SystemTime::now().duration_since(UNIX_EPOCH).ok(),
	);
	let task = tokio::spawn(processor);

	tokio::time::sleep(run_for).await;
	exit_tx.send(()).map_err(|_| "the background processor is gone".to_owned())?;
	// A clean exit means the final writes of the manager, scorer and graph are durable.
	task.await
		.map_err(|e| format!("the background processor panicked: {e}"))?
		.map_err(|e| format!("the background processor failed: {e}"))?;
	// Async monitor writes still in flight finish before the node lets go of the store, and
	// every channel's full monitor is written, so the next start reads one object per monitor
	// (`consolidate` flushes too). It blocks: off the async workers.
	let (persister, chain_monitor) = (Arc::clone(&node.persister), Arc::clone(&node.chain_monitor));
	tokio::task::spawn_blocking(move || persister.consolidate(&*chain_monitor))
		.await
		.map_err(|e| format!("consolidating panicked: {e}"))?
		.map_err(|e| format!("consolidating the monitors failed: {e}"))?;
	Ok(())
}

type LiquidityManagerT = LiquidityManager<
	Arc<KeysManager>,
	Arc<KeysManager>,
	Arc<ChannelManagerT>,
	Arc<dyn Filter + Send + Sync>,
	Arc<ObjectKvStore>,
	Arc<DefaultTimeProvider>,
	Arc<Broadcaster>,
>;

type SweeperT = OutputSweeper<
	Arc<Broadcaster>,
	Arc<NoWallet>,
	Arc<FeeEstimatorStub>,
	Arc<dyn Filter + Send + Sync>,
	Arc<ObjectKvStore>,
	Arc<NodeLogger>,
	Arc<KeysManager>,
>;

/// Checks that what the processor wrote on exit is the node's live state.
async fn check_persisted(node: &Node) -> Result<(), String> {
	let expected = [
		(CHANNEL_MANAGER_PERSISTENCE_KEY, node.channel_manager.encode()),
		(NETWORK_GRAPH_PERSISTENCE_KEY, node.network_graph.encode()),
		(SCORER_PERSISTENCE_KEY, node.scorer.encode()),
	];
	for (key, live) in expected {
		// All three live at the top level ("", "").
		match read_optional(&node.store, "", "", key).await? {
			Some(stored) if stored == live => {
				println!("  {key:<14} {:>7} bytes, as live", live.len())
			},
			Some(stored) => {
				return Err(format!(
					"{key}: stored {} bytes differ from the live {} bytes",
					stored.len(),
					live.len()
				))
			},
			None => return Err(format!("{key}: not written by the background processor")),
		}
	}
	Ok(())
}

/// One start of the node: build or restore it, run the background processor, stop. Returns the
/// node id and whether the node was restored from the store.
async fn run_phase(
	label: &str, url: &str, seed: &[u8; 32], run_for: Duration,
) -> Result<(PublicKey, bool), String> {
	let store = Arc::new(open_store(url)?);
	let keys_before = list_keys(&store)?;
	let started = start_node(store, seed).await?;
	let node = &started.node;
	println!("{label}: node {}", started.node_id);
	match started.manager_best_block {
		None => println!("  new node: the store held no ChannelManager"),
		Some(best_block) => println!(
			"  restarted: ChannelManager at block {best_block}, {} channel(s), {} monitor(s) \
			 loaded; graph {}, scorer {}",
			node.channel_manager.list_channels().len(),
			started.monitors_loaded,
			if started.graph_loaded { "loaded" } else { "new" },
			if started.scorer_loaded { "loaded" } else { "new" },
		),
	}
	println!(
		"  ChainMonitor watches {} channel(s); network graph: {} node(s), {} channel(s)",
		node.chain_monitor.list_monitors().len(),
		node.network_graph.read_only().nodes().len(),
		node.network_graph.read_only().channels().len(),
	);
	println!(
		"  store before the background processor: {} key(s) {:?}",
		keys_before.len(),
		keys_before.iter().map(|(_, _, key)| key.as_str()).collect::<Vec<_>>()
	);

	println!("  running the background processor for {run_for:?} …");
	run_background_processor(node, run_for).await?;
	// The processor writes only through `KVStore` (the async trait); nothing else writes here.
	println!("  stopped; the processor's KVStore writes, read back:");
	check_persisted(node).await?;
	// Nothing writes any more: end the store's writing in every clone and release its writer
	// lease, so the next start (in this process or another) begins at once. Never leave this to
	// `Drop`: a clone kept alive anywhere would keep the lease.
	node.store.close().await;
	debug_assert_eq!(
		node.keys_manager.get_node_id(lightning::sign::Recipient::Node),
		Ok(started.node_id)
	);
	Ok((started.node_id, started.manager_best_block.is_some()))
	// `started` is dropped here: every component, the store's clones and its runtime.
}

// ---------------------------------------------------------------------------------------------
// The chain interfaces and the logger

/// A constant feerate. A real node asks its chain backend, per `ConfirmationTarget`.
struct FeeEstimatorStub;

impl FeeEstimator for FeeEstimatorStub {
	fn get_est_sat_per_1000_weight(&self, _target: ConfirmationTarget) -> u32 {
		FEERATE_FLOOR_SATS_PER_KW
	}
}

/// Logs and drops transactions. A real node sends them to its chain backend.
struct Broadcaster;

impl BroadcasterInterface for Broadcaster {
	fn broadcast_transactions(&self, txs: &[&Transaction]) {
		for tx in txs {
			tracing::warn!(txid = %tx.compute_txid(), "no chain backend: transaction not broadcast");
		}
	}
}

/// LDK's log, forwarded to `tracing` under the target `ldk` (the store logs under
/// `ldk_object_store`), so one subscriber shows both.
struct NodeLogger;

impl Logger for NodeLogger {
	fn log(&self, record: Record) {
		let (module, line) = (record.module_path, record.line);
		match record.level {
			Level::Gossip | Level::Trace => {
				tracing::trace!(target: "ldk", module, line, "{}", record.args)
			},
			Level::Debug => tracing::debug!(target: "ldk", module, line, "{}", record.args),
			Level::Info => tracing::info!(target: "ldk", module, line, "{}", record.args),
			Level::Warn => tracing::warn!(target: "ldk", module, line, "{}", record.args),
			Level::Error => tracing::error!(target: "ldk", module, line, "{}", record.args),
		}
	}
}

/// Only names the sweeper's type for `None`; a real node's wallet gives change addresses.
struct NoWallet;

impl ChangeDestinationSource for NoWallet {
	fn get_change_destination_script<'a>(&'a self) -> AsyncResult<'a, ScriptBuf, ()> {
		Box::pin(async { Err(()) })
	}
}

/// The peer manager needs a socket type; a real node uses `lightning-net-tokio`'s.
#[derive(Clone, PartialEq, Eq, Hash)]
struct NoSocket;

impl SocketDescriptor for NoSocket {
	fn send_data(&mut self, _data: &[u8], _continue_read: bool) -> usize {
		0
	}
	fn disconnect_socket(&mut self) {}
}

// ---------------------------------------------------------------------------------------------
// The seed, the store and the command line

/// The node's 32-byte seed, from `path`, or a new random one written there.
///
/// THE SEED NEVER GOES INTO THE STORE. It is the node's identity and the root of every key that
/// can spend its channel funds; whoever reads the bucket must not get it. Keep it where a
/// production node keeps secrets (a local file with tight permissions as here, a secret manager,
/// an HSM), and back it up separately: the store alone cannot restore a node.
fn load_or_create_seed(path: &Path) -> Result<[u8; 32], String> {
	match std::fs::read(path) {
		Ok(bytes) => bytes.try_into().map_err(|bytes: Vec<u8>| {
			format!("{}: {} bytes, a seed has 32", path.display(), bytes.len())
		}),
		Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
			let mut seed = [0u8; 32];
			// The operating system's CSPRNG (Unix).
			let mut urandom = std::fs::File::open("/dev/urandom")
				.map_err(|e| format!("/dev/urandom: {e} (put 32 random bytes in the seed file)"))?;
			std::io::Read::read_exact(&mut urandom, &mut seed)
				.map_err(|e| format!("/dev/urandom: {e}"))?;
			write_private(path, &seed)?;
			println!("new seed written to {} (back it up; it is not in the store)", path.display());
			Ok(seed)
		},
		Err(e) => Err(format!("{}: {e}", path.display())),
	}
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
	let mut options = std::fs::OpenOptions::new();
	options.write(true).create_new(true);
	#[cfg(unix)]
	std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
	let mut file = options.open(path).map_err(|e| format!("{}: {e}", path.display()))?;
	std::io::Write::write_all(&mut file, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
	file.sync_all().map_err(|e| format!("{}: {e}", path.display()))
}

fn open_store(url: &str) -> Result<ObjectKvStore, String> {
	// A new node's directory is created; in production leave this off, so that an unmounted
	// volume is refused rather than taken for a new, empty node.
	StoreBuilder::from_url(url)
		.create_if_missing(true)
		.build()
		.map_err(|e| format!("opening {url}: {e}"))
}

fn list_keys(store: &ObjectKvStore) -> Result<Vec<(String, String, String)>, String> {
	let mut keys = MigratableKVStore::list_all_keys(store).map_err(|e| format!("listing: {e}"))?;
	keys.sort();
	Ok(keys)
}

fn print_keys(url: &str) -> Result<(), String> {
	let store = open_store(url)?;
	let keys = list_keys(&store)?;
	println!("keys in {url} ({}):", keys.len());
	for (primary, secondary, key) in keys {
		let size = KVStoreSync::read(&store, &primary, &secondary, &key)
			.map_err(|e| format!("reading {key}: {e}"))?
			.len();
		let path: Vec<&str> = [&primary, &secondary, &key]
			.into_iter()
			.filter(|s| !s.is_empty())
			.map(|s| &**s)
			.collect();
		println!("  {:<40} {size:>7} bytes", path.join("/"));
	}
	Ok(())
}

/// Removes every key of the store and the seed file.
fn wipe(url: &str, seed_file: &Path) -> Result<(), String> {
	let store = open_store(url)?;
	let keys = list_keys(&store)?;
	for (primary, secondary, key) in &keys {
		KVStoreSync::remove(&store, primary, secondary, key, false)
			.map_err(|e| format!("removing {key}: {e}"))?;
	}
	match std::fs::remove_file(seed_file) {
		Ok(()) => {},
		Err(e) if e.kind() == std::io::ErrorKind::NotFound => {},
		Err(e) => return Err(format!("{}: {e}", seed_file.display())),
	}
	println!("wiped {} key(s) and {}", keys.len(), seed_file.display());
	Ok(())
}

struct Args {
	url: String,
	seed_file: PathBuf,
	run_for: Duration,
	wipe: bool,
}

fn usage() -> &'static str {
	"usage: cargo run --example node_wiring [-- [<store URL>] [--seed-file PATH] [--run-secs N] \
	 [--wipe]]"
}

fn parse_args() -> Result<Args, String> {
	let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
	let mut args = Args {
		url: format!("file://{}", cwd.join(DEFAULT_DIR).display()),
		seed_file: cwd.join(DEFAULT_SEED_FILE),
		run_for: Duration::from_secs(3),
		wipe: false,
	};
	let mut it = std::env::args().skip(1);
	let mut url = None;
	while let Some(arg) = it.next() {
		match arg.as_str() {
			"--wipe" => args.wipe = true,
			"--seed-file" => {
				args.seed_file = it.next().ok_or("--seed-file needs a path")?.into();
			},
			"--run-secs" => {
				let secs = it.next().ok_or("--run-secs needs a number")?;
				let secs: f64 = secs.parse().map_err(|_| format!("--run-secs {secs}"))?;
				args.run_for = Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())?;
			},
			"-h" | "--help" => return Err(usage().to_owned()),
			other if other.starts_with('-') => return Err(format!("unknown option {other}")),
			other if url.is_none() => url = Some(other.to_owned()),
			other => return Err(format!("unexpected argument {other}")),
		}
	}
	if let Some(url) = url {
		args.url = url;
	}
	Ok(args)
}

fn run(args: Args) -> Result<(), String> {
	if args.wipe {
		wipe(&args.url, &args.seed_file)?;
	}
	// A store that holds a node but no seed file: a new seed would be a different node, whose
	// keys cannot read (or spend) what the store holds.
	if !args.seed_file.exists() && !list_keys(&open_store(&args.url)?)?.is_empty() {
		return Err(format!(
			"{} holds data but the seed file {} is missing; pass the node's seed file with \
			 --seed-file (or --wipe to start over)",
			args.url,
			args.seed_file.display()
		));
	}
	let seed = load_or_create_seed(&args.seed_file)?;
	println!(
		"store: {}\nseed:  {} (local, not in the store)\n",
		args.url,
		args.seed_file.display()
	);

	// The node's own runtime. The store runs its I/O on a small runtime of its own, so it works
	// the same from this runtime's tasks, from its `block_on`, or from plain threads.
	let runtime = tokio::runtime::Builder::new_multi_thread()
		.worker_threads(2)
		.enable_all()
		.build()
		.map_err(|e| format!("tokio runtime: {e}"))?;

	let (first, _) = runtime.block_on(run_phase("phase 1", &args.url, &seed, args.run_for))?;
	println!();
	print_keys(&args.url)?;
	println!();

	// Nothing of phase 1 is left: phase 2 starts from the store alone, with fresh instances.
	let (second, restarted) = runtime.block_on(run_phase(
		"phase 2 (restart)",
		&args.url,
		&seed,
		args.run_for.min(Duration::from_secs(1)),
	))?;
	if !restarted {
		return Err(format!(
			"phase 2 found no ChannelManager in {}: a memory:// store lives only as long as its \
			 instance; use a directory or a bucket",
			args.url
		));
	}
	if first != second {
		return Err(format!("node id changed across the restart: {first} then {second}"));
	}
	println!("\nsame node id after the restart: {second}");
	Ok(())
}

fn main() -> ExitCode {
	tracing_subscriber::fmt()
		.with_env_filter(
			tracing_subscriber::EnvFilter::try_from_default_env()
				.unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
		)
		.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
		.with_writer(std::io::stderr)
		.init();
	let args = match parse_args() {
		Ok(args) => args,
		Err(e) => {
			eprintln!("{e}");
			return ExitCode::from(2);
		},
	};
	match run(args) {
		Ok(()) => ExitCode::SUCCESS,
		Err(e) => {
			eprintln!("error: {e}");
			ExitCode::FAILURE
		},
	}
}
