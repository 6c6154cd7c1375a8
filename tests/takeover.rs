//! The takeover model: two instances of one node on one prefix, through many schedules.
//!
//! Instance A runs, writing and removing keys all the time; something happens to it (its lease
//! task freezes, its network is cut, the process pauses, its renewals stall, its lease task
//! freezes while all its requests are held 10–30 s, it is closed with requests in flight, an
//! operator breaks its lease with or without `--force`, or nothing); instance B tries to start
//! every few seconds, in a quarter of the schedules with a wall clock an hour ahead. Half the
//! schedules use the crate's default attempt timeout (30 s), half a short one. A's data requests are held, lost, answered never
//! and duplicated at random all along (tests/common/network.rs); every such request lands
//! within the network's bound after A stopped waiting for it, or never (the assumption the
//! lease states: the bound is below the safety margin). Everything runs under paused tokio time,
//! so a schedule of minutes takes milliseconds, and each schedule follows from its seed (the
//! lease's `select!`s poll in a fixed order).
//!
//! After each schedule:
//! - whenever B holds the lease, A does not trust its own;
//! - nothing A sent lands after B took the lease (the network's record of every change);
//! - B's reads equal its own history: what it read first, then what it wrote and removed, also
//!   after everything still in the network has landed or died.
//!
//! `takeover_model` runs 1,000 schedules (CI); `takeover_model_long` runs 100,000
//! (`TAKEOVER_SCHEDULES` to change, `TAKEOVER_SEED` for the first seed); `takeover_servers` runs
//! three schedules in real time against LocalStack and SeaweedFS each (a frozen lease task, a
//! close with requests in flight, a forced break), whose conditional writes are what must hold.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::network::{Faults, Link, Network};
use ldk_object_store::lease::{self, LeaseConfig, TestClock, LEASE_OBJECT};
use ldk_object_store::{ConfigError, ObjectKvStore, RetryPolicy, StoreBuilder};
use lightning::util::persist::KVStore;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use tokio::time::{sleep, Instant};

const KEYS: [&str; 6] = ["k0", "k1", "k2", "k3", "k4", "k5"];

/// The timings of one kind of run.
#[derive(Debug, Clone)]
struct Timing {
	ttl: Duration,
	margin: Duration,
	skew: Duration,
	/// The store's attempt timeout.
	attempt: Duration,
	/// How long a request may land after its sender stopped waiting (below the margin).
	bound: Duration,
	/// When B stops trying to start.
	horizon: Duration,
	/// The most A waits between two operations.
	gap: Duration,
	/// Each way, per request.
	latency: std::ops::Range<Duration>,
	/// How long a request may be held on the way.
	hold: std::ops::Range<Duration>,
}

impl Timing {
	/// The defaults of the crate, under paused time.
	fn simulated() -> Self {
		Timing {
			ttl: Duration::from_secs(30),
			margin: Duration::from_secs(10),
			skew: Duration::from_secs(5),
			attempt: Duration::from_secs(2),
			bound: Duration::from_secs(9),
			horizon: Duration::from_secs(240),
			gap: Duration::from_millis(400),
			latency: Duration::from_millis(5)..Duration::from_millis(80),
			hold: Duration::from_secs(1)..Duration::from_secs(40),
		}
	}

	/// Short enough for a real server in real time.
	fn real() -> Self {
		Timing {
			ttl: Duration::from_millis(3000),
			margin: Duration::from_millis(1200),
			skew: Duration::from_millis(300),
			attempt: Duration::from_millis(600),
			bound: Duration::from_millis(1000),
			horizon: Duration::from_secs(20),
			gap: Duration::from_millis(60),
			latency: Duration::from_millis(1)..Duration::from_millis(10),
			hold: Duration::from_millis(200)..Duration::from_millis(4000),
		}
	}

	fn lease(&self, clock: &Arc<TestClock>) -> LeaseConfig {
		LeaseConfig::default()
			.with_ttl(self.ttl)
			.with_safety_margin(self.margin)
			.with_clock_skew(self.skew)
			.with_test_clock(Arc::clone(clock))
	}

