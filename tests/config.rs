//! Stores built from URLs: the literal object layout, LocalStack through an `s3://` URL, and
//! byte-for-byte interchange with LDK's own `FilesystemStore` directory through `file://`.

mod common;

use std::sync::Arc;

use futures::TryStreamExt;
use ldk_object_store::StoreBuilder;
use lightning::util::persist::{KVStoreSync, MigratableKVStore};
use lightning_persister::fs_store::FilesystemStore;
use object_store::memory::InMemory;
use object_store::ObjectStore;

const TRIPLES: [(&str, &str, &str); 5] = [
	("", "", "manager"),
	("", "", "network_graph"),
	("monitors", "", "0a1b_1"),
	("monitor_updates", "0a1b_1", "17"),
	("archived_monitors", "", "ffee_0"),
];

#[tokio::test]
async fn objects_are_laid_out_as_documented() {
	let backend: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
	let store =
		StoreBuilder::from_store(Arc::clone(&backend)).with_prefix("node-1").build().unwrap();
	for (p, s, k) in TRIPLES {
		KVStoreSync::write(&store, p, s, k, vec![1]).unwrap();
	}
	let mut paths: Vec<String> =
		backend.list(None).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
	paths.sort();
	assert_eq!(
		paths,
		[
			"node-1/.ldk-object-store-lease",
			"node-1/archived_monitors/ffee_0",
			"node-1/manager",
			"node-1/monitor_updates/0a1b_1/17",
			"node-1/monitors/0a1b_1",
			"node-1/network_graph",
		]
	);
}

#[test]
fn s3_url_against_localstack() {
	let (Ok(url), Ok(endpoint)) = (
		std::env::var("LDK_OS_TEST_LOCALSTACK_URL"),
		std::env::var("LDK_OS_TEST_LOCALSTACK_ENDPOINT"),
	) else {
		assert!(common::backends::s3("LOCALSTACK", "url").is_none());
		return;
	};
	let prefix = format!("url-test-{:x}", fastrand::u64(..));
	let build = || {
		StoreBuilder::from_url(format!("{url}/{prefix}"))
			.with_option("aws_endpoint", endpoint.clone())
			.with_option("aws_allow_http", "true")
			.build()
			.unwrap()
	};
	let store = build();
	for (i, (p, s, k)) in TRIPLES.iter().enumerate() {
		KVStoreSync::write(&store, p, s, k, vec![i as u8; 100]).unwrap();
	}
	// A restart: the first instance lets go of its writer lease, the next one takes it.
	drop(store);
	let reopened = build();
	let mut all = reopened.list_all_keys().unwrap();
	all.sort();
	assert_eq!(all.len(), TRIPLES.len());
	for (i, (p, s, k)) in TRIPLES.iter().enumerate() {
		assert_eq!(KVStoreSync::read(&reopened, p, s, k).unwrap(), vec![i as u8; 100]);
	}
}

#[test]
fn a_filesystem_store_directory_is_readable_through_file_urls_and_back() {
	let dir = tempfile::tempdir().unwrap();
	let ldk = FilesystemStore::new(dir.path().to_path_buf());
	for (i, (p, s, k)) in TRIPLES.iter().enumerate() {
		KVStoreSync::write(&ldk, p, s, k, vec![i as u8; 10]).unwrap();
	}
	let ours = StoreBuilder::from_url(format!("file://{}", dir.path().display())).build().unwrap();
	let mut theirs = ldk.list_all_keys().unwrap();
	let mut mine = ours.list_all_keys().unwrap();
	theirs.sort();
	mine.sort();
	assert_eq!(mine, theirs);
	for (i, (p, s, k)) in TRIPLES.iter().enumerate() {
		assert_eq!(KVStoreSync::read(&ours, p, s, k).unwrap(), vec![i as u8; 10]);
	}

	KVStoreSync::write(&ours, "monitors", "", "written_by_us", vec![42]).unwrap();
	KVStoreSync::remove(&ours, "", "", "network_graph", false).unwrap();
	assert_eq!(KVStoreSync::read(&ldk, "monitors", "", "written_by_us").unwrap(), vec![42]);
	let mut listed = KVStoreSync::list(&ldk, "", "").unwrap();
	listed.sort();
	assert_eq!(listed, ["manager"]);
}
