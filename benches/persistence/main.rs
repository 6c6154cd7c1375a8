//! Benchmarks of this crate's store and monitor persister, side by side with what LDK users would
//! use instead, on the same store in the same run. See `BENCHMARKS.md` (which this writes).
//!
//! ```text
//! cargo bench --bench persistence                                    # the smoke size
//! cargo bench --bench persistence -- --full --write-md BENCHMARKS.md # everything, writes the file
//! ```
//!
//! Options: `--smoke` / `--full` (profile), `--write-md FILE`, `--rtt-ms N` (simulated round trip),
//! `--fixtures DIR` (default `target/bench-fixtures`), `--regen` (regenerate the fixtures),
//! `--include FILE` (a markdown section written by another program, such as `benches/ldk-0.3`),
//! `--only local,startup,startup-servers,adaptive,workload,updates,throughput,overhead,replica,replica-servers`
//! (sections; `startup` includes `startup-servers`, the loads over real HTTP against LocalStack
//! and SeaweedFS; `updates` includes `throughput`, the updates' throughput table; `replica`
//! includes `replica-servers`: the replica's latency and fill on a LocalStack primary
//! and a SeaweedFS replica), `--ldk-sample N` (measure LDK's sequential startup on N monitors and
//! extrapolate, instead of all of them), `--no-localstack` (no server at all),
//! `--s3 median-ms=30,p99-ms=200,connections=50,reads=5500,writes=3500,burst-s=1,prefix=0` (the
//! S3-like model's parameters for its startup table, any subset; `prefix=N` gives one partition
//! per key prefix of N characters, 0 one for the whole bucket).
//! LocalStack runs when `LDK_OS_TEST_LOCALSTACK_URL` / `_ENDPOINT` are set, SeaweedFS when
//! `LDK_OS_TEST_SEAWEEDFS_URL` / `_ENDPOINT` are (`eval "$(./localstack/servers.sh env)"`, or
//! `./localstack/servers.sh run cargo bench ...`, which starts and stops them), and each is
//! skipped with a note otherwise.
//!
//! `LDK_OS_BENCH_LOG` (a `tracing` filter, such as `ldk_object_store::limit=trace`) prints the
//! store's own events on stderr.
//!
//! Under `cargo test` (no `--bench` argument) the binary does nothing and succeeds, so that
//! `cargo test --all-targets` stays a test run; `cargo test --bench persistence -- --smoke` runs
//! the smoke size in the test profile.

mod alloc;
mod backend;
mod cpu;
mod env;
mod fixtures;
mod flow;
mod local_dir;
mod overhead;
mod plan;
mod replica;
mod report;
mod sections;
mod setup;
mod startup;
mod updates;
mod verdict;
mod workload;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::Backend;
use fixtures::FixtureSet;
use flow::{GenParams, SizeTarget};
use report::{secs, Report};
use sections::{
	adaptive_section, overhead_section, replica_section, startup_section, updates_section,
	workload_section, Findings,
};
use setup::{describe_setup, machine, reproduce_line};
use store_models::S3Params;
use verdict::{closing, targets};

/// Set in the child process that runs LDK to generate fixtures.
const CHILD_ENV: &str = "LDK_OS_BENCH_GENERATOR";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
	Smoke,
	Full,
}

