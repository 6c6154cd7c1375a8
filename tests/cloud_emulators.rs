//! Azure Blob Storage and Google Cloud Storage through their emulators, reached the way an operator
//! reaches the real services: with `az://` and `gs://` URLs and `with_option`.
//!
//! - **Azurite** (Azure): everything works. The conformance suite runs on it
//!   (`tests/conformance.rs`); here the `az://` URL path, both with `azure_storage_use_emulator`
//!   and with an explicit endpoint, account and key, and a wrong key, which Azurite (unlike
//!   LocalStack) checks.
//! - **fake-gcs-server 1.54.0** (GCS): reads, listings and deletes work; uploads do not.
//!   `object_store` uploads with Google's XML API (`PUT /<bucket>/<object>`), and fake-gcs-server
//!   routes every XML-API `PUT`/`POST` of an object to its JSON-API upload handler, which wants an
//!   `uploadType` query parameter and answers `400 {"error":{"code":400,"message":"invalid
//!   uploadType"}}`. No flag changes that (`-scheme http`, `-public-host`, `-external-url` only
//!   change routing and URLs); `object_store`'s own CI uses a patched build. So the objects here
//!   are seeded through the JSON API (`POST /upload/storage/v1/b/<bucket>/o?uploadType=media`),
//!   and a write is checked to fail clearly, with the server's reason and not as "not found".
//!   (gcp-storage-emulator 2026.7.19 is worse: it stores an XML-API `PUT` but answers it without
//!   the `ETag` header `object_store` requires, serves `GET` without `ETag`/`Last-Modified`, and
//!   answers XML-API listing and `DELETE` with `501 Not Implemented`.)
//!
//! Each test skips with a printed reason unless `./localstack/servers.sh env` variables are set,
//! and fails instead with `LDK_OS_TEST_REQUIRE_SERVERS=1`.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::backends::{self, GcsEmulator};
use ldk_object_store::{ObjectKvStore, StoreBuilder};
use lightning::io::ErrorKind;
use lightning::util::persist::{KVStoreSync, MigratableKVStore};
use object_store::path::Path;
use object_store::ObjectStoreExt;

/// Azurite's published development account key (not a secret).
const AZURITE_KEY: &str =
	"Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn set(keys: &[&str]) -> BTreeSet<String> {
	keys.iter().map(|k| k.to_string()).collect()
}

fn list(store: &ObjectKvStore, p: &str, s: &str) -> BTreeSet<String> {
	KVStoreSync::list(store, p, s).expect("list").into_iter().collect()
}

/// The object path of a key below `prefix`, as the README's layout gives it.
fn object_path(prefix: &str, p: &str, s: &str, k: &str) -> String {
	[prefix, p, s, k].iter().filter(|part| !part.is_empty()).copied().collect::<Vec<_>>().join("/")
}

// ------------------------------------------------------------------------------------------------
// Azurite

fn azurite_endpoint() -> String {
	std::env::var("AZURITE_BLOB_STORAGE_URL").unwrap_or_else(|_| "http://127.0.0.1:10000".into())
}

#[tokio::test]
async fn azurite_through_an_az_url() {
	let Some(backend) = backends::azurite("az-url") else { return };
	let container = std::env::var("LDK_OS_TEST_AZURITE_URL").unwrap();
	let url = format!("{}/{}", container.trim_end_matches('/'), backend.prefix);

	// What an operator sets: the emulator switch (AZURE_STORAGE_USE_EMULATOR=true does the same),
	// which brings the well-known account, key and endpoint.
	let store = StoreBuilder::from_url(&url)
		.with_option("azure_storage_use_emulator", "true")
		.build()
		.expect("az:// store builds");
	store.write("", "", "manager", b"m".to_vec()).unwrap();
	store.write("monitors", "", "aa_0", b"monitor".to_vec()).unwrap();
	store.write("monitor_updates", "aa_0", "7", b"update".to_vec()).unwrap();
	assert_eq!(store.read("monitors", "", "aa_0").unwrap(), b"monitor");
	assert_eq!(list(&store, "", ""), set(&["manager"]));
	assert_eq!(list(&store, "monitor_updates", "aa_0"), set(&["7"]));

	// The URL's path is the root prefix: the objects sit where the README's layout says.
	let raw = &backend.object_store;
	let path = Path::from(object_path(&backend.prefix, "monitors", "", "aa_0"));
	let stored = raw.get(&path).await.expect("object at the documented path");
	assert_eq!(stored.bytes().await.unwrap().as_ref(), b"monitor");

	// The same container through an explicit endpoint, account and key: how a store is pointed
	// at any Azure-compatible endpoint other than the emulator's default.
	let explicit = StoreBuilder::from_url(&url)
		.with_option("azure_storage_account_name", "devstoreaccount1")
		.with_option("azure_storage_account_key", AZURITE_KEY)
		.with_option("azure_storage_endpoint", format!("{}/devstoreaccount1", azurite_endpoint()))
		.with_option("azure_allow_http", "true")
		// A second view of the container while the first store runs: no second writer lease.
		.without_writer_lease()
		.build()
		.expect("az:// store with an explicit endpoint builds");
	assert_eq!(explicit.read("monitor_updates", "aa_0", "7").unwrap(), b"update");
	explicit.remove("monitor_updates", "aa_0", "7", false).unwrap();
	explicit.remove("monitor_updates", "aa_0", "7", false).unwrap();

	assert_eq!(store.read("monitor_updates", "aa_0", "7").unwrap_err().kind(), ErrorKind::NotFound);
	let mut all = store.list_all_keys().unwrap();
	all.sort();
	assert_eq!(
		all,
		vec![
			("".into(), "".into(), "manager".into()),
			("monitors".into(), "".into(), "aa_0".into())
		]
	);
}

