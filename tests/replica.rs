//! The replica (`ldk_object_store::replica`): what "acknowledged" means with two copies, the fill
//! of a replica added to a running node, promotion, and the starts each copy's record refuses.
//!
//! Fault injection is a wrapper around the real replica store ([`Outage`]); the pairs of real
//! servers run the conformance suite (`tests/conformance.rs`) and the LDK flow below.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::backends::{self, Backend};
use common::ldk_flow::{run_persist_phase, run_restart_phase, FlowOptions, NODE_NAMES};
use common::wrappers::{Guard, Hook, Hooked, RandomLatency, Request};
use ldk_object_store::lease::LeaseConfig;
use ldk_object_store::replica::{self, Role, SyncState};
use ldk_object_store::{ConfigError, FailureKind, ObjectKvStore, RetryPolicy, StoreBuilder};
use lightning::util::persist::{KVStore, KVStoreSync};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

/// Every request fails, as against an unreachable server, while `down` is set.
#[derive(Debug, Default)]
struct Outage {
	down: AtomicBool,
}

#[async_trait]
impl Hook for Outage {
	async fn enter(&self, _request: Request, _path: &Path) -> object_store::Result<Guard> {
		if self.down.load(Ordering::SeqCst) {
			return Err(object_store::Error::Generic {
				store: "S3",
				source: Box::new(std::io::Error::new(
					std::io::ErrorKind::ConnectionRefused,
					"injected: connection refused",
				)),
			});
		}
		Ok(Box::new(()))
	}
}

fn quick_retries() -> RetryPolicy {
	RetryPolicy {
		max_attempts: 3,
		initial_backoff: Duration::from_millis(1),
		max_backoff: Duration::from_millis(5),
		max_elapsed: Duration::from_secs(5),
		attempt_timeout: Duration::from_secs(5),
	}
}

/// A short lease, so that a lost one and a takeover take seconds.
fn short_lease() -> LeaseConfig {
	LeaseConfig::default()
		.with_ttl(Duration::from_secs(2))
		.with_safety_margin(Duration::from_millis(700))
		.with_clock_skew(Duration::from_millis(500))
}

fn memory_pair(test: &str) -> Backend {
	backends::memory(test).paired_with(backends::memory("replica"))
}

/// A pair whose replica is seen through `hook` (by the pair's writer stores only).
fn memory_pair_through(test: &str, hook: Arc<impl Hook>) -> (Backend, Backend) {
	let replica = backends::memory("replica");
	let raw = replica.wrapped(|s| s);
	let seen = replica.wrapped(|s| Hooked::wrap(s, hook));
	(backends::memory(test).paired_with(seen), raw)
}

fn failure_kind(err: &lightning::io::Error) -> Option<FailureKind> {
	err.get_ref()
		.and_then(|e| e.downcast_ref::<ldk_object_store::Error>())
		.and_then(|e| e.failure_kind())
}

fn stored(store: &ObjectKvStore, key: &str) -> Option<Vec<u8>> {
	match KVStoreSync::read(store, "p", "s", key) {
		Ok(data) => Some(data),
		Err(e) if e.kind() == lightning::io::ErrorKind::NotFound => None,
		Err(e) => panic!("reading {key}: {e}"),
	}
}

async fn in_sync(store: &ObjectKvStore) -> replica::ReplicaHealth {
	let waiting = store.replica_in_sync(|_| {});
	tokio::time::timeout(Duration::from_secs(60), waiting)
		.await
		.expect("the replica is in sync within 60 s")
		.expect("the replica gets in sync")
}

