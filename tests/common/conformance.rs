//! The conformance suite: plain async functions that take a store and check one part of LDK's
//! `KVStore` contract each. Every backend runs all of them (`tests/conformance.rs`).

use std::collections::BTreeSet;

use futures::future::join_all;
use ldk_object_store::ObjectKvStore;
use lightning::io::ErrorKind;
use lightning::util::persist::{
	migrate_kv_store_data, KVStore, KVStoreSync, MigratableKVStore, KVSTORE_NAMESPACE_KEY_MAX_LEN,
};

use super::backends::Backend;

async fn read(store: &ObjectKvStore, p: &str, s: &str, k: &str) -> Result<Vec<u8>, ErrorKind> {
	KVStore::read(store, p, s, k).await.map_err(|e| e.kind())
}

async fn write(store: &ObjectKvStore, p: &str, s: &str, k: &str, v: &[u8]) {
	KVStore::write(store, p, s, k, v.to_vec()).await.unwrap_or_else(|e| panic!("write {k}: {e}"));
}

async fn list(store: &ObjectKvStore, p: &str, s: &str) -> BTreeSet<String> {
	KVStore::list(store, p, s).await.expect("list").into_iter().collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
	keys.iter().map(|k| k.to_string()).collect()
}

/// Write, read, overwrite, remove, and the absent cases, through both traits.
pub async fn read_write_remove(store: &ObjectKvStore) {
	assert_eq!(read(store, "p", "s", "k").await, Err(ErrorKind::NotFound));
	write(store, "p", "s", "k", b"one").await;
	assert_eq!(read(store, "p", "s", "k").await.unwrap(), b"one");
	KVStoreSync::write(store, "p", "s", "k", b"two".to_vec()).unwrap();
	assert_eq!(KVStoreSync::read(store, "p", "s", "k").unwrap(), b"two");

	write(store, "", "", "top", b"").await;
	assert_eq!(read(store, "", "", "top").await.unwrap(), b"", "empty values survive");

	for lazy in [false, true] {
		KVStore::remove(store, "p", "s", "k", lazy).await.unwrap();
		assert_eq!(read(store, "p", "s", "k").await, Err(ErrorKind::NotFound));
		// Removing what is not there succeeds, on every backend.
		KVStore::remove(store, "p", "s", "k", lazy).await.unwrap();
		KVStoreSync::remove(store, "p", "s", "never-written", lazy).unwrap();
	}
	assert_eq!(list(store, "p", "s").await, set(&[]));
}

/// `list` returns exactly the keys directly in one namespace: no deeper namespaces, no prefixes,
/// no keys of neighbouring namespaces; an unknown namespace lists as empty.
pub async fn list_one_namespace_only(store: &ObjectKvStore, backend: &Backend) {
	write(store, "", "", "manager", b"m").await;
	write(store, "monitors", "", "aa_0", b"1").await;
	write(store, "monitors", "", "bb_1", b"2").await;
	write(store, "monitor_updates", "aa_0", "1", b"u1").await;
	write(store, "monitor_updates", "aa_0", "10", b"u10").await;
	write(store, "monitor_updates", "aa_00", "2", b"other monitor").await;
	write(store, "monitor_updates", "", "direct", b"beside the secondaries").await;

	assert_eq!(list(store, "", "").await, set(&["manager"]));
	assert_eq!(list(store, "monitors", "").await, set(&["aa_0", "bb_1"]));
	assert_eq!(list(store, "monitor_updates", "").await, set(&["direct"]));
	assert_eq!(list(store, "monitor_updates", "aa_0").await, set(&["1", "10"]));
	assert_eq!(list(store, "monitor_updates", "aa_00").await, set(&["2"]));
	assert_eq!(list(store, "monitor_updates", "aa").await, set(&[]));
	assert_eq!(list(store, "unknown", "").await, set(&[]));
	assert_eq!(list(store, "unknown", "deeper").await, set(&[]));

	if backend.key_and_namespace_may_share_a_name {
		// LDK asks callers not to do this; an object store must still never confuse the two.
		write(store, "", "", "monitors", b"a key named like a namespace").await;
		write(store, "monitors", "", "bb_1", b"a key named like a secondary").await;
		write(store, "monitors", "bb_1", "x", b"below it").await;
		assert_eq!(list(store, "", "").await, set(&["manager", "monitors"]));
		assert_eq!(list(store, "monitors", "").await, set(&["aa_0", "bb_1"]));
		assert_eq!(list(store, "monitors", "bb_1").await, set(&["x"]));
		assert_eq!(read(store, "", "", "monitors").await.unwrap(), b"a key named like a namespace");
	}
}

