//! The sections of a run: startup, updates and store overhead, on the simulated store and on
//! LocalStack, each adding its tables to the report and what the target checks need to the
//! findings.

use std::time::Duration;

use ldk_object_store::LoadMode;

use crate::backend::Backend;
use crate::fixtures::{ChannelFixture, FixtureSet};
use crate::report::{bytes, count, ratio, secs, Report, Table};
use crate::startup::{self, Reader, Scenario};
use crate::updates::{self, Writer};
use crate::{cpu, env, overhead, Args, Profile};
use store_models::{CalibrationLoad, Kind, S3Params};

/// What the target checks need from the sections.
#[derive(Default)]
pub(crate) struct Findings {
	/// The main startup scenario: every configuration against LDK's load and its bound.
	pub(crate) startup: Option<StartupFinding>,
	/// (monitor, writer, mean latency ÷ RTT, slowest ÷ RTT).
	pub(crate) update_latency: Vec<(String, Writer, f64, f64)>,
	/// (in flight, updates/s ÷ bound) of this crate's async persister.
	pub(crate) throughput: Vec<(usize, f64)>,
	/// (in flight, writer, updates/s ÷ bound, cores busy) of every persister.
	pub(crate) throughput_all: Vec<(usize, Writer, f64, cpu::Use)>,
	/// (operation, overhead) on LocalStack.
	pub(crate) overhead: Option<Vec<(String, f64)>>,
	/// CPU time per read of this crate's store ÷ raw `object_store`'s, no round trip.
	pub(crate) read_cpu: Option<f64>,
	/// (object size, this crate's `file://` read time ÷ FilesystemStore's).
	pub(crate) local_reads: Vec<(String, f64)>,
	/// The workload: consolidation's requests and bytes, and the next startup against LDK's.
	pub(crate) workload: Option<crate::workload::WorkloadFinding>,
	/// The same life's next startups on the S3-like model.
	pub(crate) workload_s3: Option<crate::workload::WorkloadFinding>,
	/// Requests per second of this crate's fastest load and of LDK's on LocalStack.
	pub(crate) localstack_rates: Option<(f64, f64)>,
	/// A replica beside the primary: latency, startup, fill and cost.
	pub(crate) replica: Option<crate::replica::ReplicaFinding>,
}

pub(crate) struct StartupFinding {
	pub(crate) scenario: String,
	pub(crate) ldk_extrapolated: bool,
	pub(crate) config: String,
	pub(crate) elapsed: Duration,
	pub(crate) bound: Duration,
	pub(crate) cpu_floor: Option<startup::CpuFloor>,
	/// (threads, wall time) of LDK's per-monitor read from many threads.
	pub(crate) ldk_parallel: Vec<(usize, Duration)>,
	pub(crate) default_speedup: Option<f64>,
	/// Monitors and updates per monitor.
	pub(crate) n: usize,
	pub(crate) u: usize,
	/// Every configuration of this crate: (configuration, wall time, bound, speed-up).
	pub(crate) rows: Vec<(String, Duration, Duration, f64)>,
}

pub(crate) fn startup_channels(set: &FixtureSet) -> Vec<ChannelFixture> {
	let mut channels: Vec<ChannelFixture> = set.by_prefix("startup-").cloned().collect();
	channels.sort_by(|a, b| a.label.cmp(&b.label));
	channels
}

pub(crate) fn size_channels(set: &FixtureSet) -> Vec<&ChannelFixture> {
	let mut sizes: Vec<&ChannelFixture> = set.by_prefix("size-").collect();
	sizes.sort_by_key(|c| c.monitor.len());
	sizes
}

fn ours(mode: LoadMode, monitors: usize, in_flight: usize) -> Reader {
	Reader::Ours { mode, monitors, in_flight, threads: 0 }
}

