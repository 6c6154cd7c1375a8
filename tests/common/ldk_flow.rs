//! A real LDK flow over [`ObjectKvStore`], shared by `tests/ldk_node.rs` and
//! `examples/ldk_node_flow.rs` (which includes this file with `#[path]`, so it must not use any
//! other test module).
//!
//! Two nodes from LDK's own functional-test harness (`lightning`'s `_test_utils` feature) persist
//! their `ChannelMonitor`s through the store: each node's `ChainMonitor` gets the store as its
//! persister, which LDK's blanket `impl<K: KVStoreSync> Persist for K` turns into a full-monitor
//! persister writing `monitors/<funding txid>_<vout>`. The flow opens a channel, pays both ways,
//! writes the `ChannelManager`s, network graphs and scorers under LDK's keys, optionally
//! force-closes (and writes the managers again, as a node would), and checks after every step
//! that the stored monitors have the live ones' latest update ids and equal them (`PartialEq`;
//! after a force-close up to the monitor events LDK released, see [`MonitorMatch`]).
//!
//! [`run_restart_phase`] then plays a node restart: it builds new store instances on the same
//! location, lists and reads every key, loads the monitors with
//! [`read_channel_monitors`], and deserializes each `ChannelManager` from the stored bytes with
//! [`ChannelManagerReadArgs`] on fresh components, the way a node starts up.
//!
//! Phase 1 panics on failure (LDK's harness does as well); phase 2 returns a [`FlowError`] naming
//! what did not match.

#![allow(dead_code)]

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::hashes::sha256::Hash as Sha256;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::PublicKey;
use bitcoin::{BlockHash, Network};
use lightning::chain::channelmonitor::{Balance, ChannelMonitor};
use lightning::events::ClosureReason;
use lightning::ln::channelmanager::ChannelManagerReadArgs;
use lightning::ln::functional_test_utils::{
	check_added_monitors, check_closed_broadcast, check_closed_event, claim_payment, connect_block,
	create_announced_chan_between_nodes_with_value, create_chanmon_cfgs, create_dummy_block,
	create_network, create_node_cfgs, create_node_chanmgrs, get_route,
	send_along_route_with_secret, test_default_channel_config, ConnectStyle, Node, TestChanMonCfg,
	TestChannelManager, TEST_FINAL_CLTV,
};
use lightning::ln::types::ChannelId;
use lightning::routing::gossip::NetworkGraph;
use lightning::routing::router::{PaymentParameters, RouteParameters};
use lightning::routing::scoring::{
	ProbabilisticScorer, ProbabilisticScoringDecayParameters, ScoreUpdate,
};
use lightning::types::payment::{PaymentHash, PaymentPreimage};
use lightning::util::persist::{
	read_channel_monitors, KVStoreSync, MigratableKVStore, CHANNEL_MANAGER_PERSISTENCE_KEY,
	CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE, CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
	CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE, CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE,
	NETWORK_GRAPH_PERSISTENCE_KEY, NETWORK_GRAPH_PERSISTENCE_PRIMARY_NAMESPACE,
	NETWORK_GRAPH_PERSISTENCE_SECONDARY_NAMESPACE, SCORER_PERSISTENCE_KEY,
	SCORER_PERSISTENCE_PRIMARY_NAMESPACE, SCORER_PERSISTENCE_SECONDARY_NAMESPACE,
};
use lightning::util::ser::{ReadableArgs, Writeable};
use lightning::util::test_channel_signer::TestChannelSigner;
use lightning::util::test_utils::{
	SyncPersist, TestBroadcaster, TestChainMonitor, TestChainSource, TestFeeEstimator,
	TestKeysInterface, TestLogger, TestMessageRouter, TestRouter, TestScorer,
};

use ldk_object_store::ObjectKvStore;

/// The two nodes' names, handed to the store factory (use them as per-node prefixes).
pub const NODE_NAMES: [&str; 2] = ["node-0", "node-1"];

/// Makes (or re-opens) the store of the node with the given name. Called once per node and
/// phase; the restart phase must get a store over the same data as the persist phase did.
pub type StoreFactory<'f> = &'f dyn Fn(&str) -> ObjectKvStore;

/// One live monitor as a node in LDK's harness holds it.
type Monitor = ChannelMonitor<TestChannelSigner>;

/// A scorer over a harness node's network graph.
pub type FlowScorer<'g, 'l> =
	RwLock<ProbabilisticScorer<&'g NetworkGraph<&'l TestLogger>, &'l TestLogger>>;

