//! Failures of the backend, injected by wrappers around real stores: a missing object answered with
//! 403 or 500 is never "not found", transient failures are retried, and the bounds on requests in
//! flight hold.
//!
//! The stores here are built without the writer lease: these tests count requests and open
//! several instances per prefix, and the lease's own requests would go through the same fault
//! wrappers. The LDK flow at the end keeps the lease on, faults included.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::backends::{self, Backend};
use common::wrappers::{CountInFlight, FailFirst, Hooked, InFlight, MissingAnswers};
use futures::future::join_all;
use ldk_object_store::{FailureKind, RetryPolicy};
use lightning::io::ErrorKind;
use lightning::util::persist::{KVStore, KVStoreSync};

fn quick_retries(max_attempts: u32) -> RetryPolicy {
	RetryPolicy {
		max_attempts,
		initial_backoff: Duration::from_millis(1),
		max_backoff: Duration::from_millis(5),
		max_elapsed: Duration::from_secs(30),
		attempt_timeout: Duration::from_secs(10),
	}
}

/// A read of a missing object that the backend answers with 403 or 500 fails with that, and the
/// message names the operation and the key; only the real absence is `NotFound`.
fn missing_answered_with_errors_is_never_not_found(backend: &Backend) {
	let plain = backend.reader();
	assert_eq!(
		KVStoreSync::read(&plain, "monitors", "", "absent").unwrap_err().kind(),
		ErrorKind::NotFound
	);

	for (answer, kind) in [
		(MissingAnswers::Forbidden, ErrorKind::PermissionDenied),
		(MissingAnswers::ServerError, ErrorKind::Other),
	] {
		let faulty = backend.wrapped(|s| Hooked::wrap(s, Arc::new(answer)));
		let store =
			faulty.builder().with_retry(quick_retries(3)).without_writer_lease().build().unwrap();
		let err = KVStoreSync::read(&store, "monitors", "", "absent").unwrap_err();
		assert_eq!(err.kind(), kind, "{err}");
		let message = err.to_string();
		assert!(message.contains("read of monitors//absent"), "{message}");
		let inner =
			err.get_ref().and_then(|e| e.downcast_ref::<ldk_object_store::Error>()).unwrap();
		assert_ne!(inner.failure_kind(), Some(FailureKind::NotFound));
		// Present objects still read through the same wrapper.
		KVStoreSync::write(&store, "monitors", "", "present", vec![7]).unwrap();
		assert_eq!(KVStoreSync::read(&store, "monitors", "", "present").unwrap(), vec![7]);
	}
}

#[test]
fn strict_not_found_memory() {
	missing_answered_with_errors_is_never_not_found(&backends::memory("strict"));
}

#[test]
fn strict_not_found_localstack() {
	if let Some(backend) = backends::s3("LOCALSTACK", "strict") {
		missing_answered_with_errors_is_never_not_found(&backend);
	}
}

/// SeaweedFS checks signatures: a client with a wrong secret gets a real 403 from a real server,
/// for a key that does not exist too.
#[test]
fn wrong_credentials_on_a_real_server_are_not_not_found() {
	let (Ok(url), Ok(endpoint)) = (
		std::env::var("LDK_OS_TEST_SEAWEEDFS_URL"),
		std::env::var("LDK_OS_TEST_SEAWEEDFS_ENDPOINT"),
	) else {
		assert!(backends::s3("SEAWEEDFS", "credentials").is_none());
		return;
	};
	let store = ldk_object_store::StoreBuilder::from_url(format!("{url}/wrong-credentials"))
		.with_option("aws_endpoint", endpoint)
		.with_option("aws_allow_http", "true")
		.with_option("aws_access_key_id", "test")
		.with_option("aws_secret_access_key", "not-the-secret")
		.with_retry(quick_retries(2))
		.without_writer_lease()
		.build()
		.unwrap();
	for err in [
		KVStoreSync::read(&store, "monitors", "", "absent").unwrap_err(),
		KVStoreSync::list(&store, "monitors", "").unwrap_err(),
	] {
		assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
	}
	let err = KVStoreSync::write(&store, "monitors", "", "k", vec![1]).unwrap_err();
	assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
	assert!(!err.to_string().contains("not-the-secret"), "the secret leaked: {err}");
}