	fn retry(&self) -> RetryPolicy {
		RetryPolicy {
			max_attempts: 3,
			initial_backoff: self.attempt / 20,
			max_backoff: self.attempt / 4,
			max_elapsed: self.attempt * 4,
			attempt_timeout: self.attempt,
		}
	}

	fn faults(&self, rng: &mut fastrand::Rng) -> Faults {
		Faults {
			latency: self.latency.clone(),
			hold: rng.f64() * 0.15,
			hold_for: self.hold.clone(),
			lose_answer: rng.f64() * 0.08,
			lose_request: rng.f64() * 0.05,
			duplicate: rng.f64() * 0.1,
		}
	}
}

/// What happens to A.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
	/// Nothing: B must never get in.
	None,
	/// A's lease task stops (renewals and all), its requests go on.
	FreezeLease,
	/// Nothing gets through between A and the store, from then on.
	Partition,
	/// The process stops for a while (lease task and network), then goes on.
	Pause,
	/// Renewals are held on the way for a while: late, or lost.
	StallRenewals,
	/// A is closed while its requests are in flight.
	Close,
	/// An operator breaks A's lease with `--force` while A runs.
	BreakForce,
	/// A stops for good; an operator breaks its lease without `--force`.
	BreakDead,
	/// A's lease task freezes while every request of A is held 10–30 s on the way (a congested
	/// path): requests sent just before the end of trust are still in flight after it.
	Congestion,
}

const FAULTS: [Fault; 9] = [
	Fault::None,
	Fault::FreezeLease,
	Fault::Partition,
	Fault::Pause,
	Fault::StallRenewals,
	Fault::Close,
	Fault::BreakForce,
	Fault::BreakDead,
	Fault::Congestion,
];

async fn open(
	link: &Link, prefix: &str, timing: &Timing, clock: &Arc<TestClock>,
) -> Result<ObjectKvStore, ConfigError> {
	StoreBuilder::from_store(Arc::new(link.clone()))
		.with_prefix(prefix)
		.with_writer_lease(timing.lease(clock))
		.with_retry(timing.retry())
		.on_current_runtime()
		.build_async()
		.await
}

/// What a schedule did, for the summary.
#[derive(Debug, Default)]
struct Summary {
	b_started: bool,
	a_landed: usize,
	b_ops: usize,
}

