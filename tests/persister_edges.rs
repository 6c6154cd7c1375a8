//! Edges of the monitor persister's write path, each with real LDK monitors and updates:
//!
//! - a full write never labels older bytes with a newer update id, even when the `ChainMonitor`
//!   applies an update between the two (`consolidate`, sync and async);
//! - a full write that a newer one supersedes while it keeps failing hands its pruning on;
//! - an earlier run's update objects above the first new id are cleared before any write of the
//!   channel lands, in both modes and whatever the earlier `maximum_pending_updates`, and a clear
//!   that fails holds the channel's writes until it succeeds;
//! - bounded `flush_within` / `consolidate_within` return, naming what is pending, while an
//!   archive keeps failing with a 403;
//! - an archive that cannot read the archived copy reports that error, not "absent";
//! - `cleanup_stale_updates` skips a monitor LDK no longer reads, as every loader does.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bitcoin::secp256k1::PublicKey;
use bitcoin::BlockHash;
use common::backends::{self, Backend};
use common::dual_flow::*;
use common::ldk_flow::{force_close_and_confirm, open_channel, with_network};
use common::watch::{wait_until, watchdog};
use common::wrappers::{Guard, Hook, Hooked, Request};
use ldk_object_store::persister::Pending;
use ldk_object_store::{LoadMode, ObjectKvStore, RetryPolicy};
use lightning::chain::chainmonitor::Persist;
use lightning::chain::channelmonitor::{
	ChannelMonitorUpdate, ANTI_REORG_DELAY, ARCHIVAL_DELAY_BLOCKS,
};
use lightning::chain::{ChannelMonitorUpdateStatus, Watch};
use lightning::ln::functional_test_utils::*;
use lightning::util::persist::KVStoreSync;
use lightning::util::ser::{ReadableArgs, Writeable};
use lightning::util::test_channel_signer::TestChannelSigner;
use lightning::util::test_utils::TestKeysInterface;
use object_store::path::Path as ObjectPath;

/// Node 0's `Persist` calls in a real two-node flow, made once for the whole binary.
fn flow() -> &'static FlowRecord {
	static FLOW: OnceLock<FlowRecord> = OnceLock::new();
	FLOW.get_or_init(|| run_dual_flow(backends::memory))
}

/// The flow's first monitor, as `persist_new_channel` got it.
fn first_monitor(cfg: &TestChanMonCfg) -> (lightning::util::persist::MonitorName, Monitor) {
	let Some(Call::New { name, monitor }) = flow().calls.first() else { panic!("no new channel") };
	(*name, decode(monitor, &cfg.keys_manager))
}

/// The flow's update with `id`, and the monitor right after it.
fn update(id: u64) -> (&'static ChannelMonitorUpdate, &'static Vec<u8>) {
	flow()
		.calls
		.iter()
		.find_map(|call| match call {
			Call::Update { update: Some(update), monitor, .. } if update.update_id == id => {
				Some((update, monitor))
			},
			_ => None,
		})
		.unwrap_or_else(|| panic!("the flow made no update {id}"))
}

/// A store that gives up after two quick attempts, so that the persister's own background
/// retries (async) or its failure (sync) show.
fn quick_store(backend: &Backend) -> ObjectKvStore {
	let retry = RetryPolicy {
		max_attempts: 2,
		initial_backoff: Duration::from_millis(1),
		max_backoff: Duration::from_millis(1),
		..RetryPolicy::default()
	};
	backend.builder().with_retry(retry).build().unwrap()
}

