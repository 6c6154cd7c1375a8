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
			let default = s
				.default_speedup
				.map(|d| {
					format!("; with the default configuration (probe, 32 at once) {}", ratio(d))
				})
				.unwrap_or_default();
			report.target(Target {
				what: format!("startup speed-up over LDK 0.2's sequential read ({})", s.scenario),
				goal: "≥ 100×".into(),
				measured: format!("{} ({}{ldk_how})", ratio(s.speedup), s.config),
				met: s.speedup >= 100.0,
				applies: main_scale,
				why: format!(
					"LDK reads one object at a time, one round trip each; this crate keeps many \
					 requests in flight{default}{scale_note}"
				),
			});
			// Both targets at once: the configurations that reach 100×, against their bounds.
			let mut fast: Vec<&(String, Duration, Duration, f64)> =
				s.rows.iter().filter(|r| r.3 >= 100.0).collect();
			// If none reaches 100×, judge them all.
			let which = if fast.is_empty() {
				fast = s.rows.iter().collect();
				""
			} else {
				" at ≥ 100×"
			};
			let vs = |r: &(String, Duration, Duration, f64)| r.1.as_secs_f64() / r.2.as_secs_f64();
			let within: Vec<_> = fast.iter().filter(|r| vs(r) <= 1.5).collect();
			let best = within.iter().min_by_key(|r| r.1);
			let measured = match best {
				Some(r) => format!(
					"{} ({}: {}, {} against a bound of {}); {} of the {} configurations{which} \
					 are within 1.5×",
					ratio(vs(r)),
					r.0,
					ratio(r.3),
					secs(r.1),
					secs(r.2),
					within.len(),
					fast.len()
				),
				None => format!(
					"none of the {} configurations{which} is within 1.5× of its bound",
					fast.len()
				),
			};
			let outside: Vec<String> = fast
				.iter()
				.filter(|r| vs(r) > 1.5)
				.map(|r| {
					format!(
						"{} is {} its bound ({} against {})",
						r.0,
						ratio(vs(r)),
						secs(r.1),
						secs(r.2)
					)
				})
				.collect();
			let why = match (outside.is_empty(), s.cpu_floor) {
				(true, _) => scale_note.trim_start().to_owned(),
				(false, floor) => format!(
					"{}. {}{scale_note}",
					outside.join("; "),
					floor
						.map(|c| format!(
							"The fastest configuration loads the same objects in {} with no round \
							 trip at all (decoding the monitors and applying every update on the \
							 one thread that awaits the load): where a bound is below that, the \
							 CPU, not the round trips, sets the time",
							secs(c)
						))
						.unwrap_or_default()
				),
			};
			report.target(Target {
				what: format!("… and within 1.5× of the round-trip bound ({})", s.scenario),
				goal: "≤ 1.5×".into(),
				measured,
				met: best.is_some(),
				applies: main_scale,
				why,
			});
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
	let ours_latency: Vec<_> = findings
		.update_latency
		.iter()
		.filter(|l| matches!(l.1, Writer::OursSync | Writer::OursAsync))
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
				"an update is one PUT of the update object; the one update in {} that writes \
				 the full monitor also waits for the batch delete of the stale updates{scale_note}",
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
		if let Some(cpu) = s.cpu_floor {
			lines.push(format!(
				"- **Startup: round trips, then CPU.** The fastest load ({}) took {}; its round \
				 trips alone would take {}, and the same load with no round trip at all takes {}. \
				 While the round trips dominate, the loads follow the round-trip bound closely (the \
				 ÷ bound column); as the bound shrinks, the work that is not I/O takes over: \
				 decoding {} monitors and applying {} updates, which this crate does on the one \
				 thread that awaits the load. Running each monitor's decode-and-apply on the \
				 store's runtime threads would lower that floor (on this 2-core machine by half at \
				 most); that is a change to `src/persister/read.rs`.",
				s.config,
				secs(s.elapsed),
				secs(s.bound),
				secs(cpu),
				s.n,
				report::count((s.n * s.u) as u64),
			));
		}
		if let Some(d) = s.default_speedup {
			lines.push(format!(
				"- **Default configuration.** With `PersisterConfig::default()` (32 monitors at \
				 once; `max_requests_in_flight` 32, which bounds the load's requests too) the load \
				 is {} faster than LDK's. Reaching 100× takes about 100 requests in flight or more: \
				 raise `max_monitors_loading` and `max_requests_in_flight` together. (S3 serves 5,500 \
				 GETs a second per prefix: about 110 requests in flight at 20 ms.)",
				ratio(d)
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
	lines.push(format!(
		"- **The machine.** {} cores, shared with other builds while this ran (see the load \
		 average); LocalStack, when it ran, shared the same cores with the benchmark. Expect \
		 run-to-run differences of several percent, more on LocalStack.",
		std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
	));
	report.closing = lines;
}