impl Profile {
	fn name(self) -> &'static str {
		match self {
			Profile::Smoke => "smoke",
			Profile::Full => "full",
		}
	}

	fn gen_params(self) -> GenParams {
		match self {
			Profile::Smoke => GenParams {
				channels: 12,
				warmup_payments: 1,
				updates: 10,
				few_channels: 2,
				few_updates: 30,
				sizes: vec![SizeTarget {
					label: "20KB".into(),
					min_bytes: 20_000,
					inflight_htlcs: 0,
				}],
				size_updates: 20,
			},
			Profile::Full => GenParams {
				channels: 1000,
				warmup_payments: 10,
				updates: 50,
				few_channels: 10,
				few_updates: 99,
				sizes: vec![
					SizeTarget { label: "64KB".into(), min_bytes: 64_000, inflight_htlcs: 0 },
					SizeTarget { label: "1MB".into(), min_bytes: 1_000_000, inflight_htlcs: 30 },
					SizeTarget { label: "4MB".into(), min_bytes: 4_000_000, inflight_htlcs: 60 },
				],
				size_updates: 100,
			},
		}
	}

	fn default_rtt(self) -> Duration {
		match self {
			Profile::Smoke => Duration::from_millis(5),
			Profile::Full => Duration::from_millis(20),
		}
	}
}

#[derive(Debug)]
struct Args {
	profile: Profile,
	write_md: Option<PathBuf>,
	fixtures: PathBuf,
	regen: bool,
	rtt: Duration,
	only: Option<Vec<String>>,
	/// The S3-like model's parameters (`--s3`).
	s3: S3Params,
	ldk_sample: Option<usize>,
	localstack: bool,
	/// Markdown sections written by other programs, embedded as they are (`--include FILE`).
	include: Vec<PathBuf>,
	/// The arguments after `--`, for the reproduce line.
	given: Vec<String>,
}

fn parse_args() -> Option<Args> {
	let raw: Vec<String> = std::env::args().skip(1).collect();
	let bench = raw.iter().any(|a| a == "--bench");
	let profile_given = raw.iter().any(|a| a == "--smoke" || a == "--full");
	if !bench && !profile_given {
		return None;
	}
	let mut args = Args {
		profile: Profile::Smoke,
		write_md: None,
		fixtures: fixtures::default_dir(),
		regen: false,
		rtt: Duration::ZERO,
		only: None,
		s3: S3Params::default(),
		ldk_sample: None,
		localstack: true,
		include: vec![],
		given: vec![],
	};
	let mut rtt = None;
	let mut it = raw.into_iter();
	while let Some(arg) = it.next() {
		let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
		match arg.as_str() {
			"--bench" => continue,
			"--smoke" => args.profile = Profile::Smoke,
			"--full" => args.profile = Profile::Full,
			"--regen" => args.regen = true,
			"--no-localstack" => args.localstack = false,
			"--write-md" => {
				let v = value("--write-md");
				args.given.extend([arg.clone(), v.clone()]);
				args.write_md = Some(PathBuf::from(v));
				continue;
			},
			"--fixtures" => {
				let v = value("--fixtures");
				args.given.extend([arg.clone(), v.clone()]);
				args.fixtures = PathBuf::from(v);
				continue;
			},
			"--rtt-ms" => {
				let v = value("--rtt-ms");
				args.given.extend([arg.clone(), v.clone()]);
				rtt = Some(Duration::from_secs_f64(v.parse::<f64>().expect("--rtt-ms N") / 1000.0));
				continue;
			},
			"--only" => {
				let v = value("--only");
				args.given.extend([arg.clone(), v.clone()]);
				args.only = Some(v.split(',').map(str::to_owned).collect());
				continue;
			},
			"--include" => {
				let v = value("--include");
				args.given.extend([arg.clone(), v.clone()]);
				args.include.push(PathBuf::from(v));
				continue;
			},
			"--s3" => {
				let v = value("--s3");
				args.given.extend([arg.clone(), v.clone()]);
				args.s3 = S3Params::parse(&v).unwrap_or_else(|e| panic!("{e}"));
				continue;
			},
			"--ldk-sample" => {
				let v = value("--ldk-sample");
				args.given.extend([arg.clone(), v.clone()]);
				args.ldk_sample = Some(v.parse().expect("--ldk-sample N"));
				continue;
			},
			// Whatever else a harness passes (`--nocapture`, filters) is not ours.
			_ => continue,
		}
		args.given.push(arg);
	}
	args.rtt = rtt.unwrap_or(args.profile.default_rtt());
	Some(args)
}

