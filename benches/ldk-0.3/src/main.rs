//! Startup loading of channel monitors, side by side in one run: LDK 0.3.0-rc3's own loader
//! (`MonitorUpdatingPersisterAsync::read_all_channel_monitors_with_updates`) against this crate's
//! (`ldk_object_store::MonitorPersister::read_all_channel_monitors_with_updates`), over the same
//! objects in the same simulated store, with wall time, requests and peak heap for each.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/helpers/target-ldk03 cargo run --release \
//!     --manifest-path benches/ldk-0.3/Cargo.toml -- --write-md OUT.md
//! ```
//!
//! A second table loads over the S3-like model (`store_models::S3LikeStore`: request rates per
//! partition with `503 SlowDown` past them, a log-normal latency, a bound on connections), LDK
//! 0.3's loader retrying as object_store's client would, with the model's self-check under it.
//!
//! Options: `--fixtures DIR` (default `<repo>/target/bench-fixtures`; `full.bin` there, else
//! `smoke.bin`, as the main benchmark writes them), `--sizes 100x10,1000x0,1000x50`
//! (monitors × pending updates), `--rtt-ms 20`, `--runs 1` (the median wall time is shown),
//! `--s3 median-ms=30,p99-ms=200,connections=50,reads=5500,writes=3500,burst-s=1,prefix=0` (the
//! S3-like model's parameters, any subset), `--s3-sizes 100x10,1000x0,1000x50,10000x10`,
//! `--only rtt|s3|e2e` (one table), `--write-md FILE`.
//!
//! A third table (`e2e`) is end to end on the S3-like model: each persister writes its own store
//! through a real `ChainMonitor` over the main benchmark's workload, and the node starts again
//! after a clean shutdown and after a crash (see `e2e.rs`).

// The main benchmark's own allocator counter, CPU time and fixture format, shared rather than
// copied (this crate uses part of each).
#[allow(dead_code)]
#[path = "../../persistence/alloc.rs"]
mod alloc;
#[allow(dead_code)]
#[path = "../../persistence/cpu.rs"]
mod cpu;
#[allow(dead_code)]
#[path = "../../persistence/fixtures.rs"]
mod fixtures;
// The main benchmark's workload plan, so that the end-to-end section lives the same life.
mod e2e;
mod kv03;
mod loaders;
#[path = "../../persistence/plan.rs"]
mod plan;
mod retry;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ldk_object_store::{LoadMode, PersisterConfig};
use lightning::util::persist::{
	CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
	CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE,
	MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL,
};
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use fixtures::{ChannelFixture, FixtureSet};
use store_models::{
	CalibrationLoad, Control, Counts, LatencyStore, S3Counts, S3LikeStore, S3Model, S3Params,
};

/// The prefix both loaders' stores live below, as a node's would in a shared bucket.
const ROOT: &str = "node";

struct Args {
	fixtures: PathBuf,
	sizes: Vec<(usize, usize)>,
	rtt: Duration,
	runs: usize,
	/// The S3-like model's parameters (`--s3`).
	s3: S3Params,
	/// The S3-like table's sizes.
	s3_sizes: Vec<(usize, usize)>,
	/// Which tables run: both, or `rtt` or `s3` alone.
	only: Option<String>,
	write_md: Option<PathBuf>,
}

fn usage() -> String {
	"usage: ldk03-startup [--fixtures DIR] [--sizes 100x10,1000x0,1000x50] [--rtt-ms 20] \
	 [--runs 1] [--s3 KEY=VALUE,...] [--s3-sizes 100x10,1000x0,1000x50,10000x10] \
	 [--only rtt|s3|e2e] [--write-md FILE]"
		.into()
}

fn parse_sizes(spec: &str) -> Result<Vec<(usize, usize)>, String> {
	spec.split(',')
		.map(|s| {
			let (n, u) = s.split_once('x').ok_or(format!("bad size {s}: NxU"))?;
			Ok((
				n.trim().parse().map_err(|e| format!("{s}: {e}"))?,
				u.trim().parse().map_err(|e| format!("{s}: {e}"))?,
			))
		})
		.collect()
}

