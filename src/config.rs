//! Building an [`ObjectKvStore`] from a URL, from the environment, or around an object store made
//! in code.
//!
//! | URL | backend | credentials and settings from |
//! |---|---|---|
//! | `s3://bucket/prefix` | Amazon S3 or any S3-compatible server | `AWS_*` variables (`AWS_ENDPOINT` for MinIO, LocalStack, SeaweedFS) |
//! | `gs://bucket/prefix` | Google Cloud Storage | `GOOGLE_*` variables |
//! | `az://container/prefix` | Azure Blob Storage | `AZURE_*` variables |
//! | `file:///path/to/dir` | a local directory | — |
//! | `memory://` | in-memory, lost on exit (tests, demos) | — |
//!
//! Options given with [`StoreBuilder::with_option`] use `object_store`'s configuration keys
//! (`aws_endpoint`, `aws_allow_http`, `google_service_account`, `azure_storage_account_name`, …)
//! and take precedence over the environment.

use std::fmt;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;
use url::Url;

use crate::encryption::{EncryptNames, EncryptedStore, EncryptionKey};
use crate::error::ConfigError;
use crate::lease::{self, LeaseConfig};
use crate::replica::{Lag, ReplicaMode};
use crate::retry::RetryPolicy;
use crate::store::{ObjectKvStore, Side, StoreParams};

/// Default bound on requests in flight at once, across all keys: twice the monitor persister's
/// default cap ([`PersisterConfig::max_requests_in_flight`](crate::PersisterConfig)), so that a
/// startup load or a burst of monitor writes leaves room for the `ChannelManager`, the network
/// graph and the scorer. The persister's own limit adapts to what the store takes (see
/// [`PersisterConfig::adaptive_concurrency`](crate::PersisterConfig)); this one is fixed.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2048;
/// Default number of worker threads of the store's runtime.
pub const DEFAULT_WORKER_THREADS: usize = 2;

/// The environment variable [`StoreBuilder::from_env`] reads the store URL from.
pub const ENV_URL: &str = "LDK_OBJECT_STORE_URL";
/// Optional: a root prefix below the URL's path.
pub const ENV_PREFIX: &str = "LDK_OBJECT_STORE_PREFIX";
/// Optional: the bound on requests in flight.
pub const ENV_MAX_IN_FLIGHT: &str = "LDK_OBJECT_STORE_MAX_IN_FLIGHT";
/// Optional: the number of attempts per operation (1 disables retries).
pub const ENV_MAX_ATTEMPTS: &str = "LDK_OBJECT_STORE_MAX_ATTEMPTS";
/// Optional: the number of worker threads of the store's runtime.
pub const ENV_WORKER_THREADS: &str = "LDK_OBJECT_STORE_WORKER_THREADS";
/// Optional: `true` or `false` turns conditional writes on or off ([`StoreBuilder::with_fencing`]);
/// unset, they are on wherever the writer lease is an object lease.
pub const ENV_FENCING: &str = "LDK_OBJECT_STORE_FENCING";
/// Optional: `false` turns the writer lease off ([`StoreBuilder::without_writer_lease`]).
pub const ENV_WRITER_LEASE: &str = "LDK_OBJECT_STORE_WRITER_LEASE";
/// Optional: `true` creates a missing `file://` directory ([`StoreBuilder::create_if_missing`]).
pub const ENV_CREATE_IF_MISSING: &str = "LDK_OBJECT_STORE_CREATE_IF_MISSING";
/// Optional: a 64-hex-digit key that turns encryption on ([`StoreBuilder::with_encryption`]).
pub const ENV_ENCRYPTION_KEY: &str = "LDK_OBJECT_STORE_ENCRYPTION_KEY";
/// Optional, with [`ENV_ENCRYPTION_KEY`]: `true` encrypts key names as well.
pub const ENV_ENCRYPT_NAMES: &str = "LDK_OBJECT_STORE_ENCRYPT_NAMES";
/// Optional, with [`ENV_ENCRYPTION_KEY`]: the store identity bound into every object
/// ([`StoreBuilder::with_encryption_identity`]).
pub const ENV_ENCRYPTION_IDENTITY: &str = "LDK_OBJECT_STORE_ENCRYPTION_IDENTITY";
/// The replica's URL (see [`StoreBuilder::with_replica`]); unset or empty for none.
pub const ENV_REPLICA_URL: &str = "LDK_OBJECT_STORE_REPLICA_URL";
/// `strict` (the default) or `lag-when-unreachable` (see [`ReplicaMode`]).
pub const ENV_REPLICA_MODE: &str = "LDK_OBJECT_STORE_REPLICA_MODE";
/// The replica's own backend options, as `key=value` pairs separated by commas (for example
/// `aws_region=eu-west-1,aws_endpoint=https://…`); the usual variables (`AWS_*`, …) apply to
/// both copies.
pub const ENV_REPLICA_OPTIONS: &str = "LDK_OBJECT_STORE_REPLICA_OPTIONS";

enum Source {
	Url(String),
	Store(Arc<dyn ObjectStore>),
}

