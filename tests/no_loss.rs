//! Paths that could lose state that was reported stored, or stop acknowledging it:
//!
//! - `file://` writes are durable when they complete: counted fsync calls under `strace`, next to
//!   LDK's `FilesystemStore` doing the same writes.
//! - The cleanup of stale updates never deletes a live channel's update objects, even when the
//!   channel appears between its listings.
//! - A write that keeps failing in async mode is retried until it lands (or until a later full
//!   monitor holds it), and the channel's pending updates drain in a real `ChainMonitor`.
//! - With a replica failing mid-flow: strict mode holds the update in progress (async) or never
//!   reports it complete (sync) until both copies have it; lag mode goes on and catches up. On
//!   in-memory copies and on a LocalStack primary with a SeaweedFS replica.
//! - S3's retryable 4xx answers are retried, not treated as permanent.
//! - Leftovers of LDK's `FilesystemStore` (`*.tmp`, `*.trash`) do not break listing or migration.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::backends;
use common::dual_flow::*;
use common::failing_flow::{
	self, failing_longer_than_the_store_retries, last_update_object, pending,
	replay_with_failing_update, update_ids,
};
use common::watch::wait_until;
use common::wrappers::{Guard, Hook, Hooked, Request};
use ldk_object_store::{LoadMode, RetryPolicy, StoreBuilder};
use lightning::chain::chainmonitor::Persist;
use lightning::chain::channelmonitor::ChannelMonitorUpdate;
use lightning::chain::ChannelMonitorUpdateStatus;
use lightning::ln::functional_test_utils::*;
use lightning::util::persist::{migrate_kv_store_data, KVStoreSync, MigratableKVStore};
use lightning::util::ser::Writeable;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

// ------------------------------------------------------------------------------------------------
// file:// is durable

const FSYNC_CHILD_ENV: &str = "LDK_OS_FSYNC_CHILD";
const WRITES: usize = 3;

/// The child: makes `WRITES` writes to a fresh directory through `file://` (`ours`) or LDK's
/// `FilesystemStore` (`ldk`). Does nothing unless started by the parent.
#[test]
fn fsync_child() {
	let Ok(spec) = std::env::var(FSYNC_CHILD_ENV) else { return };
	let (which, dir) = spec.split_once(';').expect("<which>;<dir>");
	let keys = ["manager", "network_graph", "scorer"];
	match which {
		"ours" => {
			let store = StoreBuilder::from_url(format!("file://{dir}")).build().unwrap();
			for key in keys {
				KVStoreSync::write(&store, "", "", key, vec![7; 100]).unwrap();
			}
		},
		_ => {
			let store = lightning_persister::fs_store::FilesystemStore::new(dir.into());
			for key in keys {
				KVStoreSync::write(&store, "", "", key, vec![7; 100]).unwrap();
			}
		},
	}
}

/// The fsync and fdatasync calls of the child `fsync_child` doing `which`.
fn fsyncs_of(which: &str) -> Option<usize> {
	common::strace::syncs_of_child("fsync_child", FSYNC_CHILD_ENV, which)
}

#[test]
fn file_urls_sync_every_write_to_disk_like_filesystem_store() {
	let (Some(ours), Some(ldk)) = (fsyncs_of("ours"), fsyncs_of("ldk")) else { return };
	println!("fsync calls for {WRITES} writes: file:// {ours}, LDK's FilesystemStore {ldk}");
	assert!(ldk >= WRITES, "FilesystemStore made {ldk} fsync calls for {WRITES} writes");
	// Each write syncs its file and its directory, as FilesystemStore does.
	assert!(ours >= 2 * WRITES, "file:// made {ours} fsync calls for {WRITES} writes");
}

// ------------------------------------------------------------------------------------------------
// The cleanup keeps live channels' updates

/// Before the first listing of `monitor_updates/`, stores an update object of a new channel whose
/// monitor object is not written yet: what an async-mode node can have when the cleanup runs.
#[derive(Debug)]
struct NewChannelDuringCleanup {
	inner: Arc<dyn ObjectStore>,
	object: ObjectPath,
	done: AtomicBool,
}

#[async_trait]
impl Hook for NewChannelDuringCleanup {
	async fn enter(&self, request: Request, path: &ObjectPath) -> object_store::Result<Guard> {
		if request == Request::List
			&& path.as_ref().ends_with("monitor_updates")
			&& !self.done.swap(true, Ordering::SeqCst)
		{
			self.inner.put(&self.object, vec![1].into()).await?;
		}
		Ok(Box::new(()))
	}
}

