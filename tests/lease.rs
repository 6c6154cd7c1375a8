//! One writer per prefix: the writer lease, in memory and on every server the environment offers
//! (LocalStack, SeaweedFS, MinIO, Azurite).
//!
//! - a second instance is refused at start, every time, also when both start at the same moment;
//! - a frozen holder is taken over after expiry, and when it resumes its very next write and
//!   remove are refused, its signal fires, and nothing of its successor's is touched;
//! - clocks skewed within the documented bound change none of that;
//! - `file://` stores get the same from an OS lock; backends that cannot replace conditionally
//!   are refused at build with advice.

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::backends::{self, Backend};
use ldk_object_store::lease::{LeaseConfig, TestClock, LEASE_OBJECT};
use ldk_object_store::{ConfigError, FailureKind, ObjectKvStore, StoreBuilder};
use lightning::util::persist::{KVStoreSync, MigratableKVStore};

/// Short timings so that expiry happens within a test: 2 s to live, renewal every 0.67 s,
/// trusted for 1.3 s after a renewal is sent, 0.5 s skew allowance.
fn short() -> LeaseConfig {
	LeaseConfig::default()
		.with_ttl(Duration::from_secs(2))
		.with_safety_margin(Duration::from_millis(700))
		.with_clock_skew(Duration::from_millis(500))
}

fn open(backend: &Backend, config: LeaseConfig) -> Result<ObjectKvStore, ConfigError> {
	backend.builder().with_writer_lease(config).build()
}

fn failure_kind(err: &lightning::io::Error) -> Option<FailureKind> {
	err.get_ref()
		.and_then(|e| e.downcast_ref::<ldk_object_store::Error>())
		.and_then(|e| e.failure_kind())
}

fn assert_lease_lost(result: Result<(), lightning::io::Error>, what: &str) {
	let err = result.expect_err(what);
	assert_eq!(failure_kind(&err), Some(FailureKind::LeaseLost), "{what}: {err}");
	assert!(err.to_string().contains("writer lease"), "{what}: {err}");
}

fn servers(test: &str) -> Vec<Backend> {
	let mut all: Vec<Backend> =
		backends::S3_SERVERS.iter().filter_map(|server| backends::s3(server, test)).collect();
	all.extend(backends::azurite(test));
	all
}

fn second_instance_is_refused(backend: &Backend) {
	println!("second instance on {}", backend.name);
	let first = backend.store();
	let lease = first.writer_lease().expect("the lease is on by default");
	assert!(lease.is_held());
	first.write("", "", "manager", b"A".to_vec()).unwrap();
	for _ in 0..3 {
		let err = backend.builder().build().expect_err("a second instance must be refused");
		let text = err.to_string();
		assert!(matches!(err, ConfigError::LeaseHeld { .. }), "{text}");
		assert!(text.contains(&lease.info().instance), "the error names the holder: {text}");
		assert!(text.contains("generation 1") && text.contains("unix time"), "{text}");
	}
	// The lease object is not a key: listings leave it out.
	assert_eq!(first.list("", "").unwrap(), ["manager"]);
	assert_eq!(first.list_all_keys().unwrap().len(), 1);
	let inventory =
		futures::executor::block_on(ldk_object_store::inspect::Inventory::scan(&first)).unwrap();
	assert_eq!(inventory.namespaces.values().map(|n| n.keys).sum::<usize>(), 1);

	// A clean release lets the next instance start at once, one generation later.
	first.close_blocking();
	assert!(!lease.is_held());
	assert_lease_lost(first.write("", "", "manager", b"late".to_vec()), "a write after release");
	let second = backend.store();
	assert_eq!(second.writer_lease().unwrap().info().generation, 2);
	assert_eq!(second.read("", "", "manager").unwrap(), b"A");
	// Dropping the last clone releases too.
	let clone = second.clone();
	drop(second);
	assert!(backend.builder().build().is_err(), "a clone still holds it");
	drop(clone);
	let third = backend.store();
	assert_eq!(third.writer_lease().unwrap().info().generation, 3);
}

#[test]
fn second_instance_is_refused_memory() {
	second_instance_is_refused(&backends::memory("lease-second"));
}

#[test]
fn second_instance_is_refused_servers() {
	for backend in servers("lease-second") {
		second_instance_is_refused(&backend);
	}
}

