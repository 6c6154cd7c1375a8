//! Startup: loading N monitors with U pending updates each, with this crate's persister in each
//! load mode and with LDK 0.2's `MonitorUpdatingPersister` and `MonitorUpdatingPersisterAsync`,
//! over the same stored objects.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ldk_object_store::{LoadMode, PersisterConfig};
use lightning::util::async_poll::MaybeSend;
use lightning::util::native_async::FutureSpawner;
use lightning::util::persist::MonitorUpdatingPersisterAsync;

use crate::alloc;
use crate::backend::Backend;
use crate::env::{ours, theirs, Ldk};
use crate::fixtures::ChannelFixture;
use crate::report::{bytes, count, ratio, secs, Table};
use store_models::Counts;

/// Who loads, and how.
#[derive(Debug, Clone, Copy)]
pub enum Reader {
	/// This crate: a load mode, monitors loaded at once, requests in flight at once, threads that
	/// decode (`0`: every core).
	Ours { mode: LoadMode, monitors: usize, in_flight: usize, threads: usize },
	/// This crate with no configuration at all: `PersisterConfig::default()` over a store built
	/// with the store's default bound.
	OursDefault,
	/// LDK's `MonitorUpdatingPersister` (sync); `sample` monitors measured if set.
	Ldk { sample: Option<usize> },
	/// LDK's `MonitorUpdatingPersisterAsync`, awaited; `sample` monitors measured if set.
	LdkAsync { sample: Option<usize> },
	/// LDK 0.2's per-monitor `read_channel_monitor_with_updates`, called from `threads` threads
	/// at once, as its docs suggest for a parallel load; the store allows `threads` requests in
	/// flight.
	LdkParallel { threads: usize },
}

impl Reader {
	pub fn name(&self) -> String {
		match self {
			Reader::Ours { mode, threads, .. } => {
				let threads = if *threads == 1 { ", one thread" } else { "" };
				format!("this crate, {}{threads}", mode_name(*mode))
			},
			Reader::OursDefault => format!(
				"this crate, no configuration ({}, adaptive up to the cap)",
				mode_name(PersisterConfig::default().load_mode)
			),
			Reader::Ldk { .. } => "LDK `MonitorUpdatingPersister`".into(),
			Reader::LdkAsync { .. } => "LDK `MonitorUpdatingPersisterAsync`".into(),
			Reader::LdkParallel { threads } => {
				format!("LDK `read_channel_monitor_with_updates` from {threads} threads")
			},
		}
	}

	/// This crate's load as (mode, monitors at once, requests in flight, threads).
	pub fn as_ours(&self) -> Option<(LoadMode, usize, usize, usize)> {
		match *self {
			Reader::Ours { mode, monitors, in_flight, threads } => {
				Some((mode, monitors, in_flight, threads))
			},
			Reader::OursDefault => {
				let c = PersisterConfig::default();
				Some((
					c.load_mode,
					c.max_monitors_loading,
					c.max_requests_in_flight,
					c.load_threads,
				))
			},
			_ => None,
		}
	}

	/// (monitors at once, requests in flight) of any reader.
	fn concurrency(&self) -> (usize, usize) {
		match (self, self.as_ours()) {
			(_, Some((_, monitors, in_flight, _))) => (monitors, in_flight),
			(Reader::LdkParallel { threads }, None) => (*threads, *threads),
			_ => (1, 1),
		}
	}
}

fn mode_name(mode: LoadMode) -> String {
	match mode {
		LoadMode::Probe => "probe".into(),
		LoadMode::Pipelined { window } => format!("pipelined (window {window})"),
		LoadMode::List => "list".into(),
		LoadMode::ListEach => "list each".into(),
	}
}

/// One startup scenario.
pub struct Scenario {
	pub name: String,
	pub monitors: Vec<ChannelFixture>,
	pub updates: usize,
	pub readers: Vec<Reader>,
}

/// Requests one monitor needs and its chain of dependent round trips, per reader.
fn shape(reader: &Reader, u: usize) -> (f64, f64) {
	let u = u as f64;
	match reader.as_ours().map(|(mode, ..)| mode) {
		None | Some(LoadMode::Probe) => {
			// The monitor, its U updates, and the read of U + 1 that finds nothing.
			(u + 2.0, u + 2.0)
		},
		Some(LoadMode::Pipelined { window }) => {
			let w = window as f64;
			// U hits and the first miss take ceil((U + 1) / w) waves; w - 1 reads past the miss
			// are already in flight when it is seen.
			(1.0 + u + w, 1.0 + ((u + 1.0) / w).ceil())
		},
		// The monitor and, with the one listing of all updates, the U updates together.
		Some(LoadMode::List) => (u + 1.0, 2.0),
		// The monitor and its listing together, then the U updates together.
		Some(LoadMode::ListEach) => (u + 2.0, 2.0),
	}
}