#[test]
fn azurite_wrong_key_is_denied_not_absent() {
	let Some(backend) = backends::azurite("az-wrong-key") else { return };
	let container = std::env::var("LDK_OS_TEST_AZURITE_URL").unwrap();
	let url = format!("{}/{}", container.trim_end_matches('/'), backend.prefix);
	// A valid base64 key of the right length that is not the account's.
	let wrong_key = AZURITE_KEY.replace("Eby8", "Xby8");
	let builder = || {
		StoreBuilder::from_url(&url)
			.with_option("azure_storage_use_emulator", "true")
			.with_option("azure_storage_account_key", wrong_key.clone())
	};
	// Taking the writer lease is the first request: the store fails to start, saying why.
	let err = builder().build().expect_err("the lease cannot be taken with a wrong key");
	assert!(err.to_string().contains("permission denied"), "{err}");
	assert!(err.to_string().contains("403"), "{err}");
	// Each operation says so too.
	let store = builder().without_writer_lease().build().expect("az:// store builds");
	for err in [
		store.read("monitors", "", "aa_0").unwrap_err(),
		store.write("monitors", "", "aa_0", vec![1]).unwrap_err(),
		store.list("monitors", "").unwrap_err(),
	] {
		assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
		assert!(err.to_string().contains("403"), "{err}");
	}
}

/// A bucket or container that does not exist (a typo in the URL, a deleted bucket) must not read
/// as an empty store: LDK takes "not found" for "start from nothing". S3 answers `404
/// NoSuchBucket`, Azure `404 ContainerNotFound`, GCS `404 NoSuchBucket`; object_store turns all
/// of them into `Error::NotFound`, and for deletes into success. (fake-gcs-server answers a bare
/// `404 Not Found` there, so it cannot take part.)
#[test]
fn missing_bucket_or_container_is_not_absence() {
	let mut stores = Vec::new();
	// With the writer lease, the store does not even start; without it, each operation fails.
	let opened = |name: &str, builder: &dyn Fn() -> StoreBuilder| {
		let err = builder().build().expect_err("no lease in a missing bucket");
		assert!(err.to_string().contains("rejected"), "{name}: {err}");
		builder().without_writer_lease().build().unwrap()
	};
	if backends::azurite("no-container").is_some() {
		let builder = || {
			StoreBuilder::from_url("az://no-such-container/p")
				.with_option("azure_storage_use_emulator", "true")
		};
		stores.push(("azurite", opened("azurite", &builder)));
	}
	for server in ["LOCALSTACK", "SEAWEEDFS"] {
		if backends::s3(server, "no-bucket").is_some() {
			let endpoint = std::env::var(format!("LDK_OS_TEST_{server}_ENDPOINT")).unwrap();
			let builder = || {
				StoreBuilder::from_url("s3://no-such-bucket/p")
					.with_option("aws_endpoint", endpoint.clone())
					.with_option("aws_allow_http", "true")
			};
			stores.push((server, opened(server, &builder)));
		}
	}
	for (name, store) in stores {
		let read = store.read("monitors", "", "aa_0").unwrap_err();
		assert_ne!(read.kind(), ErrorKind::NotFound, "{name}: {read}");
		let list = store.list("monitors", "").unwrap_err();
		assert_ne!(list.kind(), ErrorKind::NotFound, "{name}: {list}");
		let remove = store.remove("monitors", "", "aa_0", false);
		assert!(remove.is_err(), "{name}: a remove in a missing bucket succeeded");
	}
}

// ------------------------------------------------------------------------------------------------
// fake-gcs-server

/// One HTTP/1.1 request to the emulator, for what `object_store` cannot do there: seeding objects
/// through the JSON API and checking what is stored. Returns the status and the body.
fn http(endpoint: &str, method: &str, target: &str, body: &[u8]) -> (u16, String) {
	let host = endpoint.strip_prefix("http://").expect("an http:// endpoint");
	let mut stream = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
	stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
	let head = format!(
		"{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n\
		 Content-Length: {}\r\nConnection: close\r\n\r\n",
		body.len()
	);
	stream.write_all(head.as_bytes()).unwrap();
	stream.write_all(body).unwrap();
	let mut response = Vec::new();
	stream.read_to_end(&mut response).unwrap();
	let response = String::from_utf8_lossy(&response).into_owned();
	let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
	let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
	(status, body)
}

