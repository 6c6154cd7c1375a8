//! LDK's store traits for [`ObjectKvStore`]: [`KVStore`] (async), [`KVStoreSync`] and
//! [`MigratableKVStore`]. Both sides share one code path; the sync side blocks the calling thread
//! on the operation's task (see `runtime`), so it works from plain threads and from inside any
//! tokio runtime, current-thread ones included.

use lightning::io;
use lightning::util::async_poll::AsyncResult;
use lightning::util::persist::{KVStore, KVStoreSync, MigratableKVStore};

use crate::error::Error;
use crate::runtime::block_on;
use crate::store::ObjectKvStore;

fn to_io<T>(result: Result<T, Error>) -> Result<T, io::Error> {
	result.map_err(io::Error::from)
}

impl KVStore for ObjectKvStore {
	fn read(
		&self, primary_namespace: &str, secondary_namespace: &str, key: &str,
	) -> AsyncResult<'static, Vec<u8>, io::Error> {
		let started = self.start_read(primary_namespace, secondary_namespace, key);
		Box::pin(async move { to_io(started.await) })
	}

	fn write(
		&self, primary_namespace: &str, secondary_namespace: &str, key: &str, buf: Vec<u8>,
	) -> AsyncResult<'static, (), io::Error> {
		let started = self.start_write(primary_namespace, secondary_namespace, key, buf);
		Box::pin(async move { to_io(started.await) })
	}

	fn remove(
		&self, primary_namespace: &str, secondary_namespace: &str, key: &str, _lazy: bool,
	) -> AsyncResult<'static, (), io::Error> {
		let started = self.start_remove(primary_namespace, secondary_namespace, key);
		Box::pin(async move { to_io(started.await) })
	}

	fn list(
		&self, primary_namespace: &str, secondary_namespace: &str,
	) -> AsyncResult<'static, Vec<String>, io::Error> {
		let started = self.start_list(primary_namespace, secondary_namespace);
		Box::pin(async move { to_io(started.await) })
	}
}

impl KVStoreSync for ObjectKvStore {
	fn read(
		&self, primary_namespace: &str, secondary_namespace: &str, key: &str,
	) -> Result<Vec<u8>, io::Error> {
		to_io(self.read_blocking(primary_namespace, secondary_namespace, key))
	}

	fn write(
		&self, primary_namespace: &str, secondary_namespace: &str, key: &str, buf: Vec<u8>,
	) -> Result<(), io::Error> {
		to_io(block_on(self.start_write(primary_namespace, secondary_namespace, key, buf)))
	}

	fn remove(
		&self, primary_namespace: &str, secondary_namespace: &str, key: &str, _lazy: bool,
	) -> Result<(), io::Error> {
		to_io(block_on(self.start_remove(primary_namespace, secondary_namespace, key)))
	}

	fn list(
		&self, primary_namespace: &str, secondary_namespace: &str,
	) -> Result<Vec<String>, io::Error> {
		to_io(block_on(self.start_list(primary_namespace, secondary_namespace)))
	}
}

impl MigratableKVStore for ObjectKvStore {
	fn list_all_keys(&self) -> Result<Vec<(String, String, String)>, io::Error> {
		let keys = to_io(block_on(self.start_list_all()))?;
		Ok(keys.into_iter().map(|k| (k.primary_namespace, k.secondary_namespace, k.key)).collect())
	}
}