/// Listing returns every key of a namespace however many pages the backend needs (S3 pages hold
/// 1000 keys).
pub async fn list_across_pages(store: &ObjectKvStore) {
	const N: usize = 1_150;
	let writes: Vec<_> =
		(0..N).map(|i| KVStore::write(store, "many", "keys", &format!("{i}"), vec![1])).collect();
	for result in join_all(writes).await {
		result.unwrap();
	}
	write(store, "many", "keys-deeper", "not-listed", b"x").await;
	let listed = list(store, "many", "keys").await;
	assert_eq!(listed.len(), N);
	assert_eq!(listed, (0..N).map(|i| i.to_string()).collect());
}

/// Invalid names are refused with `InvalidInput` naming the part, and nothing is written.
pub async fn invalid_names_are_refused(store: &ObjectKvStore) {
	let too_long = "x".repeat(KVSTORE_NAMESPACE_KEY_MAX_LEN + 1);
	let cases: [(&str, &str, &str, &str); 7] = [
		("", "", "", "key"),
		("", "s", "k", "secondary namespace"),
		("p", "", "a/b", "key"),
		("p", "", "a.b", "key"),
		("p q", "", "k", "primary namespace"),
		("p", "ü", "k", "secondary namespace"),
		("p", "", too_long.as_str(), "key"),
	];
	for (p, s, k, part) in cases {
		let err = KVStore::write(store, p, s, k, vec![1]).await.unwrap_err();
		assert_eq!(err.kind(), ErrorKind::InvalidInput, "{p:?}/{s:?}/{k:?}");
		assert!(err.to_string().contains(part), "{err} should name the {part}");
		let err = KVStoreSync::read(store, p, s, k).unwrap_err();
		assert_eq!(err.kind(), ErrorKind::InvalidInput);
		let err = KVStoreSync::remove(store, p, s, k, false).unwrap_err();
		assert_eq!(err.kind(), ErrorKind::InvalidInput);
	}
	let err = KVStore::list(store, "", "s").await.unwrap_err();
	assert_eq!(err.kind(), ErrorKind::InvalidInput);
	assert!(store.list_all_keys().unwrap().is_empty(), "an invalid write left an object");

	let max = "m".repeat(KVSTORE_NAMESPACE_KEY_MAX_LEN);
	write(store, &max, &max, &max, b"longest names").await;
	assert_eq!(read(store, &max, &max, &max).await.unwrap(), b"longest names");
	assert_eq!(list(store, &max, &max).await, set(&[max.as_str()]));
}

