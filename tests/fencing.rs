//! A second writer on the same prefix is refused before it overwrites anything: two store
//! instances with their own memory of versions, as two processes would have, on every backend
//! with conditional writes; our own write landing twice is not mistaken for another writer; and
//! a real LDK flow runs with fencing on without a single false alarm.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::backends::{self, Backend};
use common::wrappers::{Fault, FaultInjector, Hooked};
use ldk_object_store::{FailureKind, ObjectKvStore, RetryPolicy};
use lightning::io::ErrorKind;
use lightning::util::persist::KVStoreSync;

/// A fenced store without the writer lease: these tests are about fencing as the second line of
/// defence, with two writers on one prefix, which the lease (tests/lease.rs) otherwise keeps out.
fn fenced(backend: &Backend) -> ObjectKvStore {
	backend.builder().with_fencing(true).without_writer_lease().build().unwrap()
}

fn failure_kind(err: &lightning::io::Error) -> Option<FailureKind> {
	err.get_ref()
		.and_then(|e| e.downcast_ref::<ldk_object_store::Error>())
		.and_then(|e| e.failure_kind())
}

fn assert_fenced(result: Result<(), lightning::io::Error>, what: &str) {
	let err = result.expect_err(what);
	assert_eq!(failure_kind(&err), Some(FailureKind::Fenced), "{what}: {err}");
	assert_ne!(err.kind(), ErrorKind::NotFound);
	assert!(err.to_string().contains("second node"), "{what}: {err}");
}

fn second_writer_is_refused(backend: &Backend) {
	println!("fencing on {}", backend.name);
	let (first, second) = (fenced(backend), fenced(backend));

	// The first node writes its manager; the second starts and reads it.
	first.write("", "", "manager", b"state 1".to_vec()).unwrap();
	assert_eq!(second.read("", "", "manager").unwrap(), b"state 1");
	// The first node moves on: it knows the version it wrote, so it may replace it.
	first.write("", "", "manager", b"state 2".to_vec()).unwrap();
	// The second node's write is refused, and the first node's state is intact.
	assert_fenced(
		second.write("", "", "manager", b"stale".to_vec()),
		"a write over a changed object",
	);
	assert_eq!(first.read("", "", "manager").unwrap(), b"state 2");

	// A key the second node never read: it may only create it, and it exists.
	first.write("monitors", "", "aa_0", b"monitor".to_vec()).unwrap();
	assert_fenced(second.write("monitors", "", "aa_0", b"other".to_vec()), "a blind write");
	assert_eq!(first.read("monitors", "", "aa_0").unwrap(), b"monitor");

	// Monitor updates are created once: another writer's different update is refused, the same
	// bytes (a replayed update) are fine.
	first.write("monitor_updates", "aa_0", "5", b"update 5".to_vec()).unwrap();
	assert_fenced(second.write("monitor_updates", "aa_0", "5", b"update 5'".to_vec()), "an update");
	second.write("monitor_updates", "aa_0", "5", b"update 5".to_vec()).unwrap();
	assert_eq!(first.read("monitor_updates", "aa_0", "5").unwrap(), b"update 5");

	// After a remove the key may be created again; a writer that still knows the old version
	// is refused.
	first.remove("monitors", "", "aa_0", false).unwrap();
	let third = fenced(backend);
	third.write("monitors", "", "aa_0", b"recreated".to_vec()).unwrap();
	assert_fenced(first.write("monitors", "", "aa_0", b"late".to_vec()), "after a recreation");
}

#[test]
fn second_writer_memory() {
	second_writer_is_refused(&backends::memory("fencing"));
}

#[test]
fn second_writer_s3_servers() {
	for server in ["LOCALSTACK", "SEAWEEDFS", "MINIO"] {
		if let Some(backend) = backends::s3(server, "fencing") {
			second_writer_is_refused(&backend);
		}
	}
}

#[test]
fn second_writer_azurite() {
	if let Some(backend) = backends::azurite("fencing") {
		second_writer_is_refused(&backend);
	}
}

/// A local directory can create objects only once but cannot replace one conditionally: the
/// second write of a key says so instead of writing unconditionally.
#[test]
fn a_local_directory_cannot_fence_replacements() {
	let backend = backends::local_dir("fencing");
	let store = fenced(&backend);
	store.write("", "", "manager", b"one".to_vec()).unwrap();
	let err = store.write("", "", "manager", b"two".to_vec()).unwrap_err();
	assert_eq!(failure_kind(&err), Some(FailureKind::Unsupported), "{err}");
	assert_eq!(store.read("", "", "manager").unwrap(), b"one");
}