/// The update id `store` loads to, with our loader (probing and listing) and with LDK's
/// `MonitorUpdatingPersister`, which must agree.
fn loaded_id(store: &ObjectKvStore, cfg: &TestChanMonCfg, max_pending: u64) -> u64 {
	let mut ids = Vec::new();
	for mode in [LoadMode::Probe, LoadMode::List] {
		let loaded = ours(store, cfg, config(max_pending, mode))
			.read_all_channel_monitors_with_updates_blocking()
			.unwrap();
		assert_eq!(loaded.len(), 1, "{mode:?}");
		ids.push(loaded[0].1.get_latest_update_id());
	}
	let theirs = ldk(store, cfg, max_pending).read_all_channel_monitors_with_updates().unwrap();
	ids.push(theirs[0].1.get_latest_update_id());
	assert!(ids.windows(2).all(|w| w[0] == w[1]), "the loaders disagree: {ids:?}");
	ids[0]
}

fn update_ids_stored(store: &ObjectKvStore, monitor_key: &str) -> Vec<u64> {
	let mut ids: Vec<u64> = KVStoreSync::list(store, "monitor_updates", monitor_key)
		.unwrap()
		.iter()
		.map(|id| id.parse().unwrap())
		.collect();
	ids.sort_unstable();
	ids
}

fn injected(what: &str) -> object_store::Error {
	object_store::Error::Generic {
		store: "S3",
		source: format!("injected: Server returned non-2xx status code: 503 Slow Down ({what})")
			.into(),
	}
}

// ------------------------------------------------------------------------------------------------
// A full write reads the update id before it serializes the monitor

/// `consolidate` serializes a monitor and names it by its update id while the `ChainMonitor`
/// applies updates under its shared lock. The test hook applies the next real update through the
/// real `ChainMonitor` between the two steps: the store must still load to the live id with our
/// loader and LDK's, and the acknowledged update's object must still be there.
#[test]
fn consolidate_never_writes_older_bytes_under_a_newer_id() {
	let cfg = static_replay_cfg();
	let ids: Vec<u64> = flow()
		.calls
		.iter()
		.filter_map(|call| match call {
			Call::Update { update: Some(update), .. } => Some(update.update_id),
			_ => None,
		})
		.collect();
	// Below 100, so that every update is an object of its own.
	let applied = ids.len() / 2;
	assert!(ids[applied] < 100, "{ids:?}");
	for asynchronous in [false, true] {
		let backend = backends::memory("id-before-bytes");
		let store = backend.store();
		let keeps_updates = config(100, LoadMode::Probe);
		let persister: &'static Ours<'static> = Box::leak(Box::new(if asynchronous {
			ours_async(&store, cfg, keeps_updates)
		} else {
			ours(&store, cfg, keeps_updates)
		}));
		let chain_monitor = chain_monitor_over(persister, cfg);
		persister.bind_chain_monitor(&chain_monitor);
		let channel_id = flow().channel_id;
		let (_, first) = first_monitor(cfg);
		let monitor_key = first.persistence_key().to_string();
		chain_monitor.watch_channel(channel_id, first).unwrap();
		for id in &ids[..applied] {
			chain_monitor.update_channel(channel_id, update(*id).0);
		}

		let (next, _) = update(ids[applied]);
		let hooked = Arc::new(AtomicBool::new(false));
		let (monitor, ran) = (Arc::clone(&chain_monitor), Arc::clone(&hooked));
		persister.set_full_write_hook(move || {
			monitor.update_channel(channel_id, next);
			ran.store(true, Ordering::SeqCst);
		});
		assert_eq!(persister.consolidate(&*chain_monitor).unwrap(), 1, "async {asynchronous}");
		assert!(hooked.load(Ordering::SeqCst), "the hook did not run");

		let live = chain_monitor.get_monitor(channel_id).unwrap().get_latest_update_id();
		assert_eq!(live, next.update_id);
		let reader = backend.reader();
		assert_eq!(
			loaded_id(&reader, cfg, 100),
			live,
			"async {asynchronous}: the store lost the update applied during the consolidation"
		);
		assert!(
			update_ids_stored(&reader, &monitor_key).contains(&live),
			"async {asynchronous}: the acknowledged update's object was pruned"
		);
		let pending = chain_monitor.list_pending_monitor_updates();
		assert!(pending.values().all(Vec::is_empty), "async {asynchronous}: {pending:?}");
	}
}

