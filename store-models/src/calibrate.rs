//! The S3-like model's self-check: a short load through the model, its measured latency, rates
//! and connections next to the parameters, each flagged if it is off by more than
//! [`TOLERANCE`].
//!
//! The load runs on a tokio runtime of its own with paused time ([`Clock::Tokio`]): every sleep
//! is exact to tokio's millisecond and the machine's load changes nothing, so the check is about
//! the model, not about the host. A model running on [`Clock::Thread`] has the same parameters
//! and code; its real-time sleeps add the timer slack that [`crate::latency`] documents.
//!
//! Two phases:
//! 1. **Latency and connections.** `latency_requests` GETs of one object from more clients than
//!    there are connections, each sending its next request when the last is answered, with the
//!    rates lifted (so that every request is served and the sample has its full size): the
//!    median and p99 against the parameters, the most connections in use against the bound, and
//!    the served rate until the last request is sent (while every connection is in use) against
//!    Little's law, connections ÷ mean latency.
//! 2. **Rates.** GETs and PUTs on one object (so one partition), with no bound on connections:
//!    first 1.5 times a full bucket's tokens at once, of which the bucket (burst × rate) must be
//!    served; then open-loop arrivals at twice each rate for `rate_window`: the requests served
//!    per second against each rate. Every refused request must be the `503 SlowDown` error.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::s3::{quantile, Clock, S3LikeStore, S3Model, S3Params};

/// The largest relative difference between a measurement and its parameter that passes.
pub const TOLERANCE: f64 = 0.10;

/// The size of the calibration load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalibrationLoad {
	/// GETs in the latency phase (20,000 by default: the p99 of a log-normal with the default
	/// parameters is then estimated to about ±2%, one standard error).
	pub latency_requests: u64,
	/// The measured window of the rate phase, after the burst has been used up (2 s by
	/// default).
	pub rate_window: Duration,
}

impl Default for CalibrationLoad {
	fn default() -> Self {
		CalibrationLoad { latency_requests: 20_000, rate_window: Duration::from_secs(2) }
	}
}

/// One measurement next to its parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
	/// What was measured.
	pub what: String,
	/// The value the parameters give.
	pub parameter: f64,
	/// The value measured.
	pub measured: f64,
	/// The unit of both.
	pub unit: &'static str,
}

impl Check {
	/// |measured ÷ parameter − 1|.
	pub fn off(&self) -> f64 {
		if self.parameter == 0.0 {
			if self.measured == 0.0 {
				0.0
			} else {
				f64::INFINITY
			}
		} else {
			(self.measured / self.parameter - 1.0).abs()
		}
	}

	/// Within [`TOLERANCE`].
	pub fn ok(&self) -> bool {
		self.off() <= TOLERANCE
	}
}

/// The self-check's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
	/// The parameters checked.
	pub params: S3Params,
	/// Each measurement.
	pub checks: Vec<Check>,
	/// Requests sent in both phases.
	pub requests: u64,
	/// Refused requests whose error was not the `503 SlowDown` one (must be zero).
	pub other_errors: u64,
	/// Paused tokio time the load took.
	pub simulated: Duration,
	/// Real time the load took.
	pub wall: Duration,
}

impl Calibration {
	/// Every check within [`TOLERANCE`], and no error other than `SlowDown`.
	pub fn ok(&self) -> bool {
		self.other_errors == 0 && self.checks.iter().all(Check::ok)
	}

	/// The checks as a markdown table (header included), one row per check.
	pub fn markdown_rows(&self) -> Vec<[String; 5]> {
		self.checks
			.iter()
			.map(|c| {
				[
					c.what.clone(),
					format!("{} {}", number(c.parameter), c.unit).trim_end().to_owned(),
					format!("{} {}", number(c.measured), c.unit).trim_end().to_owned(),
					format!("{:.1}%", c.off() * 100.0),
					if c.ok() {
						"ok".into()
					} else {
						format!("**off by more than {:.0}%**", TOLERANCE * 100.0)
					},
				]
			})
			.collect()
	}

	/// One sentence on how the check ran.
	pub fn summary(&self) -> String {
		format!(
			"Self-check of the S3-like model: {} requests over {:.2} s of paused tokio time ({:.2} s \
			 of real time); {}; {} other errors.",
			self.requests,
			self.simulated.as_secs_f64(),
			self.wall.as_secs_f64(),
			if self.ok() {
				format!("every measurement within {:.0}% of its parameter", TOLERANCE * 100.0)
			} else {
				format!("SOME MEASUREMENTS ARE OFF BY MORE THAN {:.0}%", TOLERANCE * 100.0)
			},
			self.other_errors,
		)
	}
}