fn parse_args() -> Result<Args, String> {
	let mut args = Args {
		// The main benchmark's default: `target/bench-fixtures` of the repository.
		fixtures: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-fixtures"),
		sizes: vec![(100, 10), (1000, 0), (1000, 50)],
		rtt: Duration::from_millis(20),
		runs: 1,
		s3: S3Params::default(),
		s3_sizes: vec![(100, 10), (1000, 0), (1000, 50), (10000, 10)],
		only: None,
		write_md: None,
	};
	let mut it = std::env::args().skip(1);
	while let Some(arg) = it.next() {
		let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value\n{}", usage()));
		match arg.as_str() {
			"--fixtures" => args.fixtures = PathBuf::from(value()?),
			"--sizes" => args.sizes = parse_sizes(&value()?)?,
			"--s3-sizes" => args.s3_sizes = parse_sizes(&value()?)?,
			"--s3" => args.s3 = S3Params::parse(&value()?)?,
			"--only" => {
				let only = value()?;
				if !["rtt", "s3", "e2e"].contains(&only.as_str()) {
					return Err(format!("--only: rtt, s3 or e2e, not {only:?}\n{}", usage()));
				}
				args.only = Some(only);
			},
			"--rtt-ms" => {
				let ms: f64 = value()?.parse().map_err(|e| format!("--rtt-ms: {e}"))?;
				args.rtt = Duration::from_secs_f64(ms / 1000.0);
			},
			"--runs" => {
				args.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?;
				args.runs = args.runs.max(1);
			},
			"--write-md" => args.write_md = Some(PathBuf::from(value()?)),
			// `cargo bench` passes `--bench`; nothing else is expected.
			"--bench" => {},
			"-h" | "--help" => return Err(usage()),
			other => return Err(format!("unknown argument {other}\n{}", usage())),
		}
	}
	Ok(args)
}

/// The main benchmark's fixture file in `dir`: the full profile's if present, else the smoke
/// profile's.
fn fixture_file(dir: &Path) -> Option<PathBuf> {
	["full.bin", "smoke.bin"].iter().map(|f| dir.join(f)).find(|p| p.is_file())
}

/// Who loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loader {
	/// This crate with `PersisterConfig::default()`.
	OursDefault,
	/// This crate with the default config but `LoadMode::List`: one listing of every update.
	OursList,
	/// This crate with `LoadMode::ListEach` (LDK 0.3's way: each monitor's updates listed while
	/// it is read) and its bounds raised as in [`Loader::OursWide`]: the like-for-like row.
	OursEachWide,
	/// This crate with the default config but its bounds raised to about what LDK 0.3 has in
	/// flight at these sizes: shows how much of the difference is the bound alone.
	OursWide,
	/// LDK 0.3.0-rc3's `MonitorUpdatingPersisterAsync`.
	Ldk03,
	/// The same, its adapter retrying as object_store's client does (the S3-like table).
	Ldk03Retry,
}

/// [`Loader::OursWide`]'s bounds: monitors loading, and requests in flight (persister and store).
const WIDE_MONITORS: usize = 1000;
const WIDE_IN_FLIGHT: usize = 4096;

impl Loader {
	fn name(self) -> &'static str {
		match self {
			Loader::OursDefault => "ldk-object-store, `PersisterConfig::default()`",
			Loader::OursList => "ldk-object-store, default with `LoadMode::List`",
			Loader::OursWide => "ldk-object-store, default with bounds raised",
			Loader::OursEachWide => {
				"ldk-object-store, `LoadMode::ListEach` with bounds raised (LDK 0.3's way)"
			},
			Loader::Ldk03 => "LDK 0.3.0-rc3 `MonitorUpdatingPersisterAsync`",
			Loader::Ldk03Retry => {
				"LDK 0.3.0-rc3 `MonitorUpdatingPersisterAsync`, object_store's retries"
			},
		}
	}

	fn config(self) -> PersisterConfig {
		match self {
			Loader::OursList => PersisterConfig::default().with_load_mode(LoadMode::List),
			Loader::OursWide => PersisterConfig::default()
				.with_max_monitors_loading(WIDE_MONITORS)
				.with_max_requests_in_flight(WIDE_IN_FLIGHT),
			Loader::OursEachWide => Loader::OursWide.config().with_load_mode(LoadMode::ListEach),
			_ => PersisterConfig::default(),
		}
	}
}

/// One measured load.
struct Measured {
	elapsed: Duration,
	counts: Counts,
	peak_heap: usize,
	/// CPU time of the whole process (user + system, every thread) during the load.
	cpu: Duration,
	/// What the S3-like model saw during the load, on that table.
	s3: Option<S3Counts>,
}