/// Two instances released by a barrier at the same moment: exactly one starts, every round.
fn simultaneous_starts(backend: &Backend, rounds: usize) {
	println!("simultaneous starts on {}", backend.name);
	for round in 0..rounds {
		let fresh = Arc::new(backend.fresh(&format!("round-{round}")));
		let barrier = Arc::new(Barrier::new(2));
		let starts: Vec<_> = (0..2)
			.map(|_| {
				let (fresh, barrier) = (Arc::clone(&fresh), Arc::clone(&barrier));
				std::thread::spawn(move || {
					let builder = fresh.builder();
					barrier.wait();
					builder.build()
				})
			})
			.collect();
		let results: Vec<_> = starts.into_iter().map(|t| t.join().unwrap()).collect();
		let won = results.iter().filter(|r| r.is_ok()).count();
		assert_eq!(won, 1, "round {round}: {won} instances started: {results:?}");
		for result in &results {
			if let Err(err) = result {
				assert!(matches!(err, ConfigError::LeaseHeld { .. }), "round {round}: {err}");
			}
		}
	}
}

#[test]
fn simultaneous_starts_memory() {
	simultaneous_starts(&backends::memory("lease-race"), 50);
}

#[test]
fn simultaneous_starts_servers() {
	for backend in servers("lease-race") {
		simultaneous_starts(&backend, 20);
	}
}

/// A is frozen (its lease task stops, as in a stopped process); B takes over once the lease
/// expired; when A resumes, its very next write and remove are refused and its signal fires.
/// `skew_ms` offsets B's wall clock (ahead when positive), within the 500 ms allowance.
fn frozen_holder_is_taken_over(backend: &Backend, skew_ms: i64) {
	println!("frozen holder on {} with B's clock off by {skew_ms} ms", backend.name);
	let a = open(backend, short()).unwrap();
	a.write("", "", "manager", b"A1".to_vec()).unwrap();
	a.write("monitors", "", "aa_0", b"monitor A".to_vec()).unwrap();
	let a_lease = a.writer_lease().unwrap();

	// While A renews, B is refused, for several times the lease's life.
	let b_config = short().with_test_clock(TestClock::new(skew_ms));
	let until = Instant::now() + Duration::from_secs(5);
	while Instant::now() < until {
		let err = open(backend, b_config.clone()).expect_err("B must not start while A renews");
		assert!(matches!(err, ConfigError::LeaseHeld { .. }), "{err}");
		a.write("", "", "manager", b"A2".to_vec()).unwrap();
		std::thread::sleep(Duration::from_millis(200));
	}

	a_lease.freeze_for_testing(true);
	let frozen_at = Instant::now();
	let b = loop {
		match open(backend, b_config.clone()) {
			Ok(b) => break b,
			Err(ConfigError::LeaseHeld { .. }) => std::thread::sleep(Duration::from_millis(50)),
			Err(err) => panic!("{err}"),
		}
		assert!(frozen_at.elapsed() < Duration::from_secs(10), "B never took over");
	};
	// Whenever B holds the lease, A no longer trusts its own.
	assert!(!a_lease.is_held(), "B took over while A still trusted its lease");
	let b_lease = b.writer_lease().unwrap();
	assert_eq!(b_lease.info().generation, a_lease.info().generation + 1);
	b.write("", "", "manager", b"B1".to_vec()).unwrap();

	a_lease.freeze_for_testing(false);
	assert_lease_lost(a.write("", "", "manager", b"A3".to_vec()), "A's write after takeover");
	assert_lease_lost(a.remove("monitors", "", "aa_0", false), "A's remove after takeover");
	let fired = std::thread::spawn({
		let a_lease = a_lease.clone();
		move || futures::executor::block_on(a_lease.lost())
	});
	let deadline = Instant::now() + Duration::from_secs(5);
	while !fired.is_finished() {
		assert!(Instant::now() < deadline, "A's lost signal never fired");
		std::thread::sleep(Duration::from_millis(10));
	}
	assert!(a_lease.lost_reason().is_some());
	// Nothing of B's was overwritten or deleted.
	assert_eq!(b.read("", "", "manager").unwrap(), b"B1");
	assert_eq!(b.read("monitors", "", "aa_0").unwrap(), b"monitor A");
	assert!(b_lease.is_held());
	// A's renewal, once resumed, finds the lease in B's hands and leaves it there.
	std::thread::sleep(Duration::from_secs(2));
	assert!(b_lease.is_held());
	b.write("", "", "manager", b"B2".to_vec()).unwrap();
	drop(a);
	assert_eq!(b.read("", "", "manager").unwrap(), b"B2");
	assert!(b_lease.is_held(), "dropping A must not release B's lease");
}