/// Configures and builds an [`ObjectKvStore`].
///
/// ```
/// use ldk_object_store::StoreBuilder;
///
/// let store = StoreBuilder::from_url("memory://").with_prefix("node-1").build()?;
/// # Ok::<(), ldk_object_store::ConfigError>(())
/// ```
pub struct StoreBuilder {
	source: Source,
	prefix: Option<String>,
	options: Vec<(String, String)>,
	max_in_flight: usize,
	retry: RetryPolicy,
	worker_threads: usize,
	/// `None`: on wherever an object lease is taken (see [`StoreBuilder::with_fencing`]).
	fencing: Option<bool>,
	lease: Option<LeaseConfig>,
	create_if_missing: bool,
	#[cfg(feature = "_test_hooks")]
	on_current_runtime: bool,
	encryption: Option<(EncryptionKey, EncryptNames)>,
	encryption_identity: Option<String>,
	/// The second copy's location (see [`crate::replica`]).
	replica: Option<Box<StoreBuilder>>,
	/// Compare the replica fully at the start even if it is recorded in sync.
	repair_replica: bool,
	/// What happens when the replica cannot be reached.
	replica_mode: ReplicaMode,
	/// Whether the start checks the copy's replica record; off for the replica tools, which
	/// read and write those records themselves.
	replica_checks: bool,
}

impl fmt::Debug for StoreBuilder {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		// Option values may be secrets (keys, tokens): show their names only.
		let source = match &self.source {
			Source::Url(url) => url.clone(),
			Source::Store(store) => store.to_string(),
		};
		let option_keys: Vec<&str> = self.options.iter().map(|(k, _)| k.as_str()).collect();
		f.debug_struct("StoreBuilder")
			.field("source", &source)
			.field("prefix", &self.prefix)
			.field("option_keys", &option_keys)
			.field("max_in_flight", &self.max_in_flight)
			.field("retry", &self.retry)
			.field("worker_threads", &self.worker_threads)
			.field("fencing", &self.fencing)
			.field("lease", &self.lease)
			.field("create_if_missing", &self.create_if_missing)
			// The key's own Debug is redacted.
			.field("encryption", &self.encryption)
			.field("encryption_identity", &self.encryption_identity)
			.field("replica", &self.replica)
			.field("repair_replica", &self.repair_replica)
			.field("replica_mode", &self.replica_mode)
			.finish()
	}
}

impl StoreBuilder {
	fn new(source: Source) -> Self {
		StoreBuilder {
			source,
			prefix: None,
			options: Vec::new(),
			max_in_flight: DEFAULT_MAX_IN_FLIGHT,
			retry: RetryPolicy::default(),
			worker_threads: DEFAULT_WORKER_THREADS,
			fencing: None,
			lease: Some(LeaseConfig::default()),
			create_if_missing: false,
			#[cfg(feature = "_test_hooks")]
			on_current_runtime: false,
			encryption: None,
			encryption_identity: None,
			replica: None,
			repair_replica: false,
			replica_mode: ReplicaMode::Strict,
			replica_checks: true,
		}
	}

	/// A store at `url` (see the module docs for the schemes); the URL's path becomes the root
	/// prefix. Cloud credentials come from the standard environment variables.
	pub fn from_url(url: impl Into<String>) -> Self {
		StoreBuilder::new(Source::Url(url.into()))
	}

	/// A store over an object store built in code. Its own settings (retries, timeouts,
	/// credentials) stay as they are. A `LocalFileSystem` must be built
	/// `.with_fsync(true)` for writes to be durable when they complete, as LDK requires
	/// (`file://` URLs do this); object_store leaves fsync off by default.
	pub fn from_store(store: Arc<dyn ObjectStore>) -> Self {
		StoreBuilder::new(Source::Store(store))
	}

	/// A store configured by environment variables: [`ENV_URL`] (required), and optionally
	/// [`ENV_PREFIX`], [`ENV_MAX_IN_FLIGHT`], [`ENV_MAX_ATTEMPTS`], [`ENV_WORKER_THREADS`],
	/// [`ENV_FENCING`], [`ENV_WRITER_LEASE`], [`ENV_CREATE_IF_MISSING`], [`ENV_ENCRYPTION_KEY`],
	/// [`ENV_ENCRYPT_NAMES`], [`ENV_ENCRYPTION_IDENTITY`], and for a replica [`ENV_REPLICA_URL`],
	/// [`ENV_REPLICA_OPTIONS`] and [`ENV_REPLICA_MODE`].
	pub fn from_env() -> Result<Self, ConfigError> {
		let url = std::env::var(ENV_URL)
			.map_err(|_| ConfigError::InvalidEnv { var: ENV_URL, reason: "not set".into() })?;
		let mut builder = StoreBuilder::from_url(url);
		if let Ok(prefix) = std::env::var(ENV_PREFIX) {
			builder = builder.with_prefix(prefix);
		}
		if let Some(n) = env_number(ENV_MAX_IN_FLIGHT)? {
			builder = builder.with_max_in_flight(n);
		}
		if let Some(n) = env_number(ENV_MAX_ATTEMPTS)? {
			builder.retry.max_attempts = n as u32;
		}
		if let Some(n) = env_number(ENV_WORKER_THREADS)? {
			builder = builder.with_worker_threads(n);
		}
		if let Some(on) = env_bool(ENV_FENCING)? {
			builder = builder.with_fencing(on);
		}
		if env_bool(ENV_WRITER_LEASE)? == Some(false) {
			builder = builder.without_writer_lease();
		}
		if let Some(create) = env_bool(ENV_CREATE_IF_MISSING)? {
			builder = builder.create_if_missing(create);
		}
		if let Some(replica) = replica_from_env()? {
			// The mode is the pair's: carried by the replica's builder from the environment.
			let mode = replica.replica_mode;
			builder = builder.with_replica(replica).with_replica_mode(mode);
		}
		builder.with_encryption_from_env()
	}