/// What the run needs throughout.
struct Bench {
	rt: tokio::runtime::Runtime,
	workers: usize,
	env02: &'static loaders::v02::Env,
	env03: &'static loaders::v03::Env,
}

/// A fresh in-memory store holding what LDK's `MonitorUpdatingPersister` (0.2.7 and 0.3 alike)
/// leaves behind: each monitor with the sentinel, and its first `u` update objects.
fn seeded_inner(bench: &Bench, channels: &[&ChannelFixture], u: usize) -> Arc<dyn ObjectStore> {
	let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
	let root = ObjectPath::from(ROOT);
	let mut puts = Vec::new();
	for c in channels {
		let mut monitor = MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL.to_vec();
		monitor.extend_from_slice(&c.monitor);
		let path = root.clone().join(CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE).join(&*c.key);
		puts.push((path, monitor));
		for (i, update) in c.updates[..u].iter().enumerate() {
			let path = root
				.clone()
				.join(CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE)
				.join(&*c.key)
				.join(c.update_id_at(i).to_string());
			puts.push((path, update.clone()));
		}
	}
	// Straight into the inner store: seeding is neither delayed nor counted.
	bench.rt.block_on(async {
		for (path, bytes) in puts {
			inner.put(&path, bytes.into()).await.expect("seeding the in-memory store");
		}
	});
	inner
}

/// [`seeded_inner`] behind the fixed round trip and request counting.
fn seeded(
	bench: &Bench, channels: &[&ChannelFixture], u: usize,
) -> (Arc<dyn ObjectStore>, Arc<Control>) {
	let inner = seeded_inner(bench, channels, u);
	let control = Arc::new(Control::default());
	let store = LatencyStore::wrap(inner, Arc::clone(&control));
	(store, control)
}

/// Loads everything in `store` with `loader`, checks it against `expected`, and measures it.
/// `model`: the S3-like model behind `store`, if any (its counts are taken for the load).
fn load(
	bench: &Bench, loader: Loader, store: &Arc<dyn ObjectStore>, control: &Control,
	model: Option<&S3Model>, expected: &HashMap<String, u64>,
) -> Result<Measured, String> {
	// Everything but the load itself is built before the measurement starts.
	let start = || {
		control.counters.reset();
		if let Some(model) = model {
			model.reset();
		}
		(alloc::reset_peak(), cpu::process_time(), Instant::now())
	};
	let (elapsed, loaded, peak_heap, cpu) = match loader {
		Loader::OursDefault | Loader::OursList | Loader::OursWide | Loader::OursEachWide => {
			// The store's bound is the total the persister's bound takes its places within.
			let in_flight = match loader {
				Loader::OursWide | Loader::OursEachWide => WIDE_IN_FLIGHT,
				_ => ldk_object_store::config::DEFAULT_MAX_IN_FLIGHT,
			};
			let kv = loaders::our_store(Arc::clone(store), ROOT, in_flight);
			let persister = loaders::ours(&kv, bench.env02, loader.config());
			let (baseline, cpu, started) = start();
			let loaded = loaders::load_ours(&persister);
			let elapsed = started.elapsed();
			let cpu = cpu::process_time().saturating_sub(cpu);
			let peak = alloc::peak().saturating_sub(baseline);
			(elapsed, loaded, peak, cpu)
		},
		Loader::Ldk03 | Loader::Ldk03Retry => {
			let mut kv = kv03::ObjectKv03::new(Arc::clone(store), ROOT);
			if loader == Loader::Ldk03Retry {
				kv = kv.with_retry(retry::Retry::default());
			}
			let persister = loaders::theirs(kv, &bench.rt, bench.env03);
			let (baseline, cpu, started) = start();
			let loaded = loaders::load_theirs(&persister, &bench.rt);
			let elapsed = started.elapsed();
			let cpu = cpu::process_time().saturating_sub(cpu);
			let peak = alloc::peak().saturating_sub(baseline);
			(elapsed, loaded, peak, cpu)
		},
	};
	let counts = control.counters.snapshot();
	let s3 = model.map(S3Model::counts);
	let loaded = loaded.map_err(|e| match &s3 {
		Some(seen) => format!(
			"{e} (after {}; {} requests, {} throttled)",
			secs(elapsed),
			counts.requests(),
			seen.throttled_total()
		),
		None => e,
	})?;
	loaders::check(loader.name(), &loaded, expected)?;
	let writes = counts.puts + counts.delete_requests + counts.other;
	if writes != 0 {
		return Err(format!("{}: a load made {writes} write/delete/copy requests", loader.name()));
	}
	Ok(Measured { elapsed, counts, peak_heap, cpu, s3 })
}