fn number(x: f64) -> String {
	if x.fract() == 0.0 || x.abs() >= 100.0 {
		format!("{x:.0}")
	} else {
		format!("{x:.2}")
	}
}

impl fmt::Display for Calibration {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		writeln!(f, "{}\n", self.summary())?;
		writeln!(f, "| check | parameter | measured | off | |")?;
		writeln!(f, "|---|---:|---:|---:|---|")?;
		for row in self.markdown_rows() {
			writeln!(f, "| {} |", row.join(" | "))?;
		}
		Ok(())
	}
}

/// Runs the calibration load (see the module docs) through a model with `params` (on
/// [`Clock::Tokio`] whatever `params.clock` says) and returns its measurements. Builds a tokio
/// runtime of its own: call it outside any runtime.
pub fn calibrate(params: &S3Params, load: CalibrationLoad) -> std::io::Result<Calibration> {
	let runtime =
		tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?;
	let wall = std::time::Instant::now();
	let mut calibration = runtime.block_on(run(*params, load))?;
	calibration.wall = wall.elapsed();
	Ok(calibration)
}

fn io(e: object_store::Error) -> std::io::Error {
	std::io::Error::other(e)
}

fn is_slow_down(e: &object_store::Error) -> bool {
	let text = e.to_string();
	text.contains("503") && text.contains("<Code>SlowDown</Code>")
}