#[test]
fn cleanup_deletes_only_updates_of_archived_channels() {
	let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
	let (archived, unarchived, new) = ("aa".repeat(32), "bb".repeat(32), "cc".repeat(32));
	let hook = Arc::new(NewChannelDuringCleanup {
		inner: Arc::clone(&memory),
		object: ObjectPath::from(format!("node/monitor_updates/{new}/1")),
		done: AtomicBool::new(false),
	});
	let store =
		StoreBuilder::from_store(Hooked::wrap(memory, hook)).with_prefix("node").build().unwrap();
	// An archived channel's leftover updates, and update objects of a channel whose monitor is
	// neither stored nor archived (its first monitor write still in flight, say).
	KVStoreSync::write(&store, "archived_monitors", "", &archived, vec![9]).unwrap();
	KVStoreSync::write(&store, "monitor_updates", &archived, "5", vec![1]).unwrap();
	KVStoreSync::write(&store, "monitor_updates", &unarchived, "3", vec![1]).unwrap();

	let cfgs = create_chanmon_cfgs(1);
	let persister = ours(&store, &cfgs[0], config(5, LoadMode::Probe));
	let deleted = persister.cleanup_stale_updates_blocking().unwrap();

	assert_eq!(deleted, 1, "only the archived channel's update goes");
	assert!(KVStoreSync::list(&store, "monitor_updates", &archived).unwrap().is_empty());
	let kept = |key: &str| KVStoreSync::list(&store, "monitor_updates", key).unwrap();
	assert_eq!(kept(&unarchived), vec!["3".to_string()], "an unarchived channel's update");
	assert_eq!(kept(&new), vec!["1".to_string()], "the update of a channel opened meanwhile");
}

// ------------------------------------------------------------------------------------------------
// A failing async write is retried until its channel drains

#[test]
fn a_failing_update_write_is_retried_until_it_lands_then_reported() {
	let flow = run_dual_flow(backends::memory);
	let fail_id = last_update_object(&flow);
	let (chain_monitor, persister, hook) = replay_with_failing_update(&flow, fail_id, "heal");

	// Failing for longer than the store's retry policy: the channel waits, and says why.
	failing_longer_than_the_store_retries(&chain_monitor, persister, &hook, fail_id);
	let health = persister.health();
	assert!(
		health.last_error.as_deref().is_some_and(|e| e.contains(&format!("/{fail_id}"))),
		"{health:?}"
	);

	hook.failing.store(false, Ordering::SeqCst);
	wait_until("the channel's pending updates drain", Duration::from_secs(30), || {
		pending(&chain_monitor).is_empty()
	});
	persister.flush_blocking();
	assert!(persister.health().is_healthy(), "{:?}", persister.health());
}

#[test]
fn a_later_full_monitor_completes_an_update_whose_write_keeps_failing() {
	let flow = run_dual_flow(backends::memory);
	// An update object with a consolidation after it.
	let ids = update_ids(&flow);
	let last_full = ids.iter().copied().filter(|id| id % 5 == 0).max().expect("a consolidation");
	let fail_id = *ids.iter().find(|id| **id % 5 != 0 && **id < last_full).expect("an update");
	let (chain_monitor, persister, hook) = replay_with_failing_update(&flow, fail_id, "covered");

	// Never healed: the later durable full monitor holds the update.
	wait_until("the channel's pending updates drain", Duration::from_secs(30), || {
		pending(&chain_monitor).is_empty()
	});
	assert!(hook.failed.load(Ordering::SeqCst) > 0, "the update's write never failed");
	persister.flush_blocking();
	assert_eq!(persister.health().failing_writes, 0, "the superseded write is no longer retried");
}

// ------------------------------------------------------------------------------------------------
// A replica failing in the middle of a real flow: each flow on two in-memory copies and on a
// LocalStack primary with a SeaweedFS replica (lag mode on the servers, with the CLI's `replica
// verify`, is in tests/cli.rs).

#[test]
fn a_replica_failing_an_update_holds_it_in_progress_until_both_copies_have_it() {
	failing_flow::strict_async_flow(&failing_flow::memory_copies());
}

#[test]
fn a_replica_failing_an_update_holds_it_in_progress_on_localstack_and_seaweedfs() {
	let Some(copies) = failing_flow::server_copies("strict-async-failing-replica") else { return };
	failing_flow::strict_async_flow(&copies);
}

#[test]
fn with_the_replica_failing_a_sync_update_is_never_completed() {
	failing_flow::strict_sync_flow(&failing_flow::memory_copies());
}

#[test]
fn with_the_replica_failing_a_sync_update_is_never_completed_on_localstack_and_seaweedfs() {
	let Some(copies) = failing_flow::server_copies("strict-sync-failing-replica") else { return };
	failing_flow::strict_sync_flow(&copies);
}

#[test]
fn in_lag_mode_a_failing_replica_does_not_hold_the_channel_and_catches_up() {
	failing_flow::lag_flow(&failing_flow::memory_copies(), |_| {}, |_| {});
}

// ------------------------------------------------------------------------------------------------
// Retryable 4xx answers

