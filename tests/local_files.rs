//! What a `file://` store does itself rather than through object_store keeps every guarantee.
//!
//! Reads open the object's file directly instead of going through object_store's `get`
//! (synchronous reads in the caller's thread, async ones in one blocking step):
//!
//! - a read sees every write and remove called before it on the key, even one whose future was
//!   never awaited and is still running;
//! - "not found" only when no object is there: never while the object is being replaced, and
//!   exactly where object_store's own `get` says so (a directory at the path included).
//!
//! Removes sync the directory (object_store's `with_fsync` does not cover deletes): counted
//! under `strace`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use ldk_object_store::{ObjectKvStore, StoreBuilder};
use lightning::io::ErrorKind;
use lightning::util::persist::{KVStore, KVStoreSync};
use object_store::ObjectStoreExt;

fn file_store(dir: &std::path::Path) -> ObjectKvStore {
	StoreBuilder::from_url(format!("file://{}", dir.display())).build().unwrap()
}

/// A value large enough that its write (with fsync) is still running when the next call is made.
fn value(version: u8) -> Vec<u8> {
	vec![version; 2 << 20]
}

#[test]
fn a_sync_read_waits_for_earlier_unawaited_writes_and_removes() {
	let dir = tempfile::tempdir().unwrap();
	let store = file_store(dir.path());
	for round in 0..8u8 {
		let key = format!("k{round}");
		// Started, never awaited before the read: only the key's queue orders them.
		let first = KVStore::write(&store, "ns", "sub", &key, value(1));
		let removed = KVStore::remove(&store, "ns", "sub", &key, false);
		let second = KVStore::write(&store, "ns", "sub", &key, value(round + 2));
		let read = KVStoreSync::read(&store, "ns", "sub", &key).unwrap();
		assert!(read == value(round + 2), "round {round}: the read did not see the last write");

		let gone = KVStore::remove(&store, "ns", "sub", &key, false);
		let absent = KVStoreSync::read(&store, "ns", "sub", &key).unwrap_err();
		assert_eq!(absent.kind(), ErrorKind::NotFound, "round {round}: read before the remove");
		for pending in [first, removed, second, gone] {
			futures::executor::block_on(pending).unwrap();
		}
	}
}

#[test]
fn an_async_read_waits_for_earlier_unawaited_writes() {
	let dir = tempfile::tempdir().unwrap();
	let store = file_store(dir.path());
	for round in 0..8u8 {
		let key = format!("k{round}");
		let write = KVStore::write(&store, "ns", "", &key, value(round));
		let read = KVStore::read(&store, "ns", "", &key);
		let remove = KVStore::remove(&store, "ns", "", &key, false);
		let after = KVStore::read(&store, "ns", "", &key);
		// Awaited in reverse: the order is the calls', not the awaits'.
		let after = futures::executor::block_on(after).unwrap_err();
		assert_eq!(after.kind(), ErrorKind::NotFound, "round {round}");
		futures::executor::block_on(remove).unwrap();
		assert!(futures::executor::block_on(read).unwrap() == value(round), "round {round}");
		futures::executor::block_on(write).unwrap();
	}
}

/// A second store on the same directory shares no queue with the writer, so its reads race the
/// replacements: each must still be one whole version, never "not found".
#[test]
fn a_replaced_object_is_never_read_as_absent_or_partial() {
	let dir = tempfile::tempdir().unwrap();
	let writer = file_store(dir.path());
	let reader = StoreBuilder::from_url(format!("file://{}", dir.path().display()))
		.without_writer_lease()
		.build()
		.unwrap();
	let versions: Vec<Vec<u8>> = (0..4u8).map(|v| vec![v; 64 << 10]).collect();
	KVStoreSync::write(&writer, "ns", "sub", "key", versions[0].clone()).unwrap();
	let done = Arc::new(AtomicBool::new(false));
	let replacing = {
		let (done, versions) = (Arc::clone(&done), versions.clone());
		thread::spawn(move || {
			for i in 0..200 {
				KVStoreSync::write(&writer, "ns", "sub", "key", versions[i % 4].clone()).unwrap();
			}
			done.store(true, Ordering::SeqCst);
		})
	};
	let mut reads = 0;
	while !done.load(Ordering::SeqCst) {
		let read = KVStoreSync::read(&reader, "ns", "sub", "key");
		let data = read.unwrap_or_else(|e| panic!("read {reads} during replacement failed: {e}"));
		assert!(versions.contains(&data), "read {reads} is not one whole version");
		reads += 1;
	}
	replacing.join().unwrap();
	assert!(reads > 0);
}