pub(crate) fn startup_section(
	args: &Args, set: &FixtureSet, memory: &Backend, servers: &[&Backend], ldk: &'static env::Ldk,
	report: &mut Report, findings: &mut Findings,
) {
	let gen = args.profile.gen_params();
	let channels = startup_channels(set);
	let (n, u) = (channels.len(), gen.updates);
	let pipelined = |w| LoadMode::Pipelined { window: w };
	let main_readers = match args.profile {
		Profile::Smoke => vec![
			Reader::OursDefault,
			ours(LoadMode::Probe, 4, 4),
			ours(pipelined(4), 4, 16),
			ours(LoadMode::List, 4, 64),
			Reader::LdkParallel { threads: 4 },
			Reader::Ldk { sample: args.ldk_sample },
			Reader::LdkAsync { sample: args.ldk_sample },
		],
		Profile::Full => vec![
			Reader::OursDefault,
			ours(LoadMode::Probe, 32, 32),
			ours(LoadMode::Probe, 256, 256),
			ours(LoadMode::Probe, 512, 512),
			ours(LoadMode::Probe, 1000, 1000),
			ours(pipelined(8), 16, 128),
			ours(pipelined(8), 64, 512),
			ours(LoadMode::List, 128, 128),
			ours(LoadMode::List, 512, 512),
			ours(LoadMode::ListEach, 1000, 4096),
			Reader::LdkParallel { threads: 32 },
			Reader::LdkParallel { threads: 128 },
			Reader::LdkParallel { threads: 256 },
			Reader::Ldk { sample: args.ldk_sample },
			Reader::LdkAsync { sample: Some(args.ldk_sample.unwrap_or(100)) },
		],
	};
	let main = Scenario {
		name: format!("{n}x{u}"),
		monitors: channels.clone(),
		updates: u,
		readers: main_readers,
	};
	let result = startup::run(memory, &main, ldk);
	let default_speedup = result.ours.iter().find_map(|(r, t, _)| match r {
		Reader::OursDefault => result.ldk.map(|(l, _)| l.as_secs_f64() / t.as_secs_f64()),
		_ => None,
	});
	let describe = |reader: &Reader| match reader.as_ours() {
		Some((mode, monitors, in_flight, _)) => {
			let defaults = if matches!(reader, Reader::OursDefault) { "defaults: " } else { "" };
			format!(
				"{defaults}{mode:?}, {monitors} monitors at once, {in_flight} requests in flight"
			)
		},
		None => String::new(),
	};
	if let (Some((fastest, elapsed, Some(bound))), Some((ldk_time, extrapolated))) =
		(result.ours.iter().min_by_key(|(_, t, _)| *t), result.ldk)
	{
		let config = describe(fastest);
		let rows = result
			.ours
			.iter()
			.filter_map(|(r, t, b)| {
				b.map(|b| (describe(r), *t, b, ldk_time.as_secs_f64() / t.as_secs_f64()))
			})
			.collect();
		findings.startup = Some(StartupFinding {
			rows,
			scenario: format!("{n} × {u} × {} ms", args.rtt.as_secs_f64() * 1000.0),
			ldk_extrapolated: extrapolated,
			config,
			elapsed: *elapsed,
			bound: *bound,
			cpu_floor: result.cpu_floor,
			ldk_parallel: result.ldk_parallel.clone(),
			default_speedup,
			n,
			u,
		});
	}
	report.add(result.table);

	// A node with few channels and many pending updates: where pipelining and listing help.
	let few: Vec<ChannelFixture> = channels[..gen.few_channels].to_vec();
	let fu = gen.few_updates;
	let k = few.len();
	let few_scenario = Scenario {
		name: format!("{k}x{fu}"),
		monitors: few,
		updates: fu,
		readers: vec![
			ours(LoadMode::Probe, k, 32),
			ours(pipelined(16), k, 16 * k),
			ours(pipelined(32), k, 32 * k),
			ours(LoadMode::List, k, (fu + 2) * k),
			ours(LoadMode::ListEach, k, (fu + 2) * k),
			Reader::Ldk { sample: None },
			Reader::LdkAsync { sample: None },
		],
	};
	let mut result = startup::run(memory, &few_scenario, ldk);
	result.table.intro.insert(
		0,
		"A node with few channels, each with many pending updates (up to \
		 `maximum_pending_updates - 1`): probing pays one round trip per update; pipelining \
		 and listing do not."
			.into(),
	);
	report.add(result.table);

	s3_like_startup(args, &channels, u, ldk, report);

	servers_startup(args, &channels, u, servers, ldk, report, findings);
}