/// Fails the first `times` PUTs with an error as object_store reports S3's `code` answer.
#[derive(Debug)]
struct S3Answer {
	code: &'static str,
	times: AtomicUsize,
}

impl S3Answer {
	fn error(&self, path: &ObjectPath) -> object_store::Error {
		let body = |status: &str| {
			format!(
				"Server returned non-2xx status code: {status}: <?xml version=\"1.0\" \
				 encoding=\"UTF-8\"?><Error><Code>{}</Code><Message>injected</Message></Error>",
				self.code
			)
		};
		let path = path.to_string();
		match self.code {
			// object_store turns a 409 into AlreadyExists, a 403 into PermissionDenied.
			"ConditionalRequestConflict" => {
				object_store::Error::AlreadyExists { path, source: body("409 Conflict").into() }
			},
			"ExpiredToken" => {
				object_store::Error::PermissionDenied { path, source: body("403 Forbidden").into() }
			},
			_ => {
				object_store::Error::Generic { store: "S3", source: body("400 Bad Request").into() }
			},
		}
	}
}

#[async_trait]
impl Hook for S3Answer {
	async fn enter(&self, request: Request, path: &ObjectPath) -> object_store::Result<Guard> {
		let fail = request == Request::Put
			&& self
				.times
				.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
				.is_ok();
		if fail {
			return Err(self.error(path));
		}
		Ok(Box::new(()))
	}
}

#[test]
fn retryable_s3_answers_are_retried() {
	let flow = run_dual_flow(backends::memory);
	let Some(Call::New { name, monitor }) = flow.calls.first() else { panic!("no new channel") };
	for code in ["RequestTimeout", "ConditionalRequestConflict", "ExpiredToken", "ExpiredToken"] {
		for fencing in [false, true] {
			let hook = Arc::new(S3Answer { code, times: AtomicUsize::new(2) });
			let backend = backends::memory(code).wrapped(|s| Hooked::wrap(s, Arc::clone(&hook)));
			let retry = RetryPolicy {
				initial_backoff: Duration::from_millis(1),
				max_backoff: Duration::from_millis(2),
				..RetryPolicy::default()
			};
			let store = backend.builder().with_retry(retry).with_fencing(fencing).build().unwrap();
			KVStoreSync::write(&store, "", "", "manager", vec![1; 10])
				.unwrap_or_else(|e| panic!("{code} (fencing {fencing}): {e}"));
			// A sync-mode monitor write is Completed, not UnrecoverableError (which stops LDK).
			hook.times.store(2, Ordering::SeqCst);
			let mut cfgs = create_chanmon_cfgs(1);
			cfgs[0].keys_manager = replay_keys();
			let persister = ours(&store, &cfgs[0], config(5, LoadMode::Probe));
			let monitor = decode(monitor, &cfgs[0].keys_manager);
			assert_eq!(
				persister.persist_new_channel(*name, &monitor),
				ChannelMonitorUpdateStatus::Completed,
				"{code} (fencing {fencing})"
			);
		}
	}
}

// ------------------------------------------------------------------------------------------------
// FilesystemStore leftovers

#[test]
fn filesystem_store_leftovers_do_not_break_listing_or_migration() {
	let dir = tempfile::tempdir().unwrap();
	let ldk = lightning_persister::fs_store::FilesystemStore::new(dir.path().to_path_buf());
	KVStoreSync::write(&ldk, "", "", "manager", vec![1]).unwrap();
	KVStoreSync::write(&ldk, "monitors", "", "m_0", vec![2]).unwrap();
	KVStoreSync::write(&ldk, "monitor_updates", "m_0", "3", vec![3]).unwrap();
	// What FilesystemStore leaves after a crash between writing a temporary file and renaming it,
	// or during a remove (named as it names them: `<key>.<counter>.tmp|trash`).
	std::fs::write(dir.path().join("manager.0.tmp"), b"half a manager").unwrap();
	std::fs::write(dir.path().join("monitors").join("m_0.1.trash"), b"old").unwrap();
	std::fs::write(dir.path().join("monitor_updates/m_0").join("4.2.tmp"), b"").unwrap();
	// LDK's own store lists around them.
	assert_eq!(KVStoreSync::list(&ldk, "", "").unwrap(), vec!["manager".to_string()]);

	let url = format!("file://{}", dir.path().display());
	let mut ours = StoreBuilder::from_url(url).build().unwrap();
	assert_eq!(KVStoreSync::list(&ours, "", "").unwrap(), vec!["manager".to_string()]);
	assert_eq!(KVStoreSync::list(&ours, "monitors", "").unwrap(), vec!["m_0".to_string()]);
	assert_eq!(KVStoreSync::list(&ours, "monitor_updates", "m_0").unwrap(), vec!["3".to_string()]);
	let mut all = ours.list_all_keys().unwrap();
	all.sort();
	assert_eq!(all.len(), 3, "{all:?}");

	let mut copy = backends::memory("leftovers").store();
	migrate_kv_store_data(&mut ours, &mut copy).unwrap();
	let mut copied = copy.list_all_keys().unwrap();
	copied.sort();
	assert_eq!(copied, all);
	assert!(Path::new(&dir.path().join("manager.0.tmp")).exists(), "leftovers are left alone");
}

