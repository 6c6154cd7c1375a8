//! Updates: the latency of one update, the throughput of many channels' updates as the bound on
//! requests in flight grows, and the bytes written per update, for this crate's persister, LDK's
//! `MonitorUpdatingPersister`, and LDK's full-monitor persister (the blanket `Persist` of every
//! `KVStoreSync`, which rewrites the whole monitor on every update).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::BlockHash;
use ldk_object_store::persister::MonitorUpdateSink;
use ldk_object_store::{ObjectKvStore, PersistMode, PersisterConfig};
use lightning::chain::chainmonitor::Persist;
use lightning::chain::channelmonitor::{ChannelMonitor, ChannelMonitorUpdate};
use lightning::chain::ChannelMonitorUpdateStatus;
use lightning::ln::types::ChannelId;
use lightning::sign::InMemorySigner;
use lightning::util::persist::MonitorName;
use lightning::util::ser::{Readable, ReadableArgs};

use crate::backend::Backend;
use crate::env::{ours, theirs, Ldk};
use crate::fixtures::ChannelFixture;
use crate::report::{bytes, count, ratio, secs, Table};

type Monitor = ChannelMonitor<InMemorySigner>;

/// `maximum_pending_updates` for both differential persisters (LDK's usual choice).
pub const MAX_PENDING: u64 = 100;

pub fn decode_monitor(c: &ChannelFixture, ldk: &'static Ldk) -> Monitor {
	<(BlockHash, Monitor)>::read(&mut &c.monitor[..], (&ldk.keys, &ldk.keys))
		.unwrap_or_else(|e| panic!("{}: monitor does not decode: {e:?}", c.label))
		.1
}

pub fn decode_update(bytes: &[u8]) -> ChannelMonitorUpdate {
	ChannelMonitorUpdate::read(&mut &bytes[..]).expect("update decodes")
}

fn apply(monitor: &Monitor, update: &ChannelMonitorUpdate, ldk: &'static Ldk) {
	monitor
		.update_monitor(update, &&ldk.broadcaster, &&ldk.fees, &&ldk.logger)
		.expect("update applies");
}

/// Whether a differential persister writes the full monitor for this update (LDK's rule).
fn full_write(update_id: u64) -> bool {
	update_id == u64::MAX || update_id.is_multiple_of(MAX_PENDING)
}

/// The persisters compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
	/// This crate writing where LDK writes (the work per update of LDK's persister).
	OursSync,
	OursAsync,
	/// This crate with `PersisterConfig::default()`: small monitors whole for every update.
	OursDefaultSync,
	OursDefaultAsync,
	Ldk,
	LdkFull,
}

impl Writer {
	/// Whether it is this crate's persister in async mode.
	pub fn is_async(&self) -> bool {
		matches!(self, Writer::OursAsync | Writer::OursDefaultAsync)
	}

	pub fn name(&self) -> &'static str {
		match self {
			Writer::OursSync => "this crate, sync",
			Writer::OursAsync => "this crate, async",
			Writer::OursDefaultSync => "this crate, sync, defaults",
			Writer::OursDefaultAsync => "this crate, async, defaults",
			Writer::Ldk => "LDK `MonitorUpdatingPersister`",
			Writer::LdkFull => "LDK full-monitor (`KVStoreSync` as `Persist`)",
		}
	}
}

/// Reports completions of the async persister on a channel.
struct Completions(Mutex<mpsc::Sender<(ChannelId, u64, Instant)>>);

impl MonitorUpdateSink for Completions {
	fn monitor_update_completed(&self, channel_id: ChannelId, update_id: u64) {
		let _ = self.0.lock().unwrap().send((channel_id, update_id, Instant::now()));
	}
}