	/// A root prefix below the URL's path, for example one per node sharing a bucket.
	pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
		self.prefix = Some(prefix.into());
		self
	}

	/// A backend option by `object_store`'s configuration key, such as `aws_endpoint` or
	/// `aws_allow_http`. Only for stores built from a URL.
	pub fn with_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
		self.options.push((key.into(), value.into()));
		self
	}

	/// The most requests in flight at once, across all keys (default [`DEFAULT_MAX_IN_FLIGHT`]).
	pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
		self.max_in_flight = max_in_flight.max(1);
		self
	}

	/// How transient failures are retried (default: [`RetryPolicy::default`]).
	pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
		self.retry = retry;
		self
	}

	/// Worker threads of the runtime the store's I/O runs on (default
	/// [`DEFAULT_WORKER_THREADS`]).
	pub fn with_worker_threads(mut self, worker_threads: usize) -> Self {
		self.worker_threads = worker_threads.max(1);
		self
	}

	/// Makes every write conditional on the version of the object this store last saw, so that
	/// a write that would replace another writer's (a second instance, or a request of an
	/// earlier instance still in the network) is refused by the server (see
	/// [`crate::fencing`]). Default: on wherever the writer lease is an object lease (S3, GCS,
	/// Azure, memory: taking the lease proved that the backend honours conditional writes); off
	/// for `file://` (which cannot replace conditionally; `true` is refused there) and without
	/// a lease. It costs one HEAD request before the first write of a key this store has
	/// neither read nor written since it started.
	pub fn with_fencing(mut self, fencing: bool) -> Self {
		self.fencing = Some(fencing);
		self
	}

	/// Creates a `file://` store's directory if it does not exist (default `false`: building
	/// on a missing directory fails with [`ConfigError::MissingDirectory`], because an
	/// unmounted volume must not look like a new, empty node). Turn it on when setting up a new
	/// node. No effect on other backends.
	pub fn create_if_missing(mut self, create: bool) -> Self {
		self.create_if_missing = create;
		self
	}

	/// Test hook: the store runs on the caller's tokio runtime instead of one of its own (a
	/// current-thread runtime with paused time, for the takeover model). Build it with
	/// [`Self::build_async`], use it through the async traits only, and close it explicitly.
	#[cfg(feature = "_test_hooks")]
	pub fn on_current_runtime(mut self) -> Self {
		self.on_current_runtime = true;
		self
	}

	/// Sets the timing of the writer lease (see [`crate::lease`]). The lease is on by default,
	/// with [`LeaseConfig::default`].
	pub fn with_writer_lease(mut self, config: LeaseConfig) -> Self {
		self.lease = Some(config);
		self
	}

	/// Builds the store without a writer lease: nothing then stops a second instance on the same
	/// prefix from overwriting and deleting this one's state, which for a Lightning node can lose
	/// money. Only for read-only tools, and for deployments that make sure by other means that
	/// one instance runs at a time.
	pub fn without_writer_lease(mut self) -> Self {
		self.lease = None;
		self
	}

	/// Encrypts every object with `key` before it leaves the process, and with
	/// [`EncryptNames::Yes`] the key names below the root prefix too (see [`crate::encryption`]).
	/// Keep the key safe and apart from the bucket: without it the node's state is unreadable.
	pub fn with_encryption(mut self, key: EncryptionKey, names: EncryptNames) -> Self {
		self.encryption = Some((key, names));
		self
	}

	/// Turns encryption on if [`ENV_ENCRYPTION_KEY`] is set ([`ENV_ENCRYPT_NAMES`] for names,
	/// [`ENV_ENCRYPTION_IDENTITY`] for the store identity). The key is never echoed in an error.
	pub fn with_encryption_from_env(self) -> Result<Self, ConfigError> {
		let Ok(hex) = std::env::var(ENV_ENCRYPTION_KEY) else {
			if std::env::var(ENV_ENCRYPTION_IDENTITY).is_ok_and(|id| !id.trim().is_empty()) {
				let reason = format!("it needs {ENV_ENCRYPTION_KEY} as well");
				return Err(ConfigError::InvalidEnv { var: ENV_ENCRYPTION_IDENTITY, reason });
			}
			return Ok(self);
		};
		let key = EncryptionKey::from_hex(hex.trim()).map_err(|e| ConfigError::InvalidEnv {
			var: ENV_ENCRYPTION_KEY,
			reason: e.to_string(),
		})?;
		let names = match std::env::var(ENV_ENCRYPT_NAMES).as_deref().map(str::trim) {
			Ok("true") | Ok("1") => EncryptNames::Yes,
			Ok("false") | Ok("0") | Ok("") | Err(_) => EncryptNames::No,
			Ok(other) => {
				let reason = format!("{other:?} is not true or false");
				return Err(ConfigError::InvalidEnv { var: ENV_ENCRYPT_NAMES, reason });
			},
		};
		let builder = self.with_encryption(key, names);
		match std::env::var(ENV_ENCRYPTION_IDENTITY) {
			Ok(identity) if !identity.trim().is_empty() => {
				Ok(builder.with_encryption_identity(identity.trim()))
			},
			_ => Ok(builder),
		}
	}

	/// Keeps a second copy at `replica`'s location (see [`crate::replica`]): every write and
	/// remove completes only once both copies hold it. The replica is given as a builder of its
	/// own for its location: its URL or object store, its options (credentials and endpoint of
	/// another cloud or region), `create_if_missing`, and its prefix if it differs from this
	/// one's; everything else (encryption, bounds, retries, fencing, the lease) is this
	/// builder's. Needs the writer lease, which is taken on both copies.
	pub fn with_replica(mut self, replica: StoreBuilder) -> Self {
		self.replica = Some(Box::new(replica));
		self
	}

	/// At this start, compares the whole replica with the primary and repairs what differs,
	/// even if it is recorded in sync (`ldk-object-store replica repair`).
	pub fn repair_replica(mut self) -> Self {
		self.repair_replica = true;
		self
	}

	/// What the store does when the replica cannot be reached: fail the write (the default,
	/// [`ReplicaMode::Strict`]), or go on with the primary alone while the replica lags
	/// ([`ReplicaMode::LagWhenUnreachable`]; read its risks first).
	pub fn with_replica_mode(mut self, mode: ReplicaMode) -> Self {
		self.replica_mode = mode;
		self
	}

	/// For the replica tools: no check of the location's replica record at the start.
	pub(crate) fn for_replica_tools(mut self) -> Self {
		self.replica_checks = false;
		self
	}

	/// With encryption, binds every object to `identity` as well as to its key name (see
	/// [`crate::encryption::EncryptedStore::with_identity`]): for nodes that share one encryption
	/// key, so that one node's object put in place of another's fails to decrypt instead of
	/// being read as that node's state. Give each node its own stable identity (its node id, for
	/// example) and always the same one; objects written without an identity, or with another,
	/// do not decrypt. Without [`Self::with_encryption`] it has no effect.
	pub fn with_encryption_identity(mut self, identity: impl Into<String>) -> Self {
		self.encryption_identity = Some(identity.into());
		self
	}

	/// Builds the store and takes the writer lease on its prefix (unless
	/// [`Self::without_writer_lease`]): fails with [`ConfigError::LeaseHeld`] while another
	/// instance holds it, and with advice on a backend that cannot hold one. With encryption, the
	/// key (and identity) is first checked against the objects already stored (a wrong key fails
	/// here, not later). Blocks the calling thread (without entering any runtime): a lease that
	/// looks abandoned is watched for its time to live plus the skew allowance before it is
	/// taken over (35 s by default), so from async code prefer [`Self::build_async`].
	pub fn build(self) -> Result<ObjectKvStore, ConfigError> {
		crate::runtime::block_on(self.build_async())
	}

	/// [`Self::build`] as a future, to await on any executor: the work runs on the store's own
	/// runtime.
	pub async fn build_async(self) -> Result<ObjectKvStore, ConfigError> {
		if self.encryption.is_none() && self.encryption_identity.is_some() {
			tracing::warn!("an encryption identity is set without an encryption key: no effect");
		}
		if self.replica.is_some() && self.lease.is_none() {
			return Err(ConfigError::Replica(
				"a replica needs the writer lease (on both copies): remove \
				 `without_writer_lease`"
					.into(),
			));
		}
		let here = self.open_location(&self.source, &self.options, self.create_if_missing, None)?;
		if let Some(config) = &self.lease {
			config.validate()?;
		}
		// Taken before anything else, so a refused instance has not touched the store.
		let file_lease = match (&self.lease, &here.local_dir) {
			(Some(_), Some(dir)) => Some(lease::acquire_file(dir)?),
			_ => None,
		};
		let there = match &self.replica {
			Some(replica) => Some(self.open_location(
				&replica.source,
				&replica.options,
				replica.create_if_missing,
				replica.prefix.as_deref(),
			)?),
			None => None,
		};
		let mut encrypted = here.encrypted.clone().into_iter().collect::<Vec<_>>();
		encrypted.extend(there.as_ref().and_then(|there| there.encrypted.clone()));
		let store = ObjectKvStore::with_params(here.backend, self.params(here.params)).map_err(
			|source| ConfigError::Io { what: "starting the store's runtime".into(), source },
		)?;
		let stopped = |what: &str| ConfigError::Io {
			what: what.to_owned(),
			source: std::io::Error::other("the store's runtime stopped"),
		};
		// Both copies', where there is a replica.
		for encrypted in encrypted {
			// With encrypted names a wrong key reads as an empty store, which LDK would take for
			// a new node: check the key against what is stored before anyone reads.
			match store.spawn(async move { encrypted.check_key().await }).await {
				Some(Ok(_)) => {},
				Some(Err(err)) => return Err(ConfigError::Encryption(err)),
				None => return Err(stopped("checking the encryption key")),
			}
		}
		let lease = match (file_lease, &self.lease) {
			(Some(file_lease), _) => Some(file_lease),
			(None, Some(config)) => {
				let acquiring = lease::acquire_object(
					Arc::clone(store.raw_backend()),
					Arc::clone(store.raw_writer()),
					lease::lease_path(store.key_mapper().root()),
					config.clone(),
					self.retry.clone(),
				);
				match store.spawn(acquiring).await {
					Some(result) => {
						let lease = result?;
						store.keep_renewed(&lease);
						Some(lease)
					},
					None => return Err(stopped("taking the writer lease")),
				}
			},
			(None, None) => None,
		};
		let store = match there {
			None => store,
			Some(there) => {
				let side = Side::new(there.backend, self.params(there.params));
				let lag = (self.replica_mode == ReplicaMode::LagWhenUnreachable)
					.then(|| Arc::new(Lag::default()));
				let taken = match &lag {
					// A pair that may lag has the primary's lease only.
					Some(_) => Ok(None),
					None => self.replica_lease(&store, &side, there.local_dir.as_deref()).await,
				};
				match taken {
					Ok(replica_lease) => store.with_replica(side, replica_lease, lag),
					Err(err) => {
						// A refused start leaves the primary's lease free for the next one.
						if let Some(lease) = lease {
							let limit =
								self.retry.attempt_timeout + std::time::Duration::from_secs(1);
							store.spawn(lease.close(limit)).await;
						}
						return Err(err);
					},
				}
			},
		};
		let store = match lease {
			Some(lease) => store.with_lease(lease),
			None => store,
		};
		let checked = if store.replica_tracker().is_some() {
			crate::replica::start(&store, self.repair_replica).await
		} else if self.replica_checks && self.lease.is_some() {
			crate::replica::start_alone(&store).await
		} else {
			Ok(())
		};
		if let Err(err) = checked {
			store.close().await;
			return Err(err);
		}
		Ok(store)
	}

	/// Takes the writer lease on the replica's location, after the primary's: every instance
	/// takes them in this order, so two starting at once cannot each hold one.
	async fn replica_lease(
		&self, store: &ObjectKvStore, side: &Side, local_dir: Option<&std::path::Path>,
	) -> Result<Option<Arc<lease::LeaseState>>, ConfigError> {
		let Some(config) = &self.lease else { return Ok(None) };
		if let Some(dir) = local_dir {
			return lease::acquire_file(dir).map(Some);
		}
		let acquiring = lease::acquire_object(
			Arc::clone(side.backend()),
			Arc::clone(side.writer()),
			lease::lease_path(side.key_mapper().root()),
			config.clone(),
			self.retry.clone(),
		);
		match store.spawn(acquiring).await {
			Some(Ok(lease)) => Ok(Some(lease)),
			Some(Err(ConfigError::Lease(text))) => {
				Err(ConfigError::Lease(format!("on the replica: {text}")))
			},
			Some(Err(ConfigError::LeaseHeld { holder, generation, expires })) => {
				let holder = format!("{holder}, on the replica's location");
				Err(ConfigError::LeaseHeld { holder, generation, expires })
			},
			Some(Err(other)) => Err(other),
			None => Err(ConfigError::Io {
				what: "taking the replica's writer lease".into(),
				source: std::io::Error::other("the store's runtime stopped"),
			}),
		}
	}

	/// The store's parameters for one copy.
	fn params(&self, location: LocationParams) -> StoreParams {
		StoreParams {
			root: location.root,
			max_in_flight: self.max_in_flight,
			retry: self.retry.clone(),
			worker_threads: self.worker_threads,
			fencing: location.fencing,
			writer: location.writer,
			local_dir: location.local_dir,
			local_files: location.local_files,
			#[cfg(feature = "_test_hooks")]
			on_current_runtime: self.on_current_runtime,
		}
	}

	/// Opens one copy's location (the primary's, or the replica's with its own source, options
	/// and prefix): its backend, encrypted with this builder's key, and what the store needs
	/// of it.
	fn open_location(
		&self, source: &Source, options: &[(String, String)], create_if_missing: bool,
		prefix: Option<&str>,
	) -> Result<Location, ConfigError> {
		let Built { backend, writer, url_root, local } = match source {
			Source::Url(url) => backend_from_url(url, options, create_if_missing)?,
			Source::Store(store) => {
				if let Some((key, _)) = options.first() {
					return Err(ConfigError::UnknownOption {
						scheme: "a store built in code".into(),
						key: key.clone(),
					});
				}
				Built {
					backend: Arc::clone(store),
					writer: None,
					url_root: String::new(),
					local: None,
				}
			},
		};
		let prefix = prefix.or(self.prefix.as_deref()).unwrap_or("");
		let root = join_prefix(&url_root, prefix)?;
		// The store's own directory: the URL's, with the root prefix below it.
		let local_dir = local
			.as_ref()
			.map(|(dir, _)| root.parts().fold(dir.clone(), |dir, part| dir.join(part.as_ref())));
		if let Some(dir) = &local_dir {
			ensure_directory(dir, create_if_missing)?;
		}
		// Fencing by default wherever the lease proves conditional writes: an object lease.
		let fencing = match (self.fencing, &local_dir) {
			(Some(true), Some(_)) => {
				return Err(ConfigError::Lease(
					"fencing needs conditional replacement, which a file:// store cannot do; \
					 leave it off (the writer lease, an OS file lock on file://, keeps a second \
					 instance out)"
						.into(),
				))
			},
			(Some(fencing), _) => fencing,
			(None, local_dir) => self.lease.is_some() && local_dir.is_none(),
		};
		// The root prefix stays readable, so a node's tree can be found (and moved) by it.
		let identity = self.encryption_identity.clone().unwrap_or_default();
		let encrypted = self.encryption.clone().map(|(key, names)| {
			let encrypted = EncryptedStore::new(Arc::clone(&backend), key, names);
			Arc::new(encrypted.with_root(root.clone()).with_identity(identity))
		});
		let (backend, writer): (Arc<dyn ObjectStore>, _) = match &encrypted {
			Some(encrypted) => {
				let writer =
					writer.map(|writer| Arc::new(encrypted.over(writer)) as Arc<dyn ObjectStore>);
				(Arc::clone(encrypted) as Arc<dyn ObjectStore>, writer)
			},
			None => (backend, writer),
		};
		// Reads may open the files themselves only where the files hold the objects as they are:
		// not through encryption (see `StoreParams::local_files`).
		let local_files = match &encrypted {
			Some(_) => None,
			None => local.map(|(_, fs)| fs),
		};
		let params =
			LocationParams { root, fencing, writer, local_dir: local_dir.is_some(), local_files };
		Ok(Location { backend, params, local_dir, encrypted })
	}
}

