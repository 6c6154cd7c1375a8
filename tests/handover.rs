//! The edges of the writer lease, one scenario each: a request in flight when trust ends, a
//! late request of an old instance, closing with requests in flight, breaking a lease, a stalled
//! renewal, a suspended host, a successor whose clock runs fast, and what each failure says.
//! Two instances reach one store through the simulated network of tests/common/network.rs,
//! under paused tokio time (a scenario of minutes takes milliseconds). The model test
//! (tests/takeover.rs) runs the same kinds of faults at random, by the thousand.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::network::{Faults, Landed, Link, Network};
use ldk_object_store::lease::{self, BreakOutcome, LeaseConfig, TestClock, LEASE_OBJECT};
use ldk_object_store::{ConfigError, Error, FailureKind, ObjectKvStore, RetryPolicy, StoreBuilder};
use lightning::util::persist::KVStore;
use object_store::memory::InMemory;
use tokio::time::{sleep, Instant};

const TTL: Duration = Duration::from_secs(30);
const MARGIN: Duration = Duration::from_secs(10);
const SKEW: Duration = Duration::from_secs(5);
/// How long a holder trusts its lease after a renewal.
const VALIDITY: Duration = Duration::from_secs(20);
const PREFIX: &str = "node";

fn paused<F: Future>(scenario: F) -> F::Output {
	tokio::runtime::Builder::new_current_thread()
		.enable_all()
		.start_paused(true)
		.build()
		.unwrap()
		.block_on(scenario)
}

fn lease_config(clock: &Arc<TestClock>) -> LeaseConfig {
	LeaseConfig::default()
		.with_ttl(TTL)
		.with_safety_margin(MARGIN)
		.with_clock_skew(SKEW)
		.with_test_clock(Arc::clone(clock))
}

fn retry(attempts: u32, attempt_timeout: Duration) -> RetryPolicy {
	RetryPolicy {
		max_attempts: attempts,
		initial_backoff: Duration::from_millis(100),
		max_backoff: Duration::from_millis(500),
		max_elapsed: attempt_timeout * 4,
		attempt_timeout,
	}
}

fn clean() -> Faults {
	Faults::clean(Duration::from_millis(5)..Duration::from_millis(20))
}

/// A network whose abandoned requests land within `bound`, and a link onto it per name.
fn network(bound: Duration) -> Arc<Network> {
	Network::new(Arc::new(InMemory::new()), bound)
}

fn builder(link: &Link, clock: &Arc<TestClock>, retry: RetryPolicy) -> StoreBuilder {
	StoreBuilder::from_store(Arc::new(link.clone()))
		.with_prefix(PREFIX)
		.with_writer_lease(lease_config(clock))
		.with_retry(retry)
		.on_current_runtime()
}

async fn open(link: &Link, clock: &Arc<TestClock>) -> Result<ObjectKvStore, ConfigError> {
	builder(link, clock, retry(3, Duration::from_secs(2))).build_async().await
}

/// Opens until the lease is free, trying every second, for at most `limit`.
async fn open_when_free(link: &Link, clock: &Arc<TestClock>, limit: Duration) -> ObjectKvStore {
	let until = Instant::now() + limit;
	loop {
		match open(link, clock).await {
			Ok(store) => return store,
			Err(ConfigError::LeaseHeld { .. }) if Instant::now() < until => {},
			Err(err) => panic!("{}: {err}", link.name),
		}
		sleep(Duration::from_secs(1)).await;
	}
}

/// A's and B's links onto `net`, with latency only.
fn links(net: &Arc<Network>) -> (Link, Link) {
	(Link::new(net, "A", 1, clean()), Link::new(net, "B", 2, clean()))
}

/// A network whose abandoned requests land within 9 s (below the 10 s margin, as the lease
/// assumes), with A's and B's links onto it.
fn world() -> (Arc<Network>, Link, Link) {
	let net = network(Duration::from_secs(9));
	let (a, b) = links(&net);
	(net, a, b)
}

/// The operator's view of the store, without a lease.
async fn operator(net: &Arc<Network>) -> ObjectKvStore {
	StoreBuilder::from_store(Arc::new(Link::new(net, "operator", 9, clean())))
		.with_prefix(PREFIX)
		.without_writer_lease()
		.on_current_runtime()
		.build_async()
		.await
		.unwrap()
}

