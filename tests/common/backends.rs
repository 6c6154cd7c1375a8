//! The backends every shared test runs against: in-memory and a local directory always, and each
//! server that the environment names (`./localstack/servers.sh env` prints the variables): the S3
//! servers, Azurite (Azure Blob Storage) and fake-gcs-server (Google Cloud Storage, reads only).
//!
//! A server test skips with a printed reason when its variables are absent, so a plain
//! `cargo test` passes offline; with `LDK_OS_TEST_REQUIRE_SERVERS=1` (as `.ci/run` sets) a missing
//! server fails the test instead.

use std::sync::Arc;

use ldk_object_store::{ObjectKvStore, StoreBuilder};
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{ClientOptions, ObjectStore};

/// The S3 servers the tests know, by the infix of their environment variables.
pub const S3_SERVERS: [&str; 3] = ["LOCALSTACK", "SEAWEEDFS", "MINIO"];

/// One backend for one test: the raw object store, the prefix the test owns in it, and what the
/// backend can represent.
pub struct Backend {
	pub name: String,
	pub object_store: Arc<dyn ObjectStore>,
	pub prefix: String,
	/// False where a key and a namespace of the same name cannot coexist (a local directory
	/// cannot hold a file and a directory of one name). LDK asks callers to avoid that anyway.
	pub key_and_namespace_may_share_a_name: bool,
	/// Settings every store over this backend gets (retries, fencing).
	pub tune: Option<Tune>,
	/// For a pair: the replica's builder for a prefix (every writer store gets the replica).
	pub replica: Option<ReplicaAt>,
	_dir: Option<tempfile::TempDir>,
	/// For a pair: the replica's backend, kept alive (its temporary directory).
	_replica: Option<Arc<Backend>>,
}

/// The replica's builder for the prefix the primary's test owns.
pub type ReplicaAt = Arc<dyn Fn(&str) -> StoreBuilder + Send + Sync>;

/// A change to the builder of every store over a backend.
pub type Tune = Arc<dyn Fn(StoreBuilder) -> StoreBuilder + Send + Sync>;

impl Backend {
	/// A store over this backend (a new instance each call, sharing the objects).
	pub fn store(&self) -> ObjectKvStore {
		self.builder().build().expect("store builds")
	}

	/// A second, read-only view of the store while its writer runs (as `ldk-object-store ls` or
	/// a reload check opens it): it takes no writer lease, so it does not contend with the
	/// writer's. For a pair, a view of the primary alone.
	pub fn reader(&self) -> ObjectKvStore {
		self.unpaired_builder().without_writer_lease().build().expect("reader builds")
	}

	/// A read-only view of a pair's replica.
	pub fn replica_reader(&self) -> ObjectKvStore {
		let replica = self.replica.as_ref().expect("a pair");
		replica(&self.prefix).without_writer_lease().build().expect("replica reader builds")
	}

	/// The replica's builder of a pair, at this backend's prefix.
	pub fn replica_builder(&self) -> StoreBuilder {
		(self.replica.as_ref().expect("a pair"))(&self.prefix)
	}

	/// For a pair: checks that the two copies hold the same keys with the same contents.
	pub async fn assert_copies_equal(&self) {
		if self.replica.is_none() {
			return;
		}
		let differences =
			ldk_object_store::replica::compare(&self.reader(), &self.replica_reader(), |_, _| {})
				.await
				.expect("comparing the copies");
		assert!(differences.is_empty(), "{}: the copies differ: {differences:#?}", self.name);
	}

	/// A builder over this backend, for tests that tune the store (with the replica of a pair).
	pub fn builder(&self) -> StoreBuilder {
		let builder = self.unpaired_builder();
		match &self.replica {
			Some(replica) => builder.with_replica(replica(&self.prefix)),
			None => builder,
		}
	}

	/// A builder over this backend alone (for a pair, over the primary without its replica).
	pub fn unpaired_builder(&self) -> StoreBuilder {
		let builder = StoreBuilder::from_store(Arc::clone(&self.object_store))
			.with_prefix(self.prefix.clone());
		match &self.tune {
			Some(tune) => tune(builder),
			None => builder,
		}
	}

	/// This backend as the primary of a pair whose replica is `replica`, at the same prefix.
	pub fn paired_with(mut self, replica: Backend) -> Self {
		let object_store = Arc::clone(&replica.object_store);
		let replica_at: ReplicaAt = Arc::new(move |prefix: &str| {
			StoreBuilder::from_store(Arc::clone(&object_store)).with_prefix(prefix)
		});
		self.name = format!("{}+{}", self.name, replica.name);
		self.key_and_namespace_may_share_a_name &= replica.key_and_namespace_may_share_a_name;
		self.replica = Some(replica_at);
		self._replica = Some(Arc::new(replica));
		self
	}