/// One copy's location, opened.
struct Location {
	backend: Arc<dyn ObjectStore>,
	params: LocationParams,
	/// For `file://`: the store's directory, which its lock is taken on.
	local_dir: Option<std::path::PathBuf>,
	/// The backend, when it is encrypted (its key is checked before anything is read).
	encrypted: Option<Arc<EncryptedStore>>,
}

/// The part of [`StoreParams`] that differs between the copies.
struct LocationParams {
	root: Path,
	fencing: bool,
	writer: Option<Arc<dyn ObjectStore>>,
	local_dir: bool,
	local_files: Option<LocalFileSystem>,
}

/// The replica's builder from [`ENV_REPLICA_URL`] and [`ENV_REPLICA_OPTIONS`], if a replica is
/// configured.
fn replica_from_env() -> Result<Option<StoreBuilder>, ConfigError> {
	let url = match std::env::var(ENV_REPLICA_URL) {
		Ok(url) if !url.trim().is_empty() => url,
		_ => return Ok(None),
	};
	let mut replica = StoreBuilder::from_url(url.trim());
	if let Some(create) = env_bool(ENV_CREATE_IF_MISSING)? {
		replica = replica.create_if_missing(create);
	}
	match std::env::var(ENV_REPLICA_MODE).as_deref().map(str::trim) {
		Err(_) | Ok("") | Ok("strict") => {},
		Ok("lag-when-unreachable") => {
			replica = replica.with_replica_mode(ReplicaMode::LagWhenUnreachable)
		},
		Ok(other) => {
			let reason = format!("{other:?} is not strict or lag-when-unreachable");
			return Err(ConfigError::InvalidEnv { var: ENV_REPLICA_MODE, reason });
		},
	}
	let options = std::env::var(ENV_REPLICA_OPTIONS).unwrap_or_default();
	for option in options.split(',').map(str::trim).filter(|option| !option.is_empty()) {
		let Some((key, value)) = option.split_once('=') else {
			// The option's value may be a secret: name the variable only.
			let reason = "each option is key=value, separated by commas".to_owned();
			return Err(ConfigError::InvalidEnv { var: ENV_REPLICA_OPTIONS, reason });
		};
		replica = replica.with_option(key.trim(), value.trim());
	}
	Ok(Some(replica))
}

