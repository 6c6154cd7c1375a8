//! The fixture generator: two nodes of LDK's functional-test harness (`lightning`'s `_test_utils`)
//! open many channels and pay each other over them; node 0's `ChainMonitor` hands every
//! `ChannelMonitorUpdate` to a recording persister. At a chosen moment each channel's live monitor
//! is encoded (the bytes LDK's `MonitorUpdatingPersister` writes after its sentinel); the updates
//! LDK makes afterwards are the channel's pending updates. Before anything is saved, every channel
//! is checked: its recorded monitor, decoded afresh, with its recorded updates applied, equals the
//! live monitor.
//!
//! Channels are zero-conf (no blocks to mine, so 1,000 channels open in seconds); every one has
//! its own funding outpoint, so every monitor has its own key and passes LDK's key check. Payments
//! go over a chosen channel by patching the first hop of the route LDK's router finds, with a
//! preimage of our own per payment (the harness's helpers count payments in a `u8`).
//!
//! Monitor sizes: a monitor keeps every revoked counterparty commitment with its HTLCs, so it grows
//! with each payment (about 0.2 KB), and much faster while HTLCs stay in flight: every new
//! commitment then carries all of them. The large size classes hold HTLCs in flight (unclaimed
//! payments) while further payments go over the channel, as on a busy routing channel.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use bitcoin::hashes::sha256::Hash as Sha256;
use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, Network};
use lightning::chain::chainmonitor::Persist;
use lightning::chain::channelmonitor::{ChannelMonitor, ChannelMonitorUpdate};
use lightning::chain::ChannelMonitorUpdateStatus;
use lightning::ln::functional_test_utils::{
	claim_payment, create_chanmon_cfgs, create_network, create_node_cfgs, create_node_chanmgrs,
	get_route, open_zero_conf_channel_with_value, send_along_route_with_secret,
	test_default_anchors_channel_config, ConnectStyle, Node, TEST_FINAL_CLTV,
};
use lightning::ln::types::ChannelId;
use lightning::routing::router::{PaymentParameters, RouteParameters};
use lightning::types::payment::{PaymentHash, PaymentPreimage};
use lightning::util::persist::MonitorName;
use lightning::util::ser::{ReadableArgs, Writeable};
use lightning::util::test_channel_signer::TestChannelSigner;
use lightning::util::test_utils::{
	TestBroadcaster, TestChainMonitor, TestFeeEstimator, TestKeysInterface, TestLogger,
};

use crate::fixtures::{ChannelFixture, FixtureSet};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenParams {
	/// Channels for the startup benchmarks.
	pub channels: usize,
	/// Payments over each startup channel before its monitor is recorded.
	pub warmup_payments: u32,
	/// Updates to record after the monitor, per startup channel.
	pub updates: usize,
	/// The first `few_channels` startup channels get `few_updates` updates instead.
	pub few_channels: usize,
	pub few_updates: usize,
	/// Channels grown to a size, for the update benchmarks.
	pub sizes: Vec<SizeTarget>,
	/// Updates to record after each sized monitor.
	pub size_updates: usize,
}

/// A channel whose monitor is grown until it encodes to at least `min_bytes`.
#[derive(Debug, Clone)]
pub struct SizeTarget {
	pub label: String,
	pub min_bytes: usize,
	/// Payments left unclaimed (HTLCs in flight) before the growing payments start.
	pub inflight_htlcs: u32,
}

impl GenParams {
	pub fn describe(&self) -> Vec<(String, String)> {
		let sizes: Vec<String> = self
			.sizes
			.iter()
			.map(|s| format!("{}>={}B/{}htlcs", s.label, s.min_bytes, s.inflight_htlcs))
			.collect();
		vec![
			("channels".into(), self.channels.to_string()),
			("warmup_payments".into(), self.warmup_payments.to_string()),
			("updates".into(), self.updates.to_string()),
			("few_channels".into(), self.few_channels.to_string()),
			("few_updates".into(), self.few_updates.to_string()),
			("sizes".into(), sizes.join(",")),
			("size_updates".into(), self.size_updates.to_string()),
		]
	}
}