// ------------------------------------------------------------------------------------------------
// A superseded full write hands its pruning on

/// Fails every PUT of a full monitor while `failing` is set.
#[derive(Debug, Default)]
struct FailFullWrites {
	failing: AtomicBool,
}

#[async_trait]
impl Hook for FailFullWrites {
	async fn enter(&self, request: Request, path: &ObjectPath) -> object_store::Result<Guard> {
		if request == Request::Put
			&& self.failing.load(Ordering::SeqCst)
			&& path.as_ref().contains("/monitors/")
		{
			return Err(injected("full monitor"));
		}
		Ok(Box::new(()))
	}
}

/// In async mode a full write at `f1` keeps failing; the full write at `f2 = f1 + 5` is queued
/// behind it, so `f1` gives up. Once `f2` is durable, no update object at or below it may be
/// left: `f1`'s pruning (the objects before `f1`) goes with `f2`'s.
#[test]
fn a_superseded_full_write_hands_its_pruning_to_the_newer_one() {
	let cfg = static_replay_cfg();
	let hook = Arc::new(FailFullWrites::default());
	let raw = backends::memory("superseded-prune");
	let store = quick_store(&raw.wrapped(|s| Hooked::wrap(s, Arc::clone(&hook))));
	let fast_retries = config(5, LoadMode::Probe).with_max_retry_backoff(Duration::from_millis(50));
	let persister = ours_async(&store, cfg, fast_retries);
	let (name, first) = first_monitor(cfg);
	let base = first.get_latest_update_id();
	persister.persist_new_channel(name, &first);
	persister.flush_within_blocking(Duration::from_secs(60)).unwrap();

	hook.failing.store(true, Ordering::SeqCst);
	let f1 = (base + 1..).find(|id| id % 5 == 0).unwrap();
	let f2 = f1 + 5;
	let apply = |ids: std::ops::RangeInclusive<u64>| {
		for id in ids {
			let (update, monitor) = update(id);
			let monitor = decode(monitor, &cfg.keys_manager);
			let status = persister.update_persisted_channel(name, Some(update), &monitor);
			assert_eq!(status, ChannelMonitorUpdateStatus::InProgress);
		}
	};
	let persister = &persister;
	let failing = |id: u64| {
		let name = format!("at update id {id}:");
		move || persister.health().last_error.is_some_and(|error| error.contains(&name))
	};
	apply(base + 1..=f1);
	wait_until("the full write at f1 fails", Duration::from_secs(30), failing(f1));
	apply(f1 + 1..=f2);
	// The write at f2 only starts once the one at f1 has given up.
	wait_until("the full write at f2 fails", Duration::from_secs(30), failing(f2));
	hook.failing.store(false, Ordering::SeqCst);
	persister.flush_within_blocking(Duration::from_secs(60)).unwrap();
	assert!(persister.health().is_healthy(), "{:?}", persister.health());

	let reader = raw.reader();
	let (monitor_key, stored_id, _) = stored_layout(&reader);
	assert_eq!(stored_id, f2);
	let stale: Vec<u64> =
		update_ids_stored(&reader, &monitor_key).into_iter().filter(|id| *id <= f2).collect();
	assert!(stale.is_empty(), "stale update objects below the monitor at {f2}: {stale:?}");
	assert_eq!(loaded_id(&reader, cfg, 5), f2);
}

// ------------------------------------------------------------------------------------------------
// An earlier run's leftovers

/// Stores the flow's first monitor as an earlier run with `maximum_pending_updates` 1000 left
/// it, and two leftover update objects above a gap: at `base + 2` an object that is not the
/// update the next run makes there, and the real update at `base + 7`, beyond `first +
/// maximum_pending_updates` of a next run with a maximum of 5. Returns the monitor key and
/// `base`.
fn earlier_run(store: &ObjectKvStore, cfg: &TestChanMonCfg) -> (String, u64) {
	let (name, first) = first_monitor(cfg);
	let base = first.get_latest_update_id();
	let earlier = ours(store, cfg, config(1000, LoadMode::Probe));
	assert_eq!(earlier.persist_new_channel(name, &first), ChannelMonitorUpdateStatus::Completed);
	let key = name.to_string();
	for (at, bytes) in
		[(base + 2, update(base + 3).0.encode()), (base + 7, update(base + 7).0.encode())]
	{
		KVStoreSync::write(store, "monitor_updates", &key, &at.to_string(), bytes).unwrap();
	}
	(key, base)
}