/// Transient failures are retried until they pass; without retries they surface as errors that
/// are not `NotFound`.
fn transient_failures_are_retried(backend: &Backend) {
	let faults = FailFirst::new(3);
	let flaky = backend.wrapped(|s| Hooked::wrap(s, Arc::clone(&faults)));
	let store =
		flaky.builder().with_retry(quick_retries(5)).without_writer_lease().build().unwrap();
	KVStoreSync::write(&store, "p", "", "k", vec![1]).unwrap();
	assert_eq!(faults.requests.load(Ordering::SeqCst), 4, "3 failures, then the write");
	assert_eq!(KVStoreSync::read(&store, "p", "", "k").unwrap(), vec![1]);

	let faults = FailFirst::new(1);
	let flaky = backend.wrapped(|s| Hooked::wrap(s, Arc::clone(&faults)));
	let store =
		flaky.builder().with_retry(RetryPolicy::none()).without_writer_lease().build().unwrap();
	let err = KVStoreSync::read(&store, "p", "", "absent").unwrap_err();
	assert_eq!(err.kind(), ErrorKind::Other, "{err}");
	assert!(err.to_string().contains("read of p//absent failed after 1 attempt(s)"), "{err}");
	assert!(err.to_string().contains("503"), "{err}");
}

/// The S3-like model's `503 SlowDown` past a partition's rate (`store_models::S3LikeStore`) is
/// transient for this crate: its retry policy carries every write through, the model saw the
/// throttled attempts, and nothing is lost.
#[test]
fn s3_model_slow_down_is_retried() {
	use store_models::{Clock, Kind, S3LikeStore, S3Model, S3Params};
	let slow_down = store_models::slow_down(Kind::Put, "");
	assert_eq!(FailureKind::of(&slow_down), FailureKind::Backend);
	assert!(FailureKind::of(&slow_down).is_transient());

	// 20 writes per second with room for 2 at once; 1 ms requests.
	let model = S3Model::new(S3Params {
		writes_per_sec: 20.0,
		burst: Duration::from_millis(100),
		median: Duration::from_millis(1),
		p99: Duration::from_millis(2),
		clock: Clock::Thread,
		..S3Params::default()
	});
	let backend =
		backends::memory("s3-model").wrapped(|s| S3LikeStore::wrap(s, Arc::clone(&model)));
	let retry = RetryPolicy {
		max_attempts: 30,
		initial_backoff: Duration::from_millis(20),
		max_backoff: Duration::from_millis(100),
		max_elapsed: Duration::from_secs(30),
		attempt_timeout: Duration::from_secs(10),
	};
	let store = backend.builder().with_retry(retry).without_writer_lease().build().unwrap();
	let writes: Vec<_> =
		(0..8u8).map(|i| KVStore::write(&store, "p", "", &format!("k{i}"), vec![i])).collect();
	for result in futures::executor::block_on(join_all(writes)) {
		result.unwrap();
	}
	let counts = model.counts();
	assert!(counts.throttled[Kind::Put.index()] > 0, "{counts:?}");
	for i in 0..8u8 {
		assert_eq!(KVStoreSync::read(&store, "p", "", &format!("k{i}")).unwrap(), vec![i]);
	}
}

#[test]
fn retries_memory() {
	transient_failures_are_retried(&backends::memory("retries"));
}

#[test]
fn retries_localstack() {
	if let Some(backend) = backends::s3("LOCALSTACK", "retries") {
		transient_failures_are_retried(&backend);
	}
}

/// Never more requests in flight than configured, and never two for one key, while many
/// operations on a few keys and many keys run at once.
async fn bounds_hold(backend: &Backend) {
	let counter = Arc::new(InFlight::default());
	let counted =
		backend.wrapped(|s| Hooked::wrap(s, Arc::new(CountInFlight(Arc::clone(&counter)))));
	let store = counted.builder().with_max_in_flight(4).without_writer_lease().build().unwrap();
	let mut futures = Vec::new();
	for i in 0..300 {
		let key = format!("k{}", i % 12);
		futures.push(KVStore::write(&store, "bounds", "", &key, vec![i as u8]));
		if i % 5 == 0 {
			futures.push(KVStore::remove(&store, "bounds", "", &key, true));
		}
	}
	for result in join_all(futures).await {
		result.unwrap();
	}
	let (max_total, max_per_key) = counter.maxima();
	assert!(counter.requests() >= 300);
	assert_eq!(
		max_total,
		4,
		"the bound of 4 was {}",
		if max_total > 4 { "exceeded" } else { "never reached" }
	);
	assert_eq!(max_per_key, 1, "two requests for one key were in flight at once");
}