fn wants(args: &Args, section: &str) -> bool {
	args.only.as_ref().is_none_or(|only| only.iter().any(|s| s == section))
}

/// The fixtures of a profile: loaded if saved with the same parameters, generated otherwise (by a
/// child process of this binary, since LDK's test logger prints every line to stdout).
fn fixtures_for(args: &Args) -> FixtureSet {
	let params = args.profile.gen_params();
	let path = args.fixtures.join(format!("{}.bin", args.profile.name()));
	if !args.regen {
		if let Ok(set) = FixtureSet::load(&path) {
			let same = params.describe().iter().all(|(k, v)| set.note(k) == Some(v.as_str()));
			if same {
				eprintln!("fixtures: {} ({} channels)", path.display(), set.channels.len());
				return set;
			}
			eprintln!("fixtures: {} was made with other parameters; regenerating", path.display());
		}
	}
	eprintln!(
		"fixtures: generating {} with LDK's functional-test harness (LDK's log lines discarded)",
		path.display()
	);
	let started = Instant::now();
	let status = Command::new(std::env::current_exe().expect("current exe"))
		.env(CHILD_ENV, args.profile.name())
		.env("LDK_OS_BENCH_FIXTURE_PATH", &path)
		.stdout(Stdio::null())
		.status()
		.expect("running the generator");
	assert!(status.success(), "the fixture generator failed");
	eprintln!("fixtures: generated in {}", secs(started.elapsed()));
	FixtureSet::load(&path).expect("generated fixtures load")
}

fn generator_child(profile: &str) -> ! {
	let profile = if profile == "full" { Profile::Full } else { Profile::Smoke };
	let path = PathBuf::from(std::env::var_os("LDK_OS_BENCH_FIXTURE_PATH").expect("fixture path"));
	let set = flow::generate(&profile.gen_params());
	set.save(&path).expect("saving fixtures");
	// Skip the harness's checks on drop (they re-serialize every node): the fixtures are saved
	// and were checked against the live monitors already.
	std::process::exit(0)
}

#[cfg(not(feature = "aws"))]
fn s3_server(_server: &str) -> Option<Arc<dyn object_store::ObjectStore>> {
	None
}

/// The S3 server `LOCALSTACK` or `SEAWEEDFS`, if the environment names it (as
/// `./localstack/servers.sh env` prints it).
#[cfg(feature = "aws")]
fn s3_server(server: &str) -> Option<Arc<dyn object_store::ObjectStore>> {
	let url = std::env::var(format!("LDK_OS_TEST_{server}_URL")).ok()?;
	let endpoint = std::env::var(format!("LDK_OS_TEST_{server}_ENDPOINT")).ok()?;
	let bucket = url.trim_start_matches("s3://").trim_end_matches('/').to_owned();
	let store = object_store::aws::AmazonS3Builder::from_env()
		.with_bucket_name(bucket)
		.with_endpoint(endpoint)
		.with_allow_http(true)
		.with_virtual_hosted_style_request(false)
		.build()
		.ok()?;
	Some(Arc::new(store))
}