/// The next run makes updates `base + 1 ..= base + 6` with a maximum of 5: the leftovers must
/// be gone before they land (with fencing, the old `base + 2` would refuse the new one), and
/// every reader must load to `base + 6`, not apply the old `base + 7`. Sync and async.
#[test]
fn an_earlier_runs_leftovers_are_cleared_in_both_modes_whatever_its_maximum() {
	let cfg = static_replay_cfg();
	for asynchronous in [false, true] {
		let backend = backends::memory("leftovers-both-modes");
		let store = backend.builder().with_fencing(true).build().unwrap();
		let (name, _) = first_monitor(cfg);
		let (_, base) = earlier_run(&store, cfg);

		let next = if asynchronous {
			ours_async(&store, cfg, config(5, LoadMode::Probe))
		} else {
			ours(&store, cfg, config(5, LoadMode::Probe))
		};
		let expected = match asynchronous {
			true => ChannelMonitorUpdateStatus::InProgress,
			false => ChannelMonitorUpdateStatus::Completed,
		};
		for id in base + 1..=base + 6 {
			let (update, monitor) = update(id);
			let status = next.update_persisted_channel(
				name,
				Some(update),
				&decode(monitor, &cfg.keys_manager),
			);
			assert_eq!(status, expected, "async {asynchronous}: update {id}");
		}
		next.flush_within_blocking(Duration::from_secs(60)).unwrap();
		assert!(next.health().is_healthy(), "{:?}", next.health());
		assert_eq!(
			loaded_id(&backend.reader(), cfg, 5),
			base + 6,
			"async {asynchronous}: an earlier run's leftover was applied"
		);
	}
}

/// Fails every listing and batch delete of one channel's update namespace while `failing` is
/// set: the clear of an earlier run's leftovers.
#[derive(Debug)]
struct FailClears {
	namespace: String,
	failing: AtomicBool,
	failed: AtomicUsize,
}

#[async_trait]
impl Hook for FailClears {
	async fn enter(&self, request: Request, path: &ObjectPath) -> object_store::Result<Guard> {
		if matches!(request, Request::List | Request::BulkDelete)
			&& self.failing.load(Ordering::SeqCst)
			&& path.as_ref().contains(&self.namespace)
		{
			self.failed.fetch_add(1, Ordering::SeqCst);
			return Err(injected("clear"));
		}
		Ok(Box::new(()))
	}
}

