//! The sync trait works from plain threads and from inside multi-thread and current-thread tokio
//! runtimes (ldk-node calls it from its runtime's worker threads); the async trait's futures work
//! on any executor; dropping the store inside a runtime does not panic.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::backends;
use ldk_object_store::ObjectKvStore;
use lightning::util::persist::{KVStore, KVStoreSync};

fn sync_round_trip(store: &ObjectKvStore, key: &str) {
	KVStoreSync::write(store, "rt", "", key, key.as_bytes().to_vec()).unwrap();
	assert_eq!(KVStoreSync::read(store, "rt", "", key).unwrap(), key.as_bytes());
	assert!(KVStoreSync::list(store, "rt", "").unwrap().contains(&key.to_string()));
	KVStoreSync::remove(store, "rt", "", key, false).unwrap();
}

#[test]
fn sync_from_plain_threads() {
	let store = backends::local_dir("threads").store();
	let threads: Vec<_> = (0..8)
		.map(|i| {
			let store = store.clone();
			std::thread::spawn(move || sync_round_trip(&store, &format!("t{i}")))
		})
		.collect();
	for t in threads {
		t.join().unwrap();
	}
}

#[tokio::test(flavor = "current_thread")]
async fn sync_inside_a_current_thread_runtime() {
	let store = backends::memory("current").store();
	sync_round_trip(&store, "inside");
	// Interleave with async calls on the same thread.
	KVStore::write(&store, "rt", "", "async", vec![1]).await.unwrap();
	assert_eq!(KVStoreSync::read(&store, "rt", "", "async").unwrap(), vec![1]);
	drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_inside_a_multi_thread_runtime_from_many_tasks() {
	let store = Arc::new(backends::local_dir("multi").store());
	let tasks: Vec<_> = (0..16)
		.map(|i| {
			let store = Arc::clone(&store);
			tokio::spawn(async move { sync_round_trip(&store, &format!("task{i}")) })
		})
		.collect();
	for task in tasks {
		tokio::time::timeout(Duration::from_secs(60), task).await.expect("deadlock").unwrap();
	}
}

#[test]
fn async_futures_run_on_another_executor() {
	let store = backends::memory("executor").store();
	futures::executor::block_on(async {
		KVStore::write(&store, "rt", "", "k", vec![9]).await.unwrap();
		assert_eq!(KVStore::read(&store, "rt", "", "k").await.unwrap(), vec![9]);
		// And the sync side inside that executor's `block_on`.
		assert_eq!(KVStoreSync::read(&store, "rt", "", "k").unwrap(), vec![9]);
	});
}

#[tokio::test]
async fn writes_run_even_when_their_futures_are_dropped_unpolled() {
	let backend = backends::memory("unpolled");
	let store = backend.store();
	drop(KVStore::write(&store, "rt", "", "k", vec![1]));
	// The read is queued behind the write, so it sees it.
	assert_eq!(KVStore::read(&store, "rt", "", "k").await.unwrap(), vec![1]);
}