/// What the persist phase does.
#[derive(Debug, Clone)]
pub struct FlowOptions {
	/// Payments made, alternating direction, starting with node 0 paying node 1.
	pub payments: u32,
	/// Channel size in satoshis (node 0 funds it and pushes `channel_value_sat / 2` to node 1).
	pub channel_value_sat: u64,
	/// Force-close the channel at the end (node 0 broadcasts, node 1 sees it confirmed).
	pub force_close: bool,
	/// Also write each node's network graph and a scorer.
	pub write_graph_and_scorer: bool,
}

impl Default for FlowOptions {
	fn default() -> Self {
		FlowOptions {
			payments: 6,
			channel_value_sat: 1_000_000,
			force_close: true,
			write_graph_and_scorer: true,
		}
	}
}

/// A channel as `ChannelManager::list_channels` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSnapshot {
	pub channel_id: ChannelId,
	pub counterparty: PublicKey,
	pub value_sat: u64,
	pub outbound_capacity_msat: u64,
	pub inbound_capacity_msat: u64,
	pub is_outbound: bool,
}

impl ChannelSnapshot {
	fn list(manager: &TestChannelManager<'_, '_>) -> Vec<ChannelSnapshot> {
		let mut channels: Vec<ChannelSnapshot> = manager
			.list_channels()
			.into_iter()
			.map(|c| ChannelSnapshot {
				channel_id: c.channel_id,
				counterparty: c.counterparty.node_id,
				value_sat: c.channel_value_satoshis,
				outbound_capacity_msat: c.outbound_capacity_msat,
				inbound_capacity_msat: c.inbound_capacity_msat,
				is_outbound: c.is_outbound,
			})
			.collect();
		channels.sort_by_key(|c| c.channel_id.0);
		channels
	}
}

/// A live monitor at the end of the persist phase.
#[derive(Debug, Clone)]
pub struct MonitorSnapshot {
	/// Its key in the `monitors` namespace.
	pub key: String,
	pub channel_id: ChannelId,
	pub latest_update_id: u64,
	/// The live monitor's serialization, to compare the stored one with after the restart.
	pub encoded: Vec<u8>,
}

/// One stored key and the size of its object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredKey {
	pub primary_namespace: String,
	pub secondary_namespace: String,
	pub key: String,
	pub bytes: usize,
}

impl fmt::Display for StoredKey {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		let mut path = String::new();
		for part in [&self.primary_namespace, &self.secondary_namespace] {
			if !part.is_empty() {
				path.push_str(part);
				path.push('/');
			}
		}
		write!(f, "{path}{} ({} bytes)", self.key, self.bytes)
	}
}

/// What one node left in its store at the end of the persist phase.
#[derive(Debug, Clone)]
pub struct NodeSnapshot {
	pub name: String,
	pub node_id: PublicKey,
	/// The channels as the last written `ChannelManager` had them (empty after a force-close).
	pub channels: Vec<ChannelSnapshot>,
	pub monitors: Vec<MonitorSnapshot>,
	/// Channels in the network graph that was written (if any).
	pub graph_channels: Option<usize>,
	/// Every key in the store with its size.
	pub keys: Vec<StoredKey>,
}

/// The outcome of [`run_persist_phase`].
#[derive(Debug, Clone)]
pub struct PersistSummary {
	pub options: FlowOptions,
	pub nodes: Vec<NodeSnapshot>,
	pub payments_made: u32,
	pub force_closed: Option<ChannelId>,
	/// How many times the stored monitors were read back and compared with the live ones.
	pub monitor_checks: usize,
}

/// A monitor read back in the restart phase.
#[derive(Debug, Clone)]
pub struct RestoredMonitor {
	pub key: String,
	pub channel_id: ChannelId,
	pub latest_update_id: u64,
	/// How it compares with the live monitor of the persist phase (if given).
	pub equals_live: Option<MonitorMatch>,
	pub claimable_balances: Vec<String>,
	pub claimable_sat: u64,
}

/// What one node read back in the restart phase.
#[derive(Debug, Clone)]
pub struct RestoredNode {
	pub name: String,
	pub node_id: PublicKey,
	pub keys: Vec<StoredKey>,
	pub monitors: Vec<RestoredMonitor>,
	/// The channels of the `ChannelManager` deserialized from the stored bytes.
	pub channels: Vec<ChannelSnapshot>,
	pub manager_bytes: usize,
	/// (nodes, channels) of the stored network graph, if one was stored.
	pub graph: Option<(usize, usize)>,
	pub scorer_bytes: Option<usize>,
}

/// The outcome of [`run_restart_phase`].
#[derive(Debug, Clone)]
pub struct RestartSummary {
	pub nodes: Vec<RestoredNode>,
	/// Whether the reads were compared with a [`PersistSummary`] (and matched).
	pub compared_with_live: bool,
}

impl RestartSummary {
	pub fn keys_read(&self) -> usize {
		self.nodes.iter().map(|n| n.keys.len()).sum()
	}