/// The clear of an earlier run's leftovers fails a few times, then heals. Sync mode: the write
/// that needed it fails (`UnrecoverableError`, as any failed write) and stores nothing; the next
/// call clears and writes. Async mode: `Persist` returns at once, the clear is retried in the
/// background (the health names it), no write of the channel lands meanwhile, and once it heals
/// everything does. Either way the store loads to the live id.
#[test]
fn a_failing_clear_holds_the_channels_writes_until_it_heals() {
	let cfg = static_replay_cfg();
	let (name, _) = first_monitor(cfg);
	for asynchronous in [false, true] {
		let raw = backends::memory("failing-clear");
		let setup = raw.reader();
		let (key, base) = earlier_run(&setup, cfg);
		let hook = Arc::new(FailClears {
			namespace: format!("monitor_updates/{key}"),
			failing: AtomicBool::new(true),
			failed: AtomicUsize::new(0),
		});
		let store = quick_store(&raw.wrapped(|s| Hooked::wrap(s, Arc::clone(&hook))));
		let leftovers = vec![base + 2, base + 7];
		let apply = |persister: &Ours<'_>, id: u64| {
			let (update, monitor) = update(id);
			persister.update_persisted_channel(
				name,
				Some(update),
				&decode(monitor, &cfg.keys_manager),
			)
		};

		let next = if asynchronous {
			let fast_retries =
				config(5, LoadMode::Probe).with_max_retry_backoff(Duration::from_millis(50));
			let next = ours_async(&store, cfg, fast_retries);
			for id in base + 1..=base + 6 {
				assert_eq!(apply(&next, id), ChannelMonitorUpdateStatus::InProgress);
			}
			wait_until("the clear is retried", Duration::from_secs(30), || {
				hook.failed.load(Ordering::SeqCst) >= 6
			});
			let health = next.health();
			assert_eq!(health.failing_writes, 1, "{health:?}");
			let clearing = format!("clearing monitor_updates/{key}/ from update id {}", base + 1);
			assert!(
				health.last_error.is_some_and(|e| e.starts_with(&clearing)),
				"{:?}",
				next.health()
			);
			assert_eq!(
				update_ids_stored(&setup, &key),
				leftovers,
				"a write landed before the clear"
			);
			next
		} else {
			let next = ours(&store, cfg, config(5, LoadMode::Probe));
			assert_eq!(apply(&next, base + 1), ChannelMonitorUpdateStatus::UnrecoverableError);
			assert!(hook.failed.load(Ordering::SeqCst) > 0);
			assert_eq!(
				update_ids_stored(&setup, &key),
				leftovers,
				"a write landed before the clear"
			);
			hook.failing.store(false, Ordering::SeqCst);
			for id in base + 1..=base + 6 {
				assert_eq!(apply(&next, id), ChannelMonitorUpdateStatus::Completed, "update {id}");
			}
			next
		};
		hook.failing.store(false, Ordering::SeqCst);
		next.flush_within_blocking(Duration::from_secs(60)).unwrap();
		assert!(next.health().is_healthy(), "{:?}", next.health());
		assert_eq!(loaded_id(&setup, cfg, 5), base + 6, "async {asynchronous}");
	}
}

// ------------------------------------------------------------------------------------------------
// Archives that fail

/// Answers every request on `archived_monitors/` with a 403, as a bucket policy that denies the
/// prefix would.
#[derive(Debug)]
struct ForbidArchive;

#[async_trait]
impl Hook for ForbidArchive {
	async fn enter(&self, _request: Request, path: &ObjectPath) -> object_store::Result<Guard> {
		if path.as_ref().contains("archived_monitors") {
			return Err(object_store::Error::PermissionDenied {
				path: path.to_string(),
				source: "injected: 403 Forbidden (AccessDenied)".into(),
			});
		}
		Ok(Box::new(()))
	}
}

fn pending_of(error: &lightning::io::Error) -> &Pending {
	error
		.get_ref()
		.and_then(|inner| inner.downcast_ref::<Pending>())
		.unwrap_or_else(|| panic!("no pending work in {error}"))
}