/// Absent keys, and a key whose path is a namespace's directory, read as absent exactly where
/// object_store's `get` finds nothing; present keys read as what `get` returns.
#[test]
fn outcomes_match_object_stores_own_get() {
	let dir = tempfile::tempdir().unwrap();
	let store = file_store(dir.path());
	KVStoreSync::write(&store, "ns", "sub", "present", b"value".to_vec()).unwrap();
	KVStoreSync::write(&store, "ns", "", "top", Vec::new()).unwrap();
	let cases = [
		("ns", "sub", "present"),
		("ns", "", "top"),
		("ns", "sub", "absent"),
		("ns", "", "sub"),
		("other", "", "absent"),
	];
	for (primary, secondary, key) in cases {
		let ours = KVStoreSync::read(&store, primary, secondary, key);
		let ours_async =
			futures::executor::block_on(KVStore::read(&store, primary, secondary, key));
		let kv_key = ldk_object_store::keys::KvKey::new(primary, secondary, key).unwrap();
		let path = store.key_mapper().object_path(&kv_key);
		let raw = futures::executor::block_on(async {
			match store.raw_backend().get(&path).await {
				Ok(got) => got.bytes().await.map(|b| b.to_vec()),
				Err(e) => Err(e),
			}
		});
		let name = format!("{primary}/{secondary}/{key}");
		match raw {
			Ok(data) => {
				assert_eq!(ours.unwrap(), data, "{name}");
				assert_eq!(ours_async.unwrap(), data, "{name}");
			},
			Err(object_store::Error::NotFound { .. }) => {
				assert_eq!(ours.unwrap_err().kind(), ErrorKind::NotFound, "{name}");
				assert_eq!(ours_async.unwrap_err().kind(), ErrorKind::NotFound, "{name}");
			},
			Err(e) => panic!("{name}: object_store failed: {e}"),
		}
	}
}

const SYNC_CHILD_ENV: &str = "LDK_OS_REMOVE_SYNC_CHILD";
const REMOVES: usize = 3;

/// The child: opens a `file://` store on a directory holding `REMOVES` objects (written without
/// any fsync, so every sync counted comes from the store) and removes them all (`remove`), or
/// only opens it (`open`). Does nothing unless started by the parent.
#[test]
fn remove_sync_child() {
	let Ok(spec) = std::env::var(SYNC_CHILD_ENV) else { return };
	let (which, dir) = spec.split_once(';').expect("<which>;<dir>");
	let keys: Vec<String> = (0..REMOVES).map(|i| format!("key{i}")).collect();
	let namespace = std::path::Path::new(dir).join("ns");
	std::fs::create_dir_all(&namespace).unwrap();
	for key in &keys {
		std::fs::write(namespace.join(key), b"value").unwrap();
	}
	let store = file_store(std::path::Path::new(dir));
	if which == "remove" {
		for key in &keys {
			KVStoreSync::remove(&store, "ns", "", key, false).unwrap();
		}
		for key in &keys {
			assert!(!namespace.join(key).exists());
		}
	}
}

/// The fsync and fdatasync calls of the child `remove_sync_child` doing `which`.
fn syncs_of(which: &str) -> Option<usize> {
	common::strace::syncs_of_child("remove_sync_child", SYNC_CHILD_ENV, which)
}

#[test]
fn file_url_removes_sync_their_directory() {
	let (Some(removing), Some(opening)) = (syncs_of("remove"), syncs_of("open")) else { return };
	println!(
		"fsync calls: opening the store {opening}, opening it and {REMOVES} removes {removing}"
	);
	assert!(
		removing >= opening + REMOVES,
		"{REMOVES} removes made {} fsync calls",
		removing.saturating_sub(opening)
	);
}