/// Runs one schedule; `Err` names the invariant broken.
/// Runs one schedule below `prefix`; `fault` chooses what happens to A (else the seed does).
/// `Err` names the invariant broken.
async fn schedule(
	seed: u64, timing: &Timing, store: Arc<dyn ObjectStore>, prefix: &str, fault: Option<Fault>,
) -> Result<Summary, String> {
	let mut rng = fastrand::Rng::with_seed(seed);
	// The retry policy's jitter draws from this thread's generator: from the seed too.
	fastrand::seed(seed);
	let drawn = FAULTS[rng.usize(..FAULTS.len())];
	let fault = fault.unwrap_or(drawn);
	// Half the schedules with the crate's default attempt timeout (30 s, three times the
	// margin), half with a short one.
	let mut timing = timing.clone();
	if rng.bool() {
		timing.attempt = RetryPolicy::default().attempt_timeout.min(timing.attempt * 15);
	}
	let timing = &timing;
	let prefix = format!("{prefix}/takeover-{seed}");
	let net = Network::new(store, timing.bound);
	let link_a = Link::new(&net, "A", rng.u64(..), Faults::clean(timing.latency.clone()));
	let a_faults = timing.faults(&mut rng);
	let link_b = Link::new(&net, "B", rng.u64(..), Faults::clean(timing.latency.clone()));
	let link_op = Link::new(&net, "operator", rng.u64(..), Faults::clean(timing.latency.clone()));
	// Wall clocks within half the skew allowance of the host's, so within it of each other.
	let half_skew = timing.skew.as_millis() as i64 / 2;
	let clock_a = TestClock::new(rng.i64(-half_skew..=half_skew));
	// In a quarter of the schedules B's wall clock runs an hour ahead: every lease looks
	// expired to it, and only its watch keeps it from starting early.
	let b_offset = if rng.usize(..4) == 0 { 3_600_000 } else { rng.i64(-half_skew..=half_skew) };
	let clock_b = TestClock::new(b_offset);
	let start = Instant::now();
	let at = |offset: Duration| start + offset;
	let what = format!("seed {seed} ({fault:?}, B's clock {b_offset:+} ms)");

	let a = open(&link_a, &prefix, timing, &clock_a)
		.await
		.map_err(|e| format!("{what}: A did not start: {e}"))?;
	let a_lease = a.writer_lease().expect("A holds a lease");
	link_a.set_faults(a_faults);

	// A's operations, until the horizon: awaited or left to run on their own.
	let a_ops = {
		let (a, mut rng, gap, horizon) =
			(a.clone(), fastrand::Rng::with_seed(rng.u64(..)), timing.gap, at(timing.horizon));
		let lease = a_lease.clone();
		tokio::spawn(async move {
			let (mut n, mut refused) = (0u64, 0);
			// Until the horizon, or a few operations after A lost its lease (all refused).
			while Instant::now() < horizon && refused < 5 {
				refused += usize::from(!lease.is_held());
				n += 1;
				let key = KEYS[rng.usize(..KEYS.len())];
				let op = if rng.f64() < 0.8 {
					KVStore::write(&a, "", "", key, format!("A:{n}").into_bytes())
				} else {
					KVStore::remove(&a, "", "", key, false)
				};
				if rng.bool() {
					let _ = op.await;
				} else {
					tokio::spawn(op);
				}
				sleep(gap.mul_f64(rng.f64())).await;
			}
		})
	};

	// The fault.
	let fault_at = Duration::from_secs_f64(rng.f64() * timing.horizon.as_secs_f64() / 6.0);
	let pause = timing.ttl.mul_f64(0.2 + rng.f64() * 2.0);
	let hold_renewals = timing.ttl.mul_f64(rng.f64() * 1.2);
	sleep(fault_at).await;
	let instance = a_lease.info().instance;
	match fault {
		Fault::None => {},
		Fault::FreezeLease => a_lease.freeze_for_testing(true),
		Fault::Congestion => {
			a_lease.freeze_for_testing(true);
			link_a.set_faults(Faults {
				hold: 1.0,
				hold_for: timing.margin..timing.margin * 3,
				..Faults::clean(timing.latency.clone())
			});
		},
		Fault::Partition => link_a.partition(true),
		Fault::Pause | Fault::StallRenewals => {
			if fault == Fault::Pause {
				a_lease.freeze_for_testing(true);
				link_a.partition(true);
			} else {
				link_a.hold_lease_requests(Some(hold_renewals));
			}
			let (link_a, a_lease) = (link_a.clone(), a_lease.clone());
			tokio::spawn(async move {
				sleep(pause).await;
				link_a.partition(false);
				link_a.hold_lease_requests(None);
				a_lease.freeze_for_testing(false);
			});
		},
		Fault::Close => {
			tokio::spawn(a.close());
		},
		Fault::BreakForce | Fault::BreakDead => {
			if fault == Fault::BreakDead {
				a_lease.freeze_for_testing(true);
				link_a.partition(true);
			}
			let operator = StoreBuilder::from_store(Arc::new(link_op.clone()))
				.with_prefix(&prefix)
				.without_writer_lease()
				.on_current_runtime()
				.build_async()
				.await
				.map_err(|e| format!("{what}: the operator's store: {e}"))?;
			let config = timing.lease(&TestClock::new(0));
			let force = fault == Fault::BreakForce;
			let retry_break = timing.ttl / 6;
			let what = what.clone();
			tokio::spawn(async move {
				// Without --force the break is refused while the lease looks alive: retry.
				while let Err(refused) =
					lease::break_lease(&operator, &instance, force, &config, |_| {}).await
				{
					if refused.contains("not by instance") || refused.contains("changed meanwhile")
					{
						// B took the lease over by itself meanwhile: nothing left to break.
						break;
					}
					assert!(
						refused.contains("looks alive") || refused.contains("changed while"),
						"{what}: the break failed: {refused}"
					);
					sleep(retry_break).await;
				}
			});
		},
	}

	// B tries to start every few seconds.
	sleep(timing.horizon.mul_f64(rng.f64() / 12.0)).await;
	let b = loop {
		if Instant::now() >= at(timing.horizon) {
			break None;
		}
		match open(&link_b, &prefix, timing, &clock_b).await {
			Ok(b) => break Some(b),
			Err(ConfigError::LeaseHeld { .. }) => {},
			Err(ConfigError::Lease(text)) if text.contains("changed hands") => {},
			Err(err) => return Err(format!("{what}: B failed to start: {err}")),
		}
		sleep(timing.ttl.mul_f64(0.1 + rng.f64() / 30.0)).await;
	};
	let mut summary = Summary::default();
	let Some(b) = b else {
		if fault != Fault::None && fault != Fault::StallRenewals && fault != Fault::Pause {
			return Err(format!("{what}: B never started"));
		}
		let _ = a_ops.await;
		a.close().await;
		return Ok(summary);
	};
	summary.b_started = true;
	if a_lease.is_held() {
		return Err(format!("{what}: B started while A still trusts its lease"));
	}
	if fault == Fault::None && a_lease.lost_reason().is_none() {
		return Err(format!("{what}: B started although nothing happened to A"));
	}
	if fault == Fault::None {
		println!("{what}: A lost its lease to the network's faults: {:?}", a_lease.lost_reason());
	}
	let b_took = net
		.landed()
		.iter()
		.filter(|l| l.from == "B" && l.path.filename() == Some(LEASE_OBJECT))
		.map(|l| l.at)
		.min()
		.ok_or_else(|| format!("{what}: B started without a lease put landing"))?;

	// B's history: what it read first, then its own writes and removes.
	let mut model: BTreeMap<&str, Option<Vec<u8>>> = BTreeMap::new();
	for key in KEYS {
		model.insert(key, read(&b, key).await.map_err(|e| format!("{what}: B's read: {e}"))?);
	}
	for n in 0..20 {
		let key = KEYS[rng.usize(..KEYS.len())];
		if rng.f64() < 0.7 {
			let value = format!("B:{n}").into_bytes();
			KVStore::write(&b, "", "", key, value.clone())
				.await
				.map_err(|e| format!("{what}: B's write of {key}: {e}"))?;
			model.insert(key, Some(value));
		} else {
			KVStore::remove(&b, "", "", key, false)
				.await
				.map_err(|e| format!("{what}: B's remove of {key}: {e}"))?;
			model.insert(key, None);
		}
		summary.b_ops += 1;
		let check = KEYS[rng.usize(..KEYS.len())];
		let got = read(&b, check).await.map_err(|e| format!("{what}: B's read: {e}"))?;
		if got != model[check] {
			return Err(format!(
				"{what}: B read {check} as {:?}, its history says {:?}",
				got.as_deref().map(String::from_utf8_lossy),
				model[check].as_deref().map(String::from_utf8_lossy)
			));
		}
		sleep(timing.gap.mul_f64(rng.f64())).await;
	}
	// Everything still in the network lands or dies.
	sleep(timing.bound * 3 + timing.hold.end).await;
	for key in KEYS {
		let got = read(&b, key).await.map_err(|e| format!("{what}: B's read: {e}"))?;
		if got != model[key] {
			return Err(format!(
				"{what}: in the end B reads {key} as {:?}, its history says {:?}",
				got.as_deref().map(String::from_utf8_lossy),
				model[key].as_deref().map(String::from_utf8_lossy)
			));
		}
	}
	let prefix_path = object_store::path::Path::from(prefix.as_str());
	for landed in net.landed() {
		let data = landed.path.filename() != Some(LEASE_OBJECT)
			&& landed.path.prefix_matches(&prefix_path);
		if landed.from == "A" && data {
			summary.a_landed += 1;
			if landed.at >= b_took {
				return Err(format!(
					"{what}: A's {} of {} landed {:?} after B took the lease",
					if landed.put.is_some() { "write" } else { "remove" },
					landed.path,
					landed.at - b_took
				));
			}
		}
	}
	b.close().await;
	a.close().await;
	a_ops.abort();
	Ok(summary)
}