async fn records(
	pair: &Backend,
) -> (Option<replica::ReplicaRecord>, Option<replica::ReplicaRecord>) {
	let primary = replica::read_record(&pair.reader()).await.unwrap();
	let replica = replica::read_record(&pair.replica_reader()).await.unwrap();
	(primary, replica)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_write_or_remove_is_on_both_copies() {
	let pair = memory_pair("both");
	let store = pair.store();
	KVStoreSync::write(&store, "p", "s", "a", b"1".to_vec()).unwrap();
	KVStore::write(&store, "p", "s", "b", b"2".to_vec()).await.unwrap();
	for key in ["c", "d", "e"] {
		KVStore::write(&store, "p", "s", key, key.as_bytes().to_vec()).await.unwrap();
	}
	let (primary, replica) = (pair.reader(), pair.replica_reader());
	for copy in [&primary, &replica] {
		assert_eq!(stored(copy, "a").as_deref(), Some(&b"1"[..]));
		assert_eq!(stored(copy, "b").as_deref(), Some(&b"2"[..]));
	}
	KVStoreSync::remove(&store, "p", "s", "a", false).unwrap();
	store.remove_many("p", "s", &["c".into(), "d".into()]).await.unwrap();
	for copy in [&primary, &replica] {
		assert_eq!(stored(copy, "a"), None);
		assert_eq!(stored(copy, "c"), None);
		assert_eq!(stored(copy, "d"), None);
		assert_eq!(stored(copy, "e").as_deref(), Some(&b"e"[..]));
	}
	// A new pair is in sync as soon as its (empty) fill passed.
	assert_eq!(in_sync(&store).await.sync, SyncState::InSync);
	drop(store);
	let (p, r) = records(&pair).await;
	let (p, r) = (p.expect("primary record"), r.expect("replica record"));
	assert_eq!((p.role, p.sync, p.generation), (Role::Primary, SyncState::InSync, 1));
	assert_eq!((r.role, r.sync, r.generation), (Role::Replica, SyncState::InSync, 1));
	pair.assert_copies_equal().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_replica_does_not_take_fails_as_a_primary_failure_would() {
	let outage = Arc::new(Outage::default());
	let (pair, raw_replica) = memory_pair_through("outage", Arc::clone(&outage));
	let store = pair.builder().with_retry(quick_retries()).build().unwrap();
	in_sync(&store).await;
	KVStoreSync::write(&store, "p", "s", "k", b"before".to_vec()).unwrap();
	outage.down.store(true, Ordering::SeqCst);
	let err = KVStoreSync::write(&store, "p", "s", "k", b"during".to_vec())
		.expect_err("a write the replica did not take is not acknowledged");
	let text = err.to_string();
	assert!(text.contains("on the replica"), "the error names the copy: {text}");
	let err = KVStore::remove(&store, "p", "s", "k", false).await.expect_err("nor a remove");
	assert!(err.to_string().contains("on the replica"), "{err}");
	// The replica still holds the last acknowledged value; a retry once it is back succeeds.
	let replica_view = StoreBuilder::from_store(Arc::clone(&raw_replica.object_store))
		.with_prefix(pair.prefix.clone())
		.without_writer_lease()
		.build()
		.unwrap();
	assert_eq!(stored(&replica_view, "k").as_deref(), Some(&b"before"[..]));
	outage.down.store(false, Ordering::SeqCst);
	KVStoreSync::write(&store, "p", "s", "k", b"after".to_vec()).unwrap();
	assert_eq!(stored(&replica_view, "k").as_deref(), Some(&b"after"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_added_to_a_running_node_is_filled_while_writes_go_on() {
	let primary = backends::memory("fill");
	// A node's state on the primary alone, with update objects as the persister writes them.
	let alone = primary.store();
	for i in 0..300u32 {
		KVStoreSync::write(&alone, "p", "s", &format!("k{i}"), i.to_be_bytes().to_vec()).unwrap();
	}
	for i in 0..50u32 {
		let key = format!("{i}");
		KVStoreSync::write(&alone, "monitor_updates", "aa_0", &key, vec![7; 64]).unwrap();
	}
	alone.close().await;
	drop(alone);

	// The replica answers slowly, so the fill is still running while the node writes.
	let slow = Arc::new(RandomLatency { max: Duration::from_millis(3) });
	let replica = backends::memory("replica");
	let replica_raw = replica.wrapped(|s| s);
	let pair = primary.wrapped(|s| s).paired_with(replica.wrapped(|s| Hooked::wrap(s, slow)));
	let store = pair.store();
	let health = store.replica_health().expect("a replica");
	assert_eq!(health.sync, SyncState::Filling, "a new replica is filled first");
	// While it fills: overwrite, remove and add keys, many times over.
	for round in 0..5u32 {
		for i in (0..300u32).step_by(7) {
			let key = format!("k{i}");
			KVStore::write(&store, "p", "s", &key, (round * 1000 + i).to_be_bytes().to_vec())
				.await
				.unwrap();
		}
		for i in (round * 10..round * 10 + 10).map(|i| format!("{i}")) {
			KVStore::remove(&store, "monitor_updates", "aa_0", &i, true).await.unwrap();
		}
		KVStore::write(&store, "p", "s", &format!("new{round}"), vec![round as u8]).await.unwrap();
	}
	let health = in_sync(&store).await;
	assert!(health.copied > 0, "the fill copied the node's state: {health:?}");
	assert!(health.pass >= 2, "a verifying pass ended the fill: {health:?}");
	drop(store);
	let (p, r) = records(&pair).await;
	assert_eq!(p.map(|p| p.sync), Some(SyncState::InSync));
	assert_eq!(r.map(|r| r.sync), Some(SyncState::InSync));
	pair.assert_copies_equal().await;
	// And every last value is the one written last.
	let replica_view = StoreBuilder::from_store(Arc::clone(&replica_raw.object_store))
		.with_prefix(pair.prefix.clone())
		.without_writer_lease()
		.build()
		.unwrap();
	assert_eq!(stored(&replica_view, "k7"), Some((4000u32 + 7).to_be_bytes().to_vec()));
	assert_eq!(stored(&replica_view, "k1"), Some(1u32.to_be_bytes().to_vec()));
	assert_eq!(KVStoreSync::list(&replica_view, "monitor_updates", "aa_0").unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_every_difference() {
	let pair = memory_pair("verify");
	let store = pair.store();
	for key in ["same", "changed", "gone"] {
		KVStoreSync::write(&store, "p", "s", key, key.as_bytes().to_vec()).unwrap();
	}
	in_sync(&store).await;
	drop(store);
	// Behind the store's back: the primary changes, the replica loses a key.
	let primary_raw = &pair.object_store;
	let changed = Path::from(format!("{}/p/s/changed", pair.prefix));
	primary_raw.put(&changed, b"other".to_vec().into()).await.unwrap();
	let replica_view = pair.replica_builder().for_tests_without_lease();
	KVStoreSync::remove(&replica_view, "p", "s", "gone", false).unwrap();
	let differences =
		replica::compare(&pair.reader(), &pair.replica_reader(), |_, _| {}).await.unwrap();
	let named: Vec<String> = differences.iter().map(ToString::to_string).collect();
	assert_eq!(differences.len(), 2, "{named:#?}");
	assert!(named[0].starts_with("p/s/changed: contents differ"), "{named:#?}");
	assert!(named[1].starts_with("p/s/gone: only on the primary"), "{named:#?}");
}

/// Opens a replica's location as a plain store without a lease, to change it behind a pair's back.
trait WithoutLease {
	fn for_tests_without_lease(self) -> ObjectKvStore;
}

impl WithoutLease for StoreBuilder {
	fn for_tests_without_lease(self) -> ObjectKvStore {
		self.without_writer_lease().build().unwrap()
	}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_refuses_a_stale_replica_and_retires_the_old_primary() {
	let slow = Arc::new(RandomLatency { max: Duration::from_millis(20) });
	let (pair, _) = memory_pair_through("promote", slow);
	let alone = pair.unpaired_builder().build().unwrap();
	for i in 0..200u32 {
		KVStoreSync::write(&alone, "p", "s", &format!("k{i}"), vec![1; 32]).unwrap();
	}
	alone.close().await;
	drop(alone);
	// Stopped while the fill runs: the replica is recorded as filling, and not promoted.
	let store = pair.store();
	assert_eq!(store.replica_health().unwrap().sync, SyncState::Filling);
	store.close().await;
	drop(store);
	let err = replica::promote(pair.replica_builder(), Some(pair.unpaired_builder()), false)
		.await
		.expect_err("a filling replica is not promoted");
	assert!(matches!(err, ConfigError::Replica(_)), "{err}");
	assert!(err.to_string().contains("filling"), "{err}");

	// Restarted, filled, in sync: promoted.
	let store = pair.store();
	in_sync(&store).await;
	KVStoreSync::write(&store, "p", "s", "last", b"acknowledged".to_vec()).unwrap();
	store.close().await;
	drop(store);
	let promoted = replica::promote(pair.replica_builder(), Some(pair.unpaired_builder()), false)
		.await
		.unwrap();
	assert_eq!(promoted.generation, 2);
	assert!(promoted.old_primary_retired, "{promoted:?}");

	// The old primary refuses a node's start, alone or with its replica.
	for builder in [pair.unpaired_builder(), pair.builder()] {
		let err = builder.build().expect_err("the old primary is retired");
		assert!(err.to_string().contains("retired"), "{err}");
	}
	// The promoted copy starts alone and holds every acknowledged write.
	let promoted_store = pair.replica_builder().build().unwrap();
	assert_eq!(stored(&promoted_store, "last").as_deref(), Some(&b"acknowledged"[..]));
	assert_eq!(KVStoreSync::list(&promoted_store, "p", "s").unwrap().len(), 201);
	// And a second promotion of it is refused.
	promoted_store.close().await;
	drop(promoted_store);
	let err = replica::promote(pair.replica_builder(), None, false).await.unwrap_err();
	assert!(err.to_string().contains("already a primary"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_with_a_replica_does_not_start_alone_until_detached() {
	let pair = memory_pair("detach");
	let store = pair.store();
	KVStoreSync::write(&store, "p", "s", "k", b"v".to_vec()).unwrap();
	in_sync(&store).await;
	store.close().await;
	drop(store);
	let err = pair.unpaired_builder().build().expect_err("its replica would go stale unseen");
	assert!(err.to_string().contains("detach"), "{err}");
	// The replica's location is not a primary either.
	let err = pair.replica_builder().build().expect_err("a replica is promoted first");
	assert!(err.to_string().contains("promote"), "{err}");

	let generation =
		replica::detach(pair.unpaired_builder(), Some(pair.replica_builder())).await.unwrap();
	assert_eq!(generation, 2);
	let alone = pair.unpaired_builder().build().expect("a detached primary starts alone");
	KVStoreSync::write(&alone, "p", "s", "k", b"only here".to_vec()).unwrap();
	alone.close().await;
	drop(alone);
	let err = replica::promote(pair.replica_builder(), None, false)
		.await
		.expect_err("a detached replica is stale");
	assert!(err.to_string().contains("stale"), "{err}");
	// Attached again, it is filled from the primary.
	let store = pair.store();
	in_sync(&store).await;
	drop(store);
	pair.assert_copies_equal().await;
	let (p, r) = records(&pair).await;
	assert_eq!(p.map(|p| (p.generation, p.sync)), Some((2, SyncState::InSync)));
	assert_eq!(r.map(|r| (r.generation, r.sync)), Some((2, SyncState::InSync)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_location_holding_another_nodes_state_is_refused_untouched() {
	let pair = memory_pair("foreign");
	let other = pair.replica_builder().build().unwrap();
	KVStoreSync::write(&other, "", "", "manager", b"another node".to_vec()).unwrap();
	other.close().await;
	drop(other);
	let err = pair.builder().build().expect_err("a fill would overwrite another node");
	assert!(err.to_string().contains("no replica record"), "{err}");
	let view = pair.replica_builder().for_tests_without_lease();
	assert_eq!(KVStoreSync::read(&view, "", "", "manager").unwrap(), b"another node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_the_replica_stops_writing_to_either_copy() {
	let outage = Arc::new(Outage::default());
	let (pair, raw_replica) = memory_pair_through("cut", Arc::clone(&outage));
	let old = pair.builder().with_writer_lease(short_lease()).with_retry(quick_retries());
	let old = old.build().unwrap();
	in_sync(&old).await;
	KVStoreSync::write(&old, "p", "s", "k", b"old".to_vec()).unwrap();
	// Partitioned from the replica: it cannot renew there, so it loses both leases.
	outage.down.store(true, Ordering::SeqCst);
	let lease = old.writer_lease().expect("a lease");
	tokio::time::timeout(Duration::from_secs(20), lease.lost()).await.expect("lost within 20 s");
	let reason = lease.lost_reason().unwrap_or_default();
	assert!(reason.contains("replica"), "the loss names the replica: {reason}");
	let err = KVStoreSync::write(&old, "p", "s", "k", b"late".to_vec()).unwrap_err();
	assert_eq!(failure_kind(&err), Some(FailureKind::LeaseLost), "{err}");

	// The replica is promoted (its lease is watched, then taken), and a new node starts on it.
	let replica_builder = || {
		StoreBuilder::from_store(Arc::clone(&raw_replica.object_store))
			.with_prefix(pair.prefix.clone())
			.with_writer_lease(short_lease())
	};
	// Refused while the old instance's lease there has not expired; then watched and taken.
	let promoted = loop {
		match replica::promote(replica_builder(), Some(pair.unpaired_builder()), false).await {
			Err(ConfigError::LeaseHeld { .. }) => tokio::time::sleep(Duration::from_secs(1)).await,
			other => break other.unwrap(),
		}
	};
	assert!(promoted.old_primary_retired);
	let new = replica_builder().build().unwrap();
	KVStoreSync::write(&new, "p", "s", "k", b"new".to_vec()).unwrap();
	// The old instance, back in touch with both, still writes to neither.
	outage.down.store(false, Ordering::SeqCst);
	assert!(KVStoreSync::write(&old, "p", "s", "k", b"later".to_vec()).is_err());
	assert_eq!(stored(&new, "k").as_deref(), Some(&b"new"[..]));
	assert_eq!(stored(&pair.reader(), "k").as_deref(), Some(&b"old"[..]));
}

/// The primary's bucket is gone (every object of the pair's primary deleted), and the replica is
/// promoted.
async fn lose_the_primary_and_promote(pair: &Backend) {
	let listed: Vec<_> = futures::TryStreamExt::try_collect(
		pair.object_store.list(Some(&Path::from(pair.prefix.clone()))),
	)
	.await
	.unwrap();
	assert!(!listed.is_empty());
	for object in listed {
		pair.object_store.delete(&object.location).await.unwrap();
	}
	replica::promote(pair.replica_builder(), None, false).await.unwrap();
}

/// Two LDK nodes (channel, payments, force-close) on replicated stores; then the primaries are
/// deleted, the replicas promoted, and each node restarts from its replica with every
/// acknowledged monitor update.
fn ldk_flow_then_promote(make_pair: impl Fn(&str) -> Backend) {
	let pairs: Vec<Backend> = NODE_NAMES.iter().map(|name| make_pair(name)).collect();
	let pair_of = |name: &str| &pairs[usize::from(name != NODE_NAMES[0])];
	let open = |name: &str| pair_of(name).store();
	let persisted = run_persist_phase(&open, &FlowOptions::default());
	let runtime = tokio::runtime::Runtime::new().unwrap();
	for pair in &pairs {
		runtime.block_on(lose_the_primary_and_promote(pair));
	}
	let promoted = |name: &str| pair_of(name).replica_builder().build().unwrap();
	let restarted = run_restart_phase(&promoted, Some(&persisted)).expect("restart from replicas");
	assert!(restarted.monitor_count() >= 2, "{}", restarted.monitor_count());
}

/// A node whose primary is lost restarts from its promoted replica and pays again: node 0 runs on
/// a memory pair (channel, payments, its manager written); its primary's objects are deleted, the
/// replica promoted; node 0 is reloaded from the promoted copy alone (LDK's own
/// `read_channel_monitors` and `ChannelManager` read, the monitors equal to the live ones), its
/// new `ChainMonitor` persisting there; it reconnects to node 1 and both pay again, and the new
/// payments' monitor updates are on the promoted copy.
#[test]
fn a_node_restarted_from_its_promoted_replica_pays_again() {
	use common::ldk_flow::{check_stored_monitors, open_channel, pay, write_manager};
	use lightning::get_monitor;
	use lightning::ln::functional_test_utils::*;
	use lightning::ln::msgs::BaseMessageHandler;
	use lightning::util::persist::read_channel_monitors;
	use lightning::util::ser::Writeable;
	use lightning::util::test_utils::TestChainMonitor;

	let pair = memory_pair("pays-again");
	let store = pair.store();
	let peer = backends::memory("pays-again-peer").store();
	let chanmon_cfgs = create_chanmon_cfgs(2);
	let mut node_cfgs = create_node_cfgs(2, &chanmon_cfgs);
	for (i, persister) in [&store, &peer].into_iter().enumerate() {
		node_cfgs[i].chain_monitor = TestChainMonitor::new(
			Some(&chanmon_cfgs[i].chain_source),
			&chanmon_cfgs[i].tx_broadcaster,
			&chanmon_cfgs[i].logger,
			&chanmon_cfgs[i].fee_estimator,
			persister,
			&chanmon_cfgs[i].keys_manager,
		);
	}
	// Declared before the managers and nodes, which borrow them after the reload.
	let promoted;
	let new_chain_monitor;
	let chanmgrs = create_node_chanmgrs(2, &node_cfgs, &[None, None]);
	let reloaded;
	let mut nodes = create_network(2, &node_cfgs, &chanmgrs);
	for node in &nodes {
		*node.connect_style.borrow_mut() = ConnectStyle::FullBlockViaListen;
	}
	let channel_id = open_channel(&nodes, 1_000_000);
	for n in 0..4 {
		pay(&nodes[n % 2], &nodes[1 - n % 2], 1_000_000 + n as u64 * 1_000, n as u64, None);
	}
	write_manager(&nodes[0], &store);
	nodes[1].node.peer_disconnected(nodes[0].node.get_our_node_id());

	// Node 0's primary is lost; its replica is promoted.
	store.close_blocking();
	let runtime = tokio::runtime::Runtime::new().unwrap();
	runtime.block_on(lose_the_primary_and_promote(&pair));
	promoted = pair.replica_builder().build().unwrap();

	// The promoted copy's monitors equal the live ones, at the live update ids.
	let before = check_stored_monitors("node 0 on the promoted copy", &nodes[0], &promoted);
	let manager = KVStoreSync::read(&promoted, "", "", "manager").unwrap();
	let monitors =
		read_channel_monitors(&promoted, nodes[0].keys_manager, nodes[0].keys_manager).unwrap();
	let [(_, monitor)] = &monitors[..] else { panic!("one monitor: {}", monitors.len()) };
	let stored = monitor.encode();
	new_chain_monitor = TestChainMonitor::new(
		Some(nodes[0].chain_source),
		nodes[0].tx_broadcaster,
		nodes[0].logger,
		nodes[0].fee_estimator,
		&promoted,
		nodes[0].keys_manager,
	);
	nodes[0].chain_monitor = &new_chain_monitor;
	reloaded = _reload_node(&nodes[0], test_default_channel_config(), &manager, &[&stored]);
	nodes[0].node = &reloaded;
	nodes[0].onion_messenger.set_offers_handler(&reloaded);
	nodes[0].onion_messenger.set_async_payments_handler(&reloaded);
	// A reload replays the claim of the last payment node 0 received (its event is handed out
	// again, as after any restart); handling it releases the channel's held monitor updates.
	for event in nodes[0].node.get_and_clear_pending_events() {
		assert!(matches!(event, lightning::events::Event::PaymentClaimed { .. }), "{event:?}");
	}
	reconnect_nodes(ReconnectArgs::new(&nodes[0], &nodes[1]));

	for n in 4..8 {
		pay(&nodes[n % 2], &nodes[1 - n % 2], 1_000_000 + n as u64 * 1_000, n as u64, None);
	}
	let after = check_stored_monitors("node 0 after paying again", &nodes[0], &promoted);
	let live_id = get_monitor!(nodes[0], channel_id).get_latest_update_id();
	assert_eq!(after.iter().map(|(_, id)| *id).collect::<Vec<_>>(), vec![live_id]);
	assert!(after[0].1 > before[0].1, "the new payments were persisted: {before:?} {after:?}");
}

#[test]
fn ldk_flow_on_memory_pairs_survives_losing_the_primary() {
	ldk_flow_then_promote(memory_pair);
}

#[test]
fn ldk_flow_on_localstack_and_seaweedfs_survives_losing_the_primary() {
	let (Some(_), Some(_)) =
		(backends::s3("LOCALSTACK", "flow"), backends::s3("SEAWEEDFS", "flow"))
	else {
		return;
	};
	ldk_flow_then_promote(|name| {
		let primary = backends::s3("LOCALSTACK", name).unwrap();
		primary.paired_with(backends::s3("SEAWEEDFS", name).unwrap())
	});
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_mode_goes_on_without_the_replica_and_catches_up_when_it_answers() {
	let outage = Arc::new(Outage::default());
	let (pair, raw_replica) = memory_pair_through("lag", Arc::clone(&outage));
	let builder = || {
		pair.builder()
			.with_retry(quick_retries())
			.with_replica_mode(replica::ReplicaMode::LagWhenUnreachable)
	};
	let store = builder().build().unwrap();
	in_sync(&store).await;
	KVStoreSync::write(&store, "p", "s", "a", b"both".to_vec()).unwrap();

	outage.down.store(true, Ordering::SeqCst);
	KVStoreSync::write(&store, "p", "s", "a", b"primary only".to_vec())
		.expect("a pair that may lag goes on with the primary");
	// Before that write was acknowledged: the primary's record said the replica is stale, and
	// the journal named the key.
	let record = replica::read_record(&pair.reader()).await.unwrap().unwrap();
	assert_eq!((record.sync, record.may_lag), (SyncState::Stale, true), "{record}");
	let journal = Path::from(format!("{}/{}", pair.prefix, replica::JOURNAL_FOLDER));
	let entries: Vec<_> =
		futures::TryStreamExt::try_collect(pair.object_store.list(Some(&journal))).await.unwrap();
	assert_eq!(entries.len(), 1, "{entries:?}");
	KVStore::remove(&store, "p", "s", "gone", false).await.unwrap();
	KVStore::write(&store, "p", "s", "b", b"new".to_vec()).await.unwrap();
	let health = store.replica_health().unwrap();
	assert_eq!(health.sync, SyncState::Stale);
	assert_eq!(health.lag_keys, 3, "{health:?}");
	// Listings of the node's keys never show the journal.
	assert_eq!(KVStoreSync::list(&store, "p", "s").unwrap().len(), 2);

	// The replica cannot know it missed updates; it is not promoted while the primary's lease is
	// held, nor without the primary's word.
	let replica_alone = || {
		StoreBuilder::from_store(Arc::clone(&raw_replica.object_store))
			.with_prefix(pair.prefix.clone())
	};
	let err = replica::promote(replica_alone(), None, false).await.unwrap_err();
	assert!(err.to_string().contains("may lag"), "{err}");
	let err =
		replica::promote(replica_alone(), Some(pair.unpaired_builder()), false).await.unwrap_err();
	assert!(err.to_string().contains("writer lease"), "{err}");

	// It answers again: the journal's keys are repaired, a verifying pass runs, in sync again.
	outage.down.store(false, Ordering::SeqCst);
	let health = in_sync(&store).await;
	assert_eq!(health.lag_keys, 0, "{health:?}");
	let entries: Vec<_> =
		futures::TryStreamExt::try_collect(pair.object_store.list(Some(&journal))).await.unwrap();
	assert!(entries.is_empty(), "the journal is emptied: {entries:?}");
	KVStoreSync::write(&store, "p", "s", "c", b"both again".to_vec()).unwrap();
	store.close().await;
	drop(store);
	let replica_view = replica_alone().for_tests_without_lease();
	assert_eq!(stored(&replica_view, "a").as_deref(), Some(&b"primary only"[..]));
	assert_eq!(stored(&replica_view, "b").as_deref(), Some(&b"new"[..]));
	assert_eq!(stored(&replica_view, "c").as_deref(), Some(&b"both again"[..]));
	pair.assert_copies_equal().await;
	let (p, r) = records(&pair).await;
	assert_eq!(p.map(|p| (p.sync, p.may_lag)), Some((SyncState::InSync, true)));
	assert_eq!(r.map(|r| (r.sync, r.may_lag)), Some((SyncState::InSync, true)));
	// Now, with the node stopped, the primary's word allows the promotion.
	let promoted =
		replica::promote(replica_alone(), Some(pair.unpaired_builder()), false).await.unwrap();
	assert!(promoted.old_primary_retired, "{promoted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_mode_starts_with_an_unreachable_replica_and_strict_mode_does_not() {
	let outage = Arc::new(Outage::default());
	let (pair, _) = memory_pair_through("lag-start", Arc::clone(&outage));
	let store = pair.store();
	KVStoreSync::write(&store, "p", "s", "k", b"v".to_vec()).unwrap();
	in_sync(&store).await;
	store.close().await;
	drop(store);
	outage.down.store(true, Ordering::SeqCst);
	let err = pair.builder().with_retry(quick_retries()).build().expect_err("strict mode");
	assert!(err.to_string().contains("connection refused"), "{err}");
	let lagging = pair
		.builder()
		.with_retry(quick_retries())
		.with_replica_mode(replica::ReplicaMode::LagWhenUnreachable)
		.build()
		.expect("a pair that may lag starts without its replica");
	assert_eq!(lagging.replica_health().unwrap().sync, SyncState::Stale);
	KVStoreSync::write(&lagging, "p", "s", "k", b"while stale".to_vec()).unwrap();
	outage.down.store(false, Ordering::SeqCst);
	in_sync(&lagging).await;
	drop(lagging);
	pair.assert_copies_equal().await;
}