/// Async mode, an archive that a 403 on `archived_monitors/` fails for good: `flush_within` and
/// `consolidate_within` return when their time is up, naming the archive and the error, where
/// `flush` and `consolidate` would wait for ever.
#[test]
fn bounded_flush_and_consolidate_return_naming_a_failing_archive() {
	let cfg = static_replay_cfg();
	let backend =
		backends::memory("forbidden-archive").wrapped(|s| Hooked::wrap(s, Arc::new(ForbidArchive)));
	let (persister, chain_monitor) =
		async_chain_monitor(&quick_store(&backend), cfg, config(5, LoadMode::Probe));
	let (name, first) = first_monitor(cfg);
	persister.persist_new_channel(name, &first);
	persister.flush_within_blocking(Duration::from_secs(60)).unwrap();
	// As LDK does once the channel is fully resolved; the archive runs in the background.
	Persist::<TestChannelSigner>::archive_persisted_channel(persister, name);

	let archive = format!("archive of monitors/{name}");
	let pending = watchdog("flush_within", Duration::from_secs(60), move || {
		persister.flush_within_blocking(Duration::from_millis(500))
	})
	.expect_err("flushed while the archive fails");
	assert_eq!(pending.objects, vec![archive.clone()], "{pending}");
	assert!(pending.last_error.as_deref().is_some_and(|e| e.contains("403")), "{pending}");
	assert!(pending.to_string().contains(&archive), "{pending}");

	let error = watchdog("consolidate_within", Duration::from_secs(60), move || {
		persister.consolidate_within(&*chain_monitor, Duration::from_millis(500))
	})
	.expect_err("consolidated while the archive fails");
	assert_eq!(error.kind(), lightning::io::ErrorKind::TimedOut, "{error}");
	assert_eq!(pending_of(&error).objects, vec![archive.clone()], "{error}");
	assert!(error.to_string().contains(&archive), "{error}");
}

/// An archive of a monitor that is no longer stored checks that the archived copy exists; a 403
/// on that read is the error to report (and retry), not "neither stored nor archived".
#[test]
fn an_unreadable_archive_is_reported_as_itself_not_as_absent() {
	let cfg = static_replay_cfg();
	let backend = backends::memory("unreadable-archive")
		.wrapped(|s| Hooked::wrap(s, Arc::new(ForbidArchive)));
	let persister = ours_async(&quick_store(&backend), cfg, config(5, LoadMode::Probe));
	let (name, _) = first_monitor(cfg);
	Persist::<TestChannelSigner>::archive_persisted_channel(&persister, name);
	wait_until("the archive fails", Duration::from_secs(30), || {
		persister.health().last_error.is_some()
	});
	let error = persister.health().last_error.unwrap();
	assert!(error.contains("403") && error.contains("archived_monitors"), "{error}");
	assert!(!error.contains("neither stored nor archived"), "{error}");
}

// ------------------------------------------------------------------------------------------------
// A monitor LDK no longer reads

/// Node 1's monitors from a real flow: one of a channel node 0 force-closed, fully resolved on
/// node 1 (no claimable balance left), and one of an open channel.
fn resolved_and_open() -> (Vec<u8>, Vec<u8>, PublicKey) {
	let stores = [backends::memory("resolved-0").store(), backends::memory("resolved-1").store()];
	with_network(&stores, |nodes| {
		let resolved = open_channel(nodes, 100_000);
		let open = open_channel(nodes, 100_000);
		force_close_and_confirm(nodes, resolved, 100_000, "resolved");
		connect_blocks(&nodes[1], ANTI_REORG_DELAY);
		nodes[1].chain_monitor.chain_monitor.archive_fully_resolved_channel_monitors();
		connect_blocks(&nodes[1], ARCHIVAL_DELAY_BLOCKS);
		assert!(!nodes[1].chain_monitor.chain_monitor.get_and_clear_pending_events().is_empty());
		let live = &nodes[1].chain_monitor.chain_monitor;
		let monitor = live.get_monitor(resolved).unwrap();
		assert!(monitor.get_claimable_balances().is_empty(), "not fully resolved");
		let counterparty = monitor.get_counterparty_node_id();
		(monitor.encode(), live.get_monitor(open).unwrap().encode(), counterparty)
	})
}