/// The same loaders as on the S3-like model, over real HTTP: object_store's S3 client with its
/// own connection pool, against each local S3 server that runs (LocalStack, SeaweedFS). The
/// smoke size runs in CI's benchmark smoke; the full run loads 1,000 monitors × 50 updates.
pub(crate) fn servers_startup(
	args: &Args, channels: &[ChannelFixture], u: usize, servers: &[&Backend],
	ldk: &'static env::Ldk, report: &mut Report, findings: &mut Findings,
) {
	let n = channels.len();
	let readers = match args.profile {
		Profile::Smoke => vec![
			Reader::OursDefault,
			ours(LoadMode::List, 64, 64),
			Reader::LdkParallel { threads: 4 },
			Reader::Ldk { sample: None },
			Reader::LdkAsync { sample: None },
		],
		Profile::Full => vec![
			Reader::OursDefault,
			ours(LoadMode::Probe, 128, 128),
			ours(LoadMode::List, 128, 128),
			Reader::LdkParallel { threads: 32 },
			Reader::LdkParallel { threads: 128 },
			Reader::Ldk { sample: Some(args.ldk_sample.unwrap_or(100)) },
			Reader::LdkAsync { sample: Some(args.ldk_sample.unwrap_or(100)) },
		],
	};
	for server in servers {
		let scenario = Scenario {
			name: format!("{n}x{u}"),
			monitors: channels.to_vec(),
			updates: u,
			readers: readers.clone(),
		};
		let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
			startup::run(server, &scenario, ldk)
		}));
		match outcome {
			Ok(mut result) => {
				result.table.intro.insert(
					0,
					format!(
						"Real HTTP: object_store's S3 client (its own connection pool and retry \
						 rules) against {}, the same stored objects for every loader. The server \
						 runs on this machine's cores beside the benchmark, so these loads \
						 measure what it can serve, not a cloud store's round trips.",
						server.name
					),
				);
				if server.name.starts_with("LocalStack") {
					let best = result
						.rates
						.iter()
						.filter(|(r, _)| r.as_ours().is_some())
						.map(|(_, rate)| *rate)
						.fold(0.0, f64::max);
					let ldk = result
						.rates
						.iter()
						.find(|(r, _)| matches!(r, Reader::Ldk { .. }))
						.map(|(_, rate)| *rate);
					findings.localstack_rates = ldk.map(|l| (best, l));
				}
				report.add(result.table);
			},
			// The smoke run (CI) fails with it; a full run keeps its other tables.
			Err(panic) if args.profile == Profile::Smoke => std::panic::resume_unwind(panic),
			Err(_) => report.setup.push(format!(
				"Startup on {}: failed during the run (see the console).",
				server.name
			)),
		}
	}
}

pub(crate) fn workload_section(
	args: &Args, set: &FixtureSet, memory: &Backend, ldk: &'static env::Ldk, report: &mut Report,
	findings: &mut Findings,
) {
	let channels = startup_channels(set);
	let updates = args.profile.gen_params().updates;
	let bounds: &[usize] = match args.profile {
		Profile::Smoke => &[4, 16],
		Profile::Full => &[32, 128, 256],
	};
	let (tables, finding) = crate::workload::run(memory, &channels, updates, bounds, ldk);
	for table in tables {
		report.add(table);
	}
	findings.workload = Some(finding);

	// The same life on the S3-like model: only its startup table is new (the writes are the
	// same); LDK's per-monitor read from as many threads goes through the same store, whose
	// retries answer the model's `SlowDown`.
	let s3 = Backend::s3_like(args.s3);
	let s3_bounds: &[usize] = match args.profile {
		Profile::Smoke => &[16],
		Profile::Full => &[32, 128],
	};
	let (mut tables, finding) = crate::workload::run(&s3, &channels, updates, s3_bounds, ldk);
	let mut startup = tables.swap_remove(1);
	startup.intro.push(format!(
		"On the S3-like model (`store-models/src/s3.rs`, {}): a latency with a tail, rates per \
		 partition answered past the rate with `503 SlowDown`, a bound on connections; the \
		 startup table of the S3-like model under \"Startup\" carries its self-check.",
		args.s3.describe()
	));
	report.add(startup);
	findings.workload_s3 = Some(finding);
}