/// A persister of any of the kinds, over one store.
enum AnyPersister<'s> {
	Ours {
		persister: Box<crate::env::Ours>,
		/// Whether it reports completions (async mode).
		reports: bool,
		/// Kept alive here: the persister holds it weakly.
		_sink: Arc<Completions>,
		completed: Mutex<mpsc::Receiver<(ChannelId, u64, Instant)>>,
	},
	Ldk(crate::env::Theirs<'s>),
	Full(&'s ObjectKvStore),
}

impl<'s> AnyPersister<'s> {
	fn new(writer: Writer, store: &'s ObjectKvStore, ldk: &'static Ldk, in_flight: usize) -> Self {
		match writer {
			Writer::OursSync
			| Writer::OursAsync
			| Writer::OursDefaultSync
			| Writer::OursDefaultAsync => {
				// `OursSync` and `OursAsync` write full monitors where LDK writes them, so both
				// differential persisters do the same work per update (and the prepared monitor
				// states are the ones written); the workload section measures the defaults.
				let config = match writer {
					Writer::OursSync | Writer::OursAsync => PersisterConfig::default()
						.with_maximum_pending_updates(MAX_PENDING)
						.with_consolidate_by_size(false)
						.with_full_monitors_up_to(0),
					_ => PersisterConfig::default(),
				}
				.with_max_requests_in_flight(in_flight);
				let persister = if writer.is_async() {
					crate::env::ours_async(store, ldk, config)
				} else {
					ours(store, ldk, config)
				};
				let mode = persister.mode();
				let (tx, rx) = mpsc::channel();
				let sink = Arc::new(Completions(Mutex::new(tx)));
				persister.bind_chain_monitor(&sink);
				let reports = mode == PersistMode::Async;
				let persister = Box::new(persister);
				AnyPersister::Ours { persister, reports, _sink: sink, completed: Mutex::new(rx) }
			},
			Writer::Ldk => AnyPersister::Ldk(theirs(store, ldk, MAX_PENDING)),
			Writer::LdkFull => AnyPersister::Full(store),
		}
	}

	fn persist_new(&self, monitor: &Monitor) -> ChannelMonitorUpdateStatus {
		let name = monitor.persistence_key();
		match self {
			AnyPersister::Ours { persister, .. } => persister.persist_new_channel(name, monitor),
			AnyPersister::Ldk(p) => p.persist_new_channel(name, monitor),
			AnyPersister::Full(p) => {
				Persist::<InMemorySigner>::persist_new_channel(*p, name, monitor)
			},
		}
	}

	fn update(
		&self, name: MonitorName, update: &ChannelMonitorUpdate, monitor: &Monitor,
	) -> ChannelMonitorUpdateStatus {
		match self {
			AnyPersister::Ours { persister, .. } => {
				persister.update_persisted_channel(name, Some(update), monitor)
			},
			AnyPersister::Ldk(p) => p.update_persisted_channel(name, Some(update), monitor),
			AnyPersister::Full(p) => {
				Persist::<InMemorySigner>::update_persisted_channel(*p, name, Some(update), monitor)
			},
		}
	}

	/// Waits for `n` completions (async mode); returns the time of the last.
	fn wait_completions(&self, n: usize) -> Option<Instant> {
		match self {
			AnyPersister::Ours { completed, reports: true, .. } => {
				let rx = completed.lock().unwrap();
				let mut last = None;
				for _ in 0..n {
					let (_, _, at) =
						rx.recv_timeout(Duration::from_secs(120)).expect("completion arrives");
					last = Some(at);
				}
				last
			},
			_ => None,
		}
	}
}

fn expect_status(writer: Writer, status: ChannelMonitorUpdateStatus) {
	let expected = if writer.is_async() {
		ChannelMonitorUpdateStatus::InProgress
	} else {
		ChannelMonitorUpdateStatus::Completed
	};
	assert_eq!(status, expected, "{}", writer.name());
}

/// One channel's updates one after the other, each waited for.
pub struct LatencyResult {
	pub writer: Writer,
	pub latencies: Vec<Duration>,
	pub requests: u64,
	pub bytes_put: u64,
}

impl LatencyResult {
	pub fn mean(&self) -> Duration {
		self.latencies.iter().sum::<Duration>() / self.latencies.len().max(1) as u32
	}

	pub fn quantile(&self, q: f64) -> Duration {
		let mut sorted = self.latencies.clone();
		sorted.sort();
		sorted[((sorted.len() - 1) as f64 * q).round() as usize]
	}

	pub fn per_update_bytes(&self) -> u64 {
		self.bytes_put / self.latencies.len().max(1) as u64
	}
}

fn sequential(
	backend: &Backend, prefix: &str, writer: Writer, fixture: &ChannelFixture, n: usize,
	ldk: &'static Ldk,
) -> LatencyResult {
	let store = backend.kv(prefix, 32);
	let latencies = timed_updates(&store, writer, fixture, n, ldk, || backend.reset_counts());
	let counts = backend.counts();
	LatencyResult { writer, latencies, requests: counts.requests(), bytes_put: counts.bytes_put }
}

/// The latency of each of the first `n` updates of `fixture`'s channel through `writer` over
/// `store`, each waited for before the next. The channel's monitor is written first, then
/// `reset` runs (to reset the request counters), then the timed updates.
pub fn timed_updates(
	store: &ObjectKvStore, writer: Writer, fixture: &ChannelFixture, n: usize, ldk: &'static Ldk,
	reset: impl FnOnce(),
) -> Vec<Duration> {
	let persister = AnyPersister::new(writer, store, ldk, 32);
	let monitor = decode_monitor(fixture, ldk);
	let name = monitor.persistence_key();
	expect_status(writer, persister.persist_new(&monitor));
	persister.wait_completions(1);
	reset();
	let mut latencies = Vec::with_capacity(n);
	for bytes in &fixture.updates[..n] {
		let update = decode_update(bytes);
		apply(&monitor, &update, ldk);
		let started = Instant::now();
		expect_status(writer, persister.update(name, &update, &monitor));
		let done = persister.wait_completions(1).unwrap_or_else(Instant::now);
		latencies.push(done - started);
	}
	latencies
}

/// Full-monitor writes of one monitor size with no round trip: the time each takes and the bytes
/// each allocates on the whole path (serialization, the store, the in-memory backend), after
/// one write to warm up.
pub struct FullWrites {
	pub monitor_bytes: usize,
	pub per_write: Duration,
	pub allocated_per_write: usize,
}

pub fn full_writes(
	backend: &Backend, prefix: &str, writer: Writer, fixture: &ChannelFixture, writes: usize,
	ldk: &'static Ldk,
) -> FullWrites {
	let store = backend.kv(prefix, 32);
	let persister = AnyPersister::new(writer, &store, ldk, 32);
	let monitor = decode_monitor(fixture, ldk);
	backend.without_latency(|| {
		expect_status(writer, persister.persist_new(&monitor));
		let allocated = crate::alloc::total();
		let started = Instant::now();
		for _ in 0..writes {
			expect_status(writer, persister.persist_new(&monitor));
		}
		let elapsed = started.elapsed();
		FullWrites {
			monitor_bytes: fixture.monitor.len(),
			per_write: elapsed / writes.max(1) as u32,
			allocated_per_write: (crate::alloc::total() - allocated) / writes.max(1),
		}
	})
}

pub fn full_write_table(backend: &Backend, sizes: &[&ChannelFixture], ldk: &'static Ldk) -> Table {
	let mut table = Table::new(
		"Full-monitor writes: time and bytes allocated per write, no round trip",
		&[
			"monitor",
			"persister",
			"time / write",
			"throughput",
			"bytes allocated / write",
			"÷ monitor size",
		],
	)
	.intro(
		"One monitor written whole again and again (`persist_new_channel`) on the in-memory \
		 store with the round trip off: the time per write is serialization plus the store's \
		 own work; the bytes allocated per write count every allocation on the way \
		 (serialization buffer and its growth, the store, the in-memory backend's copy). This \
		 crate serializes each monitor once, into a buffer sized from the channel's previous \
		 full monitor; LDK's persisters size the monitor first (a serialization pass that \
		 counts bytes), then serialize it.",
	);
	for fixture in sizes {
		let writes = (16_000_000 / fixture.monitor.len().max(1)).clamp(5, 200);
		for writer in [Writer::OursSync, Writer::Ldk, Writer::LdkFull] {
			let prefix = backend.prefix(&format!("full-{}-{:?}", fixture.label, writer));
			eprintln!("  full writes: {} {} x {writes}", fixture.label, writer.name());
			let r = full_writes(backend, &prefix, writer, fixture, writes, ldk);
			table.row(vec![
				format!("{} ({})", fixture.label, bytes(r.monitor_bytes as u64)),
				writer.name().into(),
				secs(r.per_write),
				format!("{:.0} MB/s", r.monitor_bytes as f64 / r.per_write.as_secs_f64() / 1e6),
				bytes(r.allocated_per_write as u64),
				format!("{:.2}", r.allocated_per_write as f64 / r.monitor_bytes as f64),
			]);
		}
	}
	table
}

/// Per-update latency and bytes, for each monitor size.
pub fn latency_table(
	backend: &Backend, sizes: &[&ChannelFixture], n: usize, ldk: &'static Ldk,
) -> (Table, Vec<(String, LatencyResult)>) {
	let rtt = backend.rtt;
	let unit = |d: Duration| match rtt {
		Some(rtt) => format!("{} ({:.2} RTT)", secs(d), d.as_secs_f64() / rtt.as_secs_f64()),
		None => secs(d),
	};
	let mut table = Table::new(
		format!("One update at a time: latency and bytes written, {}", backend.name),
		&[
			"monitor",
			"persister",
			"mean",
			"median",
			"slowest",
			"requests / update",
			"bytes written / update",
			"÷ full-monitor bytes",
		],
	)
	.intro(format!(
		"{n} consecutive real updates of one channel, each persisted and waited for (async: until \
		 the persister reports it durable) before the next. Updates are applied to the monitor \
		 outside the timed part, as the `ChainMonitor` does before it calls the persister. With \
		 `maximum_pending_updates = {MAX_PENDING}` both differential persisters write the full \
		 monitor for update ids divisible by {MAX_PENDING} (one of these {n} updates) and then \
		 delete the update objects it makes stale: this crate in one batch request, LDK's one \
		 request per object, waited for in turn. The rows \"defaults\" use \
		 `PersisterConfig::default()`: a monitor of at most 64 KiB is written whole for every \
		 update (no bandwidth term on the simulated store: read its latency on a real server)."
	));
	let mut all = Vec::new();
	for fixture in sizes {
		let mut results = Vec::new();
		for writer in [
			Writer::OursSync,
			Writer::OursAsync,
			Writer::OursDefaultSync,
			Writer::OursDefaultAsync,
			Writer::Ldk,
			Writer::LdkFull,
		] {
			let prefix =
				backend.prefix(&format!("latency-{}-{:?}", fixture.label, writer).to_lowercase());
			eprintln!("  {} on {} ...", writer.name(), fixture.label);
			results.push(sequential(backend, &prefix, writer, fixture, n, ldk));
		}
		let full = results
			.iter()
			.find(|r| r.writer == Writer::LdkFull)
			.map(|r| r.per_update_bytes())
			.unwrap_or(1);
		let label = format!("{} ({})", fixture.label, bytes(fixture.monitor.len() as u64));
		for r in results {
			table.row(vec![
				label.clone(),
				r.writer.name().into(),
				unit(r.mean()),
				unit(r.quantile(0.5)),
				unit(r.quantile(1.0)),
				format!("{:.2}", r.requests as f64 / n as f64),
				bytes(r.per_update_bytes()),
				format!("{:.3}", r.per_update_bytes() as f64 / full.max(1) as f64),
			]);
			all.push((fixture.label.clone(), r));
		}
	}
	(table, all)
}

/// Channels prepared for the throughput runs: each channel's monitor as recorded, its updates,
/// and the monitor states that full-monitor writes need (computed beforehand, untimed).
pub struct Prepared {
	monitors: Vec<Monitor>,
	updates: Vec<Vec<ChannelMonitorUpdate>>,
	/// (channel, update index) → the monitor after that update, where a full write needs it.
	states: std::collections::HashMap<(usize, usize), Monitor>,
}

pub fn prepare(channels: &[&ChannelFixture], per_channel: usize, ldk: &'static Ldk) -> Prepared {
	let mut prepared = Prepared { monitors: vec![], updates: vec![], states: Default::default() };
	for (c, fixture) in channels.iter().enumerate() {
		let monitor = decode_monitor(fixture, ldk);
		let updates: Vec<ChannelMonitorUpdate> =
			fixture.updates[..per_channel].iter().map(|b| decode_update(b)).collect();
		if updates.iter().any(|u| full_write(u.update_id)) {
			let state = monitor.clone();
			for (i, update) in updates.iter().enumerate() {
				apply(&state, update, ldk);
				if full_write(update.update_id) {
					prepared.states.insert((c, i), state.clone());
				}
			}
		}
		prepared.monitors.push(monitor);
		prepared.updates.push(updates);
	}
	prepared
}

impl Prepared {
	/// The monitor to hand the persister with update `i` of channel `c`. The differential
	/// persisters read only its channel id unless they write it in full; then it is the real state.
	fn monitor_for(&self, c: usize, i: usize) -> &Monitor {
		self.states.get(&(c, i)).unwrap_or(&self.monitors[c])
	}
}

/// What one throughput run does.
#[derive(Debug, Clone, Copy)]
pub struct Run {
	pub writer: Writer,
	/// Requests in flight at most (sync persisters: caller threads).
	pub in_flight: usize,
	pub channels: usize,
	/// Updates per channel.
	pub per_channel: usize,
}

/// One throughput run's outcome: `channels` channels, `per_channel` updates each.
pub struct Throughput {
	pub writer: Writer,
	pub in_flight: usize,
	pub channels: usize,
	pub updates: usize,
	pub elapsed: Duration,
	pub requests: u64,
	pub max_in_flight: u64,
	pub cpu: crate::cpu::Use,
}

impl Throughput {
	pub fn per_second(&self) -> f64 {
		self.updates as f64 / self.elapsed.as_secs_f64()
	}
}

/// Persists `per_channel` updates of each of `channels` channels. Async: one thread submits them
/// all (round-robin over the channels) and the persister runs up to `in_flight` writes at once.
/// Sync: `in_flight` threads each persist their share of the channels' updates one by one.
pub fn throughput(
	backend: &Backend, prepared: &Prepared, fixtures: &[&ChannelFixture], run: Run,
	ldk: &'static Ldk,
) -> Throughput {
	let Run { writer, in_flight, channels, per_channel } = run;
	let prefix = backend
		.prefix(&format!("throughput-{:?}-{in_flight}-{channels}x{per_channel}", writer))
		.to_lowercase();
	backend.seed(&prefix, &fixtures[..channels], 0);
	let store = backend.kv(&prefix, in_flight);
	let persister = AnyPersister::new(writer, &store, ldk, in_flight);
	let names: Vec<MonitorName> =
		prepared.monitors[..channels].iter().map(|m| m.persistence_key()).collect();
	// A running node's channels: each channel's first write of the run is behind it (for this
	// crate's async persister that write also clears leftover update objects of an earlier
	// run, one batch delete per channel and run), outside the timed part.
	for monitor in &prepared.monitors[..channels] {
		expect_status(writer, persister.persist_new(monitor));
	}
	persister.wait_completions(channels);
	backend.reset_counts();
	let cpu = crate::cpu::sample();
	let started = Instant::now();
	let total = channels * per_channel;
	match writer {
		Writer::OursAsync => {
			for i in 0..per_channel {
				for (c, name) in names.iter().enumerate() {
					let update = &prepared.updates[c][i];
					let status = persister.update(*name, update, prepared.monitor_for(c, i));
					expect_status(writer, status);
				}
			}
			persister.wait_completions(total);
		},
		_ => {
			let threads = in_flight.min(channels);
			let next = AtomicUsize::new(0);
			std::thread::scope(|scope| {
				for t in 0..threads {
					let (persister, names, next) = (&persister, &names, &next);
					let _ = t;
					scope.spawn(move || loop {
						// Each channel's updates stay in order: a thread takes a whole channel.
						let c = next.fetch_add(1, Ordering::Relaxed);
						if c >= channels {
							break;
						}
						for i in 0..per_channel {
							let update = &prepared.updates[c][i];
							let status =
								persister.update(names[c], update, prepared.monitor_for(c, i));
							expect_status(writer, status);
						}
					});
				}
			});
		},
	}
	let elapsed = started.elapsed();
	let cpu = cpu.usage();
	let counts = backend.counts();
	Throughput {
		cpu,
		writer,
		in_flight,
		channels,
		updates: total,
		elapsed,
		requests: counts.requests(),
		max_in_flight: counts.max_in_flight,
	}
}

pub fn throughput_row(t: &Throughput, rtt: Option<Duration>) -> Vec<String> {
	let bound = rtt.map(|rtt| t.in_flight as f64 / rtt.as_secs_f64());
	vec![
		t.in_flight.to_string(),
		t.writer.name().into(),
		format!("{} × {}", count(t.channels as u64), t.updates / t.channels.max(1)),
		secs(t.elapsed),
		count(t.requests),
		t.max_in_flight.to_string(),
		format!("{:.0}", t.per_second()),
		bound.map_or("—".into(), |b| format!("{b:.0}")),
		bound.map_or("—".into(), |b| ratio(t.per_second() / b)),
		t.cpu.cell(),
	]
}

pub const THROUGHPUT_HEADER: [&str; 10] = [
	"requests in flight ≤",
	"persister",
	"channels × updates",
	"wall time",
	"requests",
	"most in flight seen",
	"updates / s",
	"bound: in flight ÷ RTT",
	"÷ bound",
	"cores busy: process / machine",
];
