//! Startup: loading N monitors with U pending updates each, with this crate's persister in each
//! load mode and with LDK 0.2's `MonitorUpdatingPersister` and `MonitorUpdatingPersisterAsync`,
//! over the same stored objects.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use ldk_object_store::{LoadMode, PersisterConfig};
use lightning::util::async_poll::MaybeSend;
use lightning::util::native_async::FutureSpawner;
use lightning::util::persist::MonitorUpdatingPersisterAsync;

use crate::alloc;
use crate::backend::Backend;
use crate::env::{ours, theirs, Ldk};
use crate::fixtures::ChannelFixture;
use crate::latency::Counts;
use crate::report::{bytes, count, ratio, secs, Table};

/// Who loads, and how.
#[derive(Debug, Clone, Copy)]
pub enum Reader {
	/// This crate: a load mode, monitors loaded at once, requests in flight at once.
	Ours { mode: LoadMode, monitors: usize, in_flight: usize },
	/// LDK's `MonitorUpdatingPersister` (sync); `sample` monitors measured if set.
	Ldk { sample: Option<usize> },
	/// LDK's `MonitorUpdatingPersisterAsync`, awaited; `sample` monitors measured if set.
	LdkAsync { sample: Option<usize> },
}

impl Reader {
	fn name(&self) -> String {
		match self {
			Reader::Ours { mode, .. } => match mode {
				LoadMode::Probe => "this crate, probe".into(),
				LoadMode::Pipelined { window } => {
					format!("this crate, pipelined (window {window})")
				},
				LoadMode::List => "this crate, list".into(),
			},
			Reader::Ldk { .. } => "LDK `MonitorUpdatingPersister`".into(),
			Reader::LdkAsync { .. } => "LDK `MonitorUpdatingPersisterAsync`".into(),
		}
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
	match reader {
		Reader::Ours { mode: LoadMode::Probe, .. }
		| Reader::Ldk { .. }
		| Reader::LdkAsync { .. } => {
			// The monitor, its U updates, and the read of U + 1 that finds nothing.
			(u + 2.0, u + 2.0)
		},
		Reader::Ours { mode: LoadMode::Pipelined { window }, .. } => {
			let w = *window as f64;
			// U hits and the first miss take ceil((U + 1) / w) waves; w - 1 reads past the miss
			// are already in flight when it is seen.
			(1.0 + u + w, 1.0 + ((u + 1.0) / w).ceil())
		},
		// The monitor, the listing, then the U updates together.
		Reader::Ours { mode: LoadMode::List, .. } => (u + 2.0, 3.0),
	}
}

/// The round-trip bound in round trips: the listing of `monitors/`, then the longer of the
/// dependent chains (monitors in waves of `monitors at once`) and the requests divided by the
/// requests allowed in flight.
pub fn bound_rtts(reader: &Reader, n: usize, u: usize) -> f64 {
	let (requests, chain) = shape(reader, u);
	let n_f = n as f64;
	let (at_once, in_flight) = match reader {
		Reader::Ours { monitors, in_flight, .. } => (*monitors as f64, *in_flight as f64),
		_ => (1.0, 1.0),
	};
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
		Reader::Ours { in_flight, .. } => *in_flight,
		_ => 64,
	};
	let store = backend.kv(prefix, max_in_flight);
	backend.reset_counts();
	let baseline = alloc::reset_peak();
	let cpu = crate::cpu::sample();
	let started = Instant::now();
	let monitors = match reader {
		Reader::Ours { mode, monitors, in_flight } => {
			let config = PersisterConfig::default()
				.with_load_mode(*mode)
				.with_max_monitors_loading(*monitors)
				.with_max_requests_in_flight(*in_flight);
			ours(&store, ldk, config).read_all_channel_monitors_with_updates_blocking()
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

/// Results of one scenario, for the target checks.
pub struct ScenarioResult {
	pub table: Table,
	/// (reader, wall time, bound in seconds or None) of this crate's readers.
	pub ours: Vec<(Reader, Duration, Option<Duration>)>,
	/// LDK's sync reader: the time for all N monitors (measured or extrapolated), and whether it
	/// was extrapolated.
	pub ldk: Option<(Duration, bool)>,
	/// The load's CPU floor: this crate's fastest load with no round trip at all.
	pub cpu_floor: Option<Duration>,
	/// Requests per second of every reader.
	pub rates: Vec<(Reader, f64)>,
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
		],
	);
	let mut result = ScenarioResult {
		table: Table::default(),
		ours: vec![],
		ldk: None,
		cpu_floor: None,
		rates: vec![],
	};
	// (reader, its load, (monitors, time) if it loaded a sample only)
	type Row = (Reader, Loaded, Option<(usize, Duration)>);
	let mut rows: Vec<Row> = Vec::new();

	// This crate's readers first, then LDK's (which are slow).
	let mut readers = scenario.readers.clone();
	readers.sort_by_key(|r| !matches!(r, Reader::Ours { .. }));
	for reader in &readers {
		let sample = match reader {
			Reader::Ldk { sample } | Reader::LdkAsync { sample } => sample.filter(|s| *s < n),
			Reader::Ours { .. } => None,
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
		let (name, at_once, in_flight) = match reader {
			Reader::Ours { monitors, in_flight, .. } => {
				(reader.name(), monitors.to_string(), in_flight.to_string())
			},
			_ => (reader.name(), "1".into(), "1".into()),
		};
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
			(Some((ldk_t, _)), Reader::Ours { .. }) => {
				ratio(ldk_t.as_secs_f64() / full_time.as_secs_f64())
			},
			_ => "—".into(),
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
		]);
		if let Reader::Ours { .. } = reader {
			result.ours.push((*reader, loaded.elapsed, bound));
		}
		result.rates.push((*reader, rate));
		assert_eq!(loaded.monitors, sample.map_or(n, |(k, _)| k));
	}

	// The CPU floor: the fastest configuration of ours with no round trip.
	if let Some(rtt) = rtt {
		let fastest = result.ours.iter().min_by_key(|(_, t, _)| *t).map(|(r, _, _)| *r);
		if let Some(reader) = fastest {
			backend.control.set_rtt(Duration::ZERO);
			let loaded = load(backend, &prefix, &reader, ldk, &expected);
			backend.control.set_rtt(rtt);
			table.notes.push(format!(
				"The fastest configuration ({}, {} requests in flight) loads the same objects in {} \
				 with no round trip at all: decoding the monitors and applying the updates (on one \
				 thread) and the store's own work. That is a floor no round-trip bound includes.",
				reader.name(),
				match reader {
					Reader::Ours { in_flight, .. } => in_flight,
					_ => 1,
				},
				secs(loaded.elapsed)
			));
			result.cpu_floor = Some(loaded.elapsed);
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
		 processes included)."
			.into(),
	);
	result.table = table;
	result
}