/// Large objects round-trip intact.
pub async fn large_values(store: &ObjectKvStore) {
	let big: Vec<u8> = (0..6 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
	KVStore::write(store, "monitors", "", "big", big.clone()).await.unwrap();
	assert!(read(store, "monitors", "", "big").await.unwrap() == big, "6 MiB value changed");
}

/// `list_all_keys` returns every triple, and data migrates to and from another store.
pub async fn list_all_keys_and_migration(store: &ObjectKvStore, mut other: ObjectKvStore) {
	let triples = [
		("", "", "manager"),
		("", "", "scorer"),
		("monitors", "", "aa_0"),
		("monitor_updates", "aa_0", "7"),
		("archived_monitors", "", "bb_1"),
	];
	for (i, (p, s, k)) in triples.iter().enumerate() {
		write(store, p, s, k, &[i as u8; 3]).await;
	}
	let mut all = store.list_all_keys().unwrap();
	all.sort();
	let mut expected: Vec<_> =
		triples.iter().map(|(p, s, k)| (p.to_string(), s.to_string(), k.to_string())).collect();
	expected.sort();
	assert_eq!(all, expected);

	let mut source = store.clone();
	migrate_kv_store_data(&mut source, &mut other).unwrap();
	for (i, (p, s, k)) in triples.iter().enumerate() {
		assert_eq!(KVStoreSync::read(&other, p, s, k).unwrap(), vec![i as u8; 3]);
	}
}

/// The order of calls decides, however the futures are awaited: `write(a)`, `remove`, `write(b)`
/// awaited in reverse leave `b`; `write(a)`, `write(b)`, `remove` leave nothing; a read called
/// after a write sees it.
pub async fn order_of_calls_decides(store: &ObjectKvStore) {
	for round in 0..20 {
		let a = KVStore::write(store, "order", "", "k", format!("a{round}").into_bytes());
		let r = KVStore::remove(store, "order", "", "k", round % 2 == 0);
		let b = KVStore::write(store, "order", "", "k", format!("b{round}").into_bytes());
		b.await.unwrap();
		r.await.unwrap();
		a.await.unwrap();
		assert_eq!(read(store, "order", "", "k").await.unwrap(), format!("b{round}").into_bytes());

		let a = KVStore::write(store, "order", "", "k2", b"a".to_vec());
		let b = KVStore::write(store, "order", "", "k2", b"b".to_vec());
		let r = KVStore::remove(store, "order", "", "k2", true);
		r.await.unwrap();
		b.await.unwrap();
		a.await.unwrap();
		assert_eq!(read(store, "order", "", "k2").await, Err(ErrorKind::NotFound));

		let w = KVStore::write(store, "order", "", "k3", format!("w{round}").into_bytes());
		let r = KVStore::read(store, "order", "", "k3");
		assert_eq!(r.await.unwrap(), format!("w{round}").into_bytes(), "read overtook a write");
		w.await.unwrap();
	}
}

/// Many writers to a few shared keys, their futures awaited in a shuffled order: each key ends
/// with the value of the last call made to it.
pub async fn last_call_wins_under_concurrency(store: &ObjectKvStore, writes: usize) {
	let keys = ["k0", "k1", "k2", "k3"];
	let mut futures = Vec::new();
	let mut last = std::collections::HashMap::new();
	for i in 0..writes {
		let key = keys[fastrand::usize(..keys.len())];
		last.insert(key, i);
		futures.push(KVStore::write(store, "race", "", key, i.to_string().into_bytes()));
	}
	fastrand::shuffle(&mut futures);
	for result in join_all(futures).await {
		result.unwrap();
	}
	for (key, i) in last {
		let value = read(store, "race", "", key).await.unwrap();
		assert_eq!(String::from_utf8(value).unwrap(), i.to_string(), "stale write won on {key}");
	}
}

/// An empty "folder" object that tools leave at a namespace's path (`<root>/ns/`, which object
/// stores list as `<root>/ns`) is not a key: `list` and `list_all_keys` skip it.
pub async fn directory_markers_are_not_keys(store: &ObjectKvStore, backend: &Backend) {
	if !backend.key_and_namespace_may_share_a_name {
		return;
	}
	write(store, "ns", "", "k", b"v").await;
	let marker = object_store::path::Path::from(format!("{}/ns", backend.prefix));
	object_store::ObjectStoreExt::put(
		backend.object_store.as_ref(),
		&marker,
		Vec::<u8>::new().into(),
	)
	.await
	.unwrap();
	assert_eq!(list(store, "", "").await, set(&[]));
	assert_eq!(list(store, "ns", "").await, set(&["k"]));
	let all = store.list_all_keys().unwrap();
	assert_eq!(all, [("ns".to_string(), String::new(), "k".to_string())]);
}