#[tokio::test]
async fn bounds_memory() {
	bounds_hold(&backends::memory("bounds")).await;
}

#[tokio::test]
async fn bounds_localstack() {
	if let Some(backend) = backends::s3("LOCALSTACK", "bounds") {
		bounds_hold(&backend).await;
	}
}

use common::wrappers::{Fault, FaultInjector};
use std::collections::{BTreeMap, BTreeSet};

const TRANSIENT_FAULTS: [Fault; 7] = [
	Fault::ServerError,
	Fault::SlowDown,
	Fault::Timeout,
	Fault::Reset,
	Fault::Slow,
	Fault::Stall,
	Fault::LandedButFailed,
];

/// Retries for a faulty store: enough attempts that transient faults at 10% almost never exhaust
/// them, short pauses, and an attempt timeout that ends stalled requests quickly.
fn fault_tolerant() -> RetryPolicy {
	RetryPolicy {
		max_attempts: 8,
		initial_backoff: Duration::from_millis(2),
		max_backoff: Duration::from_millis(20),
		max_elapsed: Duration::from_secs(60),
		attempt_timeout: Duration::from_millis(500),
	}
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum State {
	Absent,
	Value(Vec<u8>),
}

/// What a key may hold after a sequence of calls: the effect of the last successful one, or of
/// any failed call after it (a failed write may still have landed).
/// One write (`Some`) or remove (`None`) and whether it succeeded.
type Attempted = (Option<Vec<u8>>, bool);

fn allowed(history: &[Attempted]) -> BTreeSet<State> {
	let last_ok = history.iter().rposition(|(_, ok)| *ok);
	let effect = |op: &Option<Vec<u8>>| match op {
		Some(v) => State::Value(v.clone()),
		None => State::Absent,
	};
	let mut states = BTreeSet::new();
	match last_ok {
		Some(i) => states.insert(effect(&history[i].0)),
		None => states.insert(State::Absent),
	};
	for (op, _) in &history[last_ok.map_or(0, |i| i + 1)..] {
		states.insert(effect(op));
	}
	states
}

/// Random writes, removes and reads on 40 keys through a store whose backend fails `rate` of the
/// requests with `kinds`. Every call either succeeds or returns an error (never a wrong
/// "not found"); every read and the final state match a model of the calls; nothing acknowledged
/// is lost. Returns the report line.
/// Keys the operations of [`run_with_faults`] share: each gets 10 to 20 operations in a row. (A
/// write or remove whose attempt stalls ends only after the safety margin, since a given-up
/// request may still land: long chains on few keys would make the test wait out many margins in
/// a row.)
const KEYS: usize = 200;

async fn run_with_faults(backend: &Backend, ops: usize, rate: f64, kinds: &[Fault]) -> String {
	let faults = FaultInjector::new(rate, kinds);
	let faulty = backend.wrapped(|s| Hooked::wrap(s, Arc::clone(&faults)));
	let store =
		faulty.builder().with_retry(fault_tolerant()).without_writer_lease().build().unwrap();

	enum Call {
		Write(String, Vec<u8>),
		Remove(String),
		Read(String),
	}
	type CallFuture = std::pin::Pin<
		Box<dyn std::future::Future<Output = Result<Option<Vec<u8>>, lightning::io::Error>> + Send>,
	>;
	let mut calls = Vec::new();
	let mut futures: Vec<CallFuture> = Vec::new();
	for i in 0..ops {
		let key = format!("k{}", fastrand::usize(..KEYS));
		let (call, future) = match fastrand::u8(..10) {
			0..=4 => {
				let value = format!("{key}={i}").into_bytes();
				let f = KVStore::write(&store, "faults", "", &key, value.clone());
				(
					Call::Write(key, value),
					Box::pin(async move { f.await.map(|()| None) }) as CallFuture,
				)
			},
			5..=6 => {
				let f = KVStore::remove(&store, "faults", "", &key, fastrand::bool());
				(Call::Remove(key), Box::pin(async move { f.await.map(|()| None) }) as CallFuture)
			},
			_ => {
				let f = KVStore::read(&store, "faults", "", &key);
				(Call::Read(key), Box::pin(async move { f.await.map(Some) }) as CallFuture)
			},
		};
		calls.push(call);
		futures.push(future);
	}
	let outcomes = join_all(futures).await;

	let mut history: BTreeMap<String, Vec<Attempted>> = BTreeMap::new();
	let (mut failures, mut losses, mut wrong_not_found) = (0, 0, 0);
	for (call, outcome) in calls.iter().zip(&outcomes) {
		// A read of an absent key is an answer, not a failure.
		let absent = matches!(call, Call::Read(_))
			&& matches!(outcome, Err(e) if e.kind() == ErrorKind::NotFound);
		if let (Err(e), false) = (outcome, absent) {
			failures += 1;
			assert!(e.to_string().contains("faults/"), "a surfaced failure must name the key: {e}");
		}
		match call {
			Call::Write(key, value) => {
				history.entry(key.clone()).or_default().push((Some(value.clone()), outcome.is_ok()))
			},
			Call::Remove(key) => {
				history.entry(key.clone()).or_default().push((None, outcome.is_ok()))
			},
			Call::Read(key) => {
				let states = allowed(history.get(key).map_or(&[][..], Vec::as_slice));
				match outcome {
					Ok(Some(value)) if !states.contains(&State::Value(value.clone())) => {
						losses += 1
					},
					Err(e)
						if e.kind() == ErrorKind::NotFound && !states.contains(&State::Absent) =>
					{
						wrong_not_found += 1
					},
					_ => {},
				}
			},
		}
	}
	// The final state, read without faults.
	let clean = backend.reader();
	for (key, calls) in &history {
		let state = match KVStoreSync::read(&clean, "faults", "", key) {
			Ok(value) => State::Value(value),
			Err(e) if e.kind() == ErrorKind::NotFound => State::Absent,
			Err(e) => panic!("reading {key} without faults: {e}"),
		};
		if !allowed(calls).contains(&state) {
			losses += 1;
		}
	}
	let requests = faults.requests.load(Ordering::SeqCst);
	let report = format!(
		"{}: {ops} operations, {requests} requests, {} faults injected {:?}, {} retries, {failures} \
		 failures surfaced, {wrong_not_found} wrong NotFound, {losses} losses",
		backend.name,
		faults.total_injected(),
		faults.injected().into_iter().collect::<BTreeMap<_, _>>(),
		requests.saturating_sub(ops),
	);
	println!("{report}");
	assert_eq!(losses, 0, "{report}");
	assert_eq!(wrong_not_found, 0, "{report}");
	report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_faults_memory() {
	let backend = backends::memory("faults");
	let all = [&TRANSIENT_FAULTS[..], &[Fault::Forbidden]].concat();
	run_with_faults(&backend, 4000, 0.10, &all).await;
	// Transient faults alone never reach the caller with these retries.
	let report = run_with_faults(&backend.fresh("transient"), 2000, 0.10, &TRANSIENT_FAULTS).await;
	assert!(report.contains(" 0 failures surfaced"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_faults_localstack() {
	if let Some(backend) = backends::s3("LOCALSTACK", "faults") {
		let all = [&TRANSIENT_FAULTS[..], &[Fault::Forbidden]].concat();
		run_with_faults(&backend, 1000, 0.10, &all).await;
	}
}

/// A real LDK flow (channel, payments, force-close) whose monitor persister writes through a
/// backend that fails 10% of requests with transient faults: every `Persist` call completes
/// (retries absorb the faults), and every reload equals the live monitors.
#[test]
fn ldk_flow_with_ten_percent_faults() {
	use common::dual_flow::dual_flow;
	let faults = FaultInjector::new(0.10, &TRANSIENT_FAULTS);
	let faulty = |name: &str| {
		let f = Arc::clone(&faults);
		backends::memory(name)
			.wrapped(|s| Hooked::wrap(s, f))
			.tuned(|b| b.with_retry(fault_tolerant()))
	};
	dual_flow(
		&[backends::memory("l0"), backends::memory("l1")],
		&[faulty("o0"), faulty("o1")],
		5,
		20,
	);
	println!(
		"LDK flow: {} requests, {} faults injected {:?}",
		faults.requests.load(Ordering::SeqCst),
		faults.total_injected(),
		faults.injected()
	);
	assert!(faults.total_injected() >= 5, "too few faults to mean anything");
}