/// Object names in JSON-API URLs: `/` must be escaped (keys hold only `[A-Za-z0-9_-]`).
fn escape_name(name: &str) -> String {
	name.replace('/', "%2F")
}

fn seed(gcs: &GcsEmulator, name: &str, value: &[u8]) {
	let target = format!(
		"/upload/storage/v1/b/{}/o?uploadType=media&name={}",
		gcs.bucket,
		escape_name(name)
	);
	let (status, body) = http(&gcs.endpoint, "POST", &target, value);
	assert_eq!(status, 200, "seeding {name} through the JSON API: {body}");
}

fn stored(gcs: &GcsEmulator, name: &str) -> bool {
	let target = format!("/storage/v1/b/{}/o/{}", gcs.bucket, escape_name(name));
	match http(&gcs.endpoint, "GET", &target, b"") {
		(200, _) => true,
		(404, _) => false,
		(status, body) => panic!("metadata of {name}: HTTP {status}: {body}"),
	}
}

/// A `gs://` store over the emulator, the way an operator would configure it, but without the
/// writer lease: fake-gcs-server refuses `object_store`'s uploads, the lease object's included.
fn gs_store(gcs: &GcsEmulator) -> ObjectKvStore {
	StoreBuilder::from_url(format!("gs://{}/{}", gcs.bucket, gcs.backend.prefix))
		.with_option("google_service_account_key", gcs.service_account_key())
		.with_option("google_allow_http", "true")
		.without_writer_lease()
		.build()
		.expect("gs:// store builds")
}

#[test]
fn fake_gcs_reads_lists_and_removes_seeded_objects() {
	let Some(gcs) = backends::fake_gcs("gcs-read") else { return };
	let keys: [(&str, &str, &str, &[u8]); 8] = [
		("", "", "manager", b"m"),
		("", "", "empty", b""),
		("monitors", "", "aa_0", b"monitor a"),
		("monitors", "", "bb_1", b"monitor b"),
		("monitor_updates", "aa_0", "1", b"u1"),
		("monitor_updates", "aa_0", "10", b"u10"),
		("monitor_updates", "aa_00", "2", b"other monitor"),
		("archived_monitors", "", "cc_2", b"archived"),
	];
	for (p, s, k, value) in keys {
		seed(&gcs, &object_path(&gcs.backend.prefix, p, s, k), value);
	}

	// Through a gs:// URL and through a store built in code.
	for store in [gs_store(&gcs), gcs.backend.reader()] {
		for (p, s, k, value) in keys {
			assert_eq!(store.read(p, s, k).unwrap(), value, "{p}/{s}/{k}");
		}
		assert_eq!(store.read("monitors", "", "zz_9").unwrap_err().kind(), ErrorKind::NotFound);
		assert_eq!(list(&store, "", ""), set(&["empty", "manager"]));
		assert_eq!(list(&store, "monitors", ""), set(&["aa_0", "bb_1"]));
		assert_eq!(list(&store, "monitor_updates", "aa_0"), set(&["1", "10"]));
		assert_eq!(list(&store, "monitor_updates", "aa"), set(&[]));
		assert_eq!(list(&store, "unknown", ""), set(&[]));
		let mut all = store.list_all_keys().unwrap();
		all.sort();
		let mut expected: Vec<_> =
			keys.iter().map(|(p, s, k, _)| (p.to_string(), s.to_string(), k.to_string())).collect();
		expected.sort();
		assert_eq!(all, expected);
	}

	let store = gs_store(&gcs);
	for lazy in [false, true] {
		let key = if lazy { "bb_1" } else { "aa_0" };
		store.remove("monitors", "", key, lazy).unwrap();
		assert!(!stored(&gcs, &object_path(&gcs.backend.prefix, "monitors", "", key)));
		assert_eq!(store.read("monitors", "", key).unwrap_err().kind(), ErrorKind::NotFound);
		// GCS answers 404 to deleting a missing object; the remove still succeeds.
		store.remove("monitors", "", key, lazy).unwrap();
	}
	assert_eq!(list(&store, "monitors", ""), set(&[]));
	assert!(stored(&gcs, &object_path(&gcs.backend.prefix, "", "", "manager")));
}

#[test]
fn fake_gcs_refuses_object_store_uploads_clearly() {
	let Some(gcs) = backends::fake_gcs("gcs-write") else { return };
	let store = gs_store(&gcs);
	let err = store.write("monitors", "", "aa_0", b"monitor".to_vec()).unwrap_err();
	let message = err.to_string();
	println!("fake-gcs-server refuses the upload: {message}");
	// Not "not found" (LDK would read that as an empty store), not retried (a 400 is a fact), and
	// the server's reason is in the message.
	assert_eq!(err.kind(), ErrorKind::Other, "{message}");
	assert!(message.contains("write of monitors//aa_0 failed after 1 attempt(s)"), "{message}");
	assert!(message.contains("400") && message.contains("invalid uploadType"), "{message}");
	assert!(!stored(&gcs, &object_path(&gcs.backend.prefix, "monitors", "", "aa_0")));
	assert_eq!(store.read("monitors", "", "aa_0").unwrap_err().kind(), ErrorKind::NotFound);
}
