//! A real flow's `Persist` calls replayed through a real `ChainMonitor` over a store whose PUTs of
//! one update object fail, and the three flows of a pair whose replica fails that way: strict mode
//! async and sync, and lag mode. Each flow body runs on two in-memory copies or on a LocalStack
//! primary and a SeaweedFS replica (the fault injected by a wrapper around the real store).
//! Used by `tests/no_loss.rs` and, for lag mode with the CLI's `replica verify`, `tests/cli.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ldk_object_store::replica::{self, ReplicaMode};
use ldk_object_store::{LoadMode, ObjectKvStore, RetryPolicy, StoreBuilder};
use lightning::chain::chainmonitor::Persist;
use lightning::chain::{ChannelMonitorUpdateStatus, Watch};
use lightning::ln::functional_test_utils::*;
use lightning::util::persist::KVStoreSync;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use super::backends;
use super::dual_flow::*;
use super::watch::wait_until;
use super::wrappers::{Guard, Hook, Hooked, Request};

/// Fails every PUT of one object while `failing` is set.
#[derive(Debug)]
pub struct FailPutsOf {
	suffix: String,
	pub failing: AtomicBool,
	pub failed: AtomicUsize,
}

impl FailPutsOf {
	/// Failing every PUT of update object `fail_id` from the start.
	pub fn update(fail_id: u64) -> Self {
		FailPutsOf {
			suffix: format!("/{fail_id}"),
			failing: AtomicBool::new(true),
			failed: AtomicUsize::new(0),
		}
	}
}

#[async_trait]
impl Hook for FailPutsOf {
	async fn enter(&self, request: Request, path: &ObjectPath) -> object_store::Result<Guard> {
		if request == Request::Put
			&& self.failing.load(Ordering::SeqCst)
			&& path.as_ref().ends_with(&self.suffix)
		{
			self.failed.fetch_add(1, Ordering::SeqCst);
			return Err(object_store::Error::Generic {
				store: "S3",
				source: "injected: Server returned non-2xx status code: 503 Slow Down".into(),
			});
		}
		Ok(Box::new(()))
	}
}

/// Replays a real flow's `Persist` calls through a real `ChainMonitor` over an async persister
/// whose store fails every PUT of update `fail_id` while the hook says so. Returns the chain
/// monitor, the persister and the hook once every call has been made.
pub fn replay_with_failing_update(
	flow: &FlowRecord, fail_id: u64, name: &str,
) -> (Arc<AsyncChainMonitor>, &'static Ours<'static>, Arc<FailPutsOf>) {
	replay_with_failing_update_on(flow, fail_id, |hook| {
		let backend = backends::memory(name).wrapped(|s| Hooked::wrap(s, hook));
		backend.builder().with_retry(quick_retry()).build().unwrap()
	})
}

/// The store gives up quickly, so the persister's own background retries take over.
pub fn quick_retry() -> RetryPolicy {
	RetryPolicy {
		max_attempts: 2,
		initial_backoff: Duration::from_millis(1),
		max_backoff: Duration::from_millis(1),
		..RetryPolicy::default()
	}
}

/// [`replay_with_failing_update`] over the store `build` makes with the hook.
pub fn replay_with_failing_update_on(
	flow: &FlowRecord, fail_id: u64, build: impl FnOnce(Arc<FailPutsOf>) -> ObjectKvStore,
) -> (Arc<AsyncChainMonitor>, &'static Ours<'static>, Arc<FailPutsOf>) {
	let cfg = static_replay_cfg();
	let hook = Arc::new(FailPutsOf::update(fail_id));
	let store = build(Arc::clone(&hook));
	let async_config = config(5, LoadMode::Probe).with_max_retry_backoff(Duration::from_millis(50));
	let (persister, chain_monitor) = async_chain_monitor(&store, cfg, async_config);
	persister.bind_chain_monitor(&chain_monitor);
	watch_recorded_channel(&chain_monitor, flow, cfg);
	for call in &flow.calls[1..] {
		if let Call::Update { update: Some(update), .. } = call {
			let status = chain_monitor.update_channel(flow.channel_id, update);
			assert_eq!(status, ChannelMonitorUpdateStatus::InProgress);
		}
	}
	(chain_monitor, persister, hook)
}

