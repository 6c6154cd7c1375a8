//! Data for the crash test (`tests/crash.rs`): a real LDK flow over several channels whose node 0
//! `Persist` calls are recorded with the monitor's bytes at each call, written to a fixture file
//! once by the parent test, and read back by the child processes it kills.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;

use lightning::chain::chainmonitor::Persist;
use lightning::chain::channelmonitor::ChannelMonitorUpdate;
use lightning::chain::ChannelMonitorUpdateStatus;
use lightning::ln::functional_test_utils::*;
use lightning::ln::types::ChannelId;
use lightning::util::persist::MonitorName;
use lightning::util::ser::{Readable, Writeable};
use lightning::util::test_channel_signer::TestChannelSigner;

use super::dual_flow::Monitor;
use super::ldk_flow::{force_close_and_confirm, pay_on, with_network_of};

/// One `Persist` call of node 0, as LDK made it.
#[derive(Clone, Debug)]
pub struct RecordedCall {
	/// The monitor key (`MonitorName` as a string).
	pub name: String,
	pub channel_id: ChannelId,
	/// `None` for `persist_new_channel`; `Some(update)` for `update_persisted_channel`, where a
	/// chain-sync re-persist has no update.
	pub kind: CallKind,
	/// The monitor's encoding at the call (after the update was applied).
	pub monitor: Vec<u8>,
	/// The monitor's latest update id at the call.
	pub latest_update_id: u64,
}

#[derive(Clone, Debug)]
pub enum CallKind {
	New,
	Update(Option<ChannelMonitorUpdate>),
}

impl RecordedCall {
	/// The completion LDK waits for after this call, if any: the new monitor's id, or the update's.
	pub fn completion(&self) -> Option<u64> {
		match &self.kind {
			CallKind::New => Some(self.latest_update_id),
			CallKind::Update(update) => update.as_ref().map(|u| u.update_id),
		}
	}

	/// Whether the persister writes the full monitor for this call (rather than an update object)
	/// with `maximum_pending_updates = max_pending`.
	pub fn writes_full_monitor(&self, max_pending: u64) -> bool {
		match &self.kind {
			CallKind::New | CallKind::Update(None) => true,
			CallKind::Update(Some(update)) => {
				max_pending == 0
					|| update.update_id == u64::MAX
					|| update.update_id % max_pending == 0
			},
		}
	}

	pub fn monitor_name(&self, monitor: &Monitor) -> MonitorName {
		let name = monitor.persistence_key();
		assert_eq!(name.to_string(), self.name, "recorded name and monitor disagree");
		name
	}
}

/// Records every call and lets LDK's harness go on (`Completed`).
#[derive(Default)]
pub struct Recorder {
	calls: Mutex<Vec<RecordedCall>>,
}

impl Recorder {
	pub fn calls(&self) -> Vec<RecordedCall> {
		self.calls.lock().unwrap().clone()
	}

	fn record(&self, name: MonitorName, kind: CallKind, monitor: &Monitor) {
		self.calls.lock().unwrap().push(RecordedCall {
			name: name.to_string(),
			channel_id: monitor.channel_id(),
			kind,
			monitor: monitor.encode(),
			latest_update_id: monitor.get_latest_update_id(),
		});
	}
}

impl Persist<TestChannelSigner> for Recorder {
	fn persist_new_channel(
		&self, name: MonitorName, monitor: &Monitor,
	) -> ChannelMonitorUpdateStatus {
		self.record(name, CallKind::New, monitor);
		ChannelMonitorUpdateStatus::Completed
	}

	fn update_persisted_channel(
		&self, name: MonitorName, update: Option<&ChannelMonitorUpdate>, monitor: &Monitor,
	) -> ChannelMonitorUpdateStatus {
		self.record(name, CallKind::Update(update.cloned()), monitor);
		ChannelMonitorUpdateStatus::Completed
	}

	fn archive_persisted_channel(&self, _name: MonitorName) {}
}

/// What [`record_flow`] recorded.
pub struct Recording {
	/// Node 0's calls, in call order.
	pub calls: Vec<RecordedCall>,
	pub channels: Vec<ChannelId>,
	/// The channel node 0 force-closed at the end.
	pub force_closed: ChannelId,
}

