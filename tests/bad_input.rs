//! Bad input: corrupt, truncated and foreign objects, a monitor under the wrong key, swapped and
//! misnamed updates, a missing sentinel. Each gives a clear error that names the object, and
//! nothing stored is changed by the attempt. Property tests feed arbitrary names and bytes to the
//! key mapping, the inventory and the monitor decoding: errors, never panics.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::backends::{self, Backend};
use common::dual_flow::{config, dual_flow, ours, replay_keys, stored_layout};
use futures::TryStreamExt;
use ldk_object_store::inspect::Inventory;
use ldk_object_store::keys::{KeyMapper, KvKey};
use ldk_object_store::{LoadMode, ObjectKvStore};
use lightning::io::ErrorKind;
use lightning::ln::functional_test_utils::create_chanmon_cfgs;
use lightning::util::persist::{KVStoreSync, MigratableKVStore};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use proptest::prelude::*;

/// Every raw object below the backend's root, with its bytes, except the writer lease (which
/// each store instance takes, renews and releases: it is not the node's state).
fn raw_objects(backend: &Backend) -> BTreeMap<String, Vec<u8>> {
	let store = Arc::clone(&backend.object_store);
	futures::executor::block_on(async move {
		let metas: Vec<_> = store.list(None).try_collect().await.unwrap();
		let mut out = BTreeMap::new();
		for meta in metas {
			if meta.location.filename() == Some(ldk_object_store::lease::LEASE_OBJECT) {
				continue;
			}
			let bytes = store.get(&meta.location).await.unwrap().bytes().await.unwrap();
			out.insert(meta.location.to_string(), bytes.to_vec());
		}
		out
	})
}

/// A copy of `source`'s keys in a new in-memory backend.
fn copy_of(source: &ObjectKvStore, name: &str) -> Backend {
	let backend = backends::memory(name);
	let target = backend.store();
	for (p, s, k) in source.list_all_keys().unwrap() {
		target.write(&p, &s, &k, source.read(&p, &s, &k).unwrap()).unwrap();
	}
	backend
}

/// Loads `backend` in `mode` and returns the error, checking that it names `needle` and that the
/// load changed nothing.
/// A writer that damages the store behind the node's back: no lease of its own, so no fencing
/// (update objects are create-only under fencing, and damage means replacing them).
fn damage(backend: &Backend) -> ObjectKvStore {
	backend.reader()
}

fn load_error(backend: &Backend, mode: LoadMode, needle: &str) -> lightning::io::Error {
	let before = raw_objects(backend);
	let mut cfgs = create_chanmon_cfgs(1);
	cfgs[0].keys_manager = replay_keys();
	let persister = ours(&backend.store(), &cfgs[0], config(1000, mode));
	let Err(err) = persister.read_all_channel_monitors_with_updates_blocking() else {
		panic!("{mode:?}: loaded despite the damage ({needle})")
	};
	assert!(err.to_string().contains(needle), "{mode:?}: {err} should name {needle}");
	assert_ne!(err.kind(), ErrorKind::NotFound, "{err}");
	assert_eq!(raw_objects(backend), before, "a failed load changed the store");
	err
}

fn loads(backend: &Backend, mode: LoadMode) -> u64 {
	let mut cfgs = create_chanmon_cfgs(1);
	cfgs[0].keys_manager = replay_keys();
	let persister = ours(&backend.store(), &cfgs[0], config(1000, mode));
	let loaded = persister.read_all_channel_monitors_with_updates_blocking().unwrap();
	loaded[0].1.get_latest_update_id()
}

const MODES: [LoadMode; 4] =
	[LoadMode::Probe, LoadMode::Pipelined { window: 4 }, LoadMode::List, LoadMode::ListEach];