/// Every PUT lands but reports a failure the first time: the retry finds its own bytes there and
/// succeeds, rather than taking itself for a second writer.
#[test]
fn our_own_write_landing_twice_is_not_a_second_writer() {
	for backend in [Some(backends::memory("landed")), backends::s3("LOCALSTACK", "landed")]
		.into_iter()
		.flatten()
	{
		let faults = FaultInjector::new(1.0, &[Fault::LandedButFailed]);
		let faulty = backend.wrapped(|s| Hooked::wrap(s, Arc::clone(&faults)));
		let retry = RetryPolicy {
			max_attempts: 3,
			initial_backoff: Duration::from_millis(1),
			max_backoff: Duration::from_millis(2),
			max_elapsed: Duration::from_secs(10),
			attempt_timeout: Duration::from_secs(10),
		};
		// Without the lease: no put here ever reports success, so no lease could be confirmed.
		let store = faulty
			.builder()
			.with_fencing(true)
			.with_retry(retry)
			.without_writer_lease()
			.build()
			.unwrap();
		for round in 0..3u8 {
			store.write("", "", "manager", vec![round]).unwrap();
			store.write("monitor_updates", "aa_0", &round.to_string(), vec![round]).unwrap();
		}
		assert!(faults.total_injected() >= 6);
		assert_eq!(backend.store().read("", "", "manager").unwrap(), vec![2]);
	}
}

/// Reports a failure after the next `n` puts, which do land: a lost answer, or an outage that
/// outlasts the retries.
#[derive(Debug, Default)]
struct LoseAnswers(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl common::wrappers::Hook for LoseAnswers {
	fn after_success(
		&self, request: common::wrappers::Request, path: &object_store::path::Path,
	) -> Option<object_store::Error> {
		use std::sync::atomic::Ordering;
		let lose = request == common::wrappers::Request::Put
			&& self
				.0
				.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
				.is_ok();
		lose.then(|| object_store::Error::Generic {
			store: "test",
			source: format!(
				"Server returned non-2xx status code: 503 Service Unavailable ({path})"
			)
			.into(),
		})
	}
}

/// A write of ours that landed but reported an error, with no retry left to find it: the next
/// writes of that key are ours to make, not a second writer's. Likewise for a remove.
fn landed_but_failed_is_not_a_second_writer(backend: &Backend) {
	println!("lost answers on {}", backend.name);
	let hook = Arc::new(LoseAnswers::default());
	let faulty = backend.wrapped(|s| Hooked::wrap(s, Arc::clone(&hook)));
	let store = faulty
		.builder()
		.with_fencing(true)
		.with_retry(RetryPolicy::none())
		.without_writer_lease()
		.build()
		.unwrap();
	store.write("", "", "manager", b"v1".to_vec()).unwrap();
	hook.0.store(1, std::sync::atomic::Ordering::SeqCst);
	store.write("", "", "manager", b"v2".to_vec()).expect_err("the answer was lost");
	store.write("", "", "manager", b"v3".to_vec()).expect("our own landed write is no alarm");
	store.write("", "", "manager", b"v4".to_vec()).unwrap();
	assert_eq!(store.read("", "", "manager").unwrap(), b"v4");

	// Two lost answers in a row.
	hook.0.store(2, std::sync::atomic::Ordering::SeqCst);
	store.write("", "", "manager", b"v5".to_vec()).unwrap_err();
	store.write("", "", "manager", b"v6".to_vec()).unwrap_err();
	store.write("", "", "manager", b"v7".to_vec()).expect("no alarm after two lost answers");
	assert_eq!(store.read("", "", "manager").unwrap(), b"v7");

	// A key created with its answer lost, then written again.
	hook.0.store(1, std::sync::atomic::Ordering::SeqCst);
	store.write("monitors", "", "aa_0", b"m1".to_vec()).unwrap_err();
	store.write("monitors", "", "aa_0", b"m2".to_vec()).expect("our own create is no alarm");
	assert_eq!(store.read("monitors", "", "aa_0").unwrap(), b"m2");

	// Another writer is still refused.
	let other = fenced(backend);
	other.write("", "", "manager", b"other".to_vec()).unwrap_err();
	assert_eq!(store.read("", "", "manager").unwrap(), b"v7");
}

#[test]
fn landed_but_failed_memory() {
	landed_but_failed_is_not_a_second_writer(&backends::memory("lost-answer"));
}

#[test]
fn landed_but_failed_servers() {
	for server in ["LOCALSTACK", "SEAWEEDFS"] {
		if let Some(backend) = backends::s3(server, "lost-answer") {
			landed_but_failed_is_not_a_second_writer(&backend);
		}
	}
	if let Some(backend) = backends::azurite("lost-answer") {
		landed_but_failed_is_not_a_second_writer(&backend);
	}
}

/// The persister's real traffic (full monitors, updates, consolidation, pruning, reloads) raises
/// no false alarm with fencing on.
#[test]
fn ldk_flow_with_fencing() {
	use common::dual_flow::dual_flow;
	let fencing = |name: &str| backends::memory(name).tuned(|b| b.with_fencing(true));
	dual_flow(&[fencing("l0"), fencing("l1")], &[fencing("o0"), fencing("o1")], 5, 10);
	if let Some(localstack) = backends::s3("LOCALSTACK", "fenced-flow") {
		let on = |b: Backend| b.tuned(|b| b.with_fencing(true));
		let fresh = |label: &str| on(localstack.fresh(label));
		dual_flow(&[fresh("l0"), fresh("l1")], &[fresh("o0"), fresh("o1")], 5, 6);
	}
}