/// Waits until update `fail_id` has failed for longer than the store's retry policy: the
/// persister's health shows it, and it alone is pending in the `ChainMonitor` (the channel waits).
pub fn failing_longer_than_the_store_retries(
	chain_monitor: &AsyncChainMonitor, persister: &Ours<'static>, hook: &FailPutsOf, fail_id: u64,
) {
	wait_until("the failure shows in the health", Duration::from_secs(30), || {
		persister.health().failing_writes == 1
	});
	wait_until("more attempts than the store's own", Duration::from_secs(30), || {
		hook.failed.load(Ordering::SeqCst) > 4
	});
	assert_eq!(pending(chain_monitor), vec![fail_id], "only the failing update is pending");
}

pub fn pending(chain_monitor: &AsyncChainMonitor) -> Vec<u64> {
	chain_monitor.list_pending_monitor_updates().into_values().flatten().collect()
}

pub fn update_ids(flow: &FlowRecord) -> Vec<u64> {
	flow.calls
		.iter()
		.filter_map(|call| match call {
			Call::Update { update: Some(update), .. } => Some(update.update_id),
			_ => None,
		})
		.collect()
}

/// The last update object of the flow: no later full monitor holds it, so only its own write can.
pub fn last_update_object(flow: &FlowRecord) -> u64 {
	let ids = update_ids(flow);
	let last_full = ids.iter().copied().filter(|id| id % 5 == 0).max().unwrap_or(0);
	*ids.iter().filter(|id| **id > last_full).max().expect("an update after the last consolidation")
}

/// The two copies of a pair, as raw object stores, and the prefix the test owns in both.
pub struct Copies {
	pub name: String,
	pub primary: Arc<dyn ObjectStore>,
	pub replica: Arc<dyn ObjectStore>,
	pub prefix: String,
}

/// Two in-memory copies.
pub fn memory_copies() -> Copies {
	Copies {
		name: "memory+memory".into(),
		primary: Arc::new(InMemory::new()),
		replica: Arc::new(InMemory::new()),
		prefix: "node".into(),
	}
}

/// A LocalStack primary and a SeaweedFS replica (real S3 over HTTP), at one fresh prefix, if the
/// environment names both servers; otherwise `None` after printing why `test` skips (a panic
/// with `LDK_OS_TEST_REQUIRE_SERVERS=1`).
pub fn server_copies(test: &str) -> Option<Copies> {
	let primary = backends::s3("LOCALSTACK", test)?;
	let replica = backends::s3("SEAWEEDFS", test)?;
	Some(Copies {
		name: "localstack+seaweedfs".into(),
		primary: primary.object_store,
		replica: replica.object_store,
		prefix: primary.prefix,
	})
}

/// The pair over `copies`, the replica's requests through `hook`, in `mode`; and a view of each
/// copy.
pub fn pair_failing_on_replica(
	copies: &Copies, hook: Arc<FailPutsOf>, mode: ReplicaMode,
) -> (ObjectKvStore, ObjectKvStore, ObjectKvStore) {
	let at = |store: &Arc<dyn ObjectStore>| {
		StoreBuilder::from_store(Arc::clone(store))
			.with_prefix(copies.prefix.clone())
			.with_retry(quick_retry())
	};
	let store = at(&copies.primary)
		.with_replica(at(&Hooked::wrap(Arc::clone(&copies.replica), hook)))
		.with_replica_mode(mode)
		.build()
		.unwrap();
	let view = |store: &Arc<dyn ObjectStore>| at(store).without_writer_lease().build().unwrap();
	(store, view(&copies.primary), view(&copies.replica))
}