pub(crate) fn updates_section(
	args: &Args, set: &FixtureSet, memory: &Backend, server: Option<&Backend>,
	ldk: &'static env::Ldk, report: &mut Report, findings: &mut Findings,
) {
	let gen = args.profile.gen_params();
	let channels = startup_channels(set);
	let mut sizes: Vec<&ChannelFixture> = vec![&channels[0]];
	sizes.extend(size_channels(set));
	let n = gen.size_updates.min(channels[0].updates.len());
	let rtt = args.rtt;

	let (table, results) = updates::latency_table(memory, &sizes, n, ldk);
	for (label, r) in &results {
		findings.update_latency.push((
			label.clone(),
			r.writer,
			r.mean().as_secs_f64() / rtt.as_secs_f64(),
			r.quantile(1.0).as_secs_f64() / rtt.as_secs_f64(),
		));
	}
	report.add(table);

	let table = updates::full_write_table(memory, &sizes, ldk);
	report.add(table);

	let fixtures: Vec<&ChannelFixture> = channels.iter().collect();
	let max_per_channel = gen.updates;
	let prepared = updates::prepare(&fixtures, max_per_channel, ldk);
	report.add(throughput_table(args, memory, &fixtures, &prepared, ldk, findings));

	if let Some(server) = server {
		let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
			let mut small: Vec<&ChannelFixture> = vec![&channels[0]];
			small.extend(size_channels(set).into_iter().filter(|c| c.monitor.len() <= 1_500_000));
			let (table, _) = updates::latency_table(server, &small, n, ldk);
			let mut tput = Table::new(
				format!("Throughput: many channels' updates, {}", server.name),
				&updates::THROUGHPUT_HEADER,
			)
			.intro("As above, on LocalStack: no simulated round trip, so no bound.");
			for &b in &[1usize, 16, 64] {
				let per_channel = 2.min(max_per_channel);
				let chans = (20 * b).min(fixtures.len());
				for writer in [Writer::OursAsync, Writer::Ldk] {
					eprintln!("  LocalStack throughput: {} at {b}", writer.name());
					let run = updates::Run { writer, in_flight: b, channels: chans, per_channel };
					let t = updates::throughput(server, &prepared, &fixtures, run, ldk);
					tput.row(updates::throughput_row(&t, None));
				}
			}
			(table, tput)
		}));
		match outcome {
			Ok((latency, tput)) => {
				report.add(latency);
				report.add(tput);
			},
			Err(_) => report
				.setup
				.push("LocalStack updates: failed during the run (see the console).".into()),
		}
	}
}

/// The `throughput` section: the updates section's throughput table alone.
pub(crate) fn throughput_section(
	args: &Args, set: &FixtureSet, memory: &Backend, ldk: &'static env::Ldk, report: &mut Report,
	findings: &mut Findings,
) {
	let channels = startup_channels(set);
	let fixtures: Vec<&ChannelFixture> = channels.iter().collect();
	let prepared = updates::prepare(&fixtures, args.profile.gen_params().updates, ldk);
	report.add(throughput_table(args, memory, &fixtures, &prepared, ldk, findings));
}

