//! The verdict of a run: the targets checked against the findings, and the closing
//! note, both from the measured numbers only.

use std::time::Duration;

use crate::report::{self, ratio, secs, Report, Target};
use crate::sections::Findings;
use crate::updates::{self, Writer};
use crate::{Args, Profile};

pub(crate) fn targets(args: &Args, report: &mut Report, findings: &Findings) {
	let main_scale = args.profile == Profile::Full && args.rtt == Duration::from_millis(20);
	let scale_note = if main_scale {
		String::new()
	} else {
		format!(
			" (this run: profile {}, {} ms round trip; the targets are set for the full profile)",
			args.profile.name(),
			args.rtt.as_secs_f64() * 1000.0
		)
	};
	match &findings.startup {
		Some(s) => {
			let ldk_how = if s.ldk_extrapolated { ", LDK extrapolated" } else { "" };
			let fastest = s.rows.iter().min_by_key(|r| r.1);
			let fastest_note = fastest
				.map(|r| format!("; the fastest configuration ({}) {}", r.0, ratio(r.3)))
				.unwrap_or_default();
			report.target(Target {
				what: format!(
					"startup speed-up over LDK 0.2's sequential read with no configuration at \
					 all ({})",
					s.scenario
				),
				goal: "≥ 100×".into(),
				measured: match s.default_speedup {
					Some(d) => format!("{}{ldk_how}", ratio(d)),
					None => "the defaults were not measured".into(),
				},
				met: s.default_speedup.is_some_and(|d| d >= 100.0),
				applies: main_scale,
				why: format!(
					"LDK reads one object at a time, one round trip each; by default this crate \
					 loads 128 monitors at once with 128 requests in flight{fastest_note}\
					 {scale_note}"
				),
			});
			let floors = s.cpu_floor.map(|f| {
				(f.all_cores, f.one_thread, f.all_cores.as_secs_f64() / f.one_thread.as_secs_f64())
			});
			if let Some((all, one, share)) = floors {
				report.target(Target {
					what: format!("CPU floor of the load on every core ({})", s.scenario),
					goal: "≤ 0.6 × the one-thread floor".into(),
					measured: format!("{} ({} against {})", ratio(share), secs(all), secs(one)),
					met: share <= 0.6,
					applies: main_scale,
					why: format!(
						"the same load with no round trip at all, decoding monitors and applying \
						 updates on one thread and on every core ({} here){scale_note}",
						s.cpu_floor.map_or(0, |f| f.cores)
					),
				});
			}
			// The fastest configuration against the larger of its round-trip bound and the
			// all-core floor: neither can be beaten.
			if let Some(r) = fastest {
				let floor = floors.map_or(Duration::ZERO, |f| f.0);
				let limit = r.2.max(floor);
				let vs = r.1.as_secs_f64() / limit.as_secs_f64();
				report.target(Target {
					what: format!(
						"fastest configuration against max(round-trip bound, all-core floor) ({})",
						s.scenario
					),
					goal: "≤ 1.3×".into(),
					measured: format!(
						"{} ({}: {} against a bound of {} and a floor of {})",
						ratio(vs),
						r.0,
						secs(r.1),
						secs(r.2),
						secs(floor)
					),
					met: vs <= 1.3,
					applies: main_scale,
					why: scale_note.trim_start().to_owned(),
				});
			}
		},
		None => report.target(Target {
			what: "startup".into(),
			goal: "≥ 100× over LDK, ≤ 1.5× the bound".into(),
			measured: "not measured in this run".into(),
			met: false,
			applies: main_scale,
			why: "the startup section did not run".into(),
		}),
	}
	if let Some(w) = &findings.workload {
		report.target(Target {
			what: format!(
				"requests per monitor at startup with the defaults, after a clean shutdown and \
				 after a crash (workload, {} monitors)",
				w.channels
			),
			goal: "≤ 1.2".into(),
			measured: format!(
				"{:.3} after a clean shutdown, {:.3} after a crash ({:.3} after a crash with \
				 update objects at any size)",
				w.startup_requests_per_monitor,
				w.crash_requests_per_monitor,
				w.crash_requests_per_monitor_with_updates
			),
			met: w.startup_requests_per_monitor.max(w.crash_requests_per_monitor) <= 1.2,
			applies: main_scale,
			why: format!(
				"small monitors (all of the workload's) are written whole for every update and \
				 `consolidate` at shutdown leaves no update object, so either way a start lists \
				 `monitors/` and `monitor_updates/` once and reads each monitor once{scale_note}"
			),
		});
		report.target(Target {
			what: "bytes written per payment against LDK's `MonitorUpdatingPersister` (workload)"
				.into(),
			goal: "≤ 2×".into(),
			measured: ratio(w.write_bytes_vs_ldk),
			met: w.write_bytes_vs_ldk <= 2.0,
			applies: main_scale,
			why: format!(
				"an older target: since small monitors are written whole (an object store \
				 charges a request, not bytes, and in-region transfer to S3 is free), a payment \
				 writes its channel's monitor rather than an update; \
				 `with_full_monitors_up_to(0)` writes {} LDK's bytes{scale_note}",
				ratio(w.write_bytes_vs_ldk_with_updates)
			),
		});
		let worst = w
			.at_bound
			.iter()
			.map(|(b, ours, theirs)| {
				(*b, theirs.as_secs_f64() / ours.as_secs_f64(), *ours, *theirs)
			})
			.min_by(|a, b| a.1.partial_cmp(&b.1).expect("no NaN"));
		if let Some((b, vs, ours, theirs)) = worst {
			report.target(Target {
				what: "startup against LDK's per-monitor read from as many threads, at 32, 128 \
				       and 256 in flight (workload)"
					.into(),
				goal: "≥ 5× at every bound".into(),
				measured: format!(
					"{} at worst ({b} in flight: {} against {})",
					ratio(vs),
					secs(ours),
					secs(theirs)
				),
				met: vs >= 5.0,
				applies: main_scale,
				why: scale_note.trim_start().to_owned(),
			});
		}
	}
	if let Some(w) = &findings.workload_s3 {
		// LDK's store looks the same after a crash (it has no `consolidate`).
		let ldk_128 = w.at_bound.iter().find(|(b, ..)| *b == 128).map(|(_, _, ldk)| *ldk);
		let mut ratios: Vec<(String, f64)> = w
			.at_bound
			.iter()
			.map(|(b, ours, ldk)| {
				(format!("clean, {b} in flight"), ldk.as_secs_f64() / ours.as_secs_f64())
			})
			.collect();
		if let Some(ldk) = ldk_128 {
			ratios
				.push(("crash, 128 in flight".into(), ldk.as_secs_f64() / w.crashed.as_secs_f64()));
		}
		if let Some((worst_at, worst)) =
			ratios.iter().min_by(|a, b| a.1.partial_cmp(&b.1).expect("no NaN"))
		{
			report.target(Target {
				what: format!(
					"startup on the S3-like model after a clean shutdown and after a crash, \
					 against LDK 0.2's per-monitor read from as many threads (workload, {} \
					 monitors)",
					w.channels
				),
				goal: "≥ 5×".into(),
				measured: format!("{} at worst ({worst_at})", ratio(*worst)),
				met: *worst >= 5.0,
				applies: main_scale,
				why: format!(
					"LDK's loaders are not in this program at all sizes: LDK 0.3.0-rc3's loader \
					 and 10,000 monitors are not measured on this model yet{scale_note}"
				),
			});
		}
		report.target(Target {
			what: format!(
				"requests per monitor at startup on the S3-like model, after a clean shutdown \
				 and after a crash (workload, {} monitors)",
				w.channels
			),
			goal: "≤ 1.2".into(),
			measured: format!(
				"{:.3} and {:.3}",
				w.startup_requests_per_monitor, w.crash_requests_per_monitor
			),
			met: w.startup_requests_per_monitor.max(w.crash_requests_per_monitor) <= 1.2,
			applies: main_scale,
			why: format!("throttled requests and their retries included{scale_note}"),
		});
	}

	if let Some((size, worst)) =
		findings.local_reads.iter().max_by(|a, b| a.1.partial_cmp(&b.1).expect("no NaN"))
	{
		report.target(Target {
			what: "`file://` read against LDK's `FilesystemStore` on a local directory".into(),
			goal: "≤ 1.2×".into(),
			measured: format!("{} at worst ({size} objects)", ratio(*worst)),
			met: *worst <= 1.2,
			applies: true,
			why: "a synchronous read reads the file in the caller's thread once its turn in the \
			      key's queue has come; an async one in one blocking task"
				.into(),
		});
	}
	let ours_latency: Vec<_> = findings
		.update_latency
		.iter()
		.filter(|l| {
			matches!(
				l.1,
				Writer::OursSync
					| Writer::OursAsync
					| Writer::OursDefaultSync
					| Writer::OursDefaultAsync
			)
		})
		.collect();
	if !ours_latency.is_empty() {
		let worst = ours_latency
			.iter()
			.max_by(|a, b| a.2.partial_cmp(&b.2).expect("no NaN"))
			.expect("non-empty");
		report.target(Target {
			what: "one update's latency (this crate, mean over consecutive updates, every monitor size)".into(),
			goal: "≤ 1.2 RTT".into(),
			measured: format!("{:.2} RTT at worst ({}, {})", worst.2, worst.0, worst.1.name()),
			met: worst.2 <= 1.2,
			applies: main_scale,
			why: format!(
				"an update is one PUT: of the update object, or with the defaults of a small \
				 monitor whole; the one update in {} that writes the full monitor after update \
				 objects also waits for the batch delete of the stale updates{scale_note}",
				updates::MAX_PENDING
			),
		});
	}
	if !findings.throughput.is_empty() {
		let worst = findings
			.throughput
			.iter()
			.min_by(|a, b| a.1.partial_cmp(&b.1).expect("no NaN"))
			.expect("non-empty");
		let b = worst.0;
		let row = |w: Writer| findings.throughput_all.iter().find(|t| t.0 == b && t.1 == w);
		let why = match (row(Writer::OursAsync), row(Writer::Ldk)) {
			(Some(ours), Some(ldk)) if worst.1 < 0.8 => format!(
				"at {b} requests in flight the bound asks for {:.0} updates a second, and the \
				 CPU runs out first: this process kept {:.1} cores busy and the machine {:.1} (of \
				 {}), for the persister, the simulated store and its timer together. LDK's \
				 persister, from {b} threads, reached {:.2}× under the same limit. Lower bounds \
				 reach {:.2}× or more.{scale_note}",
				b as f64 / args.rtt.as_secs_f64(),
				ours.3.process,
				ours.3.machine,
				std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
				ldk.2,
				findings
					.throughput
					.iter()
					.filter(|t| t.0 < b)
					.map(|t| t.1)
					.fold(f64::NAN, f64::min),
			),
			_ => scale_note.trim_start().to_owned(),
		};
		report.target(Target {
			what: "throughput across many channels (this crate, async, every bound)".into(),
			goal: "≥ 0.8 × bound ÷ RTT".into(),
			measured: format!("{:.2} × at worst (at {} in flight)", worst.1, worst.0),
			met: worst.1 >= 0.8,
			applies: main_scale,
			why,
		});
	}
	if let Some(r) = &findings.replica {
		if let Some(worst) = r.latency.iter().max_by(|a, b| a.1.partial_cmp(&b.1).expect("no NaN"))
		{
			let ms = |d: Duration| d.as_secs_f64() * 1000.0;
			report.target(Target {
				what: format!(
					"one update's latency with a replica ({} ms primary, {} ms replica) against \
					 the primary alone at the slower round trip (this crate, mean)",
					ms(r.rtt.0),
					ms(r.rtt.1)
				),
				goal: "≤ 1.1×".into(),
				measured: format!("{} at worst ({})", ratio(worst.1), worst.0.name()),
				met: worst.1 <= 1.1,
				applies: main_scale,
				why: format!(
					"each write goes to both copies at once and completes when both hold it: the \
					 slower copy's round trip, not the sum{scale_note}"
				),
			});
		}
	}
	if let Some(x) = findings.read_cpu {
		report.target(Target {
			what: "CPU time per read against raw `object_store` GETs (in-memory, no round trip, \
			       64 at once)"
				.into(),
			goal: "≤ 1.5×".into(),
			measured: ratio(x),
			met: x <= 1.5,
			applies: main_scale,
			why: format!(
				"each read takes its key's turn (which fencing's version map and per-key order \
				 need), runs as a task on the store's runtime (so that it proceeds unpolled and \
				 a caller on any executor is served), and goes through the bound, the retry \
				 loop and the tracing span; a raw in-memory GET is a map lookup{scale_note}"
			),
		});
	}
	match &findings.overhead {
		Some(overheads) => {
			let worst = overheads
				.iter()
				.max_by(|a, b| a.1.partial_cmp(&b.1).expect("no NaN"))
				.expect("non-empty");
			report.target(Target {
				what: "store overhead against raw object_store calls on LocalStack".into(),
				goal: "≤ 10%".into(),
				measured: format!("{:+.1}% at worst ({})", worst.1 * 100.0, worst.0),
				met: worst.1 <= 0.10,
				applies: main_scale,
				why: scale_note.trim_start().to_owned(),
			});
		},
		None => report.target(Target {
			what: "store overhead against raw object_store calls on LocalStack".into(),
			goal: "≤ 10%".into(),
			measured: "not measured: LocalStack was not available".into(),
			met: false,
			applies: main_scale,
			why: "start it with `./localstack/servers.sh start` and export `./localstack/servers.sh env`".into(),
		}),
	}
}