	pub fn bytes_read(&self) -> usize {
		self.nodes.iter().flat_map(|n| &n.keys).map(|k| k.bytes).sum()
	}

	pub fn monitor_count(&self) -> usize {
		self.nodes.iter().map(|n| n.monitors.len()).sum()
	}
}

impl fmt::Display for RestartSummary {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		for node in &self.nodes {
			writeln!(f, "{} (node id {})", node.name, node.node_id)?;
			writeln!(f, "  keys: {}", node.keys.len())?;
			for key in &node.keys {
				writeln!(f, "    {key}")?;
			}
			writeln!(f, "  channel monitors: {}", node.monitors.len())?;
			for m in &node.monitors {
				let equal = match m.equals_live {
					Some(MonitorMatch::Equal) => ", equal to the live monitor",
					Some(MonitorMatch::EqualExceptReleasedEvents) => {
						", equal to the live monitor but for the events LDK released after writing it"
					},
					Some(MonitorMatch::Different) => ", DIFFERENT from the live monitor",
					None => "",
				};
				writeln!(
					f,
					"    {} (channel {}): latest update id {}{equal}",
					m.key, m.channel_id, m.latest_update_id
				)?;
				writeln!(f, "      claimable: {} sat", m.claimable_sat)?;
				for balance in &m.claimable_balances {
					writeln!(f, "        {balance}")?;
				}
			}
			writeln!(
				f,
				"  channel manager ({} bytes) reloaded with {} open channel(s)",
				node.manager_bytes,
				node.channels.len()
			)?;
			for c in &node.channels {
				writeln!(
					f,
					"    channel {} with {}: {} sat, outbound capacity {} msat, inbound capacity {} msat",
					c.channel_id, c.counterparty, c.value_sat, c.outbound_capacity_msat,
					c.inbound_capacity_msat
				)?;
			}
			if let Some((nodes, channels)) = node.graph {
				writeln!(f, "  network graph: {nodes} nodes, {channels} channels")?;
			}
			if let Some(bytes) = node.scorer_bytes {
				writeln!(f, "  scorer: {bytes} bytes, deserialized")?;
			}
		}
		write!(
			f,
			"total: {} keys, {} bytes, {} monitors{}",
			self.keys_read(),
			self.bytes_read(),
			self.monitor_count(),
			if self.compared_with_live { ", all matching the live state" } else { "" }
		)
	}
}

/// A failed check of the restart phase, or a store error, with a message naming what failed.
#[derive(Debug)]
pub struct FlowError(pub String);

impl fmt::Display for FlowError {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		f.write_str(&self.0)
	}
}

impl std::error::Error for FlowError {}

fn fail<T>(msg: impl Into<String>) -> Result<T, FlowError> {
	Err(FlowError(msg.into()))
}

/// The seed LDK's harness gives node `i` (`create_chanmon_cfgs`), so a restarted node derives
/// the same keys.
fn node_seed(i: usize) -> [u8; 32] {
	[i as u8; 32]
}