/// Throughput as the bound on requests in flight grows.
fn throughput_table(
	args: &Args, memory: &Backend, fixtures: &[&ChannelFixture], prepared: &updates::Prepared,
	ldk: &'static env::Ldk, findings: &mut Findings,
) -> Table {
	let rtt = args.rtt;
	let bounds: Vec<usize> = match args.profile {
		Profile::Smoke => vec![1, 4, 16],
		Profile::Full => vec![1, 4, 16, 64, 256, 512],
	};
	let max_per_channel = args.profile.gen_params().updates;
	let mut table = Table::new(
		format!("Throughput: many channels' updates, {}", memory.name),
		&updates::THROUGHPUT_HEADER,
	)
	.intro(
		"Updates of many channels persisted at once. This crate's async persister: one thread \
		 submits every update (each returns `InProgress` at once) and the persister keeps up to \
		 the bound in flight; the time runs until the last completion is reported. Sync \
		 persisters: as many caller threads as the bound, each persisting its channels' \
		 updates one by one (the most a node could get out of a blocking persister). The work \
		 grows with the bound (about 50 round trips' worth at the bound) so each run lasts \
		 about a second. Each channel's monitor is written once first, outside the timed part, \
		 as in a running node: a channel's first write of a run costs this crate's async \
		 persister one more request (the batch delete of leftover update objects of an earlier \
		 run). The bound is what the requests allowed in flight permit: one update \
		 per request per round trip.",
	);
	for &b in &bounds {
		let work = (50 * b).max(50);
		let per_channel = (work / fixtures.len()).clamp(1, max_per_channel);
		let chans = (work / per_channel).min(fixtures.len());
		for writer in [Writer::OursAsync, Writer::OursSync, Writer::Ldk] {
			eprintln!("  throughput: {} at {b} in flight, {chans} x {per_channel}", writer.name());
			let run = updates::Run { writer, in_flight: b, channels: chans, per_channel };
			let t = updates::throughput(memory, prepared, fixtures, run, ldk);
			let vs_bound = t.per_second() * rtt.as_secs_f64() / b as f64;
			if writer == Writer::OursAsync {
				findings.throughput.push((b, vs_bound));
			}
			findings.throughput_all.push((b, writer, vs_bound, t.cpu));
			table.row(updates::throughput_row(&t, Some(rtt)));
		}
	}
	table
}

pub(crate) fn overhead_section(
	args: &Args, memory: &Backend, server: Option<&Backend>, report: &mut Report,
	findings: &mut Findings,
) {
	let (ops, concurrent, rounds) = match args.profile {
		Profile::Smoke => (10, 50, 4),
		Profile::Full => (40, 200, 21),
	};
	if let Some(server) = server {
		let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
			overhead::run(server, "server", ops, concurrent, 64, rounds)
		}));
		match outcome {
			Ok(result) => {
				findings.overhead = Some(result.overheads);
				report.add(result.table);
			},
			Err(_) => report
				.setup
				.push("LocalStack overhead: failed during the run (see the console).".into()),
		}
	}
	// The same on the in-memory store: with no round trip (the absolute cost per operation) and
	// with the simulated one.
	let rtt = memory.control.rtt();
	memory.control.set_rtt(Duration::ZERO);
	let mut zero = overhead::run(memory, "zero", ops * 5, concurrent, 64, rounds).table;
	zero.title = "Store overhead: this crate's store against raw `object_store` calls, in-memory, no round trip".into();
	zero.intro.push(
		"With no round trip at all, the difference is the store's own cost per operation: \
		 validation, the per-key queue, the hop to its runtime and back, the tracing span, \
		 retries' bookkeeping."
			.into(),
	);
	report.add(zero);
	let (reads, cost_rounds) = match args.profile {
		Profile::Smoke => (2_000, 4),
		Profile::Full => (20_000, 11),
	};
	let (mut table, ratio) = overhead::read_cost(memory, reads, 64, cost_rounds);
	table.title = "CPU per read: this crate's store against raw `object_store` GETs, in-memory, \
	               no round trip"
		.into();
	findings.read_cpu = Some(ratio);
	report.add(table);
	memory.control.set_rtt(rtt);
	let with_rtt = overhead::run(memory, "rtt", ops / 2, concurrent, 64, rounds.min(3)).table;
	report.add(with_rtt);
}

pub(crate) fn replica_section(
	args: &Args, set: &FixtureSet, ldk: &'static env::Ldk, report: &mut Report,
	findings: &mut Findings,
) {
	let channels = startup_channels(set);
	let mut tables = Vec::new();
	let finding =
		crate::replica::run(args, &channels, findings.workload.as_ref(), ldk, &mut tables);
	for table in tables {
		report.add(table);
	}
	findings.replica = Some(finding);
}