/// `bytes` as LDK before 0.0.118 wrote the monitor: without the counterparty's node id (TLV
/// record 9 of the monitor's last field, a length-prefixed TLV stream).
fn without_counterparty(bytes: &[u8], counterparty: &PublicKey) -> Vec<u8> {
	let mut record = vec![9, 33];
	record.extend_from_slice(&counterparty.serialize());
	let at = bytes.windows(record.len()).rposition(|w| w == record).expect("record 9");
	// The stream's BigSize length, read back from the record: the nearest that spans to the end.
	let (start, header) = (0..at)
		.rev()
		.find_map(|p| {
			let rest = bytes.len() - p;
			match bytes[p] {
				0xfd if u16::from_be_bytes([bytes[p + 1], bytes[p + 2]]) as usize + 3 == rest => {
					Some((p, 3))
				},
				0xfe if u32::from_be_bytes(bytes[p + 1..p + 5].try_into().unwrap()) as usize
					+ 5 == rest =>
				{
					Some((p, 5))
				},
				_ => None,
			}
		})
		.expect("the TLV stream's length");
	let length = bytes.len() - start - header - record.len();
	let mut out = bytes[..start].to_vec();
	match header {
		3 => out.extend_from_slice(&[&[0xfd][..], &(length as u16).to_be_bytes()].concat()),
		_ => out.extend_from_slice(&[&[0xfe][..], &(length as u32).to_be_bytes()].concat()),
	}
	out.extend_from_slice(&bytes[start + header..at]);
	out.extend_from_slice(&bytes[at + record.len()..]);
	out
}

/// A stored monitor that decodes as one LDK no longer reads (`None`: last updated before
/// 0.0.118, fully resolved) is skipped by `cleanup_stale_updates`, with its update objects, as
/// LDK's own cleanup and every loader skip it; the cleanup goes on with the other monitors.
#[test]
fn cleanup_skips_a_monitor_ldk_no_longer_reads() {
	let (resolved, open, counterparty) = resolved_and_open();
	let mut keys = TestKeysInterface::new(&[1; 32], bitcoin::Network::Testnet);
	keys.disable_all_state_policy_checks = true;
	let mut cfgs = create_chanmon_cfgs(1);
	cfgs[0].keys_manager = keys;
	let keys = &cfgs[0].keys_manager;
	let old = without_counterparty(&resolved, &counterparty);
	let read = <Option<(BlockHash, Monitor)>>::read(&mut &old[..], (keys, keys)).unwrap();
	assert!(read.is_none(), "LDK still reads the stripped monitor");
	let (old_key, old_id) = {
		let monitor = decode(&resolved, keys);
		(monitor.persistence_key().to_string(), monitor.get_latest_update_id())
	};
	let open = decode(&open, keys);
	let (open_key, open_id) = (open.persistence_key().to_string(), open.get_latest_update_id());

	let backend = backends::memory("cleanup-old-monitor");
	let store = backend.store();
	let mut stored = vec![0xff, 0xff];
	stored.extend_from_slice(&old);
	KVStoreSync::write(&store, "monitors", "", &old_key, stored).unwrap();
	KVStoreSync::write(&store, "monitor_updates", &old_key, &old_id.to_string(), vec![1]).unwrap();
	let mut stored = vec![0xff, 0xff];
	stored.extend_from_slice(&open.encode());
	KVStoreSync::write(&store, "monitors", "", &open_key, stored).unwrap();
	KVStoreSync::write(&store, "monitor_updates", &open_key, &open_id.to_string(), vec![2])
		.unwrap();

	let persister = ours(&store, &cfgs[0], config(5, LoadMode::Probe));
	assert_eq!(persister.cleanup_stale_updates_blocking().unwrap(), 1);
	assert_eq!(
		update_ids_stored(&store, &open_key),
		Vec::<u64>::new(),
		"the open channel's stale update"
	);
	assert_eq!(update_ids_stored(&store, &old_key), vec![old_id], "the skipped monitor's update");
	// Every loader skips the monitor the same way.
	for mode in [LoadMode::Probe, LoadMode::List] {
		let loaded = ours(&store, &cfgs[0], config(5, mode))
			.read_all_channel_monitors_with_updates_blocking()
			.unwrap();
		let keys: Vec<String> =
			loaded.iter().map(|(_, m)| m.persistence_key().to_string()).collect();
		assert_eq!(keys, vec![open_key.clone()], "{mode:?}");
	}
	let theirs = ldk(&store, &cfgs[0], 5).read_all_channel_monitors_with_updates().unwrap();
	assert_eq!(theirs.len(), 1);
}
