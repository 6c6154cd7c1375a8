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

	// A key the second node has not seen since it started: it takes it for an earlier copy of
	// its own (an earlier run's) and replaces it; the first node, which knows the version it
	// wrote, is refused from then on.
	first.write("monitors", "", "aa_0", b"monitor".to_vec()).unwrap();
	second.write("monitors", "", "aa_0", b"other".to_vec()).unwrap();
	assert_fenced(
		first.write("monitors", "", "aa_0", b"monitor 2".to_vec()),
		"after a blind write",
	);
	assert_eq!(second.read("monitors", "", "aa_0").unwrap(), b"other");

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

	// Another writer is still told apart: its blind write replaces the object (for all it
	// knows an earlier copy of its own), and this store, which knows its own version, is refused
	// from then on.
	let other = fenced(backend);
	other.write("", "", "manager", b"other".to_vec()).unwrap();
	assert_fenced(store.write("", "", "manager", b"v8".to_vec()), "after another writer");
	assert_eq!(store.read("", "", "manager").unwrap(), b"other");
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

/// Fencing is on by default wherever the writer lease is an object lease (it proved the backend
/// honours conditional writes), off for `file://` (which cannot replace conditionally) and
/// without a lease.
#[test]
fn fencing_is_on_by_default_where_the_lease_is_an_object() {
	let backend = backends::memory("default-fencing");
	let store = backend.store();
	store.write("", "", "manager", b"mine".to_vec()).unwrap();
	// Another writer, behind the lease's back.
	backend.reader().write("", "", "manager", b"theirs".to_vec()).unwrap();
	assert_fenced(store.write("", "", "manager", b"mine 2".to_vec()), "the default store");
	drop(store);

	let unleased = backend.fresh("unleased");
	let store = unleased.builder().without_writer_lease().build().unwrap();
	store.write("", "", "manager", b"mine".to_vec()).unwrap();
	unleased.reader().write("", "", "manager", b"theirs".to_vec()).unwrap();
	store.write("", "", "manager", b"mine 2".to_vec()).unwrap();

	let dir = tempfile::tempdir().unwrap();
	let url = format!("file://{}", dir.path().display());
	let store = ldk_object_store::StoreBuilder::from_url(&url).build().unwrap();
	store.write("", "", "manager", b"mine".to_vec()).unwrap();
	store.write("", "", "manager", b"mine 2".to_vec()).unwrap();
}

/// With fencing on (the default), the archive of a channel whose earlier archive crashed between
/// writing `archived_monitors/<key>` and removing `monitors/<key>` finishes in the next run: an
/// earlier copy of our own is not a second writer. In sync and in async mode; in async mode
/// nothing is counted as given up, and consolidation at shutdown succeeds.
#[test]
fn archiving_again_after_a_crash_is_not_fenced() {
	use common::dual_flow::{
		config, decode, ours, ours_async, run_dual_flow, static_replay_cfg, Call,
	};
	use ldk_object_store::{LoadMode, PersistMode};
	use lightning::chain::chainmonitor::Persist;
	use lightning::util::test_channel_signer::TestChannelSigner;

	let flow = run_dual_flow(backends::memory);
	let cfg = static_replay_cfg();
	let Some(Call::New { name, monitor }) = flow.calls.first() else { panic!("no new channel") };
	let key = name.to_string();
	for mode in [PersistMode::Sync, PersistMode::Async] {
		let backend = backends::memory("archive-again");
		{
			let store = backend.store();
			let persister = ours(&store, cfg, config(5, LoadMode::Probe));
			persister.persist_new_channel(*name, &decode(monitor, &cfg.keys_manager));
			// The crash: the archived copy is written, the monitor is not removed yet.
			store
				.write(
					"archived_monitors",
					"",
					&key,
					b"the archive of the run that crashed".to_vec(),
				)
				.unwrap();
		}
		let store = backend.store();
		let persister = match mode {
			PersistMode::Sync => ours(&store, cfg, config(5, LoadMode::Probe)),
			_ => ours_async(&store, cfg, config(5, LoadMode::Probe)),
		};
		Persist::<TestChannelSigner>::archive_persisted_channel(&persister, *name);
		persister.flush_blocking();
		let health = persister.health();
		assert_eq!(health.abandoned_writes, 0, "{mode:?}: {health:?}");
		let missing = store.read("monitors", "", &key).map(|bytes| bytes.len());
		assert!(
			matches!(&missing, Err(e) if e.kind() == ErrorKind::NotFound),
			"{mode:?}: the monitor is still stored, not archived: {missing:?}"
		);
		let archived = store.read("archived_monitors", "", &key).unwrap();
		assert_ne!(archived, b"the archive of the run that crashed", "{mode:?}");
	}
}
