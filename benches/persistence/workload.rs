//! A node's working life, then its next start: the recorded monitors and updates of many real
//! channels go through real `ChainMonitor`s, one over this crate's persister with no
//! configuration and one over LDK's `MonitorUpdatingPersister`, in bursts of a few updates on
//! one channel at a time, in one random order shared by both. Then the node shuts down (this
//! crate's `consolidate`; LDK's persister has nothing of the kind) and starts again: each store
//! is loaded at several bounds on requests in flight, this crate's loader against LDK's
//! per-monitor read from as many threads. A load of this crate's store as a crash would leave it
//! (before `consolidate`) is shown too, and the same life with update objects at any monitor size
//! (`with_full_monitors_up_to(0)`, as LDK writes) beside the defaults, which write small monitors
//! whole.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bitcoin::{BlockHash, Txid};
use ldk_object_store::{LoadMode, ObjectKvStore, PersisterConfig};
use lightning::chain::chainmonitor::{ChainMonitor, Persist};
use lightning::chain::{ChannelMonitorUpdateStatus, Filter, Watch, WatchedOutput};
use lightning::sign::{InMemorySigner, KeysManager, NodeSigner};
use lightning::util::ser::ReadableArgs;

use crate::backend::Backend;
use crate::env::{ours, theirs, FixedFees, Ldk, NullBroadcaster, NullLogger};
use crate::fixtures::ChannelFixture;
use crate::plan::{bursts, counts, replay};
use crate::report::{bytes, count, ratio, secs, Table};
use crate::startup::ldk_parallel;
use crate::updates::{decode_update, MAX_PENDING};
use store_models::Counts;

/// S3 Standard request and storage prices, US East (N. Virginia), in US dollars, as the authors
/// last read them on AWS's pricing page; the benchmark does not fetch them.
pub const PRICES: &str = "S3 Standard, US East (N. Virginia): PUT, COPY, POST and LIST $0.005 \
	per 1,000 requests; GET $0.0004 per 1,000; DELETE free; storage $0.023 per GB-month \
	(AWS's public price list as read on 2026-11-29; the benchmark does not fetch it)";
const PUT_CLASS_PER_REQUEST: f64 = 0.005 / 1000.0;
const GET_CLASS_PER_REQUEST: f64 = 0.0004 / 1000.0;
const STORAGE_PER_GB_MONTH: f64 = 0.023;

/// The rows of this crate's persister writing update objects at any monitor size.
const UPDATE_OBJECTS: &str = "update objects at any size (`with_full_monitors_up_to(0)`)";

/// No chain source: the workload connects no blocks.
struct NoChain;

impl Filter for NoChain {
	fn register_tx(&self, _txid: &Txid, _script: &bitcoin::Script) {}
	fn register_output(&self, _output: WatchedOutput) {}
}

type Monitors<'p, P> = ChainMonitor<
	InMemorySigner,
	&'static NoChain,
	&'static NullBroadcaster,
	&'static FixedFees,
	&'static NullLogger,
	&'p P,
	&'static KeysManager,
>;

/// One persister's working life: the channels registered, then `reset` (of the request
/// counters), then every update in `plan`, each completed before the next. Returns the
/// `ChainMonitor`.
fn drive<'p, P: Persist<InMemorySigner>>(
	persister: &'p P, channels: &[ChannelFixture], plan: &[(usize, usize)], counts: &[usize],
	ldk: &'static Ldk, reset: impl FnOnce(),
) -> Monitors<'p, P> {
	let no_chain: &'static NoChain = &NoChain;
	let monitors = ChainMonitor::new(
		Some(no_chain),
		&ldk.broadcaster,
		&ldk.logger,
		&ldk.fees,
		persister,
		&ldk.keys,
		ldk.keys.get_peer_storage_key(),
	);
	let mut ids = Vec::with_capacity(channels.len());
	for c in channels {
		let (_, monitor) = <(
			BlockHash,
			lightning::chain::channelmonitor::ChannelMonitor<InMemorySigner>,
		)>::read(&mut &c.monitor[..], (&ldk.keys, &ldk.keys))
		.expect("fixture monitor decodes");
		let id = monitor.channel_id();
		let status = monitors.watch_channel(id, monitor).expect("a new channel");
		assert_eq!(status, ChannelMonitorUpdateStatus::Completed, "{}", c.label);
		ids.push(id);
	}
	let decoded: Vec<Vec<_>> = channels
		.iter()
		.zip(counts)
		.map(|(c, n)| c.updates[..*n].iter().map(|u| decode_update(u)).collect())
		.collect();
	reset();
	replay(plan, counts, |channel, i| {
		let status = monitors.update_channel(ids[channel], &decoded[channel][i]);
		assert_eq!(status, ChannelMonitorUpdateStatus::Completed, "{}", channels[channel].label);
	});
	monitors
}