/// Encoded updates with their ids, by monitor key.
type Recorded = HashMap<String, Vec<(u64, Vec<u8>)>>;

/// Records every update node 0's `ChainMonitor` persists, by monitor key.
#[derive(Default)]
struct Recorder {
	updates: Mutex<Recorded>,
}

impl Persist<TestChannelSigner> for Recorder {
	fn persist_new_channel(
		&self, _: MonitorName, _: &ChannelMonitor<TestChannelSigner>,
	) -> ChannelMonitorUpdateStatus {
		ChannelMonitorUpdateStatus::Completed
	}

	fn update_persisted_channel(
		&self, name: MonitorName, update: Option<&ChannelMonitorUpdate>,
		_: &ChannelMonitor<TestChannelSigner>,
	) -> ChannelMonitorUpdateStatus {
		if let Some(update) = update {
			let mut updates = self.updates.lock().unwrap();
			updates.entry(name.to_string()).or_default().push((update.update_id, update.encode()));
		}
		ChannelMonitorUpdateStatus::Completed
	}

	fn archive_persisted_channel(&self, _: MonitorName) {}
}

impl Recorder {
	fn count_after(&self, key: &str, update_id: u64) -> usize {
		let updates = self.updates.lock().unwrap();
		updates.get(key).map_or(0, |u| u.iter().filter(|(id, _)| *id > update_id).count())
	}
}

/// A channel of node 0 being driven.
struct Chan {
	label: String,
	id: ChannelId,
	key: String,
	/// The outbound payment scid at node 0 and at node 1.
	scid: [u64; 2],
	inflight_htlcs: u32,
	payments: u32,
	recorded: Option<(Vec<u8>, u64)>,
	payments_before: u32,
}

struct Payer {
	n: u64,
	started: Instant,
}