async fn read(store: &ObjectKvStore, key: &str) -> Result<Option<Vec<u8>>, lightning::io::Error> {
	match KVStore::read(store, "", "", key).await {
		Ok(value) => Ok(Some(value)),
		Err(e) if e.kind() == lightning::io::ErrorKind::NotFound => Ok(None),
		Err(e) => Err(e),
	}
}

/// Runs `count` schedules from `first_seed` under paused time, each on a runtime of its own,
/// on two threads.
fn run_schedules(first_seed: u64, count: u64) {
	let wall = std::time::Instant::now();
	let halves: Vec<(usize, usize, usize)> = std::thread::scope(|scope| {
		let threads: Vec<_> = (0..2u64)
			.map(|half| {
				scope.spawn(move || {
					let timing = Timing::simulated();
					let (mut started, mut landed, mut ops) = (0, 0, 0);
					for seed in (first_seed..first_seed + count).filter(|s| s % 2 == half) {
						let runtime = tokio::runtime::Builder::new_current_thread()
							.enable_all()
							.start_paused(true)
							.build()
							.unwrap();
						let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
						match runtime.block_on(schedule(seed, &timing, store, "model", None)) {
							Ok(summary) => {
								started += usize::from(summary.b_started);
								landed += summary.a_landed;
								ops += summary.b_ops;
							},
							Err(violation) => panic!(
								"{violation}\nreplay: TAKEOVER_SEED={seed} TAKEOVER_SCHEDULES=1 \
								 cargo test --test takeover takeover_model_long -- --ignored"
							),
						}
					}
					(started, landed, ops)
				})
			})
			.collect();
		threads.into_iter().map(|t| t.join().unwrap()).collect()
	});
	let (started, landed, ops) =
		halves.iter().fold((0, 0, 0), |sum, half| (sum.0 + half.0, sum.1 + half.1, sum.2 + half.2));
	println!(
		"{count} schedules from seed {first_seed} in {:.1} s: B started in {started}; {landed} \
		 changes of A landed, none after B took over; {ops} operations of B, each read back as \
		 its history says",
		wall.elapsed().as_secs_f64()
	);
	assert!(
		started > count as usize / 2,
		"B started in {started} of {count}: the model checks little"
	);
}

