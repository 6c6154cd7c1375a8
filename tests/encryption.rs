//! The encryption layer (`EncryptedStore`) under `ObjectKvStore`: round trips of LDK's keys, only
//! ciphertext (and, with name encryption, no plaintext name) in the bucket, detection of tampered,
//! truncated, swapped and foreign objects, the `ObjectStore` operations the crate and its tools
//! use, and the conformance suite, with and without name encryption. In memory, in a local
//! directory (conformance), and on LocalStack and SeaweedFS when their variables are set
//! (`LDK_OS_TEST_LOCALSTACK_URL` and `_ENDPOINT`, `LDK_OS_TEST_SEAWEEDFS_URL` and `_ENDPOINT`;
//! `./localstack/servers.sh env` prints them).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use common::backends::{self, Backend};
use common::conformance as suite;
use futures::{StreamExt, TryStreamExt};
use ldk_object_store::encryption::{
	DecryptError, DecryptFailure, EncryptNames, EncryptedStore, EncryptionKey, CIPHERTEXT_OVERHEAD,
};
use ldk_object_store::{ObjectKvStore, RetryPolicy, StoreBuilder};
use lightning::io::ErrorKind;
use lightning::util::persist::{KVStoreSync, MigratableKVStore};
use object_store::path::Path;
use object_store::{
	GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
	UpdateVersion,
};

const MONITOR: &str = "3f1a2b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081_0";
const MARKER: &[u8] = b"PLAINTEXT-MARKER-q9z";

fn key() -> EncryptionKey {
	EncryptionKey::from_bytes([0x5a; 32])
}

fn other_key() -> EncryptionKey {
	EncryptionKey::from_bytes([0xa5; 32])
}

fn marked(label: &str) -> Vec<u8> {
	[label.as_bytes(), b" ", MARKER, b" end"].concat()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
	haystack.windows(needle.len()).any(|window| window == needle)
}