/// The update objects of the flow's channel on a copy.
pub fn update_objects(copy: &ObjectKvStore) -> BTreeMap<String, Vec<u8>> {
	let monitors = KVStoreSync::list(copy, "monitors", "").unwrap();
	let [monitor] = &monitors[..] else { panic!("one monitor: {monitors:?}") };
	let ids = KVStoreSync::list(copy, "monitor_updates", monitor).unwrap();
	ids.into_iter()
		.map(|id| {
			let bytes = KVStoreSync::read(copy, "monitor_updates", monitor, &id).unwrap();
			(id, bytes)
		})
		.collect()
}

/// Strict mode, async: an update the replica does not take stays in progress in the real
/// `ChainMonitor` (the channel waits, as LDK's contract for `InProgress` says), although the
/// primary holds it, and `health()` names the replica; once the replica takes it, LDK is told,
/// and both copies hold it.
pub fn strict_async_flow(copies: &Copies) {
	let flow = run_dual_flow(backends::memory);
	let fail_id = last_update_object(&flow);
	let mut views = None;
	let (chain_monitor, persister, hook) = replay_with_failing_update_on(&flow, fail_id, |hook| {
		let (store, primary, replica) = pair_failing_on_replica(copies, hook, ReplicaMode::Strict);
		views = Some((primary, replica));
		store
	});
	let (primary, replica) = views.unwrap();

	failing_longer_than_the_store_retries(&chain_monitor, persister, &hook, fail_id);
	let health = persister.health();
	let error = health.last_error.clone().unwrap_or_default();
	assert!(error.contains(&format!("/{fail_id}")) && error.contains("replica"), "{health:?}");
	let id = fail_id.to_string();
	assert!(update_objects(&primary).contains_key(&id), "{}: the primary took it", copies.name);
	assert!(!update_objects(&replica).contains_key(&id), "{}: the replica did not", copies.name);

	hook.failing.store(false, Ordering::SeqCst);
	wait_until("the channel's pending updates drain", Duration::from_secs(30), || {
		pending(&chain_monitor).is_empty()
	});
	persister.flush_blocking();
	assert!(persister.health().is_healthy(), "{:?}", persister.health());
	assert_eq!(update_objects(&primary), update_objects(&replica));
	let runtime = tokio::runtime::Runtime::new().unwrap();
	let found = runtime.block_on(replica::compare(&primary, &replica, |_, _| {})).unwrap();
	assert!(found.is_empty(), "{}: {found:?}", copies.name);
}

/// Strict mode, sync: a monitor update the replica does not take is never reported `Completed`:
/// the call returns `UnrecoverableError`, on which LDK stops the node (a sync persister cannot
/// retry later); every call reported `Completed` is on both copies.
pub fn strict_sync_flow(copies: &Copies) {
	let flow = run_dual_flow(backends::memory);
	let fail_id = last_update_object(&flow);
	let hook = Arc::new(FailPutsOf::update(fail_id));
	let (store, primary, replica) =
		pair_failing_on_replica(copies, Arc::clone(&hook), ReplicaMode::Strict);
	let mut cfgs = create_chanmon_cfgs(1);
	cfgs[0].keys_manager = replay_keys();
	let persister = ours(&store, &cfgs[0], config(5, LoadMode::Probe));
	let mut completed = Vec::new();
	for call in &flow.calls {
		let (status, id) = match call {
			Call::New { name, monitor } => {
				let monitor = decode(monitor, &cfgs[0].keys_manager);
				(persister.persist_new_channel(*name, &monitor), None)
			},
			Call::Update { name, update, monitor } => {
				let monitor = decode(monitor, &cfgs[0].keys_manager);
				let status = persister.update_persisted_channel(*name, update.as_ref(), &monitor);
				(status, update.as_ref().map(|update| update.update_id))
			},
		};
		if id == Some(fail_id) {
			assert_eq!(status, ChannelMonitorUpdateStatus::UnrecoverableError);
			assert!(hook.failed.load(Ordering::SeqCst) > 0);
			break;
		}
		assert_eq!(status, ChannelMonitorUpdateStatus::Completed, "{}: {id:?}", copies.name);
		completed.extend(id);
	}
	assert!(!completed.is_empty());
	assert!(!update_objects(&replica).contains_key(&fail_id.to_string()));
	// Whatever was reported complete is on both copies: nothing but the failed update differs.
	let runtime = tokio::runtime::Runtime::new().unwrap();
	let found = runtime.block_on(replica::compare(&primary, &replica, |_, _| {})).unwrap();
	let keys: Vec<_> = found.iter().map(|difference| difference.key.clone()).collect();
	assert!(
		keys.iter().all(|key| key.ends_with(&format!("/{fail_id}"))),
		"{}: only the failed update differs: {keys:?}",
		copies.name
	);
}