#[test]
fn damaged_objects_give_errors_that_name_them() {
	let originals = [backends::memory("o0"), backends::memory("o1")];
	dual_flow(&[backends::memory("l0"), backends::memory("l1")], &originals, 1000, 6);
	let source = originals[0].store();
	let (key, _stored_id, pending) = stored_layout(&source);
	let monitor = source.read("monitors", "", &key).unwrap();
	let other_key = format!("{}_1", "ab".repeat(32));

	// Garbage of the right size, a version byte LDK does not know, and a truncated object.
	// (A flipped bit inside a field that still decodes cannot be seen in LDK's format, which has
	// no checksum; the optional encryption layer detects any change.)
	let mut bad_version = monitor.clone();
	bad_version[3] = 0x7f;
	for (label, damaged) in [
		("garbage", vec![0xab; monitor.len()]),
		("bad-version", bad_version),
		("truncated", monitor[..monitor.len() / 2].to_vec()),
	] {
		let backend = copy_of(&source, label);
		damage(&backend).write("monitors", "", &key, damaged).unwrap();
		for mode in MODES {
			let err = load_error(&backend, mode, &format!("monitors/{key}"));
			assert_eq!(err.kind(), ErrorKind::InvalidData, "{label}: {err}");
		}
	}

	// A monitor stored under another channel's key.
	let backend = copy_of(&source, "wrong-key");
	damage(&backend).write("monitors", "", &other_key, monitor.clone()).unwrap();
	for mode in MODES {
		let err = load_error(&backend, mode, &other_key);
		assert!(err.to_string().contains("belongs to"), "{err}");
	}

	// A key in the monitors namespace that is no monitor name.
	let backend = copy_of(&source, "not-a-monitor");
	damage(&backend).write("monitors", "", "notes", b"hello".to_vec()).unwrap();
	load_error(&backend, LoadMode::Probe, "monitor key \"notes\" is invalid");

	// An object whose name is outside LDK's alphabet: listing refuses it, naming it.
	let backend = copy_of(&source, "foreign");
	let foreign = Path::from(format!("{}/monitors/read.me", backend.prefix));
	futures::executor::block_on(backend.object_store.put(&foreign, PutPayload::from_static(b"x")))
		.unwrap();
	let err = load_error(&backend, LoadMode::Probe, "monitors/read.me");
	assert_eq!(err.kind(), ErrorKind::InvalidData);
	assert!(backend.store().list_all_keys().unwrap_err().to_string().contains("read.me"));

	// A corrupt update, and an update stored under another update's id.
	let (first, second) = (pending[0].to_string(), pending[1].to_string());
	let backend = copy_of(&source, "bad-update");
	damage(&backend).write("monitor_updates", &key, &second, vec![7; 40]).unwrap();
	for mode in MODES {
		load_error(&backend, mode, &format!("monitor_updates/{key}/{second}"));
	}
	let backend = copy_of(&source, "swapped-update");
	let first_bytes = backend.store().read("monitor_updates", &key, &first).unwrap();
	damage(&backend).write("monitor_updates", &key, &second, first_bytes).unwrap();
	for mode in MODES {
		let err = load_error(&backend, mode, &format!("monitor_updates/{key}/{second}"));
		assert!(err.to_string().contains(&format!("holds update {first}")), "{err}");
	}

	// An update key that is not a decimal id: the list mode refuses it by name; probing never
	// reads it, and the inventory reports it.
	let backend = copy_of(&source, "misnamed-update");
	damage(&backend).write("monitor_updates", &key, "latest", vec![1]).unwrap();
	load_error(&backend, LoadMode::List, &format!("monitor_updates/{key}/latest"));
	assert_eq!(loads(&backend, LoadMode::Probe), *pending.last().unwrap());
	let inventory = futures::executor::block_on(Inventory::scan(&backend.store())).unwrap();
	assert_eq!(inventory.monitors[0].malformed, ["latest"]);

	// A monitor written without the sentinel next to pending updates loads as LDK's own
	// persister loads it (the sentinel is optional on read), and the inventory flags it.
	let backend = copy_of(&source, "no-sentinel");
	damage(&backend).write("monitors", "", &key, monitor[2..].to_vec()).unwrap();
	for mode in MODES {
		assert_eq!(loads(&backend, mode), *pending.last().unwrap());
	}
	let inventory = futures::executor::block_on(Inventory::scan(&backend.store())).unwrap();
	assert!(!inventory.monitors[0].sentinel && !inventory.monitors[0].pending.is_empty());
}

proptest! {
	#![proptest_config(ProptestConfig::with_cases(256))]

	/// Any names: valid ones map to a path and back, invalid ones are refused; no panic.
	#[test]
	fn key_mapping_never_panics(p in ".{0,130}", s in ".{0,130}", k in ".{0,130}", root in "[a-z/]{0,12}") {
		let mapper = KeyMapper::new(Path::from(root.as_str()));
		if let Ok(key) = KvKey::new(&p, &s, &k) {
			prop_assert_eq!(mapper.kv_key(&mapper.object_path(&key)).unwrap(), key);
		}
		let _ = mapper.kv_key(&Path::from(format!("{root}/{p}/{s}/{k}")));
	}

	/// Any bytes as a monitor object, with or without the sentinel, and as its first update: the
	/// inventory and every load mode return, never panic.
	#[test]
	fn monitor_decoding_never_panics(monitor in proptest::collection::vec(any::<u8>(), 0..600), sentinel in any::<bool>(), update in proptest::collection::vec(any::<u8>(), 0..200)) {
		let backend = backends::memory("fuzz").wrapped(|_| Arc::new(InMemory::new()));
		let store = backend.store();
		let key = format!("{}_0", "cd".repeat(32));
		let mut bytes = if sentinel { vec![0xff, 0xff] } else { Vec::new() };
		bytes.extend_from_slice(&monitor);
		store.write("monitors", "", &key, bytes).unwrap();
		store.write("monitor_updates", &key, "1", update).unwrap();
		let _ = futures::executor::block_on(Inventory::scan(&store));
		let mut cfgs = create_chanmon_cfgs(1);
		cfgs[0].keys_manager = replay_keys();
		for mode in MODES {
			let persister = ours(&store, &cfgs[0], config(1000, mode));
			let _ = persister.read_all_channel_monitors_with_updates_blocking();
		}
	}
}