fn now() -> Duration {
	SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Every key in `store` with the size of its object, sorted.
pub fn stored_keys(store: &ObjectKvStore) -> Result<Vec<StoredKey>, FlowError> {
	let keys = MigratableKVStore::list_all_keys(store)
		.map_err(|e| FlowError(format!("listing all keys: {e}")))?;
	let mut out = Vec::with_capacity(keys.len());
	for (p, s, k) in keys {
		let bytes = KVStoreSync::read(store, &p, &s, &k)
			.map_err(|e| FlowError(format!("reading {p}/{s}/{k}: {e}")))?
			.len();
		out.push(StoredKey { primary_namespace: p, secondary_namespace: s, key: k, bytes });
	}
	out.sort();
	Ok(out)
}

/// Builds LDK's two-node test network whose `ChainMonitor`s persist through `stores`, and runs
/// `f` on it. The harness's nodes borrow from values that live in this function, hence the
/// callback. When `f` returns, the harness's own drop checks run (no unhandled events or
/// messages, managers and monitors round-trip).
pub fn with_network<R>(
	stores: &[ObjectKvStore; 2], f: impl for<'a, 'b> FnOnce(&Vec<Node<'a, 'b, 'b>>) -> R,
) -> R {
	let chanmon_cfgs = create_chanmon_cfgs(2);
	// The store is the persister: LDK's blanket `Persist` impl for any `KVStoreSync`.
	with_network_of(&chanmon_cfgs, [&stores[0], &stores[1]], f)
}

/// Builds LDK's two-node test network over `chanmon_cfgs` whose `ChainMonitor`s persist through
/// `persisters` (which may borrow from `chanmon_cfgs`), and runs `f` on it.
pub fn with_network_of<R>(
	chanmon_cfgs: &Vec<TestChanMonCfg>, persisters: [&dyn SyncPersist; 2],
	f: impl for<'a, 'b> FnOnce(&Vec<Node<'a, 'b, 'b>>) -> R,
) -> R {
	let mut node_cfgs = create_node_cfgs(2, chanmon_cfgs);
	for (i, cfg) in node_cfgs.iter_mut().enumerate() {
		cfg.chain_monitor = TestChainMonitor::new(
			Some(&chanmon_cfgs[i].chain_source),
			&chanmon_cfgs[i].tx_broadcaster,
			&chanmon_cfgs[i].logger,
			&chanmon_cfgs[i].fee_estimator,
			persisters[i],
			&chanmon_cfgs[i].keys_manager,
		);
	}
	let chanmgrs = create_node_chanmgrs(2, &node_cfgs, &[None, None]);
	let nodes = create_network(2, &node_cfgs, &chanmgrs);
	// The harness picks a random way to connect blocks; some hand LDK only the last of several
	// blocks. Fix one that delivers every block, so runs are alike.
	for node in &nodes {
		*node.connect_style.borrow_mut() = ConnectStyle::FullBlockViaListen;
	}
	f(&nodes)
}

/// Opens an announced channel from node 0 to node 1; node 0 pushes half of it to node 1 so both
/// can pay at once.
pub fn open_channel<'a, 'b>(nodes: &Vec<Node<'a, 'b, 'b>>, channel_value_sat: u64) -> ChannelId {
	let push_msat = channel_value_sat * 1000 / 2;
	let (_, _, channel_id, _) =
		create_announced_chan_between_nodes_with_value(nodes, 0, 1, channel_value_sat, push_msat);
	channel_id
}

/// Pays `amount_msat` from `from` to `to` over their direct channel and claims it. Payment `n`
/// gets its own preimage, so unlike the harness's `send_payment` (a `u8` counter shared by the
/// network) there is no limit on the number of payments.
pub fn pay<'a, 'b, 'c>(
	from: &Node<'a, 'b, 'c>, to: &Node<'a, 'b, 'c>, amount_msat: u64, n: u64,
	scorer: Option<&FlowScorer<'b, 'c>>,
) {
	pay_on(from, to, amount_msat, n, scorer, None)
}

/// [`pay`], over the direct channel `scid` when given (the router's one-hop route moved onto
/// it), so that a test can spread payments over several channels.
pub fn pay_on<'a, 'b, 'c>(
	from: &Node<'a, 'b, 'c>, to: &Node<'a, 'b, 'c>, amount_msat: u64, n: u64,
	scorer: Option<&FlowScorer<'b, 'c>>, scid: Option<u64>,
) {
	let mut seed = b"ldk-object-store flow payment ".to_vec();
	seed.extend_from_slice(&n.to_be_bytes());
	let preimage = PaymentPreimage(Sha256::hash(&seed).to_byte_array());
	let hash = PaymentHash(Sha256::hash(&preimage.0).to_byte_array());
	let secret = to
		.node
		.create_inbound_payment_for_hash(hash, Some(amount_msat), 7200, None)
		.expect("creating an inbound payment");
	let params = PaymentParameters::from_node_id(to.node.get_our_node_id(), TEST_FINAL_CLTV)
		.with_bolt11_features(to.node.bolt11_invoice_features())
		.expect("bolt11 features");
	let route_params = RouteParameters::from_payment_params_and_value(params, amount_msat);
	let mut route = get_route(from, &route_params).expect("finding a route");
	assert_eq!(route.paths.len(), 1);
	if let Some(scid) = scid {
		assert_eq!(route.paths[0].hops.len(), 1, "a direct payment");
		route.paths[0].hops[0].short_channel_id = scid;
	}
	if let Some(scorer) = scorer {
		scorer.write().unwrap().payment_path_successful(&route.paths[0], now());
	}
	send_along_route_with_secret(from, route, &[&[to]], amount_msat, hash, secret);
	claim_payment(from, &[to], preimage);
}

/// Node 0 force-closes `channel_id` (broadcasting its commitment transaction) and node 1 sees
/// that transaction confirmed, with the harness's checks of events, broadcasts and monitor
/// updates on both sides.
pub fn force_close_and_confirm(
	nodes: &[Node<'_, '_, '_>], channel_id: ChannelId, channel_value_sat: u64, message: &str,
) {
	let (id0, id1) = (nodes[0].node.get_our_node_id(), nodes[1].node.get_our_node_id());
	let message = message.to_owned();
	nodes[0]
		.node
		.force_close_broadcasting_latest_txn(&channel_id, &id1, message.clone())
		.expect("force-closing");
	let reason = ClosureReason::HolderForceClosed { broadcasted_latest_txn: Some(true), message };
	check_closed_event(&nodes[0], 1, reason, false, &[id1], channel_value_sat);
	check_closed_broadcast(&nodes[0], 1, true);
	check_added_monitors(&nodes[0], 1);
	let txn = nodes[0].tx_broadcaster.txn_broadcast();
	assert_eq!(txn.len(), 1, "node 0 broadcast its commitment transaction");
	let block = create_dummy_block(nodes[1].best_block_hash(), 42, vec![txn[0].clone()]);
	connect_block(&nodes[1], &block);
	check_closed_broadcast(&nodes[1], 1, true);
	let reason = ClosureReason::CommitmentTxConfirmed;
	check_closed_event(&nodes[1], 1, reason, false, &[id0], channel_value_sat);
	check_added_monitors(&nodes[1], 1);
}

/// How a stored monitor compares with a live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorMatch {
	/// Equal (`PartialEq`).
	Equal,
	/// Equal once the pending monitor events are dropped from both. A monitor queues events (after a
	/// force-close: the closure, the confirmed commitment) that LDK takes from it after the
	/// monitor was written, and LDK does not write a monitor again for that: the stored one
	/// keeps them (to hand them out again after a restart) while the live one no longer has
	/// them. Expected after a force-close; everything else, update id included, is equal.
	EqualExceptReleasedEvents,
	/// Different.
	Different,
}

/// Compares a stored monitor with a live one (`PartialEq`, never bytes: a monitor re-encodes
/// differently after a round trip). See [`MonitorMatch`].
pub fn compare_monitors(
	stored: &Monitor, live: &Monitor, keys: &TestKeysInterface,
) -> MonitorMatch {
	if stored == live {
		return MonitorMatch::Equal;
	}
	let copy = |m: &Monitor| -> Monitor {
		<(BlockHash, Monitor)>::read(&mut &m.encode()[..], (keys, keys))
			.expect("monitor round trip")
			.1
	};
	let (stored, live) = (copy(stored), copy(live));
	for m in [&stored, &live] {
		m.get_and_clear_pending_monitor_events();
	}
	if stored == live {
		MonitorMatch::EqualExceptReleasedEvents
	} else {
		MonitorMatch::Different
	}
}

/// Reads the monitors stored for `node` and checks them against its live `ChainMonitor`: the
/// same channels, the same latest update ids, and equal monitors (`PartialEq`; the bytes would
/// not do, a monitor re-encodes differently after a round trip). Returns (key, update id) pairs.
pub fn check_stored_monitors(
	name: &str, node: &Node<'_, '_, '_>, store: &ObjectKvStore,
) -> Vec<(String, u64)> {
	let stored = read_channel_monitors(store, node.keys_manager, node.keys_manager)
		.unwrap_or_else(|e| panic!("{}: reading the stored monitors: {e}", name));
	let mut live_ids = node.chain_monitor.chain_monitor.list_monitors();
	live_ids.sort_by_key(|id| id.0);
	let mut stored_ids: Vec<ChannelId> = stored.iter().map(|(_, m)| m.channel_id()).collect();
	stored_ids.sort_by_key(|id| id.0);
	assert_eq!(stored_ids, live_ids, "{}: stored and live monitors differ", name);
	let mut out = Vec::new();
	for (_, monitor) in &stored {
		let live = node.chain_monitor.chain_monitor.get_monitor(monitor.channel_id()).unwrap();
		assert_eq!(
			monitor.get_latest_update_id(),
			live.get_latest_update_id(),
			"{}: the stored monitor of {} is behind the live one",
			name,
			monitor.channel_id()
		);
		let matched = compare_monitors(monitor, &live, node.keys_manager);
		assert!(
			matched != MonitorMatch::Different,
			"{}: the stored monitor of {} does not equal the live one",
			name,
			monitor.channel_id()
		);
		out.push((monitor.persistence_key().to_string(), monitor.get_latest_update_id()));
	}
	out
}

fn write_key(store: &ObjectKvStore, p: &str, s: &str, k: &str, value: Vec<u8>) {
	KVStoreSync::write(store, p, s, k, value)
		.unwrap_or_else(|e| panic!("writing {p}/{s}/{k}: {e}"));
}

/// Writes the `ChannelManager` under LDK's key, as the background processor would.
pub fn write_manager(node: &Node<'_, '_, '_>, store: &ObjectKvStore) {
	write_key(
		store,
		CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
		CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
		CHANNEL_MANAGER_PERSISTENCE_KEY,
		node.node.encode(),
	);
}

/// Phase 1: runs the flow on two nodes persisting through `open_store(NODE_NAMES[i])`, checking
/// the stored monitors against the live ones after every step. Panics on any failure.
pub fn run_persist_phase(open_store: StoreFactory<'_>, options: &FlowOptions) -> PersistSummary {
	let stores = [open_store(NODE_NAMES[0]), open_store(NODE_NAMES[1])];
	with_network(&stores, |nodes| persist_flow(nodes, &stores, options))
}

/// The persist flow on a network made by [`with_network`] over `stores`.
pub fn persist_flow<'a, 'b>(
	nodes: &Vec<Node<'a, 'b, 'b>>, stores: &[ObjectKvStore; 2], options: &FlowOptions,
) -> PersistSummary {
	let mut monitor_checks = [0usize; 2];
	let mut check_all = |expected_monitors: usize| {
		for i in 0..2 {
			let checked = check_stored_monitors(NODE_NAMES[i], &nodes[i], &stores[i]);
			assert_eq!(checked.len(), expected_monitors, "{}: monitors stored", NODE_NAMES[i]);
			monitor_checks[i] += 1;
		}
	};
	check_all(0);

	let channel_id = open_channel(nodes, options.channel_value_sat);
	check_all(1);

	let scorers: Vec<_> = nodes
		.iter()
		.map(|n| {
			RwLock::new(ProbabilisticScorer::new(
				ProbabilisticScoringDecayParameters::default(),
				n.network_graph,
				n.logger,
			))
		})
		.collect();
	// Amounts vary so that consecutive states differ; they stay far below either balance.
	for n in 0..options.payments {
		let (from, to) = if n % 2 == 0 { (0, 1) } else { (1, 0) };
		let amount_msat = 1_000_000 + u64::from(n % 50) * 10_000;
		pay(&nodes[from], &nodes[to], amount_msat, u64::from(n), Some(&scorers[from]));
		check_all(1);
	}

	let write_state = |i: usize| {
		write_manager(&nodes[i], &stores[i]);
		if options.write_graph_and_scorer {
			write_key(
				&stores[i],
				NETWORK_GRAPH_PERSISTENCE_PRIMARY_NAMESPACE,
				NETWORK_GRAPH_PERSISTENCE_SECONDARY_NAMESPACE,
				NETWORK_GRAPH_PERSISTENCE_KEY,
				nodes[i].network_graph.encode(),
			);
			write_key(
				&stores[i],
				SCORER_PERSISTENCE_PRIMARY_NAMESPACE,
				SCORER_PERSISTENCE_SECONDARY_NAMESPACE,
				SCORER_PERSISTENCE_KEY,
				scorers[i].encode(),
			);
		}
	};
	for i in 0..2 {
		write_state(i);
	}

	let mut force_closed = None;
	if options.force_close {
		force_close_and_confirm(
			nodes,
			channel_id,
			options.channel_value_sat,
			"Channel force-closed",
		);
		check_all(1);

		// A node writes its manager again after a force-close.
		for i in 0..2 {
			write_manager(&nodes[i], &stores[i]);
		}
		force_closed = Some(channel_id);
	}

	let snapshots = snapshot_nodes(nodes, stores, options.write_graph_and_scorer);
	monitor_checks.iter_mut().for_each(|n| *n += 1);
	PersistSummary {
		options: options.clone(),
		nodes: snapshots,
		payments_made: options.payments,
		force_closed,
		monitor_checks: monitor_checks.iter().sum(),
	}
}

/// The state `nodes` and their `stores` are in now, to compare a restart with: the live
/// monitors (checked first to equal the stored ones), the manager's channels, every stored key.
/// `graph_written`: whether the network graph was stored (its channel count is then expected).
pub fn snapshot_nodes(
	nodes: &Vec<Node<'_, '_, '_>>, stores: &[ObjectKvStore; 2], graph_written: bool,
) -> Vec<NodeSnapshot> {
	let mut snapshots = Vec::new();
	for (i, node) in nodes.iter().enumerate() {
		let mut monitors = Vec::new();
		for id in node.chain_monitor.chain_monitor.list_monitors() {
			let live = node.chain_monitor.chain_monitor.get_monitor(id).unwrap();
			monitors.push(MonitorSnapshot {
				key: live.persistence_key().to_string(),
				channel_id: id,
				latest_update_id: live.get_latest_update_id(),
				encoded: live.encode(),
			});
		}
		monitors.sort_by(|a, b| a.key.cmp(&b.key));
		// Stored monitors equal the live ones, update ids included.
		let mut checked = check_stored_monitors(NODE_NAMES[i], node, &stores[i]);
		checked.sort();
		let expected: Vec<(String, u64)> =
			monitors.iter().map(|m| (m.key.clone(), m.latest_update_id)).collect();
		assert_eq!(checked, expected, "{}: stored update ids", NODE_NAMES[i]);
		snapshots.push(NodeSnapshot {
			name: NODE_NAMES[i].to_owned(),
			node_id: node.node.get_our_node_id(),
			channels: ChannelSnapshot::list(node.node),
			monitors,
			graph_channels: graph_written.then(|| node.network_graph.read_only().channels().len()),
			keys: stored_keys(&stores[i]).unwrap_or_else(|e| panic!("{}: {e}", NODE_NAMES[i])),
		});
	}
	snapshots
}

/// Phase 2: a restart. Builds new stores with `open_store`, reads every key, loads the monitors
/// with LDK's [`read_channel_monitors`] and deserializes each `ChannelManager` from the stored
/// bytes on fresh components (same seeds as the persist phase), then loads the monitors into a
/// fresh `ChainMonitor` persisting through the new store. Nothing is written.
///
/// With `expected`, checks that everything read equals the live state the persist phase ended
/// with: the same keys, monitors equal (`PartialEq`) to the live ones with the same latest update
/// ids, and a manager with the same channels and balances.
pub fn run_restart_phase(
	open_store: StoreFactory<'_>, expected: Option<&PersistSummary>,
) -> Result<RestartSummary, FlowError> {
	let mut nodes = Vec::new();
	for (i, name) in NODE_NAMES.iter().enumerate() {
		let store = open_store(name);
		let expected_node = expected.map(|e| &e.nodes[i]);
		nodes.push(restart_node(i, name, &store, expected_node)?);
	}
	Ok(RestartSummary { nodes, compared_with_live: expected.is_some() })
}

fn restart_node(
	index: usize, name: &str, store: &ObjectKvStore, expected: Option<&NodeSnapshot>,
) -> Result<RestoredNode, FlowError> {
	let ctx = |what: &str, e: &dyn fmt::Display| FlowError(format!("{name}: {what}: {e}"));
	let keys = stored_keys(store).map_err(|e| ctx("listing the store", &e))?;
	if keys.is_empty() {
		return fail(format!("{name}: the store is empty; run the persist phase first"));
	}
	if let Some(expected) = expected {
		if keys != expected.keys {
			return fail(format!(
				"{name}: the keys read differ from those written\n  read:    {:?}\n  written: {:?}",
				keys, expected.keys
			));
		}
	}

	// Fresh components, as a node has them at start-up.
	let keys_manager = TestKeysInterface::new(&node_seed(index), Network::Testnet);
	let logger = TestLogger::with_id(format!("{name} (restarted)"));
	let fee_estimator = TestFeeEstimator::new(253);
	let broadcaster = TestBroadcaster::new(Network::Testnet);
	let chain_source = TestChainSource::new(Network::Testnet);
	let test_scorer = RwLock::new(TestScorer::new());

	let read = |p: &str, s: &str, k: &str| -> Result<Option<Vec<u8>>, FlowError> {
		match KVStoreSync::read(store, p, s, k) {
			Ok(bytes) => Ok(Some(bytes)),
			Err(e) if e.kind() == lightning::io::ErrorKind::NotFound => Ok(None),
			Err(e) => Err(ctx(&format!("reading {p}/{s}/{k}"), &e)),
		}
	};

	let graph = match read(
		NETWORK_GRAPH_PERSISTENCE_PRIMARY_NAMESPACE,
		NETWORK_GRAPH_PERSISTENCE_SECONDARY_NAMESPACE,
		NETWORK_GRAPH_PERSISTENCE_KEY,
	)? {
		Some(bytes) => Some(
			NetworkGraph::read(&mut &bytes[..], &logger)
				.map_err(|e| ctx("decoding the network graph", &format!("{e:?}")))?,
		),
		None => None,
	};
	let graph_counts =
		graph.as_ref().map(|g| (g.read_only().nodes().len(), g.read_only().channels().len()));
	if let (Some(expected), Some((_, channels))) = (expected, graph_counts) {
		if expected.graph_channels != Some(channels) {
			return fail(format!(
				"{name}: the stored network graph has {channels} channels, expected {:?}",
				expected.graph_channels
			));
		}
	}
	let graph = Arc::new(graph.unwrap_or_else(|| NetworkGraph::new(Network::Testnet, &logger)));
	let scorer_bytes = match read(
		SCORER_PERSISTENCE_PRIMARY_NAMESPACE,
		SCORER_PERSISTENCE_SECONDARY_NAMESPACE,
		SCORER_PERSISTENCE_KEY,
	)? {
		Some(bytes) => {
			let args = (ProbabilisticScoringDecayParameters::default(), &*graph, &logger);
			ProbabilisticScorer::read(&mut &bytes[..], args)
				.map_err(|e| ctx("decoding the scorer", &format!("{e:?}")))?;
			Some(bytes.len())
		},
		None => None,
	};

	// The monitors, through LDK's own reader.
	let stored_monitors: Vec<(BlockHash, Monitor)> =
		read_channel_monitors(store, &keys_manager, &keys_manager)
			.map_err(|e| ctx("reading the channel monitors", &e))?;
	let mut monitors = Vec::new();
	for (_, monitor) in &stored_monitors {
		let key = monitor.persistence_key().to_string();
		let balances = monitor.get_claimable_balances();
		let mut restored = RestoredMonitor {
			key: key.clone(),
			channel_id: monitor.channel_id(),
			latest_update_id: monitor.get_latest_update_id(),
			equals_live: None,
			claimable_sat: balances.iter().map(Balance::claimable_amount_satoshis).sum(),
			claimable_balances: balances.iter().map(|b| format!("{b:?}")).collect(),
		};
		if let Some(expected) = expected {
			let Some(live) = expected.monitors.iter().find(|m| m.key == key) else {
				return fail(format!("{name}: monitor {key} was stored but is not live"));
			};
			let (_, live_monitor) = <(BlockHash, Monitor)>::read(
				&mut &live.encoded[..],
				(&keys_manager, &keys_manager),
			)
			.map_err(|e| ctx("decoding the live monitor snapshot", &format!("{e:?}")))?;
			if restored.latest_update_id != live.latest_update_id {
				return fail(format!(
					"{name}: monitor {key} was read at update id {}, the live one was at {}",
					restored.latest_update_id, live.latest_update_id
				));
			}
			let matched = compare_monitors(monitor, &live_monitor, &keys_manager);
			if matched == MonitorMatch::Different {
				return fail(format!("{name}: monitor {key} read back differs from the live one"));
			}
			restored.equals_live = Some(matched);
		}
		monitors.push(restored);
	}
	monitors.sort_by(|a, b| a.key.cmp(&b.key));
	if let Some(expected) = expected {
		let read: Vec<&str> = monitors.iter().map(|m| m.key.as_str()).collect();
		let live: Vec<&str> = expected.monitors.iter().map(|m| m.key.as_str()).collect();
		if read != live {
			return fail(format!("{name}: monitors read {read:?}, live monitors {live:?}"));
		}
	}
	let listed = KVStoreSync::list(
		store,
		CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
		CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE,
	)
	.map_err(|e| ctx("listing the monitors", &e))?;
	if listed.len() != monitors.len() {
		return fail(format!(
			"{name}: {} monitor keys but {} monitors",
			listed.len(),
			monitors.len()
		));
	}

	// The ChannelManager, deserialized from the stored bytes as a node does at start-up.
	let Some(manager_bytes) = read(
		CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
		CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
		CHANNEL_MANAGER_PERSISTENCE_KEY,
	)?
	else {
		return fail(format!("{name}: no channel manager stored"));
	};
	let router = TestRouter::new(Arc::clone(&graph), &logger, &test_scorer);
	let message_router = TestMessageRouter::new_default(Arc::clone(&graph), &keys_manager);
	let chain_monitor = TestChainMonitor::new(
		Some(&chain_source),
		&broadcaster,
		&logger,
		&fee_estimator,
		store,
		&keys_manager,
	);
	let read_args = ChannelManagerReadArgs::new(
		&keys_manager,
		&keys_manager,
		&keys_manager,
		&fee_estimator,
		&chain_monitor,
		&broadcaster,
		&router,
		&message_router,
		&logger,
		test_default_channel_config(),
		stored_monitors.iter().map(|(_, m)| m).collect(),
	);
	let (_, manager) =
		<(BlockHash, TestChannelManager<'_, '_>)>::read(&mut &manager_bytes[..], read_args)
			.map_err(|e| ctx("deserializing the channel manager", &format!("{e:?}")))?;
	for (_, monitor) in stored_monitors {
		let channel_id = monitor.channel_id();
		chain_monitor
			.load_existing_monitor(channel_id, monitor)
			.map_err(|()| FlowError(format!("{name}: loading monitor {channel_id}")))?;
	}
	let node_id = manager.get_our_node_id();
	let channels = ChannelSnapshot::list(&manager);
	if let Some(expected) = expected {
		if node_id != expected.node_id {
			return fail(format!("{name}: node id {node_id}, expected {}", expected.node_id));
		}
		if channels != expected.channels {
			return fail(format!(
				"{name}: the reloaded manager's channels differ\n  reloaded: {channels:?}\n  live:     {:?}",
				expected.channels
			));
		}
	}

	// A restart only reads.
	let keys_after = stored_keys(store).map_err(|e| ctx("listing the store again", &e))?;
	if keys_after != keys {
		return fail(format!("{name}: the restart changed the store: {keys_after:?}"));
	}

	Ok(RestoredNode {
		name: name.to_owned(),
		node_id,
		keys,
		monitors,
		channels,
		manager_bytes: manager_bytes.len(),
		graph: graph_counts,
		scorer_bytes,
	})
}
