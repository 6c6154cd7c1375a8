//! What LDK 0.3's loader needs around an `object_store`: a [`KVStore`] (0.3's async trait) and a
//! [`FutureSpawner`] on tokio.
//!
//! The adapter is as thin as an LDK user's would be: one `object_store` request per `KVStore`
//! call, no bound on requests in flight, no retries unless [`ObjectKv03::with_retry`] adds them
//! (as object_store's own HTTP client would: see [`crate::retry`]), so the 0.3 loader's requests
//! reach the store exactly as it issues them. Its layout is this crate's: `<root>/<primary>[/<secondary>]/<key>`,
//! so both loaders read the same objects.

use std::sync::Arc;

use lightning::io;
use lightning::util::native_async::FutureSpawner;
use lightning::util::persist::{KVStore, KVStoreSync};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::retry::Retry;

/// LDK 0.3's async `KVStore` over an `object_store`, below `root`.
#[derive(Debug, Clone)]
pub struct ObjectKv03 {
	store: Arc<dyn ObjectStore>,
	root: Path,
	/// Reads and listings retried as object_store's client retries them (`None`: no retries).
	retry: Option<Retry>,
}

impl ObjectKv03 {
	pub fn new(store: Arc<dyn ObjectStore>, root: &str) -> Self {
		ObjectKv03 { store, root: Path::from(root), retry: None }
	}

	/// Reads and listings retried under `retry`.
	pub fn with_retry(mut self, retry: Retry) -> Self {
		self.retry = Some(retry);
		self
	}

	fn namespace_path(&self, primary: &str, secondary: &str) -> Path {
		let mut path = self.root.clone();
		for part in [primary, secondary] {
			if !part.is_empty() {
				path = path.join(part);
			}
		}
		path
	}
}

/// Keeps `NotFound` a `NotFound`: LDK tells an absent key from a failed read by the kind.
fn io_error(error: object_store::Error) -> io::Error {
	let kind = match error {
		object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
		_ => io::ErrorKind::Other,
	};
	io::Error::new(kind, error.to_string())
}

impl KVStore for ObjectKv03 {
	fn read(
		&self, primary_namespace: &str, secondary_namespace: &str, key: &str,
	) -> impl std::future::Future<Output = Result<Vec<u8>, io::Error>> + 'static + Send {
		let path = self.namespace_path(primary_namespace, secondary_namespace).join(key);
		let store = Arc::clone(&self.store);
		let retry = self.retry.unwrap_or(Retry { max_retries: 0, ..Retry::default() });
		async move {
			let bytes = retry
				.run(|| async { store.get(&path).await?.bytes().await })
				.await
				.map_err(io_error)?;
			Ok(bytes.to_vec())
		}
	}

	fn write(
		&self, primary_namespace: &str, secondary_namespace: &str, key: &str, buf: Vec<u8>,
	) -> impl std::future::Future<Output = Result<(), io::Error>> + 'static + Send {
		// One plain put: a load never writes, and the end-to-end life writes one call at a time
		// (`KVStoreSync`, each call run to completion), so writes to a key stay in order.
		let path = self.namespace_path(primary_namespace, secondary_namespace).join(key);
		let store = Arc::clone(&self.store);
		async move { store.put(&path, buf.into()).await.map(drop).map_err(io_error) }
	}

	fn remove(
		&self, primary_namespace: &str, secondary_namespace: &str, key: &str, _lazy: bool,
	) -> impl std::future::Future<Output = Result<(), io::Error>> + 'static + Send {
		let path = self.namespace_path(primary_namespace, secondary_namespace).join(key);
		let store = Arc::clone(&self.store);
		async move {
			match store.delete(&path).await {
				Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
				Err(e) => Err(io_error(e)),
			}
		}
	}

	fn list(
		&self, primary_namespace: &str, secondary_namespace: &str,
	) -> impl std::future::Future<Output = Result<Vec<String>, io::Error>> + 'static + Send {
		let prefix = self.namespace_path(primary_namespace, secondary_namespace);
		let store = Arc::clone(&self.store);
		let retry = self.retry.unwrap_or(Retry { max_retries: 0, ..Retry::default() });
		async move {
			// Delimited, as the keys of a namespace are its direct children only (a primary
			// namespace's listing must not return its secondary namespaces' objects).
			let listing =
				retry.run(|| store.list_with_delimiter(Some(&prefix))).await.map_err(io_error)?;
			Ok(listing
				.objects
				.into_iter()
				.filter_map(|meta| meta.location.filename().map(str::to_owned))
				.collect())
		}
	}
}

/// For LDK 0.3's sync `MonitorUpdatingPersister` (the end-to-end section's working life): each
/// call is the async one, run to completion on the calling thread (object_store's in-memory
/// store needs no runtime).
impl KVStoreSync for ObjectKv03 {
	fn read(
		&self, primary_namespace: &str, secondary_namespace: &str, key: &str,
	) -> Result<Vec<u8>, io::Error> {
		futures::executor::block_on(KVStore::read(
			self,
			primary_namespace,
			secondary_namespace,
			key,
		))
	}

	fn write(
		&self, primary_namespace: &str, secondary_namespace: &str, key: &str, buf: Vec<u8>,
	) -> Result<(), io::Error> {
		futures::executor::block_on(KVStore::write(
			self,
			primary_namespace,
			secondary_namespace,
			key,
			buf,
		))
	}

	fn remove(
		&self, primary_namespace: &str, secondary_namespace: &str, key: &str, lazy: bool,
	) -> Result<(), io::Error> {
		futures::executor::block_on(KVStore::remove(
			self,
			primary_namespace,
			secondary_namespace,
			key,
			lazy,
		))
	}

	fn list(
		&self, primary_namespace: &str, secondary_namespace: &str,
	) -> Result<Vec<String>, io::Error> {
		futures::executor::block_on(KVStore::list(self, primary_namespace, secondary_namespace))
	}
}

/// Spawns LDK 0.3's per-monitor load tasks on a tokio runtime, as an LDK node on tokio would.
pub struct TokioSpawner(pub tokio::runtime::Handle);

impl FutureSpawner for TokioSpawner {
	type E = tokio::task::JoinError;
	type SpawnedFutureResult<O> = tokio::task::JoinHandle<O>;

	fn spawn<O: Send + 'static, T: std::future::Future<Output = O> + Send + 'static>(
		&self, future: T,
	) -> Self::SpawnedFutureResult<O> {
		self.0.spawn(future)
	}
}