/// When `from`'s first lease put landed.
fn took_lease(net: &Network, from: &str) -> Instant {
	net.landed()
		.iter()
		.find(|l| l.from == from && l.path.filename() == Some(LEASE_OBJECT))
		.map(|l| l.at)
		.unwrap_or_else(|| panic!("{from} never wrote the lease"))
}

/// What `from` changed in the data (not the lease).
fn data_of(net: &Network, from: &str) -> Vec<Landed> {
	net.landed()
		.into_iter()
		.filter(|l| l.from == from && l.path.filename() != Some(LEASE_OBJECT))
		.collect()
}

/// No change of A's landed after B took the lease.
fn assert_none_after_takeover(net: &Network) {
	let b_took = took_lease(net, "B");
	for landed in data_of(net, "A") {
		assert!(
			landed.at < b_took,
			"A's change of {} landed {:?} after B took the lease",
			landed.path,
			landed.at - b_took
		);
	}
}

/// A write, its place in the key's order taken now; the future may be spawned.
fn write(
	store: &ObjectKvStore, key: &str, value: &str,
) -> impl Future<Output = Result<(), lightning::io::Error>> + Send + 'static {
	KVStore::write(store, "", "", key, value.as_bytes().to_vec())
}

async fn read(store: &ObjectKvStore, key: &str) -> Option<Vec<u8>> {
	match KVStore::read(store, "", "", key).await {
		Ok(value) => Some(value),
		Err(e) if e.kind() == lightning::io::ErrorKind::NotFound => None,
		Err(e) => panic!("reading {key}: {e}"),
	}
}

fn kind(err: &lightning::io::Error) -> Option<FailureKind> {
	err.get_ref().and_then(|e| e.downcast_ref::<Error>()).and_then(Error::failure_kind)
}

/// A write whose request is held in the network when the lease's trust ends is abandoned right
/// then, refused as `LeaseLost`, however long the attempt timeout: no request of an instance is
/// outstanding past its trust.
#[test]
fn a_request_in_flight_is_abandoned_when_trust_ends() {
	paused(async {
		let (_net, link, _) = world();
		let clock = TestClock::new(0);
		let a =
			builder(&link, &clock, retry(1, Duration::from_secs(120))).build_async().await.unwrap();
		let lease = a.writer_lease().unwrap();
		sleep(Duration::from_secs(1)).await;
		// The last renewal was sent when A started; none follows.
		lease.freeze_for_testing(true);
		link.hold_next_data_request(Duration::from_secs(100));
		let started = Instant::now();
		let err = write(&a, "k", "A").await.expect_err("trust ends first");
		assert_eq!(kind(&err), Some(FailureKind::LeaseLost), "{err}");
		assert!(err.to_string().contains("abandoned"), "{err}");
		assert!(
			started.elapsed() <= VALIDITY,
			"the request was given up only after {:?}",
			started.elapsed()
		);
		assert!(!lease.is_held());
	});
}

/// A proxy holds a write of the old instance beyond the lease's assumption, until after the
/// successor wrote the same key: with fencing, on by default where the lease is an object, the
/// server refuses the late request (its condition names the old version). Without fencing the
/// same request replaces the successor's write, which is why it is the default.
#[test]
fn a_late_request_of_the_old_instance_is_refused_by_the_server() {
	async fn scenario(fencing: Option<bool>) -> Vec<u8> {
		// Requests may land 150 s after their sender gave up: far beyond the safety margin.
		let net = network(Duration::from_secs(150));
		let (link_a, link_b) = links(&net);
		let clock = TestClock::new(0);
		let mut a = builder(&link_a, &clock, retry(1, Duration::from_secs(2)));
		if let Some(fencing) = fencing {
			a = a.with_fencing(fencing);
		}
		let a = a.build_async().await.unwrap();
		write(&a, "k", "A1").await.unwrap();
		link_a.hold_next_data_request(Duration::from_secs(120));
		let late = tokio::spawn(write(&a, "k", "A2"));
		a.writer_lease().unwrap().freeze_for_testing(true);
		let b = open_when_free(&link_b, &TestClock::new(0), Duration::from_secs(110)).await;
		write(&b, "k", "B").await.unwrap();
		assert!(late.await.unwrap().is_err(), "A's held write was abandoned");
		sleep(Duration::from_secs(200)).await;
		let landed = data_of(&net, "A").iter().any(|l| l.put.as_deref() == Some(&b"A2"[..]));
		let value = read(&b, "k").await.unwrap();
		assert_eq!(landed, value == b"A2", "what landed is what is read");
		value
	}
	assert_eq!(paused(scenario(None)), b"B", "fencing by default refuses the late request");
	assert_eq!(paused(scenario(Some(false))), b"A2", "without fencing it replaces B's write");
}