/// The decryption failure somewhere in the source chain of an error LDK receives.
fn decrypt_failure(err: &lightning::io::Error) -> Option<DecryptFailure> {
	let mut current = err.get_ref().map(|e| e as &(dyn std::error::Error + 'static));
	while let Some(e) = current {
		if let Some(decrypt) = e.downcast_ref::<DecryptError>() {
			return Some(decrypt.reason());
		}
		current = e.source();
	}
	None
}

fn object_store_decrypt_failure(err: &object_store::Error) -> Option<DecryptFailure> {
	match err {
		object_store::Error::Generic { store: "Encrypted", source } => {
			source.downcast_ref::<DecryptError>().map(DecryptError::reason)
		},
		_ => None,
	}
}

/// A raw backend, and the encrypted store over it.
struct Setup {
	raw: Backend,
	names: EncryptNames,
	/// Whether the test prefix is the encrypted store's root (left in plaintext).
	rooted: bool,
	encrypted: Arc<EncryptedStore>,
}

impl Setup {
	fn new(raw: Backend, names: EncryptNames, rooted: bool) -> Self {
		let encrypted = Arc::new(Self::wrap(&raw, key(), names, rooted));
		Setup { raw, names, rooted, encrypted }
	}

	fn wrap(
		raw: &Backend, key: EncryptionKey, names: EncryptNames, rooted: bool,
	) -> EncryptedStore {
		let store = EncryptedStore::new(Arc::clone(&raw.object_store), key, names);
		if rooted {
			store.with_root(Path::from(raw.prefix.as_str()))
		} else {
			store
		}
	}

	fn label(&self) -> String {
		format!("{} names={:?} rooted={}", self.raw.name, self.names, self.rooted)
	}

	/// A store over `encrypted`, without retries (decryption failures are facts), and without
	/// the writer lease: these tests count, copy and tamper with every raw object of a prefix,
	/// and open several instances on it. (The lease through an encrypted store is tested in
	/// `the_builder_refuses_a_wrong_key`.)
	fn store_over(&self, encrypted: Arc<EncryptedStore>) -> ObjectKvStore {
		StoreBuilder::from_store(encrypted)
			.with_prefix(self.raw.prefix.clone())
			.with_retry(RetryPolicy::none())
			.without_writer_lease()
			.build()
			.unwrap()
	}

	fn store(&self) -> ObjectKvStore {
		self.store_over(Arc::clone(&self.encrypted))
	}

	fn logical(&self, p: &str, s: &str, k: &str) -> Path {
		let parts = [self.raw.prefix.as_str(), p, s, k];
		Path::from(
			parts.iter().filter(|part| !part.is_empty()).copied().collect::<Vec<_>>().join("/"),
		)
	}

	fn raw_path(&self, p: &str, s: &str, k: &str) -> Path {
		self.encrypted.stored_path(&self.logical(p, s, k)).unwrap()
	}

	/// Every object of this test in the raw store, with its bytes.
	async fn raw_objects(&self) -> Vec<(Path, Bytes)> {
		let root = self.encrypted.stored_path(&Path::from(self.raw.prefix.as_str())).unwrap();
		let listed: Vec<_> = self.raw.object_store.list(Some(&root)).try_collect().await.unwrap();
		let mut objects = Vec::new();
		for meta in listed {
			let bytes =
				self.raw.object_store.get(&meta.location).await.unwrap().bytes().await.unwrap();
			assert_eq!(meta.size, bytes.len() as u64);
			objects.push((meta.location, bytes));
		}
		objects
	}

	async fn raw_get(&self, path: &Path) -> Bytes {
		self.raw.object_store.get(path).await.unwrap().bytes().await.unwrap()
	}

	async fn raw_put(&self, path: &Path, bytes: Vec<u8>) {
		self.raw.object_store.put(path, PutPayload::from(bytes)).await.unwrap();
	}
}

/// The three setups every test runs: contents only; names too, the whole path encrypted; names
/// too, below a plaintext root.
fn setups(raw: impl Fn() -> Option<Backend>) -> Vec<Setup> {
	// Asked once first, so that a missing server prints its reason once.
	let Some(first) = raw() else { return Vec::new() };
	let mut raws = std::iter::once(first).chain(std::iter::from_fn(raw));
	[(EncryptNames::No, false), (EncryptNames::Yes, false), (EncryptNames::Yes, true)]
		.into_iter()
		.filter_map(|(names, rooted)| Some(Setup::new(raws.next()?, names, rooted)))
		.collect()
}

fn localstack(test: &str) -> Option<Backend> {
	backends::s3("LOCALSTACK", test)
}

/// SeaweedFS checks request signatures and keeps directory markers, which encrypted names must
/// survive.
fn seaweedfs(test: &str) -> Option<Backend> {
	backends::s3("SEAWEEDFS", test)
}

fn set(keys: &[&str]) -> BTreeSet<String> {
	keys.iter().map(|k| k.to_string()).collect()
}

fn list(store: &ObjectKvStore, p: &str, s: &str) -> BTreeSet<String> {
	KVStoreSync::list(store, p, s).unwrap().into_iter().collect()
}

/// The values the round trip and the bucket scan write: LDK's keys, an empty value and 1 MiB.
fn entries() -> Vec<(&'static str, &'static str, &'static str, Vec<u8>)> {
	let mut big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
	big[..MARKER.len()].copy_from_slice(MARKER);
	vec![
		("", "", "manager", marked("manager")),
		("", "", "empty", Vec::new()),
		("monitors", "", MONITOR, marked("monitor")),
		("monitor_updates", MONITOR, "17", marked("update")),
		("archived_monitors", "", "big", big),
	]
}

// 1 and 2: round trip, and only ciphertext reaches the bucket.

async fn round_trip_and_ciphertext_only(setup: &Setup) {
	println!("round trip on {}", setup.label());
	let store = setup.store();
	let entries = entries();
	for (p, s, k, value) in &entries {
		KVStoreSync::write(&store, p, s, k, value.clone()).unwrap();
	}
	// Through a second store instance, as after a restart.
	let store = setup.store();
	for (p, s, k, value) in &entries {
		assert!(KVStoreSync::read(&store, p, s, k).unwrap() == *value, "{p}/{s}/{k} changed");
	}
	assert_eq!(list(&store, "", ""), set(&["manager", "empty"]));
	assert_eq!(list(&store, "monitors", ""), set(&[MONITOR]));
	assert_eq!(list(&store, "monitor_updates", MONITOR), set(&["17"]));
	assert_eq!(list(&store, "monitor_updates", ""), set(&[]));
	assert_eq!(list(&store, "unknown", ""), set(&[]));
	let mut all = store.list_all_keys().unwrap();
	all.sort();
	let mut expected: Vec<_> =
		entries.iter().map(|(p, s, k, _)| (p.to_string(), s.to_string(), k.to_string())).collect();
	expected.sort();
	assert_eq!(all, expected);

	// Sizes seen through the wrapper are plaintext sizes; in the bucket, 41 bytes more each.
	let prefix = Path::from(setup.raw.prefix.as_str());
	let listed: Vec<_> = setup.encrypted.list(Some(&prefix)).try_collect().await.unwrap();
	assert_eq!(listed.len(), entries.len());
	let raw = setup.raw_objects().await;
	assert_eq!(raw.len(), entries.len(), "exactly one object per key");
	for (p, s, k, value) in &entries {
		let logical = setup.logical(p, s, k);
		let meta = listed.iter().find(|m| m.location == logical).expect("listed by logical name");
		assert_eq!(meta.size, value.len() as u64);
		let stored = setup.raw_path(p, s, k);
		let (_, bytes) = raw.iter().find(|(path, _)| *path == stored).expect("stored");
		assert_eq!(bytes.len() as u64, value.len() as u64 + CIPHERTEXT_OVERHEAD);
	}

	// Only ciphertext in the bucket, and with name encryption no plaintext name in any path.
	let names = ["manager", "empty", "monitors", "monitor_updates", "archived_monitors", MONITOR];
	for (path, bytes) in &raw {
		assert!(!contains(bytes, MARKER), "plaintext in {path}");
		assert!(!contains(bytes, MONITOR.as_bytes()), "a key name in the contents of {path}");
		assert_eq!(bytes[0], 2, "format version");
		let below_prefix = path.as_ref().strip_prefix(setup.raw.prefix.as_str());
		if setup.names == EncryptNames::Yes {
			for name in names {
				assert!(!path.as_ref().contains(name), "{name} visible in {path}");
			}
			assert_eq!(setup.rooted, below_prefix.is_some(), "the root is plaintext iff set");
			assert!(!path.as_ref().contains("/17"));
		} else {
			assert!(below_prefix.is_some());
		}
	}
	// Two writes of one value differ: a fresh nonce each time.
	let before = setup.raw_get(&setup.raw_path("", "", "manager")).await;
	KVStoreSync::write(&store, "", "", "manager", marked("manager")).unwrap();
	assert_ne!(before, setup.raw_get(&setup.raw_path("", "", "manager")).await);

	for (p, s, k, _) in &entries {
		KVStoreSync::remove(&store, p, s, k, false).unwrap();
		assert_eq!(KVStoreSync::read(&store, p, s, k).unwrap_err().kind(), ErrorKind::NotFound);
	}
	assert!(store.list_all_keys().unwrap().is_empty());
	assert!(setup.raw_objects().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_and_ciphertext_only_memory() {
	for setup in setups(|| Some(backends::memory("enc-round-trip"))) {
		round_trip_and_ciphertext_only(&setup).await;
	}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_and_ciphertext_only_localstack() {
	for setup in setups(|| localstack("enc-round-trip")) {
		round_trip_and_ciphertext_only(&setup).await;
	}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_and_ciphertext_only_seaweedfs() {
	for setup in setups(|| seaweedfs("enc-round-trip")) {
		round_trip_and_ciphertext_only(&setup).await;
	}
}

// 3: tampered, truncated, swapped and foreign objects, and another key.

fn assert_detected(result: Result<Vec<u8>, lightning::io::Error>, key: &str, want: DecryptFailure) {
	let err = result.expect_err("read of altered data must fail");
	assert_ne!(err.kind(), ErrorKind::NotFound, "{err}");
	let message = err.to_string();
	assert!(message.contains(key), "the error should name {key}: {message}");
	assert_eq!(decrypt_failure(&err), Some(want), "{message}");
}

async fn tampering_is_detected(setup: &Setup) {
	println!("tampering on {}", setup.label());
	let store = setup.store();
	KVStoreSync::write(&store, "", "", "manager", marked("manager")).unwrap();
	KVStoreSync::write(&store, "monitors", "", MONITOR, marked("monitor")).unwrap();
	KVStoreSync::write(&store, "monitor_updates", MONITOR, "17", marked("update")).unwrap();
	let monitor = setup.raw_path("monitors", "", MONITOR);
	let original = setup.raw_get(&monitor).await.to_vec();
	let read = || KVStoreSync::read(&store, "monitors", "", MONITOR);

	// One flipped bit anywhere: in the nonce, the body, the tag.
	for at in [3, original.len() / 2, original.len() - 1] {
		let mut flipped = original.clone();
		flipped[at] ^= 0x01;
		setup.raw_put(&monitor, flipped).await;
		assert_detected(read(), MONITOR, DecryptFailure::Authentication);
	}
	// A changed format version: unknown, or the old one.
	let mut version = original.clone();
	version[0] = 3;
	setup.raw_put(&monitor, version).await;
	assert_detected(read(), MONITOR, DecryptFailure::UnknownFormat);
	let mut version = original.clone();
	version[0] = 1;
	setup.raw_put(&monitor, version).await;
	assert_detected(read(), MONITOR, DecryptFailure::OldFormat { version: 1 });
	// Truncated by a few bytes, below the overhead, to nothing; extended.
	setup.raw_put(&monitor, original[..original.len() - 5].to_vec()).await;
	assert_detected(read(), MONITOR, DecryptFailure::Authentication);
	setup.raw_put(&monitor, original[..20].to_vec()).await;
	assert_detected(read(), MONITOR, DecryptFailure::Truncated);
	setup.raw_put(&monitor, Vec::new()).await;
	assert_detected(read(), MONITOR, DecryptFailure::Truncated);
	setup.raw_put(&monitor, [original.as_slice(), b"x"].concat()).await;
	assert_detected(read(), MONITOR, DecryptFailure::Authentication);
	// Another key's ciphertext, copied in place: the update's, then the manager's.
	for (p, s, k) in [("monitor_updates", MONITOR, "17"), ("", "", "manager")] {
		setup.raw.object_store.copy(&setup.raw_path(p, s, k), &monitor).await.unwrap();
		assert_detected(read(), MONITOR, DecryptFailure::Authentication);
	}
	// A plaintext object, as written without encryption.
	setup.raw_put(&monitor, marked("monitor")).await;
	assert!(decrypt_failure(&read().unwrap_err()).is_some());
	// The original decrypts again: nothing was cached or poisoned.
	setup.raw_put(&monitor, original.clone()).await;
	assert_eq!(read().unwrap(), marked("monitor"));

	// The wrapper's own error, for the crate's classifier.
	setup.raw_put(&monitor, original[..10].to_vec()).await;
	let err = setup.encrypted.get(&setup.logical("monitors", "", MONITOR)).await.unwrap_err();
	assert_eq!(object_store_decrypt_failure(&err), Some(DecryptFailure::Truncated));
	assert!(err.to_string().contains(MONITOR), "{err}");
	setup.raw_put(&monitor, original.clone()).await;

	// Another key.
	let wrong = Arc::new(Setup::wrap(&setup.raw, other_key(), setup.names, setup.rooted));
	let wrong_store = setup.store_over(Arc::clone(&wrong));
	let wrong_read = KVStoreSync::read(&wrong_store, "monitors", "", MONITOR);
	match setup.names {
		EncryptNames::No => {
			assert_detected(wrong_read, MONITOR, DecryptFailure::Authentication);
			// (On a shared bucket, the first object listed may be another test's.)
			if setup.raw.name == "memory" {
				assert_eq!(
					object_store_decrypt_failure(&wrong.check_key().await.unwrap_err()),
					Some(DecryptFailure::Authentication)
				);
			}
		},
		EncryptNames::Yes => {
			// Another key looks up other names: documented, and why `check_key` exists.
			assert_eq!(wrong_read.unwrap_err().kind(), ErrorKind::NotFound);
			if setup.rooted {
				// Below a plaintext root, listings meet names that do not decrypt.
				let err = KVStoreSync::list(&wrong_store, "", "").unwrap_err();
				assert_eq!(decrypt_failure(&err), Some(DecryptFailure::Name), "{err}");
				assert!(wrong_store.list_all_keys().is_err());
			}
			if setup.rooted || setup.raw.name == "memory" {
				let err = wrong.check_key().await.unwrap_err();
				assert_eq!(object_store_decrypt_failure(&err), Some(DecryptFailure::Name));
			}
		},
	}
	if setup.rooted || setup.raw.name == "memory" {
		assert!(setup.encrypted.check_key().await.unwrap() > 0);
	}

	if setup.names == EncryptNames::Yes {
		// A stored name altered by one character: listing fails naming the object, never skips it.
		let update = setup.raw_path("monitor_updates", MONITOR, "17");
		let text = update.as_ref().to_string();
		let (parent, last) = text.rsplit_once('/').unwrap();
		let changed = if last.starts_with('a') { "b" } else { "a" };
		let altered = Path::from(format!("{parent}/{changed}{}", &last[1..]));
		setup.raw.object_store.rename(&update, &altered).await.unwrap();
		let err = KVStoreSync::list(&store, "monitor_updates", MONITOR).unwrap_err();
		assert_eq!(decrypt_failure(&err), Some(DecryptFailure::Name), "{err}");
		assert!(err.to_string().contains(altered.as_ref()), "{err}");
		setup.raw.object_store.rename(&altered, &update).await.unwrap();
		assert_eq!(list(&store, "monitor_updates", MONITOR), set(&["17"]));
	}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected_memory() {
	for setup in setups(|| Some(backends::memory("enc-tamper"))) {
		tampering_is_detected(&setup).await;
	}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected_localstack() {
	for setup in setups(|| localstack("enc-tamper")) {
		tampering_is_detected(&setup).await;
	}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected_seaweedfs() {
	for setup in setups(|| seaweedfs("enc-tamper")) {
		tampering_is_detected(&setup).await;
	}
}

// The `ObjectStore` operations beyond what `ObjectKvStore` calls: ranges, heads, conditional
// puts, copies, renames, multipart uploads, offsets and bulk deletes.

async fn object_store_operations(setup: &Setup) {
	println!("object store operations on {}", setup.label());
	let store = &setup.encrypted;
	let path = setup.logical("monitors", "", MONITOR);
	let value: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
	store.put(&path, PutPayload::from(value.clone())).await.unwrap();

	// Ranged reads, as `inspect` reads monitor headers.
	assert_eq!(store.get_range(&path, 0..12).await.unwrap(), value[..12]);
	assert_eq!(store.get_range(&path, 990..1000).await.unwrap(), value[990..]);
	assert_eq!(store.get_range(&path, 995..2000).await.unwrap(), value[995..], "clamped");
	assert!(store.get_range(&path, 1000..1001).await.is_err());
	let ranges = store.get_ranges(&path, &[0..2, 10..20, 500..501]).await.unwrap();
	assert_eq!(ranges, vec![&value[0..2], &value[10..20], &value[500..501]]);
	for (range, expected) in [
		(GetRange::Offset(900), 900..1000),
		(GetRange::Suffix(7), 993..1000),
		(GetRange::Bounded(5..9), 5..9),
	] {
		let options = GetOptions { range: Some(range), ..Default::default() };
		let result = store.get_opts(&path, options).await.unwrap();
		assert_eq!(result.range, expected.clone());
		assert_eq!(result.meta.size, 1000);
		assert_eq!(result.meta.location, path);
		let (start, end) = (expected.start as usize, expected.end as usize);
		assert_eq!(result.bytes().await.unwrap(), value[start..end]);
	}
	let head = store.head(&path).await.unwrap();
	assert_eq!((head.size, &head.location), (1000, &path));

	// Conditional puts pass through; their e-tags are those of the ciphertext.
	let fresh = setup.logical("cond", "", "k");
	let created = store
		.put_opts(&fresh, PutPayload::from_static(b"one"), PutMode::Create.into())
		.await
		.unwrap();
	let again = store.put_opts(&fresh, PutPayload::from_static(b"x"), PutMode::Create.into()).await;
	assert!(matches!(again, Err(object_store::Error::AlreadyExists { .. })), "{again:?}");
	if created.e_tag.is_some() {
		let update = PutMode::Update(UpdateVersion::from(created.clone()));
		let updated = store
			.put_opts(&fresh, PutPayload::from_static(b"two"), PutOptions::from(update.clone()))
			.await
			.unwrap();
		let stale = store.put_opts(&fresh, PutPayload::from_static(b"3"), update.into()).await;
		assert!(matches!(stale, Err(object_store::Error::Precondition { .. })), "{stale:?}");
		let result = store.get(&fresh).await.unwrap();
		assert_eq!(result.meta.e_tag, updated.e_tag);
		assert_eq!(result.bytes().await.unwrap(), &b"two"[..]);
	}

	// Missing objects: `NotFound`, named by their logical path.
	let missing = setup.logical("monitors", "", "missing");
	match store.get(&missing).await {
		Err(object_store::Error::NotFound { path, .. }) => assert_eq!(path, missing.to_string()),
		other => panic!("expected NotFound, got {other:?}"),
	}

	// Copies and renames re-encrypt for the target path.
	let copy = setup.logical("archived_monitors", "", MONITOR);
	store.copy(&path, &copy).await.unwrap();
	assert_eq!(store.get(&copy).await.unwrap().bytes().await.unwrap(), value);
	assert!(store.copy_if_not_exists(&path, &copy).await.is_err());
	let renamed = setup.logical("archived_monitors", "", "renamed");
	store.rename(&copy, &renamed).await.unwrap();
	assert!(matches!(store.head(&copy).await, Err(object_store::Error::NotFound { .. })));
	assert_eq!(store.get(&renamed).await.unwrap().bytes().await.unwrap(), value);

	// A multipart upload is buffered and sealed on completion.
	let multipart = setup.logical("big", "", "multipart");
	let mut upload = store.put_multipart(&multipart).await.unwrap();
	upload.put_part(PutPayload::from_static(b"hello ")).await.unwrap();
	upload.put_part(PutPayload::from(vec![b'w'; 100_000])).await.unwrap();
	upload.complete().await.unwrap();
	let bytes = store.get(&multipart).await.unwrap().bytes().await.unwrap();
	assert_eq!(bytes.len(), 100_006);
	assert!(bytes.starts_with(b"hello w"));

	// Offsets and delimiters compare logical names.
	let prefix = Path::from(setup.raw.prefix.as_str());
	let all: Vec<_> = store.list(Some(&prefix)).map_ok(|m| m.location).try_collect().await.unwrap();
	let offset = setup.logical("big", "", "multipart");
	let mut after: Vec<_> = store
		.list_with_offset(Some(&prefix), &offset)
		.map_ok(|m| m.location)
		.try_collect()
		.await
		.unwrap();
	after.sort();
	let mut expected: Vec<_> = all.iter().filter(|p| **p > offset).cloned().collect();
	expected.sort();
	assert_eq!(after, expected);
	assert!(!after.is_empty());
	let top = store.list_with_delimiter(Some(&prefix)).await.unwrap();
	let mut common: Vec<_> = top.common_prefixes.iter().map(|p| p.to_string()).collect();
	common.sort();
	let expected: Vec<_> = ["archived_monitors", "big", "cond", "monitors"]
		.iter()
		.map(|name| prefix.clone().join(*name).to_string())
		.collect();
	assert_eq!(common, expected);

	// Bulk deletes report logical paths.
	let deleted: Vec<_> = store
		.delete_stream(futures::stream::iter(all.clone().into_iter().map(Ok)).boxed())
		.try_collect()
		.await
		.unwrap();
	assert_eq!(deleted.iter().collect::<BTreeSet<_>>(), all.iter().collect::<BTreeSet<_>>());
	assert!(setup.raw_objects().await.is_empty());

	// Paths outside the root are refused when a root is set.
	if setup.rooted {
		let outside = Path::from("somewhere-else/k");
		assert!(store.put(&outside, PutPayload::from_static(b"x")).await.is_err());
		assert!(store.list(None).next().await.unwrap().is_err());
	}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_operations_memory() {
	for setup in setups(|| Some(backends::memory("enc-ops"))) {
		object_store_operations(&setup).await;
	}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_operations_localstack() {
	for setup in setups(|| localstack("enc-ops")) {
		object_store_operations(&setup).await;
	}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_operations_seaweedfs() {
	for setup in setups(|| seaweedfs("enc-ops")) {
		object_store_operations(&setup).await;
	}
}

/// Below a plaintext root, the contents are bound to the path relative to the root, so a raw
/// copy of the whole tree to another prefix still decrypts there (and only there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rooted_tree_moves_whole() {
	let setup = Setup::new(backends::memory("enc-move"), EncryptNames::Yes, true);
	let store = setup.store();
	KVStoreSync::write(&store, "monitors", "", MONITOR, marked("monitor")).unwrap();
	KVStoreSync::write(&store, "", "", "manager", marked("manager")).unwrap();
	let mut moved = setup.raw.fresh("x");
	moved.prefix = format!("{}-moved", setup.raw.prefix);
	for (path, bytes) in setup.raw_objects().await {
		let below = path.prefix_match(&Path::from(setup.raw.prefix.as_str())).unwrap();
		let mut target = Path::from(moved.prefix.as_str());
		target.extend(below);
		setup.raw_put(&target, bytes.to_vec()).await;
	}
	let moved = Setup::new(moved, EncryptNames::Yes, true);
	let moved_store = moved.store();
	assert_eq!(
		KVStoreSync::read(&moved_store, "monitors", "", MONITOR).unwrap(),
		marked("monitor")
	);
	assert_eq!(list(&moved_store, "", ""), set(&["manager"]));
	assert_eq!(moved.encrypted.check_key().await.unwrap(), 2);
}

// 5: the conformance suite over the encrypted store.

async fn conformance(raw: Backend, names: EncryptNames) {
	let backend = raw.wrapped(|inner| Arc::new(EncryptedStore::new(inner, key(), names)));
	println!("conformance on encrypted {} names={names:?}", backend.name);
	suite::read_write_remove(&backend.fresh("rwr").store()).await;
	let listing = backend.fresh("list");
	suite::list_one_namespace_only(&listing.store(), &listing).await;
	suite::invalid_names_are_refused(&backend.fresh("invalid").store()).await;
	suite::large_values(&backend.fresh("large").store()).await;
	let target = backends::memory("enc-migration-target").store();
	suite::list_all_keys_and_migration(&backend.fresh("all").store(), target).await;
	suite::order_of_calls_decides(&backend.fresh("order").store()).await;
	suite::last_call_wins_under_concurrency(&backend.fresh("race").store(), 200).await;
	suite::list_across_pages(&backend.fresh("pages").store()).await;
}

#[tokio::test]
async fn conformance_memory() {
	for names in [EncryptNames::No, EncryptNames::Yes] {
		conformance(backends::memory("enc-conformance"), names).await;
	}
}

#[tokio::test]
async fn conformance_local_directory() {
	for names in [EncryptNames::No, EncryptNames::Yes] {
		conformance(backends::local_dir("enc-conformance"), names).await;
	}
}

#[tokio::test]
async fn conformance_localstack() {
	for names in [EncryptNames::No, EncryptNames::Yes] {
		if let Some(backend) = localstack("enc-conformance") {
			conformance(backend, names).await;
		}
	}
}

#[tokio::test]
async fn conformance_seaweedfs() {
	for names in [EncryptNames::No, EncryptNames::Yes] {
		if let Some(backend) = seaweedfs("enc-conformance") {
			conformance(backend, names).await;
		}
	}
}

/// Through the builder, a wrong key is refused when the store is built, with names encrypted or
/// not, rather than reading an existing node as an empty one.
#[test]
fn the_builder_refuses_a_wrong_key() {
	for names in [EncryptNames::Yes, EncryptNames::No] {
		let raw: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
		let build = |key: EncryptionKey| {
			StoreBuilder::from_store(Arc::clone(&raw))
				.with_prefix("node")
				.with_encryption(key, names)
				.build()
		};
		// An empty store takes any key.
		let store = build(key()).unwrap();
		store.write("", "", "manager", b"state".to_vec()).unwrap();
		store.write("monitors", "", MONITOR, b"monitor".to_vec()).unwrap();
		let err = build(other_key()).unwrap_err();
		assert!(matches!(err, ldk_object_store::ConfigError::Encryption(_)), "{names:?}: {err}");
		assert!(!format!("{err} {err:?}").contains(&"5a".repeat(8)), "the key leaked: {err}");
		// The writer lease lives in the encrypted store too: a second instance with the right
		// key is refused while the first runs, and starts once it stopped.
		let held = build(key()).unwrap_err();
		assert!(matches!(held, ldk_object_store::ConfigError::LeaseHeld { .. }), "{held}");
		drop(store);
		assert_eq!(build(key()).unwrap().read("", "", "manager").unwrap(), b"state");
	}
}

/// An object of the first, unreleased format (version byte 1) is refused with an error that
/// says it is the old format, both when read and when the builder checks the key; with names
/// encrypted, its name does not decrypt and the error says an older format may be the cause.
#[test]
fn a_version_1_object_is_refused_as_the_old_format() {
	for names in [EncryptNames::No, EncryptNames::Yes] {
		let raw: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
		let build = || {
			StoreBuilder::from_store(Arc::clone(&raw))
				// Several stores on one prefix on purpose: the lease is not what this tests.
				.without_writer_lease()
				.with_prefix("node")
				.with_retry(RetryPolicy::none())
				.with_encryption(key(), names)
				.build()
		};
		let store = build().unwrap();
		store.write("", "", "manager", marked("manager")).unwrap();
		// The version-1 layout was `1 || nonce (24) || ciphertext || tag (16)`: the same
		// shape, so only the version byte tells it apart.
		let encrypted =
			EncryptedStore::new(Arc::clone(&raw), key(), names).with_root(Path::from("node"));
		let stored = encrypted.stored_path(&Path::from("node/manager")).unwrap();
		let runtime = tokio::runtime::Runtime::new().unwrap();
		let mut bytes = runtime
			.block_on(async { raw.get(&stored).await.unwrap().bytes().await.unwrap() })
			.to_vec();
		assert_eq!(bytes[0], 2);
		bytes[0] = 1;
		runtime.block_on(raw.put(&stored, PutPayload::from(bytes))).unwrap();

		let err = store.read("", "", "manager").unwrap_err();
		assert_eq!(decrypt_failure(&err), Some(DecryptFailure::OldFormat { version: 1 }));
		let message = err.to_string();
		assert!(message.contains("old encryption format version 1"), "{message}");
		assert!(message.contains("manager"), "{message}");
		// A restart with the new version refuses the store at once, saying why.
		let err = build().unwrap_err();
		assert!(matches!(err, ldk_object_store::ConfigError::Encryption(_)), "{err}");
		assert!(err.to_string().contains("old encryption format version 1"), "{err}");
	}
	// A version-1 name (a 16-byte synthetic IV and the XChaCha20 stream, in base32) has the
	// shape of a version-2 one but does not decrypt as AES-SIV: here 23 such bytes.
	let raw: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
	let v1_name = "node/ugpfbvx6pvwqvudhpnhxdwh2qx5vzuydvcwwa";
	let runtime = tokio::runtime::Runtime::new().unwrap();
	runtime.block_on(raw.put(&Path::from(v1_name), PutPayload::from(vec![1; 60]))).unwrap();
	let err = StoreBuilder::from_store(Arc::clone(&raw))
		// Several stores on one prefix on purpose: the lease is not what this tests.
		.without_writer_lease()
		.with_prefix("node")
		.with_encryption(key(), EncryptNames::Yes)
		.build()
		.unwrap_err();
	assert!(err.to_string().contains("older format version"), "{err}");
}

/// Two nodes under one key and one bucket: without an identity, node A's `manager` copied over
/// node B's reads as B's state; with each node's identity bound in, the swap fails to decrypt,
/// on read and when the builder checks the store.
#[test]
fn the_store_identity_stops_a_cross_node_swap() {
	for names in [EncryptNames::No, EncryptNames::Yes] {
		for identities in [None, Some(("node-a", "node-b"))] {
			let raw: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
			let build = |node: &str, identity: Option<&str>| {
				let builder = StoreBuilder::from_store(Arc::clone(&raw))
					// Several stores on one prefix on purpose: the lease is not what this tests.
					.without_writer_lease()
					.with_prefix(node)
					.with_retry(RetryPolicy::none())
					.with_encryption(key(), names);
				match identity {
					Some(identity) => builder.with_encryption_identity(identity),
					None => builder,
				}
			};
			let (id_a, id_b) = identities.map_or((None, None), |(a, b)| (Some(a), Some(b)));
			let node_a = build("node-a", id_a).build().unwrap();
			let node_b = build("node-b", id_b).build().unwrap();
			node_a.write("", "", "manager", marked("manager of A")).unwrap();
			node_b.write("", "", "manager", marked("manager of B")).unwrap();
			assert_eq!(node_b.read("", "", "manager").unwrap(), marked("manager of B"));

			// Whoever can write to the bucket copies A's object over B's.
			let stored = |node: &str| {
				EncryptedStore::new(Arc::clone(&raw), key(), names)
					.with_root(Path::from(node))
					.stored_path(&Path::from(format!("{node}/manager")))
					.unwrap()
			};
			let runtime = tokio::runtime::Runtime::new().unwrap();
			runtime.block_on(raw.copy(&stored("node-a"), &stored("node-b"))).unwrap();

			let read = node_b.read("", "", "manager");
			match identities {
				None => assert_eq!(read.unwrap(), marked("manager of A"), "{names:?}"),
				Some(_) => {
					let err = read.unwrap_err();
					assert_eq!(decrypt_failure(&err), Some(DecryptFailure::Authentication));
					assert!(err.to_string().contains("manager"), "{err}");
					let err = build("node-b", id_b).build().unwrap_err();
					assert!(matches!(err, ldk_object_store::ConfigError::Encryption(_)), "{err}");
					// Each node still reads its own objects under its identity.
					assert_eq!(node_a.read("", "", "manager").unwrap(), marked("manager of A"));
					let other = build("node-a", Some("node-c")).build().unwrap_err();
					assert!(matches!(other, ldk_object_store::ConfigError::Encryption(_)));
				},
			}
		}
	}
}

/// The builder's key check reads the first object it lists; an empty directory marker (as a
/// console's "create folder" or SeaweedFS's filer leaves, here under an encrypted name) is
/// passed over, not taken for a truncated object that would refuse the store.
#[test]
fn the_key_check_passes_over_directory_markers() {
	for names in [EncryptNames::Yes, EncryptNames::No] {
		let raw: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
		let build = |key: EncryptionKey| {
			StoreBuilder::from_store(Arc::clone(&raw))
				// Several stores on one prefix on purpose: the lease is not what this tests.
				.without_writer_lease()
				.with_prefix("node")
				.with_encryption(key, names)
				.build()
		};
		build(key()).unwrap().write("monitors", "", MONITOR, b"monitor".to_vec()).unwrap();
		// The marker sorts first: its name is a prefix of the monitor's.
		let marker = EncryptedStore::new(Arc::clone(&raw), key(), names)
			.with_root(Path::from("node"))
			.stored_path(&Path::from("node/monitors"))
			.unwrap();
		let runtime = tokio::runtime::Runtime::new().unwrap();
		runtime.block_on(raw.put(&marker, PutPayload::default())).unwrap();
		let first = runtime.block_on(raw.list(Some(&Path::from("node"))).next());
		assert_eq!(first.unwrap().unwrap().location, marker, "{names:?}");

		let store = build(key()).unwrap();
		assert_eq!(store.read("monitors", "", MONITOR).unwrap(), b"monitor");
		assert!(build(other_key()).is_err(), "{names:?}: a wrong key is still refused");
	}
}