#[test]
fn frozen_holder_memory() {
	frozen_holder_is_taken_over(&backends::memory("lease-frozen"), 0);
}

#[test]
fn frozen_holder_with_skewed_clocks_memory() {
	// B's clock ahead (it would take over early) and behind, by 90% of the allowance.
	frozen_holder_is_taken_over(&backends::memory("lease-skew-ahead"), 450);
	frozen_holder_is_taken_over(&backends::memory("lease-skew-behind"), -450);
}

#[test]
fn frozen_holder_servers() {
	for backend in servers("lease-frozen") {
		frozen_holder_is_taken_over(&backend, 450);
	}
}

/// Fails every put of the lease object once `cut` is set: the backend stays up for everything
/// else, the renewals fail.
#[derive(Debug, Default)]
struct CutRenewals {
	cut: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl common::wrappers::Hook for CutRenewals {
	async fn enter(
		&self, request: common::wrappers::Request, path: &object_store::path::Path,
	) -> object_store::Result<common::wrappers::Guard> {
		let lease = path.filename() == Some(LEASE_OBJECT);
		if self.cut.load(std::sync::atomic::Ordering::SeqCst)
			&& lease && request == common::wrappers::Request::Put
		{
			return Err(object_store::Error::Generic {
				store: "test",
				source: "Server returned non-2xx status code: 503 Service Unavailable".into(),
			});
		}
		Ok(Box::new(()))
	}
}

/// A holder whose renewals fail stops trusting its lease within the time to live minus the
/// margin (1.3 s here), refuses writes from then on, and its signal fires, without any write
/// being needed to notice.
#[test]
fn a_holder_that_cannot_renew_stops_writing() {
	let hook = Arc::new(CutRenewals::default());
	let backend = backends::memory("lease-outage")
		.wrapped(|s| common::wrappers::Hooked::wrap(s, Arc::clone(&hook)));
	let store = open(&backend, short()).unwrap();
	let lease = store.writer_lease().unwrap();
	hook.cut.store(true, std::sync::atomic::Ordering::SeqCst);
	let cut_at = Instant::now();
	futures::executor::block_on(lease.lost());
	assert!(cut_at.elapsed() <= Duration::from_millis(1400), "{:?}", cut_at.elapsed());
	assert!(!lease.is_held());
	assert_lease_lost(store.write("", "", "manager", b"x".to_vec()), "a write past validity");
	assert_lease_lost(store.remove("", "", "manager", false), "a remove past validity");
	// The reason is completed once the lease task has looked at what happened.
	let deadline = Instant::now() + Duration::from_secs(10);
	let reason = loop {
		let reason = lease.lost_reason().unwrap();
		if reason.contains("failed (last:") || Instant::now() > deadline {
			break reason;
		}
		std::thread::sleep(Duration::from_millis(20));
	};
	assert!(reason.contains("no renewal was confirmed") && reason.contains("503"), "{reason}");
}

#[test]
fn file_urls_take_an_os_lock() {
	let dir = tempfile::tempdir().unwrap();
	let url = format!("file://{}/node", dir.path().display());
	let first = StoreBuilder::from_url(&url).create_if_missing(true).build().unwrap();
	first.write("", "", "manager", b"A".to_vec()).unwrap();
	let err = StoreBuilder::from_url(&url).build().expect_err("the lock is held");
	assert!(matches!(err, ConfigError::DirectoryLocked { .. }), "{err}");
	// Told as it is: this process holds it, and there is nothing to wait for or break.
	let text = err.to_string();
	assert!(text.contains("a store of this process") && text.contains("close"), "{text}");
	assert!(!text.contains("--break") && !text.contains("wait for the expiry"), "{text}");
	assert!(ldk_object_store::lease::directory_is_locked(&dir.path().join("node")).unwrap());
	// Another prefix in the same directory is another node.
	StoreBuilder::from_url(&url).with_prefix("other").create_if_missing(true).build().unwrap();
	// The lock file is not a key.
	assert_eq!(first.list("", "").unwrap(), ["manager"]);
	assert_eq!(first.list_all_keys().unwrap().len(), 1);
	drop(first);
	assert!(!ldk_object_store::lease::directory_is_locked(&dir.path().join("node")).unwrap());
	let second = StoreBuilder::from_url(&url).build().unwrap();
	assert_eq!(second.read("", "", "manager").unwrap(), b"A");
	// Fencing cannot work on a local directory: refused by name.
	drop(second);
	let err = StoreBuilder::from_url(&url).with_fencing(true).build().unwrap_err();
	assert!(err.to_string().contains("fencing"), "{err}");

	// Held by another process (util-linux `flock` on the directory): said so, with what to do.
	let node = dir.path().join("node");
	let mut holder = std::process::Command::new("flock")
		.arg("-x")
		.arg(&node)
		.args(["sleep", "30"])
		.spawn()
		.expect("flock(1) runs");
	let deadline = Instant::now() + Duration::from_secs(10);
	while !ldk_object_store::lease::directory_is_locked(&node).unwrap() {
		assert!(Instant::now() < deadline, "flock(1) never took the lock");
		std::thread::sleep(Duration::from_millis(20));
	}
	let err = StoreBuilder::from_url(&url).build().expect_err("another process holds it");
	let text = err.to_string();
	assert!(text.contains("another process") && text.contains("Stop that process"), "{text}");
	holder.kill().unwrap();
	holder.wait().unwrap();
}

/// A `file://` store on a directory that does not exist is refused (an unmounted volume looks
/// like that, and must not read as a new, empty node), unless the caller asked to create it.
#[test]
fn a_missing_directory_is_not_a_new_node() {
	let dir = tempfile::tempdir().unwrap();
	let missing = dir.path().join("unmounted/node");
	let url = format!("file://{}", missing.display());
	let err = StoreBuilder::from_url(&url).build().expect_err("missing directory");
	assert!(matches!(err, ConfigError::MissingDirectory(_)), "{err}");
	let text = err.to_string();
	assert!(text.contains("unmounted") && text.contains("create_if_missing"), "{text}");
	assert!(!missing.exists() && !dir.path().join("unmounted").exists(), "nothing is created");
	// A prefix below an existing directory is the store's directory too.
	let err = StoreBuilder::from_url(format!("file://{}", dir.path().display()))
		.with_prefix("node")
		.build()
		.expect_err("missing prefix directory");
	assert!(matches!(err, ConfigError::MissingDirectory(_)), "{err}");
	let store = StoreBuilder::from_url(&url).create_if_missing(true).build().unwrap();
	store.write("", "", "manager", b"A".to_vec()).unwrap();
	assert!(missing.join("manager").is_file());
}

/// A store built in code over a backend that cannot replace conditionally is refused with
/// advice, and leaves nothing behind; turning the lease off by name builds it.
#[test]
fn backends_without_conditional_replacement_are_refused() {
	let backend = backends::local_dir("lease-local");
	let builder = StoreBuilder::from_store(Arc::clone(&backend.object_store))
		.with_prefix(backend.prefix.clone());
	let err = builder.build().expect_err("a local directory cannot hold a lease object");
	let text = err.to_string();
	assert!(text.contains("without_writer_lease") && text.contains("file://"), "{text}");
	let store = StoreBuilder::from_store(Arc::clone(&backend.object_store))
		.with_prefix(backend.prefix.clone())
		.without_writer_lease()
		.build()
		.unwrap();
	assert!(store.writer_lease().is_none());
	assert!(store.list_all_keys().unwrap().is_empty(), "the failed attempt left an object");
}

/// The lease object's name is outside LDK's alphabet: no key can collide with it.
#[test]
fn the_lease_object_is_not_a_key() {
	assert!(ldk_object_store::keys::KvKey::new("", "", LEASE_OBJECT).is_err());
}

/// A real two-node LDK flow, with restarts, on stores built with the default builder (lease on):
/// no false alarm, and every restart finds the lease released.
#[test]
fn ldk_flow_with_the_lease() {
	use common::dual_flow::dual_flow;
	let on = |name: &str| backends::memory(name);
	dual_flow(&[on("l0"), on("l1")], &[on("o0"), on("o1")], 5, 10);
}

/// Once the lease is lost, the monitor persister stops LDK: sync mode answers
/// `UnrecoverableError`, async mode never reports the update complete.
#[test]
fn a_lost_lease_stops_monitor_persistence() {
	use common::dual_flow::{
		config, decode, ours, ours_async, run_dual_flow, static_replay_cfg, Call,
	};
	use ldk_object_store::{LoadMode, PersistMode};
	use lightning::chain::chainmonitor::Persist;
	use lightning::chain::ChannelMonitorUpdateStatus;
	use lightning::util::test_channel_signer::TestChannelSigner;

	let flow = run_dual_flow(backends::memory);
	let cfg = static_replay_cfg();
	let keys = &cfg.keys_manager;
	let Some(Call::New { name, monitor }) = flow.calls.first() else { panic!("no new channel") };
	let update = flow.calls[1..].iter().find_map(|call| match call {
		Call::Update { update: Some(update), monitor, .. } => Some((update.clone(), monitor)),
		_ => None,
	});
	let (update, updated) = update.expect("an update");

	for mode in [PersistMode::Sync, PersistMode::Async] {
		let backend = backends::memory("lease-persist");
		let store = open(&backend, short()).unwrap();
		let lease = store.writer_lease().unwrap();
		let persister = match mode {
			PersistMode::Sync => ours(&store, cfg, config(5, LoadMode::Probe)),
			PersistMode::Async => ours_async(&store, cfg, config(5, LoadMode::Probe)),
		};
		let status = persister.persist_new_channel(*name, &decode(monitor, keys));
		assert_ne!(status, ChannelMonitorUpdateStatus::UnrecoverableError, "{mode:?}");
		persister.flush_blocking();
		let _ = Persist::<TestChannelSigner>::get_and_clear_completed_updates(&persister);

		// The process stalls past the lease's validity.
		lease.freeze_for_testing(true);
		std::thread::sleep(Duration::from_millis(1400));
		let status =
			persister.update_persisted_channel(*name, Some(&update), &decode(updated, keys));
		match mode {
			PersistMode::Sync => {
				assert_eq!(status, ChannelMonitorUpdateStatus::UnrecoverableError);
			},
			_ => {
				assert_eq!(status, ChannelMonitorUpdateStatus::InProgress);
				persister.flush_blocking();
				std::thread::sleep(Duration::from_millis(200));
				let completed =
					Persist::<TestChannelSigner>::get_and_clear_completed_updates(&persister);
				assert!(completed.is_empty(), "reported complete without the lease: {completed:?}");
			},
		}
		assert!(!lease.is_held());
	}
}

/// Delays every put of data (not of the lease object).
#[derive(Debug)]
struct SlowData(Duration);

#[async_trait::async_trait]
impl common::wrappers::Hook for SlowData {
	async fn enter(
		&self, request: common::wrappers::Request, path: &object_store::path::Path,
	) -> object_store::Result<common::wrappers::Guard> {
		if request == common::wrappers::Request::Put && path.filename() != Some(LEASE_OBJECT) {
			tokio::time::sleep(self.0).await;
		}
		Ok(Box::new(()))
	}
}

/// The last clone of a store dropped inside one of the store's own tasks (here: an async
/// persister's background write, still in flight when the application dropped the persister and
/// its store), on a runtime with a single worker. Closing must not wait on that worker: the
/// lease is released by a thread of its own, long before it could expire.
#[test]
fn the_last_clone_dropped_on_a_store_thread_never_blocks_it() {
	use common::dual_flow::{config, decode, ours_async, run_dual_flow, static_replay_cfg, Call};
	use ldk_object_store::LoadMode;
	use lightning::chain::chainmonitor::Persist;

	let flow = run_dual_flow(backends::memory);
	let cfg = static_replay_cfg();
	let Some(Call::New { name, monitor }) = flow.calls.first() else { panic!("no new channel") };
	let hook = Arc::new(SlowData(Duration::from_millis(500)));
	let backend = backends::memory("drop-on-worker")
		.wrapped(|s| common::wrappers::Hooked::wrap(s, Arc::clone(&hook)));
	let store = backend.builder().with_worker_threads(1).build().unwrap();
	let persister = ours_async(&store, cfg, config(5, LoadMode::Probe));
	persister.persist_new_channel(*name, &decode(monitor, &cfg.keys_manager));
	// The write is in flight for 500 ms; the background task now holds the last clone.
	drop(persister);
	drop(store);
	let reader = backend.reader();
	let deadline = Instant::now() + Duration::from_secs(20);
	loop {
		let held = futures::executor::block_on(ldk_object_store::lease::read_lease(&reader))
			.unwrap()
			.expect("a lease object");
		if held.is_released() {
			break;
		}
		assert!(Instant::now() < deadline, "never released: the store's only worker is blocked");
		std::thread::sleep(Duration::from_millis(20));
	}
	// The next instance starts at once.
	backend.store();
}