/// A remove whose first attempt was given up (its answer lost) succeeds on its retry; the given-up
/// request lands later still, within the network's bound. The key's next write must not be
/// undone by it: the remove ends only once the safety margin has passed since it gave the
/// attempt up, so the next write runs after anything of the remove can land. (Without that wait
/// the late DELETE removed the acknowledged write; fencing cannot refuse it, a remove is never
/// conditional.)
#[test]
fn a_given_up_attempt_never_undoes_the_keys_next_operation() {
	paused(async {
		let (net, link_a, _) = world();
		let a = builder(&link_a, &TestClock::new(0), retry(3, Duration::from_secs(2)))
			.build_async()
			.await
			.unwrap();
		write(&a, "k", "A").await.unwrap();
		link_a.hold_next_data_request(Duration::from_secs(5));
		link_a.lose_next_data_answer();
		let started = Instant::now();
		let removed = KVStore::remove(&a, "", "", "k", false).await;
		assert!(removed.is_ok(), "the retry removed it: {removed:?}");
		let remove_took = started.elapsed();
		write(&a, "k", "B").await.expect("the next write");
		sleep(Duration::from_secs(30)).await;
		let removes = net.landed().iter().filter(|landed| landed.put.is_none()).count();
		assert_eq!(removes, 2, "the given-up DELETE landed, and its retry");
		assert_eq!(read(&a, "k").await.as_deref(), Some(&b"B"[..]), "the acknowledged write stays");
		assert!(remove_took >= MARGIN, "the remove ended after {remove_took:?}");
		a.close().await;
	});
}

/// `close` waits for the requests in flight before it releases the lease: one answered late
/// lands before the successor starts; one abandoned without an answer (it may still land) makes
/// the release wait the safety margin after it. The successor then starts at once.
#[test]
fn closing_drains_requests_in_flight_before_releasing() {
	paused(async {
		// Answered late: in flight for 5 s.
		let (net, link_a, link_b) = world();
		let a = builder(&link_a, &TestClock::new(0), retry(1, Duration::from_secs(10)))
			.build_async()
			.await
			.unwrap();
		link_a.hold_next_data_request(Duration::from_secs(5));
		let slow = tokio::spawn(write(&a, "k", "A"));
		sleep(Duration::from_millis(100)).await;
		a.close().await;
		let b = open(&link_b, &TestClock::new(0)).await.expect("released: B starts at once");
		assert!(slow.await.unwrap().is_ok(), "the write in flight ended, answered");
		sleep(Duration::from_secs(30)).await;
		assert_none_after_takeover(&net);
		assert_eq!(read(&b, "k").await.unwrap(), b"A");
		assert_eq!(
			write(&a, "k", "late").await.map_err(|e| kind(&e)),
			Err(Some(FailureKind::LeaseLost)),
			"a closed store writes nothing"
		);

		// Landed with its answer lost: A gave up on it, so it might have landed later still.
		let (net, link_a, link_b) = world();
		let a = builder(&link_a, &TestClock::new(0), retry(1, Duration::from_secs(2)))
			.build_async()
			.await
			.unwrap();
		link_a.hold_next_data_request(Duration::from_secs(3));
		link_a.lose_next_data_answer();
		let sent = Instant::now();
		let abandoned = tokio::spawn(write(&a, "k", "A"));
		// The attempt is given up at 2 s; close while its operation waits out the margin.
		sleep(Duration::from_millis(2100)).await;
		let closing = Instant::now();
		a.close().await;
		assert!(closing.elapsed() >= MARGIN - Duration::from_secs(3), "{:?}", closing.elapsed());
		let abandoned = abandoned.await.unwrap().expect_err("no answer within the attempt");
		assert_eq!(kind(&abandoned), Some(FailureKind::TimedOut), "{abandoned}");
		// The operation itself ends only once its abandoned request can no longer land.
		assert!(sent.elapsed() >= MARGIN, "{:?}", sent.elapsed());
		let b = open(&link_b, &TestClock::new(0)).await.expect("released: B starts at once");
		assert_none_after_takeover(&net);
		assert_eq!(read(&b, "k").await.unwrap(), b"A");
	});
}