/// Checks that a `file://` store's directory exists, or creates it when asked to.
fn ensure_directory(dir: &std::path::Path, create: bool) -> Result<(), ConfigError> {
	if dir.is_dir() {
		return Ok(());
	}
	if !create {
		return Err(ConfigError::MissingDirectory(dir.to_path_buf()));
	}
	std::fs::create_dir_all(dir).map_err(|source| ConfigError::Io {
		what: format!("creating directory {}", dir.display()),
		source,
	})
}

/// A boolean variable: `true`/`1` or `false`/`0`; unset or empty is `None`.
fn env_bool(var: &'static str) -> Result<Option<bool>, ConfigError> {
	match std::env::var(var).as_deref().map(str::trim) {
		Err(_) | Ok("") => Ok(None),
		Ok("true") | Ok("1") => Ok(Some(true)),
		Ok("false") | Ok("0") => Ok(Some(false)),
		Ok(other) => {
			let reason = format!("{other:?} is not true or false");
			Err(ConfigError::InvalidEnv { var, reason })
		},
	}
}

fn env_number(var: &'static str) -> Result<Option<usize>, ConfigError> {
	match std::env::var(var) {
		Err(_) => Ok(None),
		Ok(value) => value.trim().parse::<usize>().map(Some).map_err(|_| ConfigError::InvalidEnv {
			var,
			reason: format!("{value:?} is not a whole number"),
		}),
	}
}