/// Two nodes of LDK's harness open `channels` announced channels, make `payments` payments
/// spread over them in both directions, and node 0 force-closes the first channel. Returns node
/// 0's `Persist` calls.
pub fn record_flow(channels: usize, payments: u64) -> Recording {
	assert!(channels > 0);
	let chanmon_cfgs = create_chanmon_cfgs(2);
	let recorders = [Recorder::default(), Recorder::default()];
	with_network_of(&chanmon_cfgs, [&recorders[0], &recorders[1]], |nodes| {
		const VALUE_SAT: u64 = 1_000_000;
		let mut opened = Vec::new();
		for _ in 0..channels {
			let (_, _, channel_id, _) = create_announced_chan_between_nodes_with_value(
				nodes,
				0,
				1,
				VALUE_SAT,
				VALUE_SAT * 500,
			);
			opened.push(channel_id);
		}
		let scids: Vec<u64> = opened
			.iter()
			.map(|id| {
				let details = nodes[0].node.list_channels();
				let channel = details.iter().find(|c| c.channel_id == *id).expect("channel listed");
				channel.short_channel_id.expect("an announced channel has a short channel id")
			})
			.collect();

		for n in 0..payments {
			let (from, to) = if n % 2 == 0 { (0, 1) } else { (1, 0) };
			// Channels take turns, two payments (one each way) at a time.
			let scid = scids[(n as usize / 2) % channels];
			let amount_msat = 1_000_000 + (n % 37) * 10_000;
			pay_on(&nodes[from], &nodes[to], amount_msat, n, None, Some(scid));
		}

		let channel_id = opened[0];
		force_close_and_confirm(nodes, channel_id, VALUE_SAT, "crash test");

		Recording { calls: recorders[0].calls(), channels: opened, force_closed: channel_id }
	})
}

const MAGIC: &[u8; 8] = b"LDKCRSH1";

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
	out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
	out.extend_from_slice(bytes);
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
	assert!(input.len() >= n, "fixture truncated");
	let (head, rest) = input.split_at(n);
	*input = rest;
	head
}

fn take_u64(input: &mut &[u8]) -> u64 {
	u64::from_be_bytes(take(input, 8).try_into().unwrap())
}

fn take_bytes<'a>(input: &mut &'a [u8]) -> &'a [u8] {
	let n = take_u64(input) as usize;
	take(input, n)
}

/// Writes the calls to `path`: the monitor and update bytes as LDK encodes them.
pub fn write_fixture(path: &Path, calls: &[RecordedCall]) {
	let mut out = MAGIC.to_vec();
	out.extend_from_slice(&(calls.len() as u64).to_be_bytes());
	for call in calls {
		put_bytes(&mut out, call.name.as_bytes());
		out.extend_from_slice(&call.channel_id.0);
		out.extend_from_slice(&call.latest_update_id.to_be_bytes());
		match &call.kind {
			CallKind::New => out.push(0),
			CallKind::Update(None) => out.push(1),
			CallKind::Update(Some(update)) => {
				out.push(2);
				put_bytes(&mut out, &update.encode());
			},
		}
		put_bytes(&mut out, &call.monitor);
	}
	let mut file = std::fs::File::create(path).expect("creating the fixture");
	file.write_all(&out).expect("writing the fixture");
	file.sync_all().expect("syncing the fixture");
}

/// Reads what [`write_fixture`] wrote.
pub fn read_fixture(path: &Path) -> Vec<RecordedCall> {
	let mut data = Vec::new();
	std::fs::File::open(path)
		.and_then(|mut f| f.read_to_end(&mut data))
		.unwrap_or_else(|e| panic!("reading the fixture {}: {e}", path.display()));
	let mut input = &data[..];
	assert_eq!(take(&mut input, 8), MAGIC, "not a crash fixture");
	let count = take_u64(&mut input) as usize;
	let mut calls = Vec::with_capacity(count);
	for _ in 0..count {
		let name = String::from_utf8(take_bytes(&mut input).to_vec()).expect("utf-8 name");
		let channel_id = ChannelId(take(&mut input, 32).try_into().unwrap());
		let latest_update_id = take_u64(&mut input);
		let kind = match take(&mut input, 1)[0] {
			0 => CallKind::New,
			1 => CallKind::Update(None),
			2 => {
				let bytes = take_bytes(&mut input);
				let update = ChannelMonitorUpdate::read(&mut &bytes[..]).expect("an update");
				CallKind::Update(Some(update))
			},
			other => panic!("unknown call kind {other}"),
		};
		let monitor = take_bytes(&mut input).to_vec();
		calls.push(RecordedCall { name, channel_id, kind, monitor, latest_update_id });
	}
	assert!(input.is_empty(), "trailing bytes in the fixture");
	calls
}

/// Per monitor key: the calls in order.
pub fn calls_by_monitor(calls: &[RecordedCall]) -> BTreeMap<String, Vec<&RecordedCall>> {
	let mut by_monitor: BTreeMap<String, Vec<&RecordedCall>> = BTreeMap::new();
	for call in calls {
		by_monitor.entry(call.name.clone()).or_default().push(call);
	}
	by_monitor
}