/// Startup against the S3-like model (`store_models::S3LikeStore`, with its default parameters
/// unless `--s3` changes them): a latency with a tail instead of a fixed round trip, rates per
/// partition, a bound on connections. The table carries what the model served in the run and
/// its self-check.
fn s3_like_startup(
	args: &Args, channels: &[ChannelFixture], u: usize, ldk: &'static env::Ldk, report: &mut Report,
) {
	let params = args.s3;
	let backend = Backend::s3_like(params);
	let pipelined = |w| LoadMode::Pipelined { window: w };
	let (n, readers) = match args.profile {
		// Two loads only, to keep the smoke run short: ours with no configuration, and LDK's
		// per-monitor read with one thread per monitor.
		Profile::Smoke => (
			channels.len(),
			vec![Reader::OursDefault, Reader::LdkParallel { threads: channels.len() }],
		),
		Profile::Full => (
			channels.len().min(200),
			vec![
				Reader::OursDefault,
				ours(LoadMode::Probe, 128, 128),
				ours(pipelined(8), 16, 128),
				ours(LoadMode::List, 128, 128),
				Reader::LdkParallel { threads: 32 },
				Reader::Ldk { sample: Some(20) },
			],
		),
	};
	let scenario = Scenario {
		name: format!("s3-{n}x{u}"),
		monitors: channels[..n].to_vec(),
		updates: u,
		readers,
	};
	let Some(model) = backend.s3.clone() else { return };
	model.reset();
	let mut result = startup::run(&backend, &scenario, ldk);
	let seen = model.counts();
	result.table.intro.insert(
		0,
		format!(
			"The S3-like model (`store-models/src/s3.rs`, {} parameters): {}. Throttled \
			 requests answer `503 SlowDown`, which this crate's store retries under its \
			 `RetryPolicy` (LDK's loaders read through the same store here). No round-trip \
			 bound: the latency varies.",
			if params == S3Params::default() { "default" } else { "`--s3`" },
			params.describe()
		),
	);
	result.table.notes.push(seen.summary(&params));
	result.table.notes.push(String::new());
	// The smoke run checks the model on a smaller load (its figures are fixed by the seed).
	let load = match args.profile {
		Profile::Smoke => {
			CalibrationLoad { latency_requests: 10_000, rate_window: Duration::from_secs(1) }
		},
		Profile::Full => CalibrationLoad::default(),
	};
	match store_models::calibrate(&params, load) {
		Ok(calibration) => {
			eprintln!("  {}", calibration.summary());
			result.table.notes.extend(calibration.to_string().lines().map(str::to_owned));
		},
		Err(e) => result.table.notes.push(format!("The model's self-check could not run: {e}")),
	}
	report.add(result.table);
}