fn join_prefix(a: &str, b: &str) -> Result<Path, ConfigError> {
	let joined: Vec<&str> =
		[a, b].iter().flat_map(|s| s.split('/')).filter(|part| !part.is_empty()).collect();
	let joined = joined.join("/");
	Path::parse(&joined).map_err(|source| ConfigError::InvalidPrefix { prefix: joined, source })
}

/// Makes a cloud client with the given retry configuration (see `backend_from_url`).
#[cfg(feature = "cloud")]
type MakeClient<'a> =
	Box<dyn Fn(object_store::RetryConfig) -> Result<Arc<dyn ObjectStore>, ConfigError> + 'a>;

/// A backend made for a URL.
struct Built {
	/// Reads and listings.
	backend: Arc<dyn ObjectStore>,
	/// Writes and removes, where they need a client of their own (see `StoreParams::writer`).
	writer: Option<Arc<dyn ObjectStore>>,
	/// The root prefix the URL's path gives.
	url_root: String,
	/// For `file://`: the directory and the `LocalFileSystem` that is the backend.
	local: Option<(std::path::PathBuf, LocalFileSystem)>,
}

/// Makes the backend for a URL and returns it with the root prefix the URL's path gives, and for
/// `file://` the directory.
// Without a cloud backend every arm returns early, so `backend` is never built.
#[cfg_attr(not(feature = "cloud"), allow(unreachable_code, unused_variables))]
fn backend_from_url(
	url: &str, options: &[(String, String)], create_if_missing: bool,
) -> Result<Built, ConfigError> {
	let parsed = Url::parse(url).map_err(|e| ConfigError::InvalidUrl(e.to_string()))?;
	if !parsed.username().is_empty() || parsed.password().is_some() {
		// Never echo the URL here: it holds a secret.
		return Err(ConfigError::InvalidUrl(
			"credentials in the URL are not accepted; use the environment".into(),
		));
	}
	let scheme = parsed.scheme().to_owned();
	let bucket = parsed.host_str().unwrap_or("").to_owned();
	let path = parsed.path().trim_matches('/').to_owned();
	let no_options = || match options.first() {
		Some((key, _)) => {
			Err(ConfigError::UnknownOption { scheme: scheme.clone(), key: key.clone() })
		},
		None => Ok(()),
	};
	#[cfg(feature = "cloud")]
	let needs_bucket = || {
		if bucket.is_empty() {
			Err(ConfigError::MissingBucket(scheme.clone()))
		} else {
			Ok(())
		}
	};
	match scheme.as_str() {
		"memory" => {
			no_options()?;
			let root = [bucket.as_str(), path.as_str()].join("/");
			let backend = Arc::new(InMemory::new());
			return Ok(Built { backend, writer: None, url_root: root, local: None });
		},
		"file" => return local_backend(&parsed, no_options, create_if_missing),
		_ => {},
	}
	// A cloud client is made twice: for reads, and for writes and removes without re-sends of
	// its own.
	#[cfg(feature = "cloud")]
	let cloud: MakeClient<'_> = match scheme.as_str() {
		#[cfg(feature = "aws")]
		"s3" | "s3a" => {
			use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
			needs_bucket()?;
			let keys = options
				.iter()
				.map(|(key, value)| Ok((parse_option::<AmazonS3ConfigKey>(&scheme, key)?, value)))
				.collect::<Result<Vec<_>, ConfigError>>()?;
			Box::new(move |retry| {
				let builder = keys.iter().fold(
					AmazonS3Builder::from_env().with_bucket_name(&bucket).with_retry(retry),
					|builder, (key, value)| builder.with_config(*key, *value),
				);
				Ok(Arc::new(builder.build().map_err(ConfigError::Backend)?))
			})
		},
		#[cfg(feature = "gcp")]
		"gs" => {
			use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
			needs_bucket()?;
			let keys = options
				.iter()
				.map(|(key, value)| Ok((parse_option::<GoogleConfigKey>(&scheme, key)?, value)))
				.collect::<Result<Vec<_>, ConfigError>>()?;
			Box::new(move |retry| {
				let builder = keys.iter().fold(
					GoogleCloudStorageBuilder::from_env()
						.with_bucket_name(&bucket)
						.with_retry(retry),
					|builder, (key, value)| builder.with_config(*key, *value),
				);
				Ok(Arc::new(builder.build().map_err(ConfigError::Backend)?))
			})
		},
		#[cfg(feature = "azure")]
		"az" | "azure" => {
			use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
			needs_bucket()?;
			let keys = options
				.iter()
				.map(|(key, value)| Ok((parse_option::<AzureConfigKey>(&scheme, key)?, value)))
				.collect::<Result<Vec<_>, ConfigError>>()?;
			Box::new(move |retry| {
				let builder = keys.iter().fold(
					MicrosoftAzureBuilder::from_env()
						.with_container_name(&bucket)
						.with_retry(retry),
					|builder, (key, value)| builder.with_config(*key, *value),
				);
				Ok(Arc::new(builder.build().map_err(ConfigError::Backend)?))
			})
		},
		_ => return Err(ConfigError::UnsupportedScheme(scheme)),
	};
	#[cfg(not(feature = "cloud"))]
	return Err(ConfigError::UnsupportedScheme(scheme));
	#[cfg(feature = "cloud")]
	Ok(Built {
		backend: cloud(request_retry())?,
		writer: Some(cloud(no_resends())?),
		url_root: path,
		local: None,
	})
}