/// The closing note: what the numbers of this run say, with the numbers.
pub(crate) fn closing(report: &mut Report, f: &Findings) {
	let mut lines = Vec::new();
	if let Some(s) = &f.startup {
		if let Some(floor) = s.cpu_floor {
			lines.push(format!(
				"- **Startup: round trips, then CPU.** The fastest load ({}) took {}; its round \
				 trips alone would take {}, and the same load with no round trip at all takes {} \
				 decoding on every core ({} on one thread). {} monitors and {} updates are decoded \
				 and applied by the threads of the blocking loader, each monitor on one of them.",
				s.config,
				secs(s.elapsed),
				secs(s.bound),
				secs(floor.all_cores),
				secs(floor.one_thread),
				s.n,
				report::count((s.n * s.u) as u64),
			));
		}
		if let Some(d) = s.default_speedup {
			lines.push(format!(
				"- **Default configuration.** With `PersisterConfig::default()` (probe, 128 \
				 monitors at once, 128 requests in flight, within the store's default bound of \
				 256) the load is {} faster than LDK's sequential read. 128 requests in flight at \
				 S3's 20–30 ms per request is 4,000–6,500 requests a second, about what S3 serves \
				 per prefix (5,500 GETs a second), and every channel's updates have a prefix of \
				 their own.",
				ratio(d)
			));
		}
		if !s.ldk_parallel.is_empty() {
			let by_bound: Vec<String> = s
				.ldk_parallel
				.iter()
				.map(|(threads, t)| {
					let ours =
						s.rows.iter().find(|r| r.0.contains(&format!(" {threads} requests")));
					match ours {
						Some(r) => format!(
							"{threads} threads {} against this crate's {} at {threads} in flight",
							secs(*t),
							secs(r.1)
						),
						None => format!("{threads} threads {}", secs(*t)),
					}
				})
				.collect();
			lines.push(format!(
				"- **LDK's per-monitor read in parallel.** With every monitor holding {} pending \
				 updates both read the same {} objects: {}. At an equal bound the load is \
				 request-bound, so this crate's lead comes from needing fewer requests \
				 (consolidation), as the workload section shows.",
				s.u,
				report::count((s.n * (s.u + 1)) as u64),
				by_bound.join("; ")
			));
		}
	}
	let slowest = |w: Writer| {
		f.update_latency.iter().filter(|l| l.1 == w).map(|l| l.3).fold(f64::NAN, f64::max)
	};
	let mean = |w: Writer| {
		f.update_latency.iter().filter(|l| l.1 == w).map(|l| l.2).fold(f64::NAN, f64::max)
	};
	if !f.update_latency.is_empty() {
		// LDK's consolidation deletes 101 objects one by one: it shows as a slow outlier.
		if slowest(Writer::Ldk) > 10.0 {
			lines.push(format!(
				"- **The full-monitor write.** With `maximum_pending_updates = {}` one update in \
				 {} writes the whole monitor, then deletes the update objects that it makes \
				 stale. This crate deletes them in one batch request; in sync mode the update \
				 returns after that request too, so its slowest update took {:.2} RTT (returning \
				 once the monitor is durable and deleting in the background would make it 1 RTT). \
				 LDK's `MonitorUpdatingPersister` removes the {} stale objects one request at a \
				 time and waits for each (this crate's store carries out lazy removes at once, as \
				 its guarantees say), so its slowest update took {:.0} RTT and its mean is up to \
				 {:.2} RTT.",
				updates::MAX_PENDING,
				updates::MAX_PENDING,
				slowest(Writer::OursSync),
				updates::MAX_PENDING + 1,
				slowest(Writer::Ldk),
				mean(Writer::Ldk),
			));
		} else {
			lines.push(format!(
				"- **The full-monitor write.** None of the updates of this run had an id \
				 divisible by {}, so none wrote the full monitor (the full profile's do).",
				updates::MAX_PENDING
			));
		}
		lines.push(
			"- **No bandwidth in the simulated store.** A request costs one round trip whatever \
			 its size, so the full-monitor persister's multi-MB writes cost the same as a \
			 500-byte update here; on a network they cost more. The bytes-written column is \
			 that cost; the LocalStack tables show it on loopback."
				.into(),
		);
	}
	if let Some(max_b) = f.throughput_all.iter().map(|t| t.0).max() {
		let at =
			|w: Writer| f.throughput_all.iter().find(|t| t.0 == max_b && t.1 == w).map(|t| t.2);
		if let (Some(a), Some(s), Some(l)) =
			(at(Writer::OursAsync), at(Writer::OursSync), at(Writer::Ldk))
		{
			lines.push(format!(
				"- **Throughput.** At {max_b} requests in flight, this crate's async persister \
				 reaches {a:.2} × the bound from one submitting thread; the sync persisters need a \
				 blocked thread per request in flight to get there ({s:.2} × for this crate's, \
				 {l:.2} × for LDK's, each with {max_b} threads). A node's `ChainMonitor` calls its \
				 persister from the threads that handle peers' messages, so a sync persister gets \
				 far fewer."
			));
		}
	}
	if let Some((best, ldk)) = f.localstack_rates {
		lines.push(format!(
			"- **LocalStack.** It answers a single request in a few milliseconds on loopback, \
			 but it is one Python process on the same cores as the benchmark: at best it served \
			 {best:.0} requests a second to this crate's loads, against {ldk:.0} to LDK's \
			 one-at-a-time reads. Its startup times measure that capacity, not round trips, so \
			 the speed-up there is small; the simulated store stands for a cloud store's round \
			 trips."
		));
	}
	if let Some(r) = &f.replica {
		let (fill, startup) = (&r.fill, &r.startup);
		lines.push(format!(
			"- **A replica.** Writes go to both copies at once: an update took {} the time it \
			 takes with the primary alone at the replica's round trip. A new replica of {} \
			 objects was filled in {} ({:.0} objects a second, {} its round-trip bound: the fill \
			 compares {FILL} keys at once, and each needs 3 round trips over the copying and the \
			 verifying pass). The next startup read the primary only ({} requests to the \
			 replica during the load; {} against {} alone). Every write is paid twice: {:.3} \
			 requests per payment instead of {:.3}, ${:.2} per million payments instead of \
			 ${:.2}.",
			r.latency
				.iter()
				.map(|(w, x)| format!("{} ({})", ratio(*x), w.name()))
				.collect::<Vec<_>>()
				.join(" and "),
			report::count(fill.keys),
			secs(fill.elapsed),
			fill.keys as f64 / fill.elapsed.as_secs_f64(),
			ratio(fill.elapsed.as_secs_f64() / fill.bound.as_secs_f64()),
			startup.replica_requests,
			secs(startup.paired),
			secs(startup.alone),
			r.per_payment.1,
			r.per_payment.0,
			r.dollars_per_million.1,
			r.dollars_per_million.0,
			FILL = crate::replica::FILL_CONCURRENCY,
		));
	}
	lines.push(format!(
		"- **The machine.** {} cores, shared with other builds while this ran (see the load \
		 average); LocalStack, when it ran, shared the same cores with the benchmark. Expect \
		 run-to-run differences of several percent, more on LocalStack.",
		std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
	));
	report.closing = lines;
}