/// The 1-minute load average, or `?` where `/proc/loadavg` is not there.
fn load_average() -> String {
	std::fs::read_to_string("/proc/loadavg")
		.ok()
		.and_then(|s| s.split_whitespace().next().map(str::to_owned))
		.unwrap_or_else(|| "?".into())
}

fn secs(d: Duration) -> String {
	if d < Duration::from_secs(1) {
		format!("{:.0} ms", d.as_secs_f64() * 1000.0)
	} else {
		format!("{:.2} s", d.as_secs_f64())
	}
}

fn cpu_secs(d: Duration) -> String {
	format!("{:.2} s", d.as_secs_f64())
}

fn mib(bytes: usize) -> String {
	format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// One table row.
struct Row {
	/// `None`: a size no loader ran.
	loader: Option<Loader>,
	n: usize,
	u: usize,
	/// `Err`: not run (the reason).
	result: Result<Measured, String>,
}

fn config_cell(bench: &Bench, loader: Loader) -> String {
	match loader {
		Loader::OursDefault | Loader::OursList | Loader::OursWide | Loader::OursEachWide => {
			let c = loader.config();
			let store_bound = match loader {
				Loader::OursWide | Loader::OursEachWide => WIDE_IN_FLIGHT,
				_ => ldk_object_store::config::DEFAULT_MAX_IN_FLIGHT,
			};
			format!(
				"load mode {:?}; ≤ {} monitors loading, ≤ {} requests in flight (store: ≤ {}); \
				 decoding on {}",
				c.load_mode,
				c.max_monitors_loading,
				c.max_requests_in_flight,
				store_bound,
				if c.load_threads == 0 {
					"every core (`load_threads` 0)".to_string()
				} else {
					format!("{} threads", c.load_threads)
				}
			)
		},
		Loader::Ldk03 | Loader::Ldk03Retry => format!(
			"one listing of `monitors/`, then one spawned task per monitor, all at once, on tokio \
			 ({} workers); per monitor: GET monitor ‖ LIST its updates, then GET every update \
			 above the monitor's id at once; no bound on requests in flight{}",
			bench.workers,
			if loader == Loader::Ldk03Retry {
				format!("; adapter {}", retry::Retry::default().describe())
			} else {
				String::new()
			}
		),
	}
}

fn table(bench: &Bench, rows: &[Row]) -> String {
	let mut out = String::new();
	let _ = writeln!(
		out,
		"| loader | N × U | wall time | requests (GET + list pages) | most in flight | read \
		 | peak heap | CPU | configuration / concurrency |"
	);
	let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---|");
	for row in rows {
		let size = format!("{} × {}", row.n, row.u);
		let cells = match &row.result {
			Ok(m) => format!(
				"{} | {} ({} + {}) | {} | {} | {} | {}",
				secs(m.elapsed),
				m.counts.requests(),
				m.counts.gets,
				m.counts.lists,
				m.counts.max_in_flight,
				mib(m.counts.bytes_got as usize),
				mib(m.peak_heap),
				cpu_secs(m.cpu)
			),
			Err(why) => format!("not run: {why} | — | — | — | — | —"),
		};
		let _ = writeln!(
			out,
			"| {} | {size} | {cells} | {} |",
			row.loader.map_or("every loader", Loader::name),
			row.loader.map_or("—".into(), |l| config_cell(bench, l))
		);
	}
	out
}

fn run(args: &Args) -> Result<(), String> {
	let Some(path) = fixture_file(&args.fixtures) else {
		return Err(format!(
			"no fixture file (full.bin or smoke.bin) in {}: run the main benchmark first \
			 (`cargo bench --bench persistence -- --full` in the repository) or pass \
			 `--fixtures DIR`",
			args.fixtures.display()
		));
	};
	let load_before = load_average();
	let set = FixtureSet::load(&path).map_err(|e| format!("{}: {e}", path.display()))?;
	// The startup channels in label order, as the main benchmark's startup section takes them.
	let mut channels: Vec<&ChannelFixture> = set.by_prefix("startup-").collect();
	channels.sort_by(|a, b| a.label.cmp(&b.label));
	let updates_available = channels.iter().map(|c| c.updates.len()).min().unwrap_or(0);
	eprintln!(
		"fixtures: {} ({} startup channels, ≥ {updates_available} updates each; {})",
		path.display(),
		channels.len(),
		set.notes.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
	);

	let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
	let rt = tokio::runtime::Builder::new_multi_thread()
		.worker_threads(workers)
		.enable_all()
		.build()
		.map_err(|e| format!("tokio runtime: {e}"))?;
	let bench = Bench { rt, workers, env02: loaders::v02::leak(), env03: loaders::v03::leak() };
	let loaders = [
		Loader::OursDefault,
		Loader::OursList,
		Loader::OursWide,
		Loader::OursEachWide,
		Loader::Ldk03,
	];

	// One unmeasured load by each at no latency, so that no measured load pays for a first use
	// (lazy statics, the timer thread, the allocator's first pages).
	if let Some(first) = channels.first() {
		let (store, control) = seeded(&bench, &[first], 0);
		for loader in loaders.into_iter().chain([Loader::Ldk03Retry]) {
			let expected = HashMap::from([(first.key.clone(), first.update_id)]);
			load(&bench, loader, &store, &control, None, &expected)?;
		}
	}

	let wants = |table: &str| args.only.as_deref().is_none_or(|only| only == table);
	let mut rows = Vec::new();
	let mut mean_rtts = Vec::new();
	let rtt_sizes: &[(usize, usize)] = if wants("rtt") { &args.sizes } else { &[] };
	for &(n, u) in rtt_sizes {
		let usable: Vec<&ChannelFixture> =
			channels.iter().copied().filter(|c| c.updates.len() >= u).take(n).collect();
		if usable.len() < n {
			let why = format!(
				"the fixtures hold {} startup channels with ≥ {u} updates, not {n}",
				usable.len()
			);
			eprintln!("{n} × {u}: {why}");
			rows.push(Row { loader: None, n, u, result: Err(why) });
			continue;
		}
		let (store, control) = seeded(&bench, &usable, u);
		control.set_rtt(args.rtt);
		let expected: HashMap<String, u64> =
			usable.iter().map(|c| (c.key.clone(), c.update_id + u as u64)).collect();
		for loader in loaders {
			let mut runs = Vec::new();
			for _ in 0..args.runs {
				let m = load(&bench, loader, &store, &control, None, &expected)?;
				eprintln!(
					"{n} × {u}: {}: {} ({} requests, peak heap {}, CPU {})",
					loader.name(),
					secs(m.elapsed),
					m.counts.requests(),
					mib(m.peak_heap),
					cpu_secs(m.cpu)
				);
				mean_rtts.push(m.counts.mean_rtt);
				runs.push(m);
			}
			// The median run's wall time; the highest peak heap of all runs.
			runs.sort_by_key(|m| m.elapsed);
			let peak = runs.iter().map(|m| m.peak_heap).max().unwrap_or(0);
			let mut median = runs.swap_remove(runs.len() / 2);
			median.peak_heap = peak;
			rows.push(Row { loader: Some(loader), n, u, result: Ok(median) });
		}
	}

	let mean_rtt = mean_rtts.iter().sum::<Duration>().checked_div(mean_rtts.len() as u32);
	let table = if wants("rtt") { Some(table(&bench, &rows)) } else { None };
	if let Some(table) = &table {
		println!("\n{table}");
	}
	let s3 = if wants("s3") { Some(s3_section(&bench, args, &channels)) } else { None };
	if let Some(s3) = &s3 {
		println!("\n{}\n{}", s3.table, s3.notes);
	}
	// The main benchmark's workload: up to 50 updates per channel (its full profile's), over
	// every startup channel.
	let e2e = wants("e2e").then(|| {
		let section = e2e::run(&bench, &channels, updates_available.min(50), args.s3);
		let markdown = e2e::markdown(&section, &args.s3);
		println!("\n{markdown}");
		markdown
	});
	let config = PersisterConfig::default();
	println!("this crate's PersisterConfig::default(): {config:?}");
	let nothing_else =
		rows.iter().chain(s3.iter().flat_map(|s| &s.rows)).all(|r| r.result.is_err());
	if nothing_else && e2e.is_none() {
		return Err(format!(
			"no size could be run with {}; nothing written (`--sizes` and `--s3-sizes` pick \
			 sizes the fixtures hold)",
			path.display()
		));
	}

	if let Some(md) = &args.write_md {
		let ldk03_read_02 =
			rows.iter().any(|r| r.loader == Some(Loader::Ldk03) && r.result.is_ok());
		let cx = Context {
			fixture: &path,
			set: &set,
			mean_rtt,
			config: &config,
			workers: bench.workers,
			load: (load_before, load_average()),
			ldk03_read_02,
		};
		let mut section = String::new();
		if let Some(table) = &table {
			section.push_str(&markdown(args, &cx, table));
		}
		if let Some(s3) = &s3 {
			if !section.is_empty() {
				section.push_str("\n\n");
			}
			section.push_str(&s3_markdown(args, &cx, s3));
		}
		if let Some(e2e) = &e2e {
			if !section.is_empty() {
				section.push_str("\n\n");
			}
			section.push_str(e2e);
		}
		std::fs::write(md, section).map_err(|e| format!("{}: {e}", md.display()))?;
		println!("wrote {}", md.display());
	}
	Ok(())
}

/// The S3-like table: its rows, the table, and the notes under it (what the model saw, and its
/// self-check).
struct S3Section {
	rows: Vec<Row>,
	table: String,
	notes: String,
}

/// Loads over the S3-like model (`--s3`'s parameters): LDK 0.3's loader with object_store's
/// retries, and this crate with `PersisterConfig::default()`. Each load gets a model of its own
/// (full token buckets, fresh counts) over the same seeded objects; a failed load is a row.
fn s3_section(bench: &Bench, args: &Args, channels: &[&ChannelFixture]) -> S3Section {
	let params = args.s3;
	let loaders = [Loader::Ldk03Retry, Loader::OursDefault];
	let mut rows = Vec::new();
	let mut seen = S3Counts::default();
	for &(n, u) in &args.s3_sizes {
		let usable: Vec<&ChannelFixture> =
			channels.iter().copied().filter(|c| c.updates.len() >= u).take(n).collect();
		if usable.len() < n {
			let why = format!(
				"the fixtures hold {} distinct startup monitors with ≥ {u} updates, not {n} (LDK's \
				 loaders check each monitor against its key, so one monitor cannot be stored \
				 again under another)",
				usable.len()
			);
			eprintln!("S3-like {n} × {u}: {why}");
			rows.push(Row { loader: None, n, u, result: Err(why) });
			continue;
		}
		let inner = seeded_inner(bench, &usable, u);
		let expected: HashMap<String, u64> =
			usable.iter().map(|c| (c.key.clone(), c.update_id + u as u64)).collect();
		for loader in loaders {
			let model = S3Model::new(params);
			let control = Arc::new(Control::default());
			let store = LatencyStore::wrap(
				S3LikeStore::wrap(Arc::clone(&inner), Arc::clone(&model)),
				Arc::clone(&control),
			);
			let result = load(bench, loader, &store, &control, Some(&model), &expected);
			let counts = model.counts();
			for (total, add) in seen.served.iter_mut().zip(counts.served) {
				*total += add;
			}
			for (total, add) in seen.throttled.iter_mut().zip(counts.throttled) {
				*total += add;
			}
			seen.connection_waits += counts.connection_waits;
			seen.connection_wait += counts.connection_wait;
			seen.latencies.extend(counts.latencies);
			match &result {
				Ok(m) => eprintln!(
					"S3-like {n} × {u}: {}: {} ({} requests, {} throttled, peak heap {}, CPU {})",
					loader.name(),
					secs(m.elapsed),
					m.counts.requests(),
					m.s3.as_ref().map_or(0, S3Counts::throttled_total),
					mib(m.peak_heap),
					cpu_secs(m.cpu)
				),
				Err(e) => eprintln!("S3-like {n} × {u}: {}: failed: {e}", loader.name()),
			}
			rows.push(Row { loader: Some(loader), n, u, result });
		}
	}

	let mut notes = format!("{}\n\n", seen.summary(&params));
	match store_models::calibrate(&params, CalibrationLoad::default()) {
		Ok(calibration) => {
			eprintln!("{}", calibration.summary());
			notes.push_str(&calibration.to_string());
		},
		Err(e) => {
			let _ = writeln!(notes, "The model's self-check could not run: {e}");
		},
	}
	let table = s3_table(bench, &rows);
	S3Section { rows, table, notes }
}

fn s3_table(bench: &Bench, rows: &[Row]) -> String {
	let mut out = String::new();
	let _ = writeln!(
		out,
		"| loader | N × U | wall time | requests (GET + list pages) | throttled (503) | most in \
		 flight (client / at the server) | peak heap | CPU | configuration / concurrency |"
	);
	let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---|");
	for row in rows {
		let size = format!("{} × {}", row.n, row.u);
		let cells = match (&row.result, row.loader) {
			(Ok(m), _) => {
				let s3 = m.s3.clone().unwrap_or_default();
				format!(
					"{} | {} ({} + {}) | {} | {} / {} | {} | {}",
					secs(m.elapsed),
					m.counts.requests(),
					m.counts.gets,
					m.counts.lists,
					s3.throttled_total(),
					m.counts.max_in_flight,
					s3.max_in_flight,
					mib(m.peak_heap),
					cpu_secs(m.cpu)
				)
			},
			(Err(why), Some(_)) => format!("**failed**: {} | — | — | — | — | —", cell_text(why)),
			(Err(why), None) => format!("not run: {why} | — | — | — | — | —"),
		};
		let _ = writeln!(
			out,
			"| {} | {size} | {cells} | {} |",
			row.loader.map_or("every loader", Loader::name),
			row.loader.map_or("—".into(), |l| config_cell(bench, l))
		);
	}
	out
}

/// `text` safe in a markdown table cell: no column breaks, no HTML tags (an S3 error body is
/// XML).
fn cell_text(text: &str) -> String {
	text.replace('|', "\\|").replace('<', "&lt;").replace('>', "&gt;")
}

fn s3_markdown(args: &Args, cx: &Context, s3: &S3Section) -> String {
	let params = args.s3;
	let mut out = String::new();
	let _ = writeln!(out, "#### On the S3-like model\n");
	let _ = writeln!(
		out,
		"The same objects (`{}`), loaded over the S3-like model (`store-models/src/s3.rs`, {} \
		 parameters): {}. A request past its partition's rate is answered `503 SlowDown` after \
		 one round trip; a request beyond the connections waits for one. Each load gets a model \
		 of its own (full token buckets, fresh counts). LDK 0.3's adapter retries `SlowDown` and \
		 other 5xx answers as object_store's own HTTP client would, with object_store 0.14's \
		 `RetryConfig::default()` (up to 10 retries within 3 minutes; backoff from 100 ms, base \
		 2, decorrelated jitter, at most 15 s): object_store's retry is internal to its HTTP \
		 client (`pub(crate)`) and the model answers as an `ObjectStore` below it, so this is a \
		 small loop with the same parameters and the same rule (`benches/ldk-0.3/src/retry.rs`), \
		 not object_store's code. This crate's store retries under its own `RetryPolicy`. \
		 Requests are counted by the client (retries included); throttled requests are the 503s \
		 the model answered during that load. Most in flight: requests issued and not yet \
		 answered (waiting for a connection included) / requests at the server (≤ {} \
		 connections). CPU is the process's user + system time during the load (`getrusage`, \
		 every thread: the loaders', tokio's, and the model's timer thread). Every load is \
		 checked as above; a load that fails is a row saying so. One run per row; load average \
		 {} before the whole run, {} after.\n",
		cx.fixture.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
		if params == S3Params::default() { "default" } else { "`--s3`" },
		params.describe(),
		params.connections,
		cx.load.0,
		cx.load.1,
	);
	out.push_str(&s3.table);
	let little = params.connections as f64 / params.latency().mean().as_secs_f64();
	let _ = writeln!(
		out,
		"\nThe connections alone bound the served rate to about {little:.0} requests a second \
		 ({} connections ÷ the mean latency, Little's law), {} the {:.0} GETs a second a \
		 partition serves{}.\n",
		params.connections,
		if little < params.reads_per_sec { "below" } else { "above" },
		params.reads_per_sec,
		if little < params.reads_per_sec {
			", so a loader can only be throttled by a burst above the bucket (`--s3 \
			 connections=1000` raises the bound)"
		} else {
			""
		}
	);
	out.push_str(&s3.notes);
	out
}

/// What the markdown section says besides the table.
struct Context<'a> {
	fixture: &'a Path,
	set: &'a FixtureSet,
	mean_rtt: Option<Duration>,
	config: &'a PersisterConfig,
	workers: usize,
	/// `/proc/loadavg`'s 1-minute figure before and after the run: the 2 cores are shared, and
	/// CPU-bound rows are only as good as the machine was quiet.
	load: (String, String),
	/// Whether LDK 0.3 loaded LDK 0.2.7's bytes (some 0.3 load ran and passed its check).
	ldk03_read_02: bool,
}