/// The backend of a `file://` URL, whose directory must exist unless `create` (see
/// `StoreBuilder::create_if_missing`).
fn local_backend(
	parsed: &Url, no_options: impl FnOnce() -> Result<(), ConfigError>, create: bool,
) -> Result<Built, ConfigError> {
	no_options()?;
	let dir = parsed.to_file_path().map_err(|_| {
		ConfigError::InvalidUrl("a file:// URL needs an absolute local path".into())
	})?;
	ensure_directory(&dir, create)?;
	// LDK's `Completed` means durable, fsyncs included (`FilesystemStore` syncs the file and its
	// directory); object_store leaves fsync off unless asked.
	let fs = LocalFileSystem::new_with_prefix(&dir).map_err(ConfigError::Backend)?.with_fsync(true);
	Ok(Built {
		backend: Arc::new(fs.clone()),
		writer: None,
		url_root: String::new(),
		local: Some((dir, fs)),
	})
}

/// How the HTTP client retries one read before the store's [`RetryPolicy`] repeats the whole
/// operation: briefly, so that the two layers together stay within the policy's time budget.
#[cfg(feature = "cloud")]
fn request_retry() -> object_store::RetryConfig {
	object_store::RetryConfig {
		max_retries: 3,
		retry_timeout: std::time::Duration::from_secs(15),
		..Default::default()
	}
}