/// `break` without `--force`: refused while the holder renewed recently; stopped when the holder
/// renews while it watches; after a dead holder's lease expired, it watches it for the time to
/// live plus the skew allowance and releases it, and the successor starts at once.
#[test]
fn breaking_a_lease_never_lets_two_writers_in() {
	paused(async {
		let (net, link_a, _) = world();
		let a = open(&link_a, &TestClock::new(0)).await.unwrap();
		let a_lease = a.writer_lease().unwrap();
		let instance = a_lease.info().instance;
		let operator = operator(&net).await;
		sleep(Duration::from_secs(3)).await;

		let refused = lease::break_lease(
			&operator,
			&instance,
			false,
			&lease_config(&TestClock::new(0)),
			|_| {},
		)
		.await
		.expect_err("a live holder's lease is not broken");
		assert!(refused.contains("looks alive") && refused.contains("--force"), "{refused}");

		// An operator whose clock runs an hour ahead sees it expired, watches, and sees it renewed.
		let fast = lease_config(&TestClock::new(3_600_000));
		let refused = lease::break_lease(&operator, &instance, false, &fast, |_| {})
			.await
			.expect_err("the holder renews while it is watched");
		assert!(refused.contains("changed while it was watched"), "{refused}");
		assert!(a_lease.is_held());
		write(&a, "k", "A").await.unwrap();

		// A dies; once its lease expired, the break watches it, then releases it.
		a_lease.freeze_for_testing(true);
		link_a.partition(true);
		let died = Instant::now();
		let outcome = loop {
			match lease::break_lease(
				&operator,
				&instance,
				false,
				&lease_config(&TestClock::new(0)),
				|_| {},
			)
			.await
			{
				Ok(outcome) => break outcome,
				Err(refused) if refused.contains("looks alive") => {
					sleep(Duration::from_secs(1)).await
				},
				Err(refused) => panic!("{refused}"),
			}
		};
		assert!(matches!(outcome, BreakOutcome::Released { .. }), "{outcome:?}");
		assert!(died.elapsed() >= TTL + SKEW, "released only after watching: {:?}", died.elapsed());
		let b = open(&Link::new(&net, "B", 2, clean()), &TestClock::new(0)).await.expect("at once");
		assert_eq!(b.writer_lease().unwrap().info().generation, a_lease.info().generation + 2);
		assert_eq!(read(&b, "k").await.unwrap(), b"A");
		assert_none_after_takeover(&net);
	});
}

/// The reproduction of a forced break: the holder renewed 3 s earlier and writes every 100 ms.
/// It stops at its next renewal; the successor starts only after the holder's trust has ended,
/// so none of the holder's writes lands after the successor started, and the successor's write
/// stays.
#[test]
fn a_forced_break_waits_out_the_live_holder() {
	paused(async {
		let (net, link_a, link_b) = world();
		let a = open(&link_a, &TestClock::new(0)).await.unwrap();
		let a_lease = a.writer_lease().unwrap();
		let writer = {
			let a = a.clone();
			tokio::spawn(async move {
				for n in 0..2_000 {
					let _ = write(&a, "k", &format!("A{n}")).await;
					sleep(Duration::from_millis(100)).await;
				}
			})
		};
		sleep(Duration::from_secs(13)).await;
		let outcome = lease::break_lease(
			&operator(&net).await,
			&a_lease.info().instance,
			true,
			&lease_config(&TestClock::new(0)),
			|_| {},
		)
		.await
		.unwrap();
		let BreakOutcome::Forced { free_after_unix_ms, .. } = outcome else {
			panic!("{outcome:?}")
		};
		assert!(free_after_unix_ms > 0);
		let b = open_when_free(&link_b, &TestClock::new(0), Duration::from_secs(200)).await;
		assert!(!a_lease.is_held(), "B started while A trusted its lease");
		assert!(
			a_lease.lost_reason().unwrap().contains("taken over"),
			"{:?}",
			a_lease.lost_reason()
		);
		write(&b, "k", "B").await.unwrap();
		sleep(Duration::from_secs(30)).await;
		writer.abort();
		assert_none_after_takeover(&net);
		assert_eq!(read(&b, "k").await.unwrap(), b"B");
	});
}

/// One renewal request that never comes back costs nothing: renewal attempts are short enough
/// that several fit in the lease's validity.
#[test]
fn one_stalled_renewal_does_not_cost_the_lease() {
	paused(async {
		let (_net, link, _) = world();
		let a = open(&link, &TestClock::new(0)).await.unwrap();
		let lease = a.writer_lease().unwrap();
		link.lose_next_lease_request();
		sleep(TTL * 3).await;
		assert!(lease.is_held(), "lost: {:?}", lease.lost_reason());
		write(&a, "k", "A").await.unwrap();
	});
}