	/// This backend as the primary of a pair whose replica is a local directory, opened by its
	/// `file://` URL (a local directory's lease is an OS lock, which a URL gives).
	pub fn paired_with_directory(mut self) -> Self {
		let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
		let url = format!("file://{}", dir.path().display());
		let held = Arc::clone(&dir);
		let replica_at: ReplicaAt = Arc::new(move |prefix: &str| {
			let _keep = &held;
			StoreBuilder::from_url(url.clone()).with_prefix(prefix).create_if_missing(true)
		});
		self.name = format!("{}+directory", self.name);
		self.key_and_namespace_may_share_a_name = false;
		self.replica = Some(replica_at);
		self
	}

	/// The same backend, with every store built over it changed by `tune`.
	pub fn tuned(
		mut self, tune: impl Fn(StoreBuilder) -> StoreBuilder + Send + Sync + 'static,
	) -> Self {
		self.tune = Some(match self.tune.take() {
			Some(before) => Arc::new(move |builder| tune(before(builder))),
			None => Arc::new(tune),
		});
		self
	}

	/// The same backend under a prefix of its own, for a check that needs an empty store.
	pub fn fresh(&self, label: &str) -> Self {
		let mut fresh = self.wrapped(|s| s);
		fresh.prefix = format!("{}/{label}", self.prefix);
		fresh
	}