fn markdown(args: &Args, cx: &Context, table: &str) -> String {
	let mut out = String::new();
	let _ = writeln!(out, "### Startup against LDK 0.3.0-rc3's loader\n");
	let compat = if cx.ldk03_read_02 {
		"LDK 0.3.0-rc3 reads LDK 0.2.7's monitor and update bytes as they are, so both loaders \
		 read the very same objects. "
	} else {
		""
	};
	let _ = writeln!(
		out,
		"Both loaders load the same stored objects: real `ChannelMonitor`s and the \
		 `ChannelMonitorUpdate`s that followed them, recorded from LDK 0.2.7 flows by the main \
		 benchmark (`{}`, {} channels), stored as LDK's `MonitorUpdatingPersister` leaves them \
		 (`monitors/<key>` = sentinel ‖ monitor, `monitor_updates/<key>/<update id>` = update), \
		 N monitors with U pending updates each, in `object_store`'s in-memory store behind a \
		 wrapper that makes every request take {} ms (measured mean of the simulated round \
		 trips: {}) and counts requests (a listing page of up to 1,000 entries is one request). \
		 {compat}LDK 0.3's `MonitorUpdatingPersisterAsync::read_all_channel_monitors_with_updates` \
		 runs over a minimal adapter from `object_store` to 0.3's async `KVStore` (one request \
		 per call, no bound, no retries), its tasks spawned on a tokio runtime of {} workers; \
		 this crate's `MonitorPersister::read_all_channel_monitors_with_updates_blocking` runs \
		 over `StoreBuilder::from_store(..).without_writer_lease()` on the same wrapped store. \
		 Both use LDK's `KeysManager` of the harness's node 0 seed. Every load is checked: all \
		 N monitors come back, each at its recorded update id + U. Peak heap is the most memory \
		 allocated during the load above the level before it (a counting global allocator), the \
		 loaded monitors included. CPU is the process's user + system time during the load \
		 (`getrusage`, every thread). Wall time is the median of {} run(s) on a 2-core machine \
		 (load average {} before the run, {} after).\n",
		cx.fixture.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
		cx.set.channels.len(),
		args.rtt.as_secs_f64() * 1000.0,
		cx.mean_rtt.map_or("—".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1000.0)),
		cx.workers,
		args.runs,
		cx.load.0,
		cx.load.1,
	);
	out.push_str(table);
	let _ = writeln!(
		out,
		"\nRequests per monitor: LDK 0.3 makes 2 + U (its monitor's GET and its update listing at \
		 once, then its U update GETs at once), so a load is 3 round trips deep (the listing of \
		 `monitors/`, then GET ‖ LIST, then the GETs) whatever N and U; this crate's default \
		 `LoadMode::List` lists all of `monitor_updates/` once (in pages of 1,000) beside \
		 `monitors/`, then makes 1 + U per monitor (GET monitor, then its listed updates, up \
		 to its share of the bound at once), bounded in monitors and requests at once; \
		 `LoadMode::Probe` makes 2 + U one after another instead (GET monitor, GET `id + 1`, \
		 `+ 2`, … until one is absent). The row with bounds \
		 raised (≤ {WIDE_MONITORS} monitors loading, ≤ {WIDE_IN_FLIGHT} requests in flight) \
		 shows how much of the difference is the bound alone. The simulated store has no \
		 throughput limit, so LDK 0.3's unbounded concurrency costs nothing here; a real store \
		 throttles (S3: about 5,500 GETs a second per prefix, answered with `SlowDown` past \
		 it) and a client has a finite connection pool.\n\nThis \
		 crate's configuration: `{:?}`.\n\nReproduce: `CARGO_TARGET_DIR=... cargo run \
		 --release --manifest-path benches/ldk-0.3/Cargo.toml -- --write-md OUT.md` after the \
		 main benchmark has written its fixtures (`benches/ldk-0.3/README.md`).",
		cx.config
	);
	out
}

fn main() -> ExitCode {
	let args = match parse_args() {
		Ok(args) => args,
		Err(e) => {
			eprintln!("{e}");
			return ExitCode::from(2);
		},
	};
	match run(&args) {
		Ok(()) => ExitCode::SUCCESS,
		Err(e) => {
			eprintln!("error: {e}");
			ExitCode::FAILURE
		},
	}
}