/// The workload's updates: how many each channel makes, their order, their total, and the
/// updates per payment (node 0's monitor update id after its warm-up payments over each channel,
/// divided by those payments, from the fixtures).
pub struct Life {
	counts: Vec<usize>,
	plan: Vec<(usize, usize)>,
	pub total: u64,
	pub per_payment: f64,
}

impl Life {
	pub fn of(channels: &[ChannelFixture], updates: usize) -> Life {
		let counts = counts(channels.len(), updates);
		let plan = bursts(&counts);
		let total = counts.iter().map(|c| *c as u64).sum();
		let (ids, payments) = channels
			.iter()
			.fold((0u64, 0u64), |(i, p), c| (i + c.update_id, p + u64::from(c.payments_before)));
		let per_payment = if payments > 0 { ids as f64 / payments as f64 } else { 1.0 };
		Life { counts, plan, total, per_payment }
	}

	/// The working life through this crate's persister with no configuration over `store`;
	/// `reset` runs once every channel is registered.
	pub fn live(
		&self, store: &ObjectKvStore, channels: &[ChannelFixture], ldk: &'static Ldk,
		reset: impl FnOnce(),
	) {
		let persister = ours(store, ldk, PersisterConfig::default());
		drop(drive(&persister, channels, &self.plan, &self.counts, ldk, reset));
	}
}

/// Requests of the PUT class (PUT, LIST and the POST of a batch delete) and of the GET class;
/// single DELETEs are free.
pub fn priced(c: &Counts, batch_deletes: bool) -> (u64, u64) {
	let deletes = if batch_deletes { c.delete_requests } else { 0 };
	(c.puts + c.lists + deletes, c.gets + c.other)
}

pub fn dollars(c: &Counts, batch_deletes: bool) -> f64 {
	let (put_class, get_class) = priced(c, batch_deletes);
	put_class as f64 * PUT_CLASS_PER_REQUEST + get_class as f64 * GET_CLASS_PER_REQUEST
}

/// What the verdict needs.
pub struct WorkloadFinding {
	pub channels: usize,
	/// Requests per monitor at the next startup of this crate's store with the defaults: after
	/// `consolidate`, after a crash, and after a crash when update objects are written at any
	/// monitor size.
	pub startup_requests_per_monitor: f64,
	pub crash_requests_per_monitor: f64,
	pub crash_requests_per_monitor_with_updates: f64,
	/// This crate's bytes written per update ÷ LDK's.
	pub write_bytes_vs_ldk: f64,
	/// The same with update objects at any monitor size.
	pub write_bytes_vs_ldk_with_updates: f64,
	/// (bound, this crate's load, LDK's per-monitor read from `bound` threads).
	pub at_bound: Vec<(usize, Duration, Duration)>,
	/// This crate's load of the store a crash left, at 128 requests in flight.
	pub crashed: Duration,
	/// The requests of this crate's persister with no configuration over the updates.
	pub ours_counts: Counts,
}