/// What a lag-mode flow shows while the replica fails: the keys its journal names (as
/// `primary_namespace/secondary_namespace/key`) and the update whose write the replica failed.
pub struct Lagging<'a> {
	pub store: &'a ObjectKvStore,
	pub journal: Vec<String>,
	pub fail_id: u64,
}

/// `LagWhenUnreachable`, async: an update the replica does not take is reported complete once
/// the primary holds it; the replica is recorded stale with the key in the journal
/// (`replica_health()` shows the lag), and when it takes writes again it catches up and both
/// copies are equal. `while_lagging` runs while the replica still fails (after the checks above),
/// `caught_up` after the catch-up, both while the store still runs.
pub fn lag_flow(
	copies: &Copies, while_lagging: impl FnOnce(&Lagging), caught_up: impl FnOnce(&ObjectKvStore),
) {
	let flow = run_dual_flow(backends::memory);
	let fail_id = last_update_object(&flow);
	let mut views = None;
	let mut pair = None;
	let (chain_monitor, persister, hook) = replay_with_failing_update_on(&flow, fail_id, |hook| {
		let (store, primary, replica) =
			pair_failing_on_replica(copies, hook, ReplicaMode::LagWhenUnreachable);
		views = Some((primary, replica));
		pair = Some(store.clone());
		store
	});
	let ((primary, replica), store) = (views.unwrap(), pair.unwrap());

	wait_until("the channel's pending updates drain", Duration::from_secs(30), || {
		pending(&chain_monitor).is_empty()
	});
	assert!(hook.failed.load(Ordering::SeqCst) > 0, "the replica never failed the update");
	// Stale; or still filling, where the first fill of the empty replica (which runs beside the
	// flow) had not ended when the replica began to fail, as on the servers.
	let health = store.replica_health().unwrap();
	assert_ne!(health.sync, replica::SyncState::InSync, "{}: {health:?}", copies.name);
	assert!(health.lag_keys >= 1, "{}: {health:?}", copies.name);
	let runtime = tokio::runtime::Runtime::new().unwrap();
	let journal = runtime.block_on(replica::journal(&primary)).unwrap();
	let journal: Vec<String> = journal.iter().map(|key| key.to_string()).collect();
	assert!(journal.iter().any(|key| key.ends_with(&format!("/{fail_id}"))), "{journal:?}");
	assert!(
		!update_objects(&replica).contains_key(&fail_id.to_string()),
		"{}: the replica lacks the update while it fails",
		copies.name
	);
	while_lagging(&Lagging { store: &store, journal, fail_id });

	hook.failing.store(false, Ordering::SeqCst);
	let health = runtime
		.block_on(async {
			tokio::time::timeout(Duration::from_secs(120), store.replica_in_sync(|_| {})).await
		})
		.expect("caught up within 120 s")
		.unwrap();
	assert_eq!(health.sync, replica::SyncState::InSync);
	assert_eq!(store.replica_health().unwrap().lag_keys, 0, "{:?}", store.replica_health());
	persister.flush_blocking();
	let found = runtime.block_on(replica::compare(&primary, &replica, |_, _| {})).unwrap();
	assert!(found.is_empty(), "{}: {found:?}", copies.name);
	caught_up(&store);
}