async fn run(params: S3Params, load: CalibrationLoad) -> std::io::Result<Calibration> {
	let params = S3Params { clock: Clock::Tokio, ..params };
	let started = tokio::time::Instant::now();
	let object = Path::from("calibration/object");
	let mut checks = Vec::new();
	let mut other_errors = 0;
	let mut requests = 0;

	// Phase 1: latency and connections, closed loop, rates lifted.
	let unlimited = S3Params { reads_per_sec: 1e12, writes_per_sec: 1e12, ..params };
	let model = S3Model::new(unlimited);
	let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
	inner.put(&object, PutPayload::from_static(b"calibration")).await.map_err(io)?;
	let store = S3LikeStore::wrap(Arc::clone(&inner), Arc::clone(&model));
	let clients = params.connections + params.connections / 5 + 1;
	let issued = Arc::new(AtomicU64::new(0));
	let refused_otherwise = Arc::new(AtomicU64::new(0));
	let phase_started = tokio::time::Instant::now();
	// When the last request was sent. Every client then still waits for one answer, so the
	// load's other requests were answered by then; after it, fewer and fewer connections are
	// in use while the slowest answers come in, which is the load ending, not the model's rate.
	let last_sent = Arc::new(std::sync::Mutex::new(None));
	let mut tasks = Vec::with_capacity(clients);
	for _ in 0..clients {
		let (store, object) = (Arc::clone(&store), object.clone());
		let (issued, refused_otherwise) = (Arc::clone(&issued), Arc::clone(&refused_otherwise));
		let last_sent = Arc::clone(&last_sent);
		tasks.push(tokio::spawn(async move {
			loop {
				let n = issued.fetch_add(1, Ordering::Relaxed) + 1;
				if n > load.latency_requests {
					break;
				}
				if n == load.latency_requests {
					*last_sent.lock().unwrap_or_else(|e| e.into_inner()) =
						Some(phase_started.elapsed());
				}
				if let Err(e) = store.get(&object).await {
					if !is_slow_down(&e) {
						refused_otherwise.fetch_add(1, Ordering::Relaxed);
					}
				}
			}
		}));
	}
	for task in tasks {
		task.await.map_err(std::io::Error::other)?;
	}
	let sending_time = last_sent.lock().unwrap_or_else(|e| e.into_inner()).unwrap_or_default();
	let answered_while_sending = load.latency_requests.saturating_sub(clients as u64);
	let counts = model.counts();
	requests += counts.served_total() + counts.throttled_total();
	other_errors += refused_otherwise.load(Ordering::Relaxed);
	let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
	checks.push(Check {
		what: format!("median latency ({} served GETs)", counts.latencies.len()),
		parameter: params.median.as_secs_f64() * 1e3,
		measured: ms(quantile(&counts.latencies, 0.5)),
		unit: "ms",
	});
	checks.push(Check {
		what: "p99 latency".into(),
		parameter: params.p99.as_secs_f64() * 1e3,
		measured: ms(quantile(&counts.latencies, 0.99)),
		unit: "ms",
	});
	checks.push(Check {
		what: format!("most requests at the server at once ({clients} clients)"),
		parameter: params.connections as f64,
		measured: counts.max_in_flight as f64,
		unit: "",
	});
	checks.push(Check {
		what: "served rate at the connection bound while every connection is in use (Little's \
		       law: connections ÷ mean latency)"
			.into(),
		parameter: params.connections as f64 / params.latency().mean().as_secs_f64(),
		measured: answered_while_sending as f64 / sending_time.as_secs_f64(),
		unit: "/s",
	});

	// Phase 2: rates, no bound on connections. A full bucket first: 1.5 times its tokens at
	// once, of which exactly its tokens are served. Then open-loop arrivals at twice the rate,
	// one batch per millisecond, for `rate_window`: the bucket, empty, serves its rate.
	let unbounded = S3Params { connections: usize::MAX >> 4, ..params };
	let model = S3Model::new(unbounded);
	let store = S3LikeStore::wrap(Arc::clone(&inner), Arc::clone(&model));
	let rates = [params.reads_per_sec, params.writes_per_sec];
	let capacity = rates.map(|r| (r * params.burst.as_secs_f64()).max(1.0));
	let at_once = capacity.map(|c| (1.5 * c).ceil() as u64);
	let window_ticks = load.rate_window.as_millis() as u64;
	// served[phase][class]: phase 0 the batch at once, phase 1 the window.
	let served =
		Arc::new([[AtomicU64::new(0), AtomicU64::new(0)], [AtomicU64::new(0), AtomicU64::new(0)]]);
	let refused_otherwise = Arc::new(AtomicU64::new(0));
	let mut offered = 0u64;
	let mut tasks = Vec::new();
	let mut interval = tokio::time::interval(Duration::from_millis(1));
	for k in 0..=window_ticks {
		interval.tick().await;
		for (class, rate) in rates.iter().enumerate() {
			let (phase, n) = if k == 0 {
				(0, at_once[class])
			} else {
				let per_ms = 2.0 * rate / 1000.0;
				(1, (k as f64 * per_ms).floor() as u64 - ((k - 1) as f64 * per_ms).floor() as u64)
			};
			offered += n;
			for _ in 0..n {
				let (store, object) = (Arc::clone(&store), object.clone());
				let (served, refused) = (Arc::clone(&served), Arc::clone(&refused_otherwise));
				tasks.push(tokio::spawn(async move {
					let outcome = if class == 0 {
						store.get(&object).await.map(drop)
					} else {
						store.put(&object, PutPayload::from_static(b"calibration")).await.map(drop)
					};
					match outcome {
						Ok(()) => {
							served[phase][class].fetch_add(1, Ordering::Relaxed);
						},
						Err(e) if is_slow_down(&e) => {},
						Err(_) => {
							refused.fetch_add(1, Ordering::Relaxed);
						},
					}
				}));
			}
		}
	}
	for task in tasks {
		task.await.map_err(std::io::Error::other)?;
	}
	requests += offered;
	other_errors += refused_otherwise.load(Ordering::Relaxed);
	let window = load.rate_window.as_secs_f64();
	let names = ["GET/HEAD", "PUT/COPY/DELETE/LIST"];
	for class in 0..2 {
		checks.push(Check {
			what: format!(
				"{} served at once by a full bucket (burst × rate; offered {})",
				names[class], at_once[class]
			),
			parameter: capacity[class].floor(),
			measured: served[0][class].load(Ordering::Relaxed) as f64,
			unit: "",
		});
		checks.push(Check {
			what: format!(
				"{} served per second by an empty bucket, offered twice the rate",
				names[class]
			),
			parameter: rates[class],
			measured: served[1][class].load(Ordering::Relaxed) as f64 / window,
			unit: "/s",
		});
	}
	// Of what was offered, a full bucket plus the rate over the window is served: the rest is
	// throttled.
	let counts = model.counts();
	let expected_served: f64 = (0..2).map(|c| capacity[c].floor() + rates[c] * window).sum();
	checks.push(Check {
		what: "share of the rate phase's requests throttled (503 SlowDown)".into(),
		parameter: 1.0 - expected_served / offered.max(1) as f64,
		measured: counts.throttled_total() as f64
			/ (counts.throttled_total() + counts.served_total()).max(1) as f64,
		unit: "",
	});

	Ok(Calibration {
		params,
		checks,
		requests,
		other_errors,
		simulated: started.elapsed(),
		wall: Duration::ZERO,
	})
}