/// A host suspended past the lease's validity: when it resumes, its next write is refused at
/// once (trust is measured on a clock that counts the suspend), before any request is sent.
#[test]
fn a_resumed_host_does_not_trust_a_lease_that_ran_out_while_it_slept() {
	paused(async {
		let (net, link, _) = world();
		let clock = TestClock::new(0);
		let a = open(&link, &clock).await.unwrap();
		write(&a, "k", "A1").await.unwrap();
		clock.suspend(Duration::from_secs(60));
		let err = write(&a, "k", "A2").await.expect_err("the lease ran out while suspended");
		assert_eq!(kind(&err), Some(FailureKind::LeaseLost), "{err}");
		sleep(Duration::from_secs(5)).await;
		let reason = a.writer_lease().unwrap().lost_reason().unwrap();
		assert!(reason.contains("suspended for about 60 s"), "{reason}");
		assert!(!data_of(&net, "A").iter().any(|l| l.put.as_deref() == Some(&b"A2"[..])));
	});
}

/// A successor whose wall clock runs an hour ahead sees a live lease as long expired. It takes
/// over only after watching the lease unchanged for the time to live plus the skew allowance
/// on its own clock, so it sees the holder renew and is refused.
#[test]
fn a_successor_with_a_fast_clock_does_not_take_a_live_lease() {
	paused(async {
		let (_net, link_a, link_b) = world();
		let a = open(&link_a, &TestClock::new(0)).await.unwrap();
		let started = Instant::now();
		let err = open(&link_b, &TestClock::new(3_600_000)).await.expect_err("A is alive");
		assert!(matches!(err, ConfigError::LeaseHeld { .. }), "{err}");
		assert!(err.to_string().contains("renewed while this instance watched"), "{err}");
		assert!(started.elapsed() >= TTL + SKEW, "it watched: {:?}", started.elapsed());
		assert!(a.writer_lease().unwrap().is_held());
		write(&a, "k", "A").await.unwrap();
	});
}

/// Each failure says what happened and what to do: a server answering 500 or nothing at build
/// (within the store's retry policy, not "changed hands"); renewals whose answers were lost
/// (the lease still names this instance); a lease within the skew allowance of its expiry.
#[test]
fn failures_say_what_happened() {
	paused(async {
		let (_net, link, _) = world();
		let clock = TestClock::new(0);
		link.fail_with(Some(|| object_store::Error::Generic {
			store: "S3",
			source: "Server returned non-2xx status code: 500 Internal Server Error: ".into(),
		}));
		let policy = retry(3, Duration::from_secs(2));
		let started = Instant::now();
		let err = builder(&link, &clock, policy.clone()).build_async().await.unwrap_err();
		let text = err.to_string();
		assert!(text.contains("after 3 attempt(s)") && text.contains("500"), "{text}");
		assert!(!text.contains("changed hands"), "{text}");
		assert!(
			started.elapsed() <= policy.max_elapsed + policy.attempt_timeout,
			"{:?}",
			started.elapsed()
		);

		link.fail_with(None);
		link.partition(true);
		let err = builder(&link, &clock, policy.clone()).build_async().await.unwrap_err();
		let text = err.to_string();
		assert!(text.contains("after 3 attempt(s)") && text.contains("timed out"), "{text}");
		link.partition(false);

		// Renewals land, their answers are lost.
		let a = open(&link, &clock).await.unwrap();
		let lease = a.writer_lease().unwrap();
		link.lose_lease_answers(true);
		lease.lost().await;
		sleep(Duration::from_secs(5)).await;
		let reason = lease.lost_reason().unwrap();
		assert!(
			reason.contains("still names this instance") && reason.contains("no answer"),
			"{reason}"
		);
		link.lose_lease_answers(false);
		drop(a);

		// B within the skew allowance after the expiry of a lease that is not renewed.
		let (_net, link_a, link_b) = world();
		let a = open(&link_a, &TestClock::new(0)).await.unwrap();
		sleep(Duration::from_secs(1)).await;
		a.writer_lease().unwrap().freeze_for_testing(true);
		sleep(TTL + Duration::from_secs(2)).await;
		let err = open(&link_b, &TestClock::new(0)).await.unwrap_err();
		let text = err.to_string();
		assert!(
			text.contains("allowed for clock skew") && text.contains("may still be live"),
			"{text}"
		);
		assert!(text.contains("watches it for"), "{text}");
	});
}