// ------------------------------------------------------------------------------------------------
// Never an older monitor after a newer one; never an earlier run's leftover update

/// The flow's monitors (decoded lazily by the caller) with their update ids, and each update.
fn updates_with_monitors(flow: &FlowRecord) -> Vec<(&ChannelMonitorUpdate, &Vec<u8>)> {
	flow.calls
		.iter()
		.filter_map(|call| match call {
			Call::Update { update: Some(update), monitor, .. } => Some((update, monitor)),
			_ => None,
		})
		.collect()
}

/// LDK can serialize a monitor for a chain-sync write (no update) on one thread while another
/// thread applies a newer update whose write is a full monitor; the older write, called last,
/// must not replace the newer monitor. Both modes.
#[test]
fn an_older_monitor_is_never_written_after_a_newer_one() {
	let flow = run_dual_flow(backends::memory);
	let cfg = static_replay_cfg();
	let updates = updates_with_monitors(&flow);
	let (newest, newest_monitor) = updates.last().copied().unwrap();
	let (_, older_monitor) = updates[updates.len() / 2];
	let Some(Call::New { name, .. }) = flow.calls.first() else { panic!("no new channel") };
	for asynchronous in [false, true] {
		let store = backends::memory("older-after-newer").store();
		// Every update is a full-monitor write.
		let every_update_full = config(1, LoadMode::Probe);
		let persister = if asynchronous {
			ours_async(&store, cfg, every_update_full)
		} else {
			ours(&store, cfg, every_update_full)
		};
		let newer = decode(newest_monitor, &cfg.keys_manager);
		let older = decode(older_monitor, &cfg.keys_manager);
		assert!(older.get_latest_update_id() < newer.get_latest_update_id());
		persister.update_persisted_channel(*name, Some(newest), &newer);
		persister.update_persisted_channel(*name, None, &older);
		persister.flush_blocking();
		let loaded = ours(&store, cfg, config(1, LoadMode::Probe))
			.read_all_channel_monitors_with_updates_blocking()
			.unwrap();
		assert_eq!(
			loaded[0].1.get_latest_update_id(),
			newest.update_id,
			"async {asynchronous}: the stored monitor went back"
		);
	}
}

/// Async writes of one channel run concurrently, so a crash can leave update `n + 2` stored
/// without `n + 1`. The next run makes new updates from `n + 1` on: the old `n + 2` must neither
/// be read after the new `n + 1` nor make the new `n + 2` look like another writer's object.
#[test]
fn an_earlier_runs_leftover_updates_are_cleared_before_new_ones() {
	let flow = run_dual_flow(backends::memory);
	let cfg = static_replay_cfg();
	let Some(Call::New { name, monitor }) = flow.calls.first() else { panic!("no new channel") };
	let first = decode(monitor, &cfg.keys_manager);
	let base = first.get_latest_update_id();
	let updates = updates_with_monitors(&flow);
	let find = |id: u64| updates.iter().copied().find(|(u, _)| u.update_id == id).unwrap();
	let backend = backends::memory("leftovers-of-a-run");
	let store = backend.builder().with_fencing(true).build().unwrap();

	// The earlier run: the monitor at `base`, and a leftover at `base + 2` that is not the
	// update the next run makes there (here: another update's bytes).
	let earlier = ours_async(&store, cfg, config(1000, LoadMode::Probe));
	earlier.persist_new_channel(*name, &first);
	earlier.flush_blocking();
	drop(earlier);
	let key = name.to_string();
	let leftover = find(base + 3).0.encode();
	KVStoreSync::write(&store, "monitor_updates", &key, &(base + 2).to_string(), leftover).unwrap();

	// The next run makes updates `base + 1` and `base + 2` anew.
	let next = ours_async(&store, cfg, config(1000, LoadMode::Probe));
	for id in [base + 1, base + 2] {
		let (update, monitor) = find(id);
		let status =
			next.update_persisted_channel(*name, Some(update), &decode(monitor, &cfg.keys_manager));
		assert_eq!(status, ChannelMonitorUpdateStatus::InProgress);
	}
	next.flush_blocking();
	assert!(next.health().is_healthy(), "{:?}", next.health());
	let loaded = ours(&store, cfg, config(1000, LoadMode::Probe))
		.read_all_channel_monitors_with_updates_blocking()
		.unwrap();
	assert_eq!(loaded[0].1.get_latest_update_id(), base + 2);
}