impl Payer {
	/// Pays over `chan` in alternating directions; `claim = false` leaves the HTLC in flight.
	fn pay(&mut self, nodes: &[Node<'_, '_, '_>], chan: &mut Chan, claim: bool) {
		let (from, to) = if chan.payments.is_multiple_of(2) || !claim { (0, 1) } else { (1, 0) };
		let amount_msat = if claim { 1_000_000 + (self.n % 50) * 10_000 } else { 2_000_000 };
		let mut seed = b"ldk-object-store bench payment ".to_vec();
		seed.extend_from_slice(&self.n.to_be_bytes());
		self.n += 1;
		let preimage = PaymentPreimage(Sha256::hash(&seed).to_byte_array());
		let hash = PaymentHash(Sha256::hash(&preimage.0).to_byte_array());
		let (from, to) = (&nodes[from], &nodes[to]);
		let secret = to
			.node
			.create_inbound_payment_for_hash(hash, Some(amount_msat), 7200, None)
			.expect("inbound payment");
		let params = PaymentParameters::from_node_id(to.node.get_our_node_id(), TEST_FINAL_CLTV)
			.with_bolt11_features(to.node.bolt11_invoice_features())
			.expect("bolt11 features");
		let route_params = RouteParameters::from_payment_params_and_value(params, amount_msat);
		let mut route = get_route(from, &route_params).expect("a route");
		assert_eq!(route.paths.len(), 1);
		assert_eq!(route.paths[0].hops.len(), 1);
		// Over the channel we want, whichever of the identical channels the router chose.
		let side = if std::ptr::eq(from, &nodes[0]) { 0 } else { 1 };
		route.paths[0].hops[0].short_channel_id = chan.scid[side];
		send_along_route_with_secret(from, route, &[&[to]], amount_msat, hash, secret);
		if claim {
			claim_payment(from, &[to], preimage);
			chan.payments += 1;
		} else {
			chan.inflight_htlcs += 1;
		}
		if self.n.is_multiple_of(2000) {
			eprintln!("  {} payments in {:.0} s", self.n, self.started.elapsed().as_secs_f64());
			// LDK's test logger keeps a count of every distinct line it printed; keep it small.
			for node in nodes {
				node.logger.lines.lock().unwrap().clear();
				node.logger.context.lock().unwrap().clear();
			}
		}
	}
}

fn live_monitor_bytes(node: &Node<'_, '_, '_>, id: ChannelId) -> (Vec<u8>, u64) {
	let monitor = node.chain_monitor.chain_monitor.get_monitor(id).expect("live monitor");
	(monitor.encode(), monitor.get_latest_update_id())
}

fn live_size(node: &Node<'_, '_, '_>, id: ChannelId) -> usize {
	node.chain_monitor.chain_monitor.get_monitor(id).expect("live monitor").serialized_length()
}

type TestMonitor = ChannelMonitor<TestChannelSigner>;

fn decode(bytes: &[u8], keys: &TestKeysInterface) -> TestMonitor {
	<(BlockHash, TestMonitor)>::read(&mut &bytes[..], (keys, keys)).expect("monitor decodes").1
}

/// Runs the flow and returns the recorded channels. Panics if anything does not check out.
pub fn generate(params: &GenParams) -> FixtureSet {
	let started = Instant::now();
	let chanmon_cfgs = create_chanmon_cfgs(2);
	let recorders = [Recorder::default(), Recorder::default()];
	let mut node_cfgs = create_node_cfgs(2, &chanmon_cfgs);
	for (i, cfg) in node_cfgs.iter_mut().enumerate() {
		cfg.chain_monitor = TestChainMonitor::new(
			Some(&chanmon_cfgs[i].chain_source),
			&chanmon_cfgs[i].tx_broadcaster,
			&chanmon_cfgs[i].logger,
			&chanmon_cfgs[i].fee_estimator,
			&recorders[i],
			&chanmon_cfgs[i].keys_manager,
		);
	}
	// Anchor channels, as ldk-node opens them; manual acceptance is what zero-conf needs.
	let mut config = test_default_anchors_channel_config();
	config.channel_handshake_config.our_max_accepted_htlcs = 200;
	config.channel_handshake_config.max_inbound_htlc_value_in_flight_percent_of_channel = 100;
	let chanmgrs = create_node_chanmgrs(2, &node_cfgs, &[Some(config.clone()), Some(config)]);
	let nodes = create_network(2, &node_cfgs, &chanmgrs);
	for node in &nodes {
		*node.connect_style.borrow_mut() = ConnectStyle::FullBlockViaListen;
	}

	let mut chans = Vec::new();
	let labels = (0..params.channels)
		.map(|i| format!("startup-{i:05}"))
		.chain(params.sizes.iter().map(|s| format!("size-{}", s.label)));
	for label in labels {
		let (_, id) =
			open_zero_conf_channel_with_value(&nodes[0], &nodes[1], None, 1_000_000, 500_000_000);
		let key = nodes[0]
			.chain_monitor
			.chain_monitor
			.get_monitor(id)
			.expect("monitor")
			.persistence_key()
			.to_string();
		chans.push(Chan {
			label,
			id,
			key,
			scid: [0; 2],
			inflight_htlcs: 0,
			payments: 0,
			recorded: None,
			payments_before: 0,
		});
	}
	for (side, node) in nodes.iter().enumerate() {
		let scids: HashMap<ChannelId, u64> = node
			.node
			.list_channels()
			.into_iter()
			.map(|c| (c.channel_id, c.get_outbound_payment_scid().expect("usable channel")))
			.collect();
		for chan in &mut chans {
			chan.scid[side] = scids[&chan.id];
		}
	}
	eprintln!("  opened {} channels in {:.0} s", chans.len(), started.elapsed().as_secs_f64());

	let mut payer = Payer { n: 0, started: Instant::now() };
	// The sized channels: HTLCs held in flight, then payments until the monitor is big enough.
	for (chan, target) in chans[params.channels..].iter_mut().zip(&params.sizes) {
		for _ in 0..target.inflight_htlcs {
			payer.pay(&nodes, chan, false);
		}
		while live_size(&nodes[0], chan.id) < target.min_bytes {
			payer.pay(&nodes, chan, true);
		}
		eprintln!(
			"  {}: {} bytes after {} payments with {} HTLCs in flight ({:.0} s)",
			chan.label,
			live_size(&nodes[0], chan.id),
			chan.payments,
			chan.inflight_htlcs,
			started.elapsed().as_secs_f64()
		);
	}
	// The startup channels' history.
	for _ in 0..params.warmup_payments {
		for chan in chans[..params.channels].iter_mut() {
			payer.pay(&nodes, chan, true);
		}
	}
	// Record every monitor now; what LDK does next is its pending updates.
	for chan in &mut chans {
		chan.recorded = Some(live_monitor_bytes(&nodes[0], chan.id));
		chan.payments_before = chan.payments;
	}
	for (i, chan) in chans.iter_mut().enumerate() {
		let wanted = if i >= params.channels {
			params.size_updates
		} else if i < params.few_channels {
			params.few_updates
		} else {
			params.updates
		};
		let recorded_id = chan.recorded.as_ref().expect("recorded").1;
		while recorders[0].count_after(&chan.key, recorded_id) < wanted {
			payer.pay(&nodes, chan, true);
		}
	}
	eprintln!(
		"  {} payments in all, {:.0} s; checking the recorded updates",
		payer.n,
		started.elapsed().as_secs_f64()
	);

	// Check every channel: recorded monitor + recorded updates == the live monitor.
	let mut keys = TestKeysInterface::new(&[0; 32], Network::Testnet);
	keys.disable_all_state_policy_checks = true;
	let (broadcaster, fee_estimator) =
		(TestBroadcaster::new(Network::Testnet), TestFeeEstimator::new(253));
	let logger = TestLogger::new();
	let recorded_updates = recorders[0].updates.lock().unwrap();
	let mut set = FixtureSet::default();
	for chan in &chans {
		let (monitor_bytes, update_id) = chan.recorded.clone().expect("recorded");
		let mut updates: Vec<(u64, Vec<u8>)> = recorded_updates
			.get(&chan.key)
			.map(|u| u.iter().filter(|(id, _)| *id > update_id).cloned().collect())
			.unwrap_or_default();
		updates.sort_by_key(|(id, _)| *id);
		let ids: Vec<u64> = updates.iter().map(|(id, _)| *id).collect();
		let expected: Vec<u64> = (update_id + 1..=update_id + ids.len() as u64).collect();
		assert_eq!(ids, expected, "{}: recorded update ids are not consecutive", chan.label);
		let replayed = decode(&monitor_bytes, &keys);
		assert_eq!(replayed.persistence_key().to_string(), chan.key);
		for (id, bytes) in &updates {
			let update =
				<ChannelMonitorUpdate as lightning::util::ser::Readable>::read(&mut &bytes[..])
					.expect("update decodes");
			replayed
				.update_monitor(&update, &&broadcaster, &&fee_estimator, &&logger)
				.unwrap_or_else(|()| panic!("{}: update {id} does not apply", chan.label));
		}
		let live = nodes[0].chain_monitor.chain_monitor.get_monitor(chan.id).expect("live");
		assert_eq!(replayed.get_latest_update_id(), live.get_latest_update_id(), "{}", chan.label);
		if replayed != *live {
			// The live monitor has handed its pending events to the ChannelManager since; the
			// replayed one still holds them. Compare without them.
			let (a, b) = (decode(&replayed.encode(), &keys), decode(&live.encode(), &keys));
			a.get_and_clear_pending_monitor_events();
			b.get_and_clear_pending_monitor_events();
			assert!(a == b, "{}: recorded monitor + updates differ from the live one", chan.label);
		}
		set.channels.push(ChannelFixture {
			label: chan.label.clone(),
			key: chan.key.clone(),
			monitor: monitor_bytes,
			update_id,
			updates: updates.into_iter().map(|(_, bytes)| bytes).collect(),
			inflight_htlcs: chan.inflight_htlcs,
			payments_before: chan.payments_before,
		});
	}
	set.notes = params.describe();
	set.notes.push(("payments".into(), payer.n.to_string()));
	set.notes.push(("seconds".into(), format!("{:.0}", started.elapsed().as_secs_f64())));
	set.notes.push(("lightning".into(), "0.2.7 functional_test_utils, anchors, zero-conf".into()));
	eprintln!(
		"  checked {} channels in {:.0} s",
		set.channels.len(),
		started.elapsed().as_secs_f64()
	);
	set
}