fn main() {
	if let Ok(profile) = std::env::var(CHILD_ENV) {
		generator_child(&profile);
	}
	let Some(args) = parse_args() else {
		println!(
			"persistence benchmarks: nothing to do under `cargo test`; run \
			 `cargo bench --bench persistence [-- --full --write-md BENCHMARKS.md]`"
		);
		return;
	};
	// `LDK_OS_BENCH_LOG=ldk_object_store::limit=trace`, say: the store's own events on stderr
	// (the adaptive bound's changes, retries), to see why a load took the time it did.
	if let Ok(filter) = std::env::var("LDK_OS_BENCH_LOG") {
		tracing_subscriber::fmt()
			.with_env_filter(tracing_subscriber::EnvFilter::new(filter))
			.with_writer(std::io::stderr)
			.init();
	}
	let started = Instant::now();
	let set = fixtures_for(&args);
	let ldk = env::Ldk::leak();
	let mut report = Report {
		command: reproduce_line(&args),
		profile: args.profile.name().into(),
		machine: machine(),
		..Default::default()
	};
	describe_setup(&mut report, &args, &set);

	let memory = Backend::memory(args.rtt);
	let local = if args.localstack { s3_server("LOCALSTACK") } else { None };
	let server = local.map(|store| Backend::server("LocalStack on loopback", store));
	let seaweedfs = if args.localstack { s3_server("SEAWEEDFS") } else { None };
	let seaweedfs = seaweedfs.map(|store| Backend::server("SeaweedFS on loopback", store));
	if seaweedfs.is_none() {
		report.setup.push(
			"SeaweedFS: **not run** (`LDK_OS_TEST_SEAWEEDFS_URL` / `_ENDPOINT` not set).".into(),
		);
	}
	let servers: Vec<&Backend> = server.iter().chain(seaweedfs.iter()).collect();
	if server.is_none() {
		report.setup.push(
			"LocalStack: **not run** (`LDK_OS_TEST_LOCALSTACK_URL` / `_ENDPOINT` not set; \
			 `./localstack/servers.sh start` and `eval \"$(./localstack/servers.sh env)\"` \
			 enable it)."
				.into(),
		);
	}

	let mut findings = Findings::default();
	if wants(&args, "local") {
		findings.local_reads = local_dir::local_dir_section(&args, &mut report);
	}
	if wants(&args, "startup") {
		startup_section(&args, &set, &memory, &servers, ldk, &mut report, &mut findings);
	} else if wants(&args, "startup-servers") {
		let channels = sections::startup_channels(&set);
		let u = args.profile.gen_params().updates;
		sections::servers_startup(&args, &channels, u, &servers, ldk, &mut report, &mut findings);
	}
	if wants(&args, "adaptive") {
		adaptive_section(&args, &set, &memory, ldk, &mut report);
	}
	if wants(&args, "workload") {
		workload_section(&args, &set, &memory, ldk, &mut report, &mut findings);
	}
	if wants(&args, "throughput") && !wants(&args, "updates") {
		sections::throughput_section(&args, &set, &memory, ldk, &mut report, &mut findings);
	}
	if wants(&args, "updates") {
		updates_section(&args, &set, &memory, server.as_ref(), ldk, &mut report, &mut findings);
	}
	if wants(&args, "overhead") {
		overhead_section(&args, &memory, server.as_ref(), &mut report, &mut findings);
	}
	if wants(&args, "replica") {
		replica_section(&args, &set, ldk, &mut report, &mut findings);
	}
	if wants(&args, "replica") || wants(&args, "replica-servers") {
		match (server.as_ref(), seaweedfs.as_ref()) {
			(Some(primary), Some(replica)) => {
				let channels = sections::startup_channels(&set);
				let mut tables = Vec::new();
				replica::on_servers(&args, &channels, primary, replica, ldk, &mut tables);
				for table in tables {
					report.add(table);
				}
			},
			_ => report.setup.push(
				"Replica on servers: **not run** (it needs LocalStack and SeaweedFS: \
				 `LDK_OS_TEST_LOCALSTACK_*` and `LDK_OS_TEST_SEAWEEDFS_*`)."
					.into(),
			),
		}
	}
	for path in &args.include {
		let section = std::fs::read_to_string(path)
			.unwrap_or_else(|e| panic!("--include {}: {e}", path.display()));
		report.included.push(section);
	}
	targets(&args, &mut report, &findings);
	closing(&mut report, &findings);
	report.setup.push(String::new());
	report.setup.push(format!("The run took {}.", secs(started.elapsed())));
	if let Some(path) = &args.write_md {
		std::fs::write(path, report.markdown()).expect("writing the markdown file");
		println!("\nwrote {}", path.display());
	}
}
