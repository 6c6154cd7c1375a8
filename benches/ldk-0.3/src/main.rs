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
//! Options: `--fixtures DIR` (default `<repo>/target/bench-fixtures`; `full.bin` there, else
//! `smoke.bin`, as the main benchmark writes them), `--sizes 100x10,1000x0,1000x50`
//! (monitors × pending updates), `--rtt-ms 20`, `--runs 1` (the median wall time is shown),
//! `--write-md FILE`.

// The main benchmark's own allocator counter and fixture format, shared rather than copied (this
// crate uses part of each).
#[allow(dead_code)]
#[path = "../../persistence/alloc.rs"]
mod alloc;
#[allow(dead_code)]
#[path = "../../persistence/fixtures.rs"]
mod fixtures;
mod kv03;
mod loaders;

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
use store_models::{Control, Counts, LatencyStore};

/// The prefix both loaders' stores live below, as a node's would in a shared bucket.
const ROOT: &str = "node";

struct Args {
	fixtures: PathBuf,
	sizes: Vec<(usize, usize)>,
	rtt: Duration,
	runs: usize,
	write_md: Option<PathBuf>,
}

fn usage() -> String {
	"usage: ldk03-startup [--fixtures DIR] [--sizes 100x10,1000x0,1000x50] [--rtt-ms 20] \
	 [--runs 1] [--write-md FILE]"
		.into()
}

fn parse_args() -> Result<Args, String> {
	let mut args = Args {
		// The main benchmark's default: `target/bench-fixtures` of the repository.
		fixtures: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-fixtures"),
		sizes: vec![(100, 10), (1000, 0), (1000, 50)],
		rtt: Duration::from_millis(20),
		runs: 1,
		write_md: None,
	};
	let mut it = std::env::args().skip(1);
	while let Some(arg) = it.next() {
		let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value\n{}", usage()));
		match arg.as_str() {
			"--fixtures" => args.fixtures = PathBuf::from(value()?),
			"--sizes" => {
				args.sizes = value()?
					.split(',')
					.map(|s| {
						let (n, u) = s.split_once('x').ok_or(format!("bad size {s}: NxU"))?;
						Ok((
							n.trim().parse().map_err(|e| format!("{s}: {e}"))?,
							u.trim().parse().map_err(|e| format!("{s}: {e}"))?,
						))
					})
					.collect::<Result<_, String>>()?
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
fn seeded(
	bench: &Bench, channels: &[&ChannelFixture], u: usize,
) -> (Arc<dyn ObjectStore>, Arc<Control>) {
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
	let control = Arc::new(Control::default());
	let store = LatencyStore::wrap(inner, Arc::clone(&control));
	(store, control)
}

/// Loads everything in `store` with `loader`, checks it against `expected`, and measures it.
fn load(
	bench: &Bench, loader: Loader, store: &Arc<dyn ObjectStore>, control: &Control,
	expected: &HashMap<String, u64>,
) -> Result<Measured, String> {
	// Everything but the load itself is built before the measurement starts.
	let (elapsed, loaded, peak_heap, counts) = match loader {
		Loader::OursDefault | Loader::OursList | Loader::OursWide | Loader::OursEachWide => {
			// The store's bound is the total the persister's bound takes its places within.
			let in_flight = match loader {
				Loader::OursWide | Loader::OursEachWide => WIDE_IN_FLIGHT,
				_ => ldk_object_store::config::DEFAULT_MAX_IN_FLIGHT,
			};
			let kv = loaders::our_store(Arc::clone(store), ROOT, in_flight);
			let persister = loaders::ours(&kv, bench.env02, loader.config());
			control.counters.reset();
			let baseline = alloc::reset_peak();
			let started = Instant::now();
			let loaded = loaders::load_ours(&persister);
			let elapsed = started.elapsed();
			let peak = alloc::peak().saturating_sub(baseline);
			(elapsed, loaded?, peak, control.counters.snapshot())
		},
		Loader::Ldk03 => {
			let kv = kv03::ObjectKv03::new(Arc::clone(store), ROOT);
			let persister = loaders::theirs(kv, &bench.rt, bench.env03);
			control.counters.reset();
			let baseline = alloc::reset_peak();
			let started = Instant::now();
			let loaded = loaders::load_theirs(&persister, &bench.rt);
			let elapsed = started.elapsed();
			let peak = alloc::peak().saturating_sub(baseline);
			(elapsed, loaded?, peak, control.counters.snapshot())
		},
	};
	loaders::check(loader.name(), &loaded, expected)?;
	let writes = counts.puts + counts.delete_requests + counts.other;
	if writes != 0 {
		return Err(format!("{}: a load made {writes} write/delete/copy requests", loader.name()));
	}
	Ok(Measured { elapsed, counts, peak_heap })
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
		Loader::Ldk03 => format!(
			"one listing of `monitors/`, then one spawned task per monitor, all at once, on tokio \
			 ({} workers); per monitor: GET monitor ‖ LIST its updates, then GET every update \
			 above the monitor's id at once; no bound on requests in flight",
			bench.workers
		),
	}
}

fn table(bench: &Bench, rows: &[Row]) -> String {
	let mut out = String::new();
	let _ = writeln!(
		out,
		"| loader | N × U | wall time | requests (GET + list pages) | most in flight | read \
		 | peak heap | configuration / concurrency |"
	);
	let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---|");
	for row in rows {
		let size = format!("{} × {}", row.n, row.u);
		let cells = match &row.result {
			Ok(m) => format!(
				"{} | {} ({} + {}) | {} | {} | {}",
				secs(m.elapsed),
				m.counts.requests(),
				m.counts.gets,
				m.counts.lists,
				m.counts.max_in_flight,
				mib(m.counts.bytes_got as usize),
				mib(m.peak_heap)
			),
			Err(why) => format!("not run: {why} | — | — | — | —"),
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
		for loader in loaders {
			let expected = HashMap::from([(first.key.clone(), first.update_id)]);
			load(&bench, loader, &store, &control, &expected)?;
		}
	}

	let mut rows = Vec::new();
	let mut mean_rtts = Vec::new();
	for &(n, u) in &args.sizes {
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
				let m = load(&bench, loader, &store, &control, &expected)?;
				eprintln!(
					"{n} × {u}: {}: {} ({} requests, peak heap {})",
					loader.name(),
					secs(m.elapsed),
					m.counts.requests(),
					mib(m.peak_heap)
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
	let table = table(&bench, &rows);
	println!("\n{table}");
	let config = PersisterConfig::default();
	println!("this crate's PersisterConfig::default(): {config:?}");
	if rows.iter().all(|r| r.result.is_err()) {
		return Err(format!(
			"no size could be run with {}; nothing written (`--sizes` picks sizes the \
			 fixtures hold)",
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
		let section = markdown(args, &cx, &table);
		std::fs::write(md, section).map_err(|e| format!("{}: {e}", md.display()))?;
		println!("wrote {}", md.display());
	}
	Ok(())
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
		 loaded monitors included. Wall time is the median of {} run(s) on a 2-core machine \
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
		 `monitors/`, then GET ‖ LIST, then the GETs) whatever N and U; this crate's default `LoadMode::Probe` makes 2 + U one after another (GET monitor, \
		 GET `id + 1`, `+ 2`, … until one is absent), bounded in monitors and requests at \
		 once; `LoadMode::List` lists all of `monitor_updates/` once (in pages of 1,000) instead of \
		 probing. The row with bounds \
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