/// The round-trip bound in round trips: the listing of `monitors/`, then the longer of the
/// dependent chains (monitors in waves of `monitors at once`) and the requests divided by the
/// requests allowed in flight.
pub fn bound_rtts(reader: &Reader, n: usize, u: usize) -> f64 {
	let (requests, chain) = shape(reader, u);
	let n_f = n as f64;
	let (at_once, in_flight) = reader.concurrency();
	let (at_once, in_flight) = (at_once as f64, in_flight as f64);
	let waves = (n_f / at_once).ceil() * chain;
	let throughput = (n_f * requests / in_flight).ceil();
	1.0 + waves.max(throughput)
}

/// One measured load.
pub struct Loaded {
	pub elapsed: Duration,
	/// Cores busy during the load: this process, the whole machine.
	pub cpu: crate::cpu::Use,
	pub counts: Counts,
	pub peak_heap: usize,
	pub monitors: usize,
}

/// Spawns LDK's async persister's background work on a thread (loading never spawns anything).
struct ThreadSpawner;

impl FutureSpawner for ThreadSpawner {
	fn spawn<T: Future<Output = ()> + MaybeSend + 'static>(&self, future: T) {
		std::thread::spawn(move || futures::executor::block_on(future));
	}
}

/// Loads every monitor below `prefix` with `reader`, checks that each came back with all its
/// updates applied (`expected`: key → update id), and measures it.
fn load(
	backend: &Backend, prefix: &str, reader: &Reader, ldk: &'static Ldk,
	expected: &HashMap<String, u64>,
) -> Loaded {
	let max_in_flight = match reader {
		Reader::OursDefault => ldk_object_store::config::DEFAULT_MAX_IN_FLIGHT,
		Reader::Ldk { .. } | Reader::LdkAsync { .. } => 64,
		_ => reader.concurrency().1,
	};
	let store = backend.kv(prefix, max_in_flight);
	backend.reset_counts();
	let baseline = alloc::reset_peak();
	let cpu = crate::cpu::sample();
	let started = Instant::now();
	let monitors = match reader {
		Reader::Ours { mode, monitors, in_flight, threads } => {
			// Explicit bounds are fixed bounds, as they were before the adaptive default.
			let config = PersisterConfig::default()
				.with_adaptive_concurrency(false)
				.with_load_mode(*mode)
				.with_max_monitors_loading(*monitors)
				.with_max_requests_in_flight(*in_flight)
				.with_load_threads(*threads);
			ours(&store, ldk, config).read_all_channel_monitors_with_updates_blocking()
		},
		Reader::OursDefault => ours(&store, ldk, PersisterConfig::default())
			.read_all_channel_monitors_with_updates_blocking(),
		Reader::LdkParallel { threads } => {
			Ok(ldk_parallel(&store, &theirs(&store, ldk, 100), *threads))
		},
		Reader::Ldk { .. } => theirs(&store, ldk, 100).read_all_channel_monitors_with_updates(),
		Reader::LdkAsync { .. } => {
			let persister = MonitorUpdatingPersisterAsync::new(
				&store,
				ThreadSpawner,
				&ldk.logger,
				100,
				&ldk.keys,
				&ldk.keys,
				&ldk.broadcaster,
				&ldk.fees,
			);
			futures::executor::block_on(persister.read_all_channel_monitors_with_updates())
		},
	}
	.unwrap_or_else(|e| panic!("{}: load failed: {e}", reader.name()));
	let elapsed = started.elapsed();
	let cpu = cpu.usage();
	let peak_heap = alloc::peak().saturating_sub(baseline);
	let counts = backend.counts();
	assert_eq!(monitors.len(), expected.len(), "{}: monitors loaded", reader.name());
	for (_, monitor) in &monitors {
		let key = monitor.persistence_key().to_string();
		assert_eq!(
			Some(&monitor.get_latest_update_id()),
			expected.get(&key),
			"{}: monitor {key} was not loaded with all its updates",
			reader.name()
		);
	}
	let n = monitors.len();
	drop(monitors);
	Loaded { elapsed, cpu, counts, peak_heap, monitors: n }
}

/// LDK's per-monitor read from `threads` threads, each taking the next monitor key when done.
pub fn ldk_parallel(
	store: &ldk_object_store::ObjectKvStore, persister: &crate::env::Theirs<'_>, threads: usize,
) -> Vec<crate::env::LoadedMonitor> {
	let keys = lightning::util::persist::KVStoreSync::list(
		store,
		lightning::util::persist::CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
		"",
	)
	.expect("listing monitors");
	let next = AtomicUsize::new(0);
	let loaded = Mutex::new(Vec::with_capacity(keys.len()));
	std::thread::scope(|scope| {
		for _ in 0..threads.min(keys.len()).max(1) {
			scope.spawn(|| loop {
				let i = next.fetch_add(1, Ordering::Relaxed);
				let Some(key) = keys.get(i) else { break };
				let monitor = persister.read_channel_monitor_with_updates(key).expect("LDK's read");
				loaded.lock().expect("not poisoned").push(monitor);
			});
		}
	});
	loaded.into_inner().expect("not poisoned")
}