/// The client of writes and removes re-sends nothing by itself: a re-sent copy of a PUT or
/// DELETE could land after the attempt that sent it ended, where no bound of this crate covers
/// it. The store's [`RetryPolicy`] repeats a failed write as a new attempt instead, one at a
/// time per key, each under the writer lease's deadline.
#[cfg(feature = "cloud")]
fn no_resends() -> object_store::RetryConfig {
	object_store::RetryConfig { max_retries: 0, ..Default::default() }
}

#[cfg(feature = "cloud")]
fn parse_option<K: std::str::FromStr>(scheme: &str, key: &str) -> Result<K, ConfigError> {
	key.parse()
		.map_err(|_| ConfigError::UnknownOption { scheme: scheme.to_owned(), key: key.to_owned() })
}

#[cfg(test)]
mod tests {
	use super::*;

	fn err(builder: StoreBuilder) -> String {
		builder.build().unwrap_err().to_string()
	}

	#[test]
	fn urls_map_to_backends_and_roots() {
		let store = StoreBuilder::from_url("memory:///a/b").with_prefix("/c/").build().unwrap();
		assert_eq!(store.key_mapper().root().as_ref(), "a/b/c");
		let dir = tempfile::tempdir().unwrap();
		let url = format!("file://{}/sub", dir.path().display());
		let store = StoreBuilder::from_url(url).create_if_missing(true).build().unwrap();
		assert_eq!(store.key_mapper().root().as_ref(), "");
		assert!(dir.path().join("sub").is_dir());
	}

	#[test]
	fn bad_urls_are_refused_clearly() {
		assert!(err(StoreBuilder::from_url("ftp://x")).contains("unsupported store URL scheme"));
		assert!(err(StoreBuilder::from_url("not a url")).contains("invalid store URL"));
		let secret = err(StoreBuilder::from_url("s3://AKIA:hunter2@bucket/p"));
		assert!(!secret.contains("hunter2") && secret.contains("credentials"), "{secret}");
		assert!(err(StoreBuilder::from_url("s3:///p")).contains("no bucket"));
		let option = err(StoreBuilder::from_url("s3://b").with_option("aws_no_such", "v"));
		assert!(option.contains("aws_no_such"), "{option}");
		let option = err(StoreBuilder::from_url("memory://").with_option("aws_endpoint", "v"));
		assert!(option.contains("aws_endpoint"), "{option}");
	}

	#[test]
	fn debug_output_hides_option_values() {
		let builder =
			StoreBuilder::from_url("s3://b").with_option("aws_secret_access_key", "hunter2");
		let shown = format!("{builder:?}");
		assert!(shown.contains("aws_secret_access_key") && !shown.contains("hunter2"), "{shown}");
	}
}