	/// The same backend seen through a wrapper (faults, latency, counting).
	pub fn wrapped(&self, wrap: impl FnOnce(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>) -> Self {
		Backend {
			name: self.name.clone(),
			object_store: wrap(Arc::clone(&self.object_store)),
			prefix: self.prefix.clone(),
			key_and_namespace_may_share_a_name: self.key_and_namespace_may_share_a_name,
			tune: self.tune.clone(),
			replica: self.replica.clone(),
			_dir: None,
			_replica: self._replica.clone(),
		}
	}
}

pub fn unique_prefix(test: &str) -> String {
	format!("test-{test}-{:016x}", fastrand::u64(..))
}

pub fn memory(test: &str) -> Backend {
	Backend {
		name: "memory".into(),
		object_store: Arc::new(InMemory::new()),
		prefix: unique_prefix(test),
		key_and_namespace_may_share_a_name: true,
		tune: None,
		replica: None,
		_dir: None,
		_replica: None,
	}
}

pub fn local_dir(test: &str) -> Backend {
	let dir = tempfile::tempdir().expect("temp dir");
	let fs = LocalFileSystem::new_with_prefix(dir.path()).expect("local fs");
	Backend {
		name: "local directory".into(),
		object_store: Arc::new(fs),
		prefix: unique_prefix(test),
		key_and_namespace_may_share_a_name: false,
		// A local directory cannot replace an object conditionally, so it cannot hold a lease
		// object (a `file://` store takes an OS lock instead; see tests/lease.rs).
		tune: Some(Arc::new(|builder: StoreBuilder| builder.without_writer_lease())),
		replica: None,
		_dir: Some(dir),
		_replica: None,
	}
}

fn require_servers() -> bool {
	std::env::var("LDK_OS_TEST_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

/// The value of each of `vars`, or `None` after printing why `test` skips on `server` (a panic
/// instead when servers are required).
fn server_env<const N: usize>(server: &str, test: &str, vars: [&str; N]) -> Option<[String; N]> {
	let values = vars.map(|var| std::env::var(var).ok());
	if values.iter().all(Option::is_some) {
		return Some(values.map(Option::unwrap));
	}
	let vars = vars.join(" / ");
	if require_servers() {
		panic!("{vars} not set but LDK_OS_TEST_REQUIRE_SERVERS=1");
	}
	println!("skipping {test} on {server}: {vars} not set");
	None
}

/// The S3 server `server` (one of [`S3_SERVERS`]) if the environment configures it. Otherwise
/// prints why the test skips and returns `None`, or panics when servers are required.
pub fn s3(server: &str, test: &str) -> Option<Backend> {
	s3_with(server, test, object_store::RetryConfig::default())
}

/// [`s3`] with a client that re-sends nothing by itself, as the store's own client of writes
/// (for tests that account for every request on the wire).
pub fn s3_without_resends(server: &str, test: &str) -> Option<Backend> {
	s3_with(server, test, object_store::RetryConfig { max_retries: 0, ..Default::default() })
}

fn s3_with(server: &str, test: &str, retry: object_store::RetryConfig) -> Option<Backend> {
	let url_var = format!("LDK_OS_TEST_{server}_URL");
	let endpoint_var = format!("LDK_OS_TEST_{server}_ENDPOINT");
	let (Ok(url), Ok(endpoint)) = (std::env::var(&url_var), std::env::var(&endpoint_var)) else {
		if require_servers() && server != "MINIO" {
			panic!("{url_var} / {endpoint_var} not set but LDK_OS_TEST_REQUIRE_SERVERS=1");
		}
		println!("skipping {test} on {server}: {url_var} and {endpoint_var} are not set");
		return None;
	};
	let bucket = url.trim_start_matches("s3://").trim_end_matches('/');
	let store = AmazonS3Builder::from_env()
		.with_bucket_name(bucket)
		.with_endpoint(endpoint)
		.with_allow_http(true)
		.with_virtual_hosted_style_request(false)
		.with_retry(retry)
		.build()
		.expect("S3 client builds");
	Some(Backend {
		name: server.to_lowercase(),
		object_store: Arc::new(store),
		prefix: unique_prefix(test),
		// SeaweedFS refuses a create-only put (412) of a key named like a folder that holds
		// objects, although the key itself is absent: with fencing (the default) such a key
		// cannot be written there. LDK never names a key like a namespace.
		key_and_namespace_may_share_a_name: server != "SEAWEEDFS",
		tune: None,
		replica: None,
		_dir: None,
		_replica: None,
	})
}

/// The container of Azurite's well-known development account that `LDK_OS_TEST_AZURITE_URL`
/// (`az://ldk-test`) names, if the environment configures it; otherwise prints why the test skips
/// (or panics when servers are required).
///
/// `with_use_emulator` selects the account `devstoreaccount1` with its published key, plain HTTP,
/// and path-style URLs at `AZURITE_BLOB_STORAGE_URL` (default `http://127.0.0.1:10000`, which is
/// where `servers.sh` runs Azurite).
pub fn azurite(test: &str) -> Option<Backend> {
	let [url] = server_env("azurite", test, ["LDK_OS_TEST_AZURITE_URL"])?;
	let container = url.trim_start_matches("az://").trim_end_matches('/');
	let store = MicrosoftAzureBuilder::new()
		.with_use_emulator(true)
		.with_container_name(container)
		.build()
		.expect("Azure client builds");
	Some(Backend {
		name: "azurite".into(),
		object_store: Arc::new(store),
		prefix: unique_prefix(test),
		key_and_namespace_may_share_a_name: true,
		tune: None,
		replica: None,
		_dir: None,
		_replica: None,
	})
}

/// A Google Cloud Storage emulator: the bucket, its endpoint, and an object store over it.
pub struct GcsEmulator {
	pub bucket: String,
	/// `http://127.0.0.1:4443`: both the XML API (what `object_store` speaks) and the JSON API.
	pub endpoint: String,
	pub backend: Backend,
}

impl GcsEmulator {
	/// The `google_service_account_key` option that points a `gs://` store at the emulator:
	/// `disable_oauth` sends an empty bearer token instead of fetching one from Google, and
	/// `gcs_base_url` replaces `https://storage.googleapis.com`.
	pub fn service_account_key(&self) -> String {
		format!(
			r#"{{"disable_oauth":true,"gcs_base_url":"{}","private_key":"","private_key_id":"","client_email":""}}"#,
			self.endpoint
		)
	}
}

/// fake-gcs-server, if `LDK_OS_TEST_FAKE_GCS_URL` (`gs://ldk-test`) and
/// `LDK_OS_TEST_FAKE_GCS_ENDPOINT` are set; otherwise prints why the test skips (or panics when
/// servers are required). It answers object_store's reads, listings and deletes, but refuses its
/// uploads: not a [`Backend`] for the conformance suite, see `tests/cloud_emulators.rs`.
pub fn fake_gcs(test: &str) -> Option<GcsEmulator> {
	let [url, endpoint] = server_env(
		"fake-gcs-server",
		test,
		["LDK_OS_TEST_FAKE_GCS_URL", "LDK_OS_TEST_FAKE_GCS_ENDPOINT"],
	)?;
	let bucket = url.trim_start_matches("gs://").trim_end_matches('/').to_owned();
	let endpoint = endpoint.trim_end_matches('/').to_owned();
	let store = GoogleCloudStorageBuilder::new()
		.with_bucket_name(&bucket)
		.with_base_url(&endpoint)
		.with_bearer_token("")
		.with_client_options(ClientOptions::new().with_allow_http(true))
		.build()
		.expect("GCS client builds");
	Some(GcsEmulator {
		bucket,
		endpoint,
		backend: Backend {
			name: "fake-gcs-server".into(),
			object_store: Arc::new(store),
			prefix: unique_prefix(test),
			key_and_namespace_may_share_a_name: true,
			tune: None,
			replica: None,
			_dir: None,
			_replica: None,
		},
	})
}

/// Every backend the environment offers for `test` that takes writes.
pub fn all(test: &str) -> Vec<Backend> {
	let mut backends = vec![memory(test), local_dir(test)];
	backends.extend(S3_SERVERS.iter().filter_map(|server| s3(server, test)));
	backends.extend(azurite(test));
	backends
}