fn env_u64(var: &str, default: u64) -> u64 {
	std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn takeover_model() {
	run_schedules(env_u64("TAKEOVER_SEED", 0), 1_000);
}

/// `cargo test --test takeover takeover_model_long -- --ignored` (RELIABILITY.md).
#[test]
#[ignore]
fn takeover_model_long() {
	run_schedules(env_u64("TAKEOVER_SEED", 1_000), env_u64("TAKEOVER_SCHEDULES", 100_000));
}

/// A few schedules in real time on each S3 server the environment offers: its conditional
/// writes are what hold the lease and the fencing.
#[test]
fn takeover_servers() {
	let timing = Timing::real();
	let faults = [Fault::FreezeLease, Fault::Close, Fault::BreakForce];
	std::thread::scope(|scope| {
		for server in common::backends::S3_SERVERS {
			let Some(backend) = common::backends::s3_without_resends(server, "takeover") else {
				continue;
			};
			let backend = Arc::new(backend);
			// In real time: the schedules of a server run side by side.
			for (n, fault) in faults.into_iter().enumerate() {
				let (backend, timing) = (Arc::clone(&backend), timing.clone());
				scope.spawn(move || {
					let runtime =
						tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
					let store = Arc::clone(&backend.object_store);
					let seed = n as u64 * 7 + 3;
					let outcome = runtime.block_on(schedule(
						seed,
						&timing,
						store,
						&backend.prefix,
						Some(fault),
					));
					match outcome {
						Ok(summary) => println!("{server} {fault:?}: {summary:?}"),
						Err(violation) => panic!("{server}: {violation}"),
					}
				});
			}
		}
	});
}