pub fn run(
	backend: &Backend, channels: &[ChannelFixture], updates: usize, bounds: &[usize],
	ldk: &'static Ldk,
) -> (Vec<Table>, WorkloadFinding) {
	let n = channels.len();
	let life = Life::of(channels, updates);
	let (counts, plan, total, per_payment) =
		(&life.counts, &life.plan, life.total, life.per_payment);
	let ours_prefix = backend.prefix("workload-ours");
	let ldk_prefix = backend.prefix("workload-ldk");
	let expected: HashMap<String, u64> = channels
		.iter()
		.zip(counts)
		.map(|(c, n)| (c.key.clone(), c.update_id + *n as u64))
		.collect();

	eprintln!("  workload: {n} channels, {total} updates through both persisters");
	let rtt = backend.latency_off();
	// This crate, with no configuration, over a store with the store's default bound.
	let ours_store = backend.kv(&ours_prefix, ldk_object_store::config::DEFAULT_MAX_IN_FLIGHT);
	let ours_persister = ours(&ours_store, ldk, PersisterConfig::default());
	let ours_monitors =
		drive(&ours_persister, channels, plan, counts, ldk, || backend.reset_counts());
	let ours_counts = backend.counts();
	// A crash here leaves the store as it is: load it as a restart would.
	backend.latency_on(rtt);
	let crashed = load_ours(backend, &ours_prefix, 128, ldk, &expected);
	backend.latency_off();
	let crash_row = load_row("this crate", "a crash (no `consolidate`)", 128, &crashed, n, None);
	backend.reset_counts();
	let consolidated = ours_persister.consolidate(&ours_monitors).expect("consolidate");
	let shutdown = backend.counts();
	drop(ours_monitors);
	drop(ours_persister);
	drop(ours_store);

	// The same with update objects at any size (as LDK writes them), to show what writing small
	// monitors whole changes, after a crash.
	let updates_prefix = backend.prefix("workload-update-objects");
	let updates_store =
		backend.kv(&updates_prefix, ldk_object_store::config::DEFAULT_MAX_IN_FLIGHT);
	let updates_persister =
		ours(&updates_store, ldk, PersisterConfig::default().with_full_monitors_up_to(0));
	let updates_monitors =
		drive(&updates_persister, channels, plan, counts, ldk, || backend.reset_counts());
	let updates_counts = backend.counts();
	backend.latency_on(rtt);
	let updates_crashed = load_ours(backend, &updates_prefix, 128, ldk, &expected);
	backend.latency_off();
	drop(updates_monitors);
	drop(updates_persister);
	drop(updates_store);

	// The same with fencing off, to show what the default's conditional writes cost.
	let unfenced_store = backend.kv_unfenced(
		&backend.prefix("workload-unfenced"),
		ldk_object_store::config::DEFAULT_MAX_IN_FLIGHT,
	);
	let unfenced_persister = ours(&unfenced_store, ldk, PersisterConfig::default());
	let unfenced_monitors =
		drive(&unfenced_persister, channels, plan, counts, ldk, || backend.reset_counts());
	let unfenced_counts = backend.counts();
	drop(unfenced_monitors);
	drop(unfenced_persister);
	drop(unfenced_store);

	let ldk_store = backend.kv(&ldk_prefix, 64);
	let ldk_persister = theirs(&ldk_store, ldk, MAX_PENDING);
	let ldk_monitors =
		drive(&ldk_persister, channels, plan, counts, ldk, || backend.reset_counts());
	let ldk_counts = backend.counts();
	drop(ldk_monitors);
	drop(ldk_persister);
	drop(ldk_store);
	backend.latency_on(rtt);

	let mut writes = Table::new(
		format!("Workload: {n} channels, {} updates, then a clean shutdown", count(total)),
		&[
			"persister",
			"PUTs",
			"deletes (requests / objects)",
			"requests / update",
			"requests / payment",
			"bytes written / update",
			"bytes written / payment",
			"÷ LDK's bytes",
		],
	);
	writes.intro.push(format!(
		"Real monitors and updates (the startup fixtures: {n} channels, each monitor followed by \
		 a random number, 1 to {}, of its next recorded updates, so that channels stop at \
		 different points between two full monitors) go through a real `ChainMonitor` over \
		 each persister: every channel registered (not counted), then {} bursts of 1–8 \
		 consecutive updates of one channel picked at random, the same order for both, each \
		 update completed before the next. Per payment: ×{per_payment:.2} updates, node 0's monitor \
		 update id after its warm-up payments over each channel divided by those payments \
		 (from the fixtures). Writes are counted on the in-memory store with no round trip.",
		updates - 1,
		count(plan.len() as u64)
	));
	let per_update = |x: u64| x as f64 / total as f64;
	let row = |name: &str, c: &Counts| {
		vec![
			name.to_owned(),
			count(c.puts),
			format!("{} / {}", count(c.delete_requests), count(c.deleted_objects)),
			format!("{:.3}", per_update(c.requests())),
			format!("{:.3}", per_update(c.requests()) * per_payment),
			bytes(per_update(c.bytes_put) as u64),
			bytes((per_update(c.bytes_put) * per_payment) as u64),
			ratio(c.bytes_put as f64 / ldk_counts.bytes_put.max(1) as f64),
		]
	};
	writes.row(row("this crate, no configuration (fencing on)", &ours_counts));
	writes.row(row(UPDATE_OBJECTS, &updates_counts));
	writes.row(row("this crate, fencing off", &unfenced_counts));
	writes.row(row("LDK `MonitorUpdatingPersister` (100)", &ldk_counts));
	let fencing_cost = per_update(ours_counts.requests()) - per_update(unfenced_counts.requests());
	writes.notes.push(format!(
		"Fencing (on by default where the writer lease is an object lease) costs {fencing_cost:+.3} \
		 requests per update{}.",
		if fencing_cost.abs() < 0.0005 {
			": the node's objects are read at start or created new, and update objects are only \
			 ever created, so no write needs a lookup first"
		} else {
			" (a lookup before the first write of an object not seen since the store started)"
		}
	));
	writes.notes.push(format!(
		"Shutdown: `consolidate` wrote {consolidated} full monitors in {} requests ({} written).",
		count(shutdown.requests()),
		bytes(shutdown.bytes_put)
	));

	let mut startup = Table::new(
		format!("Workload: the next startup of {n} monitors, {}", backend.name),
		&[
			"reader",
			"store left by",
			"requests in flight ≤",
			"wall time",
			"requests",
			"requests / monitor",
			"÷ LDK's time at the same bound",
			"cores busy: process / machine",
			"CPU-bound",
		],
	);
	startup.intro.push(
		"Each store loaded as a node starts: this crate's loader (the defaults, with the bound on \
		 requests in flight and monitors at once set to the row's) and LDK 0.2's per-monitor \
		 `read_channel_monitor_with_updates` from as many threads; every load checked (all \
		 monitors, at their final update ids)."
			.into(),
	);
	let mut at_bound = Vec::new();
	let mut ours_clean_requests = None;
	for &bound in bounds {
		let clean = load_ours(backend, &ours_prefix, bound, ldk, &expected);
		let theirs_load = load_ldk(backend, &ldk_prefix, bound, ldk, &expected);
		let vs = theirs_load.0.as_secs_f64() / clean.0.as_secs_f64();
		startup.row(load_row("this crate", "clean shutdown", bound, &clean, n, Some(vs)));
		startup.row(load_row(
			"LDK `read_channel_monitor_with_updates`",
			"LDK's persister",
			bound,
			&theirs_load,
			n,
			None,
		));
		at_bound.push((bound, clean.0, theirs_load.0));
		ours_clean_requests.get_or_insert(clean.1.requests());
	}
	let probed = load_ours_in(backend, &ours_prefix, 128, LoadMode::Probe, ldk, &expected);
	startup.row(load_row(
		"this crate, probing (LDK's way)",
		"clean shutdown",
		128,
		&probed,
		n,
		None,
	));
	startup.row(crash_row);
	startup.row(load_row(
		"this crate",
		&format!("a crash, {UPDATE_OBJECTS}"),
		128,
		&updates_crashed,
		n,
		None,
	));

	let startup_cost = format!("$ / startup of {n} monitors");
	let mut cost = Table::new(
		"Workload: requests and what they cost, per million payments and per startup",
		&[
			"persister",
			"PUT-class requests / payment",
			"GET-class / payment",
			"$ / million payments",
			&startup_cost,
			"stored bytes / channel",
			"$ / month for 1,000 channels' objects",
		],
	);
	cost.intro.push(format!(
		"{PRICES}. A batch delete is a POST (priced as PUT-class here); LDK's single DELETEs \
		 are free. Startup: the loads above at {} in flight.",
		bounds.first().copied().unwrap_or(0)
	));
	let first_bound = bounds.first().copied().unwrap_or(128);
	let ours_start = load_ours(backend, &ours_prefix, first_bound, ldk, &expected);
	let ldk_start = load_ldk(backend, &ldk_prefix, first_bound, ldk, &expected);
	// Bytes stored below a prefix (listed with no round trip).
	let stored = |prefix: &str| -> u64 {
		let objects = backend.without_latency(|| {
			futures::executor::block_on(async {
				use futures::TryStreamExt;
				let path = object_store::path::Path::from(prefix);
				backend.store.list(Some(&path)).try_collect::<Vec<_>>().await
			})
		});
		objects.expect("listing the store").iter().map(|o| o.size).sum()
	};
	for (name, counts, start, prefix, batch) in [
		("this crate, no configuration", &ours_counts, &ours_start, &ours_prefix, true),
		("LDK `MonitorUpdatingPersister` (100)", &ldk_counts, &ldk_start, &ldk_prefix, false),
	] {
		let (put_class, get_class) = priced(counts, batch);
		let per_pay = |x: u64| per_update(x) * per_payment;
		let per_channel = stored(prefix) / n.max(1) as u64;
		cost.row(vec![
			name.to_owned(),
			format!("{:.3}", per_pay(put_class)),
			format!("{:.3}", per_pay(get_class)),
			format!("${:.2}", dollars(counts, batch) / total as f64 * per_payment * 1e6),
			format!("${:.4}", dollars(&start.1, batch)),
			bytes(per_channel),
			format!("${:.4}", per_channel as f64 * 1000.0 / 1e9 * STORAGE_PER_GB_MONTH),
		]);
	}

	let finding = WorkloadFinding {
		channels: n,
		startup_requests_per_monitor: ours_clean_requests.unwrap_or(0) as f64 / n as f64,
		crash_requests_per_monitor: crashed.1.requests() as f64 / n as f64,
		crash_requests_per_monitor_with_updates: updates_crashed.1.requests() as f64 / n as f64,
		write_bytes_vs_ldk: ours_counts.bytes_put as f64 / ldk_counts.bytes_put.max(1) as f64,
		write_bytes_vs_ldk_with_updates: updates_counts.bytes_put as f64
			/ ldk_counts.bytes_put.max(1) as f64,
		at_bound,
		crashed: crashed.0,
		ours_counts,
	};
	(vec![writes, startup, cost], finding)
}