/// A load's time with no round trip at all.
#[derive(Debug, Clone, Copy)]
pub struct CpuFloor {
	pub one_thread: Duration,
	pub all_cores: Duration,
	pub cores: usize,
}

/// Results of one scenario, for the target checks.
pub struct ScenarioResult {
	pub table: Table,
	/// (reader, wall time, bound in seconds or None) of this crate's readers.
	pub ours: Vec<(Reader, Duration, Option<Duration>)>,
	/// LDK's sync reader: the time for all N monitors (measured or extrapolated), and whether it
	/// was extrapolated.
	pub ldk: Option<(Duration, bool)>,
	/// The load's CPU floors: this crate's fastest load with no round trip at all, decoding on
	/// one thread and on every core.
	pub cpu_floor: Option<CpuFloor>,
	/// (threads, wall time) of LDK's per-monitor read from many threads.
	pub ldk_parallel: Vec<(usize, Duration)>,
	/// Requests per second of every reader.
	pub rates: Vec<(Reader, f64)>,
	/// (reader, wall time, requests, peak heap) of every reader.
	pub loads: Vec<(Reader, Duration, u64, usize)>,
}

pub fn run(backend: &Backend, scenario: &Scenario, ldk: &'static Ldk) -> ScenarioResult {
	let (n, u) = (scenario.monitors.len(), scenario.updates);
	let rtt = backend.rtt;
	let prefix = backend.prefix(&format!("startup-{}", scenario.name));
	let all: Vec<&ChannelFixture> = scenario.monitors.iter().collect();
	eprintln!("  seeding {n} monitors x {u} updates on {}", backend.name);
	backend.seed(&prefix, &all, u);
	let expected: HashMap<String, u64> =
		all.iter().map(|c| (c.key.clone(), c.update_id + u as u64)).collect();

	let mut table = Table::new(
		format!("Startup: {n} monitors × {u} pending updates, {}", backend.name),
		&[
			"reader",
			"monitors at once",
			"requests in flight ≤",
			"wall time",
			"requests",
			"requests / s",
			"round-trip bound",
			"÷ bound",
			"speed-up over LDK",
			"peak heap",
			"cores busy: process / machine",
			"CPU-bound",
		],
	);
	let mut result = ScenarioResult {
		table: Table::default(),
		ours: vec![],
		ldk: None,
		cpu_floor: None,
		rates: vec![],
		ldk_parallel: vec![],
		loads: vec![],
	};
	// (reader, its load, (monitors, time) if it loaded a sample only)
	type Row = (Reader, Loaded, Option<(usize, Duration)>);
	let mut rows: Vec<Row> = Vec::new();

	// This crate's readers first, then LDK's (which are slow).
	let mut readers = scenario.readers.clone();
	readers.sort_by_key(|r| r.as_ours().is_none());
	for reader in &readers {
		let sample = match reader {
			Reader::Ldk { sample } | Reader::LdkAsync { sample } => sample.filter(|s| *s < n),
			_ => None,
		};
		let loaded = match sample {
			None => {
				eprintln!("  {} ...", reader.name());
				load(backend, &prefix, reader, ldk, &expected)
			},
			Some(k) => {
				let sample_prefix = format!("{prefix}-sample-{k}");
				backend.seed(&sample_prefix, &all[..k], u);
				let expected_k: HashMap<String, u64> =
					all[..k].iter().map(|c| (c.key.clone(), c.update_id + u as u64)).collect();
				eprintln!("  {} on {k} of the {n} monitors ...", reader.name());
				load(backend, &sample_prefix, reader, ldk, &expected_k)
			},
		};
		eprintln!("    {} in {}", reader.name(), secs(loaded.elapsed));
		let measured = sample.map(|k| (k, loaded.elapsed));
		rows.push((*reader, loaded, measured));
	}

	// LDK's sync reader's time for all N (extrapolated linearly from a sample if it had one).
	let ldk_full = rows.iter().find_map(|(r, l, sample)| match r {
		Reader::Ldk { .. } => Some(match sample {
			Some((k, t)) => (t.mul_f64(n as f64 / *k as f64), true),
			None => (l.elapsed, false),
		}),
		_ => None,
	});
	result.ldk = ldk_full;

	for (reader, loaded, sample) in &rows {
		let (at_once, in_flight) = reader.concurrency();
		let (name, at_once, in_flight) =
			(reader.name(), at_once.to_string(), in_flight.to_string());
		let rate = loaded.counts.requests() as f64 / loaded.elapsed.as_secs_f64();
		let full_time = match sample {
			Some((k, t)) => t.mul_f64(n as f64 / *k as f64),
			None => loaded.elapsed,
		};
		let wall = match sample {
			Some((k, t)) => format!(
				"{} (extrapolated ×{:.0} from {} measured on {k} monitors)",
				secs(full_time),
				n as f64 / *k as f64,
				secs(*t)
			),
			None => secs(loaded.elapsed),
		};
		let requests = match sample {
			Some((k, _)) => format!("{} (on {k})", count(loaded.counts.requests())),
			None => count(loaded.counts.requests()),
		};
		let bound = rtt.map(|rtt| rtt.mul_f64(bound_rtts(reader, n, u)));
		let (bound_cell, vs_bound) = match bound {
			Some(b) => (
				format!("{} ({} RTT)", secs(b), count(bound_rtts(reader, n, u) as u64)),
				ratio(full_time.as_secs_f64() / b.as_secs_f64()),
			),
			None => ("—".into(), "—".into()),
		};
		let speedup = match (&ldk_full, reader) {
			(Some(_), Reader::Ldk { .. } | Reader::LdkAsync { .. }) | (None, _) => "—".into(),
			(Some((ldk_t, _)), _) => ratio(ldk_t.as_secs_f64() / full_time.as_secs_f64()),
		};
		let heap = match sample {
			Some((k, _)) => format!("{} (on {k})", bytes(loaded.peak_heap as u64)),
			None => bytes(loaded.peak_heap as u64),
		};
		table.row(vec![
			name,
			at_once,
			in_flight,
			wall,
			requests,
			format!("{rate:.0}"),
			bound_cell,
			vs_bound,
			speedup,
			heap,
			loaded.cpu.cell(),
			loaded.cpu.cpu_bound_cell(),
		]);
		if reader.as_ours().is_some() {
			result.ours.push((*reader, loaded.elapsed, bound));
		} else if let Reader::LdkParallel { threads } = reader {
			result.ldk_parallel.push((*threads, loaded.elapsed));
		}
		result.rates.push((*reader, rate));
		result.loads.push((*reader, loaded.elapsed, loaded.counts.requests(), loaded.peak_heap));
		assert_eq!(loaded.monitors, sample.map_or(n, |(k, _)| k));
	}

	// The CPU floors: the fastest configuration of ours with no round trip, decoding on one
	// thread and on every core.
	if let Some(rtt) = rtt {
		let fastest = result.ours.iter().min_by_key(|(_, t, _)| *t).map(|(r, _, _)| *r);
		if let Some((mode, monitors, in_flight, _)) = fastest.and_then(|r| r.as_ours()) {
			backend.control.set_rtt(Duration::ZERO);
			let floor = |threads| {
				let reader = Reader::Ours { mode, monitors, in_flight, threads };
				let loaded = load(backend, &prefix, &reader, ldk, &expected);
				(loaded.elapsed, loaded.cpu)
			};
			let (one, one_cpu) = floor(1);
			let (all, all_cpu) = floor(0);
			backend.control.set_rtt(rtt);
			let cores = std::thread::available_parallelism().map_or(1, usize::from);
			table.notes.push(format!(
				"CPU floor: the fastest configuration ({mode:?}, {in_flight} requests in flight) \
				 loads the same objects with no round trip at all in {} decoding on one thread \
				 (cores busy {}) and in {} decoding on all {cores} cores (cores busy {}): {} of \
				 the one-thread floor. No round-trip bound includes this floor.",
				secs(one),
				one_cpu.cell(),
				secs(all),
				all_cpu.cell(),
				ratio(all.as_secs_f64() / one.as_secs_f64()),
			));
			result.cpu_floor = Some(CpuFloor { one_thread: one, all_cores: all, cores });
		}
	}
	if let (Some(rtt), Some((_, first, _))) = (rtt, rows.first()) {
		table.intro.push(format!(
			"Every request takes {} ms (measured mean of the simulated round trips: {:.2} ms).",
			rtt.as_secs_f64() * 1000.0,
			first.counts.mean_rtt.as_secs_f64() * 1000.0
		));
	}
	table.intro.push(
		"Every load is checked: all N monitors come back, each with all U updates applied \
		 (its update id is the recorded monitor's plus U). Peak heap: the most memory allocated \
		 during the load above what was allocated before it, the loaded monitors included. \
		 Cores busy: CPU time ÷ wall time, of this process and of the whole machine (other \
		 processes included); CPU-bound: the machine's cores were at least 85% busy, so the \
		 CPU rather than the round trips may have set the time."
			.into(),
	);
	result.table = table;
	result
}