/// Adaptive concurrency (the persister's default): `PersisterConfig::default()` against the
/// fixed bound it replaced (128 requests in flight, 128 monitors loading) and against raised
/// fixed bounds (1,024 of each), on the round-trip model and on the S3-like model (`--s3`), all
/// in one run. On the S3-like model each load runs alone against a fresh count of the model, so
/// its throttled requests are its own.
pub(crate) fn adaptive_section(
	args: &Args, set: &FixtureSet, memory: &Backend, ldk: &'static env::Ldk, report: &mut Report,
) {
	let channels = startup_channels(set);
	let u = args.profile.gen_params().updates;
	let readers =
		[Reader::OursDefault, ours(LoadMode::Probe, 128, 128), ours(LoadMode::Probe, 1024, 1024)];
	let label = |reader: &Reader| match reader {
		Reader::OursDefault => "defaults (adaptive, cap 1,024; store bound 2,048)".to_owned(),
		_ => match reader.as_ours() {
			Some((_, 128, 128, _)) => "before: fixed 128 in flight, 128 monitors loading".into(),
			Some((_, monitors, in_flight, _)) => {
				format!("raised bounds: fixed {in_flight} in flight, {monitors} monitors loading")
			},
			None => reader.name(),
		},
	};
	let mut table = Table::new(
		"Adaptive concurrency: defaults against the fixed bounds, both models",
		&[
			"model",
			"N × U",
			"configuration",
			"wall time",
			"÷ raised-bounds row",
			"requests",
			"throttled reads (503 SlowDown)",
			"peak heap",
		],
	);
	table.intro.push(
		"Every load reads the same stored objects with this crate's probing loader \
		 (`read_all_channel_monitors_with_updates_blocking`) and is checked (all monitors, all \
		 updates). \"before\": the fixed bound that was the default (128); \"raised bounds\": a \
		 fixed bound of 1,024 requests and monitors; defaults: `PersisterConfig::default()` \
		 over a store with its default bound. Throttled reads: GETs the S3-like model answered \
		 `503 SlowDown` during that load (each retried by the store)."
			.into(),
	);
	let (n, scenario) = (channels.len(), format!("adaptive-{}x{u}", channels.len()));
	let ideal = Scenario {
		name: scenario.clone(),
		monitors: channels.clone(),
		updates: u,
		readers: readers.to_vec(),
	};
	let result = startup::run(memory, &ideal, ldk);
	// The fixed bound of 1,024 (the defaults' cap is 1,024 too: not that row).
	let is_raised = |r: &Reader| matches!(r, Reader::Ours { in_flight: 1024, .. });
	let raised = result.loads.iter().find(|(r, ..)| is_raised(r));
	let raised = raised.map(|(_, t, ..)| *t);
	let vs =
		|t: Duration| raised.map_or("—".into(), |r| ratio(t.as_secs_f64() / r.as_secs_f64()));
	for (reader, elapsed, requests, heap) in &result.loads {
		table.row(vec![
			memory.name.clone(),
			format!("{n} × {u}"),
			label(reader),
			secs(*elapsed),
			vs(*elapsed),
			count(*requests),
			"—".into(),
			bytes(*heap as u64),
		]);
	}

	let backend = Backend::s3_like(args.s3);
	let Some(model) = backend.s3.clone() else { return };
	// Every monitor: a probing load has one request in flight per monitor being loaded, so
	// fewer monitors could not ask for more than the model's rate.
	let sn = n;
	let mut s3_rows = Vec::new();
	for reader in &readers {
		let one = Scenario {
			name: format!("{scenario}-s3-{}", s3_rows.len()),
			monitors: channels[..sn].to_vec(),
			updates: u,
			readers: vec![*reader],
		};
		model.reset();
		// A load that fails (a read throttled past the store's retries) is a row too.
		let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
			startup::run(&backend, &one, ldk)
		}));
		let seen = model.counts();
		// The load's reads only: the seeding's writes (made while the model is switched
		// off, though some reach it first) are no part of it.
		let throttled = seen.throttled[Kind::Get.index()] + seen.throttled[Kind::Head.index()];
		match outcome {
			Ok(result) => {
				if let Some((_, elapsed, requests, heap)) = result.loads.first() {
					s3_rows.push((*reader, Some(*elapsed), *requests, throttled, *heap));
				}
			},
			Err(_) => s3_rows.push((*reader, None, seen.served_total(), throttled, 0)),
		}
	}
	let raised = s3_rows.iter().find(|(r, ..)| is_raised(r));
	let raised = raised.and_then(|(_, t, ..)| *t);
	let vs =
		|t: Duration| raised.map_or("—".into(), |r| ratio(t.as_secs_f64() / r.as_secs_f64()));
	for (reader, elapsed, requests, throttled, heap) in &s3_rows {
		let (wall, vs, requests, heap) = match elapsed {
			Some(t) => (secs(*t), vs(*t), count(*requests), bytes(*heap as u64)),
			None => (
				"**failed**: a read still throttled after the store's retries".into(),
				"—".into(),
				format!("{} served before it failed", count(*requests)),
				"—".into(),
			),
		};
		table.row(vec![
			"S3-like model".into(),
			format!("{sn} × {u}"),
			label(reader),
			wall,
			vs,
			requests,
			count(*throttled),
			heap,
		]);
	}
	table.notes.push(format!("S3-like model: {}.", args.s3.describe()));
	table.notes.push(format!(
		"Round-trip model: {}; the CPU floor and its note are in the table below.",
		memory.name
	));
	report.add(table);
	report.add(result.table);
}