/// (wall time, counts, cores busy) of one load.
type Load = (Duration, Counts, crate::cpu::Use);

fn measure(backend: &Backend, load: impl FnOnce() -> usize, expected: usize) -> Load {
	backend.reset_counts();
	let cpu = crate::cpu::sample();
	let started = Instant::now();
	let loaded = load();
	let elapsed = started.elapsed();
	let cpu = cpu.usage();
	assert_eq!(loaded, expected, "monitors loaded");
	(elapsed, backend.counts(), cpu)
}

fn check(loaded: &[crate::env::LoadedMonitor], expected: &HashMap<String, u64>) -> usize {
	for (_, monitor) in loaded {
		let key = monitor.persistence_key().to_string();
		assert_eq!(Some(&monitor.get_latest_update_id()), expected.get(&key), "monitor {key}");
	}
	loaded.len()
}

fn load_ours(
	backend: &Backend, prefix: &str, bound: usize, ldk: &'static Ldk,
	expected: &HashMap<String, u64>,
) -> Load {
	load_ours_in(backend, prefix, bound, PersisterConfig::default().load_mode, ldk, expected)
}

fn load_ours_in(
	backend: &Backend, prefix: &str, bound: usize, mode: LoadMode, ldk: &'static Ldk,
	expected: &HashMap<String, u64>,
) -> Load {
	let store = crate::env::kv_reader(
		&backend.store,
		prefix,
		bound.max(ldk_object_store::config::DEFAULT_MAX_IN_FLIGHT),
	);
	let config = PersisterConfig::default()
		.with_load_mode(mode)
		.with_max_requests_in_flight(bound)
		.with_max_monitors_loading(bound);
	let persister = ours(&store, ldk, config);
	measure(
		backend,
		|| {
			let loaded = persister.read_all_channel_monitors_with_updates_blocking();
			check(&loaded.expect("this crate's load"), expected)
		},
		expected.len(),
	)
}

fn load_ldk(
	backend: &Backend, prefix: &str, bound: usize, ldk: &'static Ldk,
	expected: &HashMap<String, u64>,
) -> Load {
	let store = crate::env::kv_reader(&backend.store, prefix, bound);
	let persister = theirs(&store, ldk, MAX_PENDING);
	measure(backend, || check(&ldk_parallel(&store, &persister, bound), expected), expected.len())
}

fn load_row(
	reader: &str, left_by: &str, bound: usize, load: &Load, n: usize, vs: Option<f64>,
) -> Vec<String> {
	vec![
		reader.to_owned(),
		left_by.to_owned(),
		bound.to_string(),
		secs(load.0),
		count(load.1.requests()),
		format!("{:.3}", load.1.requests() as f64 / n as f64),
		vs.map_or("—".into(), ratio),
		load.2.cell(),
		load.2.cpu_bound_cell(),
	]
}
