//! [`ObjectKvStore`]: the store itself. Every operation is validated and queued behind earlier
//! operations on the same key in the synchronous call, then runs on the store's runtime under the
//! global bound on requests in flight, with retries, inside a `tracing` span.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ListResult, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::Semaphore;
use tracing::{field, Instrument, Span};

use crate::error::{Error, FailureKind, Operation};
use crate::fencing::Fencing;
use crate::keys::{validate_namespace, KeyMapper, KvKey};
use crate::lease::{self, LeaseState, WriterLease};
use crate::limit::{answer_time, Limiter, Signal, Slot};
use crate::ordering::{KeyQueues, Turn};
use crate::retry::RetryPolicy;
use crate::runtime::{block_on, StoreRuntime};

/// An LDK key-value store over any [`ObjectStore`].
///
/// It implements [`KVStore`], [`KVStoreSync`] and [`MigratableKVStore`]; see the crate docs for the
/// object layout and the guarantees. Clones share the same runtime, queues and bound, so clone it
/// freely (or wrap it in an `Arc`) to hand it to several LDK components.
///
/// [`KVStore`]: lightning::util::persist::KVStore
/// [`KVStoreSync`]: lightning::util::persist::KVStoreSync
/// [`MigratableKVStore`]: lightning::util::persist::MigratableKVStore
#[derive(Debug, Clone)]
pub struct ObjectKvStore {
	core: Arc<Core>,
	runtime: Arc<StoreRuntime>,
	/// Releases the writer lease when the last clone is dropped.
	lease_guard: Option<Arc<lease::Guard>>,
	/// The replica's state as this instance knows it (see [`crate::replica`]).
	replica: Option<Arc<crate::replica::Tracker>>,
}

/// What the running operations share. It deliberately holds no runtime: the runtime must be
/// dropped by the store's owner, never by one of its own tasks.
#[derive(Debug, Clone)]
struct Core {
	/// Reads and listings go here.
	backend: Arc<dyn ObjectStore>,
	/// Writes and removes go here: the same backend, through a client that does not re-send a
	/// request by itself where this crate made the client (see [`StoreParams::writer`]).
	writer: Arc<dyn ObjectStore>,
	keys: KeyMapper,
	queues: Arc<KeyQueues>,
	/// The store's bound on requests in flight, shared by every view of it.
	in_flight: Arc<Semaphore>,
	/// A view's own, tighter bound, fixed or adaptive (see [`ObjectKvStore::limited_to`]),
	/// taken before the store's.
	view_limit: Option<Arc<Limiter>>,
	retry: RetryPolicy,
	/// Present when writes are conditional (see `fencing`).
	fencing: Option<Arc<Fencing>>,
	/// The writer lease (or, without one, only the bookkeeping of requests in flight): every
	/// write and remove request runs under one of its permits (see `lease`).
	lease: Arc<LeaseState>,
	/// Whether writes and removes run to their end rather than being abandoned at the attempt
	/// timeout: on a local directory, where an abandoned one would go on renaming files on a
	/// blocking thread beside its successor (see [`StoreParams::local_dir`]).
	untimed_mutations: bool,
	/// Set when `backend` is this `LocalFileSystem` itself (see [`StoreParams::local_files`]).
	local_files: Option<LocalFileSystem>,
	/// The second copy, when there is one (see `replica`): a core of its own (its backend, key
	/// mapping, bound, fencing and lease) whose writes and removes run inside this core's turns,
	/// beside this core's own. It has no replica itself and never queues.
	replica: Option<Arc<Core>>,
	/// In [`ReplicaMode::LagWhenUnreachable`](crate::replica::ReplicaMode): whether the replica
	/// is stale, and what its journal holds.
	lag: Option<Arc<crate::replica::Lag>>,
}

/// The part of the configuration that the store itself needs.
#[derive(Debug, Clone)]
pub(crate) struct StoreParams {
	pub(crate) root: Path,
	pub(crate) max_in_flight: usize,
	pub(crate) retry: RetryPolicy,
	pub(crate) worker_threads: usize,
	pub(crate) fencing: bool,
	/// The client for writes and removes, when it is not `backend` itself: for a store built from
	/// a URL, the same backend with the HTTP client's own re-sends turned off, so that every copy
	/// of a request on the wire is one attempt of this store's, bounded and accounted for.
	pub(crate) writer: Option<Arc<dyn ObjectStore>>,
	/// Whether the backend is a local directory (a `file://` URL, encrypted or not).
	pub(crate) local_dir: bool,
	/// The backend itself when it is a plain `LocalFileSystem` (a `file://` URL without
	/// encryption). Reads then open the object's file directly, at the path object_store's own
	/// `path_to_filesystem` gives: its `get` takes two hops to the blocking pool and one back
	/// per read, which cost more than the read of a small file. Never set with fencing (which
	/// `file://` refuses), so no read needs to observe an ETag.
	pub(crate) local_files: Option<LocalFileSystem>,
	/// Test hook: run on the caller's runtime (see `StoreBuilder::on_current_runtime`).
	#[cfg(feature = "_test_hooks")]
	pub(crate) on_current_runtime: bool,
}

/// A copy's part of a store, built before the store itself: a replica, attached to a store with
/// [`ObjectKvStore::with_replica`].
#[derive(Debug)]
pub(crate) struct Side(Core);

impl Side {
	pub(crate) fn new(backend: Arc<dyn ObjectStore>, params: StoreParams) -> Self {
		Side(Core {
			writer: params.writer.unwrap_or_else(|| Arc::clone(&backend)),
			backend,
			keys: KeyMapper::new(params.root),
			queues: Arc::new(KeyQueues::default()),
			in_flight: Arc::new(Semaphore::new(params.max_in_flight.max(1))),
			view_limit: None,
			retry: params.retry,
			local_files: params.local_files.filter(|_| !params.fencing),
			fencing: params.fencing.then(Arc::default),
			lease: LeaseState::unleased(),
			untimed_mutations: params.local_dir,
			replica: None,
			lag: None,
		})
	}

	/// Its raw backend, key mapping and writer, to take its lease and read its records.
	pub(crate) fn backend(&self) -> &Arc<dyn ObjectStore> {
		&self.0.backend
	}

	pub(crate) fn writer(&self) -> &Arc<dyn ObjectStore> {
		&self.0.writer
	}

	pub(crate) fn key_mapper(&self) -> &KeyMapper {
		&self.0.keys
	}
}

impl ObjectKvStore {
	pub(crate) fn with_params(
		backend: Arc<dyn ObjectStore>, params: StoreParams,
	) -> std::io::Result<Self> {
		#[cfg(feature = "_test_hooks")]
		let on_current_runtime = params.on_current_runtime;
		let threads = params.worker_threads;
		let Side(core) = Side::new(backend, params);
		#[cfg(feature = "_test_hooks")]
		if on_current_runtime {
			let runtime = Arc::new(StoreRuntime::current());
			return Ok(ObjectKvStore {
				core: Arc::new(core),
				runtime,
				lease_guard: None,
				replica: None,
			});
		}
		let runtime = StoreRuntime::new(threads)?;
		Ok(ObjectKvStore {
			core: Arc::new(core),
			runtime: Arc::new(runtime),
			lease_guard: None,
			replica: None,
		})
	}

	/// Sends every write and remove to `replica` as well, inside the same turn of its key (see
	/// [`crate::replica`]), each of its requests under `lease`, kept renewed on this store's
	/// runtime. Call it before [`Self::with_lease`], which then closes both leases. With `lag`
	/// (a pair that may lag), the replica has no lease of its own: its requests run under the
	/// primary's, which [`Self::with_lease`] gives it.
	pub(crate) fn with_replica(
		mut self, replica: Side, lease: Option<Arc<LeaseState>>,
		lag: Option<Arc<crate::replica::Lag>>,
	) -> Self {
		let Side(mut replica) = replica;
		if let Some(lease) = lease {
			drop(self.runtime.spawn(Arc::clone(&lease).keep()));
			replica.lease = lease;
		}
		self.replica = Some(match &lag {
			Some(lag) => Arc::clone(&lag.tracker),
			None => Arc::default(),
		});
		let mut core = Core::clone(&self.core);
		core.replica = Some(Arc::new(replica));
		core.lag = lag;
		self.core = Arc::new(core);
		self
	}

	/// Places a `file://` store's running mark (see `LeaseState::mark_running`), off the
	/// runtime's workers.
	pub(crate) async fn mark_running(&self) -> Result<(), crate::error::ConfigError> {
		let lease = Arc::clone(&self.core.lease);
		let marked = self
			.runtime
			.handle()
			.spawn_blocking(move || lease.mark_running())
			.await
			.map_err(|err| std::io::Error::other(err.to_string()))
			.and_then(|marked| marked);
		marked.map_err(|source| crate::error::ConfigError::Io {
			what: "placing the store's running mark".into(),
			source,
		})
	}

	/// Whether the instance before this one may have ended with requests in flight (see
	/// `LeaseState::predecessor_crashed`).
	pub(crate) fn predecessor_crashed(&self) -> bool {
		self.core.lease.predecessor_crashed.load(std::sync::atomic::Ordering::SeqCst)
	}

	/// The state of a pair that may lag.
	pub(crate) fn replica_lag(&self) -> Option<&Arc<crate::replica::Lag>> {
		self.core.lag.as_ref()
	}

	/// The replica's tracker, when the store has a replica.
	pub(crate) fn replica_tracker(&self) -> Option<&Arc<crate::replica::Tracker>> {
		self.replica.as_ref()
	}

	/// Makes every write and remove depend on `lease` (kept renewed from when it was taken, see
	/// [`Self::keep_renewed`]), and closes the store when the last clone is dropped. With a
	/// replica that has a lease of its own, losing either lease loses both: an instance that
	/// cannot renew on one copy writes to neither. A pair that may lag has one lease, the
	/// primary's, for both copies.
	pub(crate) fn with_lease(mut self, lease: Arc<LeaseState>) -> Self {
		let mut core = Core::clone(&self.core);
		core.lease = Arc::clone(&lease);
		if let (Some(replica), Some(_)) = (&core.replica, &core.lag) {
			let mut replica = Core::clone(replica);
			replica.lease = Arc::clone(&lease);
			core.replica = Some(Arc::new(replica));
		}
		self.core = Arc::new(core);
		let leases = self.core.leases();
		if let [primary, replica] = &leases[..] {
			let together = LeaseState::lose_together(Arc::clone(primary), Arc::clone(replica));
			drop(self.runtime.spawn(together));
		}
		let limit = self.core.close_limit();
		self.lease_guard =
			Some(Arc::new(lease::Guard::new(leases, Arc::clone(&self.runtime), limit)));
		self
	}

	/// Renews `lease` on the store's runtime from now on: at once when it is taken, since taking
	/// the replica's may take a watch longer than the lease's validity.
	pub(crate) fn keep_renewed(&self, lease: &Arc<LeaseState>) {
		drop(self.runtime.spawn(Arc::clone(lease).keep()));
	}

	/// The writer lease this store holds (`None` if it was built without one): whether it is
	/// still held, and a signal to await that fires when it is lost (see [`crate::lease`]).
	pub fn writer_lease(&self) -> Option<WriterLease> {
		self.core.lease.handle()
	}

	/// Ends this store's writing, in every clone, and lets a successor start:
	///
	/// 1. every write and remove called from now on fails (as
	///    [`FailureKind::LeaseLost`](crate::FailureKind::LeaseLost), saying the store was
	///    closed);
	/// 2. it waits for the writes and removes in flight to end (each is bounded by the retry
	///    policy's attempt timeout and by the lease's validity), and, if one was abandoned
	///    without an answer, for the lease's safety margin after that (it may still land);
	/// 3. it releases the writer lease, so that the next instance starts at once. If step 2
	///    cannot finish within the attempt timeout plus the margin, the lease is not released
	///    but left to expire (a `file://` lock stays held until the requests end).
	///
	/// Reads still work. Call it at shutdown, after the node has stopped writing (after
	/// ldk-node's `Node::stop()`, or after the background processor returned and the monitor
	/// persister was flushed): a store kept alive by a clone somewhere never releases its lease
	/// on drop. Dropping the last clone closes the store too. Calling it again waits for the
	/// first call.
	pub fn close(&self) -> impl Future<Output = ()> + Send + 'static {
		let limit = self.core.close_limit();
		let leases = self.core.leases();
		let closing = self.runtime.spawn(lease::close_all(leases, limit));
		async move {
			closing.await;
		}
	}

	/// [`Self::close`] for synchronous callers.
	pub fn close_blocking(&self) {
		block_on(self.close());
	}

	/// A view of the same store whose requests are at most `max_in_flight` at once, within the
	/// store's own bound (a request of the view takes a place under both); with `adaptive`, at
	/// most as many as the view's answers show the server takes (see [`crate::limit`]), up to
	/// `max_in_flight`. It shares everything else, the per-key order included: the monitor
	/// persister uses one so that its requests cannot crowd out the rest of the node's, nor
	/// storm a server that throttles.
	pub(crate) fn limited_to(&self, max_in_flight: usize, adaptive: bool) -> Self {
		let mut core = Core::clone(&self.core);
		core.view_limit = Some(Arc::new(Limiter::new(max_in_flight, adaptive)));
		ObjectKvStore {
			core: Arc::new(core),
			runtime: Arc::clone(&self.runtime),
			lease_guard: self.lease_guard.clone(),
			replica: self.replica.clone(),
		}
	}

	/// The object store below this store, for diagnostics (`ldk-object-store doctor`). A request
	/// made on it bypasses everything this store guarantees: the per-key order, the bound on
	/// requests in flight, retries, fencing and the writer lease. Never write LDK's keys through it.
	#[doc(hidden)]
	pub fn raw_backend(&self) -> &Arc<dyn ObjectStore> {
		&self.core.backend
	}

	/// The client writes and removes go through (see [`Self::raw_backend`]; with the same
	/// warning).
	#[doc(hidden)]
	pub fn raw_writer(&self) -> &Arc<dyn ObjectStore> {
		&self.core.writer
	}

	/// The key mapping, which also knows the root prefix.
	pub fn key_mapper(&self) -> &KeyMapper {
		&self.core.keys
	}

	/// Starts a read. The returned future may be awaited on any executor.
	pub(crate) fn start_read(
		&self, primary_namespace: &str, secondary_namespace: &str, key: &str,
	) -> impl Future<Output = Result<Vec<u8>, Error>> + Send + 'static {
		if self.core.local_files.is_some() {
			let read = self.start_local_read(primary_namespace, secondary_namespace, key);
			return futures::future::Either::Left(read);
		}
		futures::future::Either::Right(self.start_keyed(
			Operation::Read,
			primary_namespace,
			secondary_namespace,
			key,
			None,
			|core, op| core.read(op),
		))
	}

	/// A read for synchronous callers. On a local directory the caller's thread, which would
	/// only park until the store's runtime had done the read, reads the file itself (see
	/// [`Core::read_local`]).
	pub(crate) fn read_blocking(
		&self, primary_namespace: &str, secondary_namespace: &str, key: &str,
	) -> Result<Vec<u8>, Error> {
		if self.core.local_files.is_none() {
			return block_on(self.start_read(primary_namespace, secondary_namespace, key));
		}
		let mut op =
			self.queue(Operation::Read, primary_namespace, secondary_namespace, key, None)?;
		// Parks only while an earlier operation on this key is pending; that operation runs on
		// the store's runtime, which this thread never needs.
		op.turn.wait_blocking();
		match self.core.try_read_local(op) {
			Ok(done) => done,
			Err(op) => {
				let target = op.key.to_string();
				let span = op.span.clone();
				let core = Arc::clone(&self.core);
				block_on(self.start(Operation::Read, target, core.read(*op).instrument(span)))
			},
		}
	}

	/// An async read on a local directory: one task on the blocking pool does all of it (see
	/// [`Core::try_read_local`]), one hop there and one back, where the common path takes two
	/// more through the runtime's workers. A read queued behind a pending operation on its key
	/// goes the common way at once (it waits for its turn without holding a thread), and so does
	/// one the blocking task cannot finish, handed to the runtime from that task so that it runs
	/// even if the caller never polls.
	fn start_local_read(
		&self, primary_namespace: &str, secondary_namespace: &str, key: &str,
	) -> impl Future<Output = Result<Vec<u8>, Error>> + Send + 'static {
		let core = Arc::clone(&self.core);
		let runtime = self.runtime.handle().clone();
		let mut queued =
			self.queue(Operation::Read, primary_namespace, secondary_namespace, key, None);
		let pending = queued.as_mut().is_ok_and(|op| op.turn.is_pending());
		let task = match queued {
			Ok(op) if !pending => {
				runtime.clone().spawn_blocking(move || match core.try_read_local(op) {
					Ok(done) => LocalRead::Done(done),
					Err(op) => {
						let span = op.span.clone();
						LocalRead::Handed(runtime.spawn(core.read(*op).instrument(span)))
					},
				})
			},
			queued => runtime.spawn(async move {
				LocalRead::Done(match queued {
					Ok(op) => {
						let span = op.span.clone();
						core.read(op).instrument(span).await
					},
					Err(err) => Err(err),
				})
			}),
		};
		let target = format!("{primary_namespace}/{secondary_namespace}/{key}");
		let cancelled = move || Error::Cancelled { operation: Operation::Read, target };
		async move {
			match task.await {
				Ok(LocalRead::Done(done)) => done,
				Ok(LocalRead::Handed(task)) => task.await.unwrap_or_else(|_| Err(cancelled())),
				Err(_) => Err(cancelled()),
			}
		}
	}

	/// Starts a write; its place in the key's order is fixed by this call.
	pub(crate) fn start_write(
		&self, primary_namespace: &str, secondary_namespace: &str, key: &str, buf: impl Into<Bytes>,
	) -> impl Future<Output = Result<(), Error>> + Send + 'static {
		let payload: Bytes = buf.into();
		let bytes = payload.len() as u64;
		self.start_keyed(
			Operation::Write,
			primary_namespace,
			secondary_namespace,
			key,
			Some(bytes),
			move |core, op| core.write(op, payload),
		)
	}

	/// Starts a remove; its place in the key's order is fixed by this call. Lazy removes are
	/// carried out like eager ones (LDK allows either), so they are never lost on a crash.
	pub(crate) fn start_remove(
		&self, primary_namespace: &str, secondary_namespace: &str, key: &str,
	) -> impl Future<Output = Result<(), Error>> + Send + 'static {
		self.start_keyed(
			Operation::Remove,
			primary_namespace,
			secondary_namespace,
			key,
			None,
			|core, op| core.remove(op),
		)
	}

	/// Removes several keys of one namespace with as few requests as the backend allows (S3
	/// deletes up to 1000 objects per request), as a batch of `remove` calls would: each key keeps
	/// its place in its own order, and absent keys are fine. LDK's traits have no such call;
	/// maintenance (pruning, archives, `gc`) uses it.
	pub fn remove_many(
		&self, primary_namespace: &str, secondary_namespace: &str, keys: &[String],
	) -> impl Future<Output = Result<(), lightning::io::Error>> + Send + 'static {
		let started = self.start_remove_many(primary_namespace, secondary_namespace, keys);
		async move { started.await.map_err(lightning::io::Error::from) }
	}

	/// Starts removing several keys of one namespace with as few requests as the backend allows
	/// (S3 deletes up to 1000 objects per request). Each key keeps its place in its own order: the
	/// batch waits for the operations called before it on any of its keys. The batch takes its
	/// places in all its keys' queues at once (see `ordering`), so batches never wait on each
	/// other in a cycle; a key named twice is removed once. Absent keys are fine.
	pub(crate) fn start_remove_many(
		&self, primary_namespace: &str, secondary_namespace: &str, keys: &[String],
	) -> impl Future<Output = Result<(), Error>> + Send + 'static {
		let target = format!(
			"{} keys of {}",
			keys.len(),
			namespace_target(primary_namespace, secondary_namespace)
		);
		let queued: Result<Vec<Turn>, Error> = keys
			.iter()
			.map(|key| {
				let key = KvKey::new(primary_namespace, secondary_namespace, key)?;
				Ok(self.core.keys.object_path(&key))
			})
			.collect::<Result<Vec<Path>, Error>>()
			.map(|paths| self.core.queues.enqueue_many(paths));
		let span = op_span(Operation::Remove, primary_namespace, secondary_namespace, "", None);
		span.record("keys", keys.len());
		let core = Arc::clone(&self.core);
		self.start(Operation::Remove, target.clone(), async move {
			let queued = queued?;
			core.remove_many(queued, target, span.clone()).instrument(span).await
		})
	}

	/// Runs `work` on the store's runtime (for components built on the store, whose follow-up work
	/// must not depend on the caller polling anything).
	pub(crate) fn spawn<T: Send + 'static>(
		&self, work: impl Future<Output = T> + Send + 'static,
	) -> impl Future<Output = Option<T>> + Send + 'static {
		self.runtime.spawn(work)
	}

	/// Starts listing the keys directly in one namespace.
	pub(crate) fn start_list(
		&self, primary_namespace: &str, secondary_namespace: &str,
	) -> impl Future<Output = Result<Vec<String>, Error>> + Send + 'static {
		let validated = validate_namespace(primary_namespace, secondary_namespace);
		let core = Arc::clone(&self.core);
		let (primary, secondary) = (primary_namespace.to_owned(), secondary_namespace.to_owned());
		let target = namespace_target(&primary, &secondary);
		self.start(Operation::List, target, async move {
			validated?;
			let span = op_span(Operation::List, &primary, &secondary, "", None);
			core.list(primary, secondary, span.clone()).instrument(span).await
		})
	}

	/// Starts listing the secondary namespaces that hold keys below `primary_namespace` (LDK's
	/// trait has no call for this; maintenance needs it to find orphaned update namespaces).
	pub(crate) fn start_list_secondary_namespaces(
		&self, primary_namespace: &str,
	) -> impl Future<Output = Result<Vec<String>, Error>> + Send + 'static {
		let validated = validate_namespace(primary_namespace, "");
		let core = Arc::clone(&self.core);
		let primary = primary_namespace.to_owned();
		let target = namespace_target(&primary, "*");
		self.start(Operation::List, target.clone(), async move {
			validated?;
			let span = op_span(Operation::List, &primary, "*", "", None);
			core.list_namespaces(primary, target, span.clone()).instrument(span).await
		})
	}

	/// Starts listing every key below `primary_namespace`, whatever its secondary namespace: a
	/// startup load finds the update objects of every channel with it, in one request per 1,000
	/// objects rather than one per channel.
	pub(crate) fn start_list_below(
		&self, primary_namespace: &str,
	) -> impl Future<Output = Result<Vec<KvKey>, Error>> + Send + 'static {
		let validated = validate_namespace(primary_namespace, "");
		let core = Arc::clone(&self.core);
		let primary = primary_namespace.to_owned();
		let target = namespace_target(&primary, "*");
		self.start(Operation::List, target.clone(), async move {
			validated?;
			let span = op_span(Operation::List, &primary, "*", "", None);
			core.list_below(primary, target, span.clone()).instrument(span).await
		})
	}

	/// Starts listing every key below the root.
	pub(crate) fn start_list_all(
		&self,
	) -> impl Future<Output = Result<Vec<KvKey>, Error>> + Send + 'static {
		let core = Arc::clone(&self.core);
		self.start(Operation::ListAll, ALL_KEYS.to_owned(), async move {
			let span = op_span(Operation::ListAll, "", "", "", None);
			core.list_all(span.clone()).instrument(span).await
		})
	}

	/// Validates the key and queues the operation in the calling thread, then runs `work` on the
	/// store's runtime.
	fn start_keyed<T, W, Fut>(
		&self, operation: Operation, primary_namespace: &str, secondary_namespace: &str, key: &str,
		bytes: Option<u64>, work: W,
	) -> impl Future<Output = Result<T, Error>> + Send + 'static
	where
		T: Send + 'static,
		W: FnOnce(Arc<Core>, KeyedOp) -> Fut + Send + 'static,
		Fut: Future<Output = Result<T, Error>> + Send + 'static,
	{
		let queued = self.queue(operation, primary_namespace, secondary_namespace, key, bytes);
		let core = Arc::clone(&self.core);
		let target = format!("{primary_namespace}/{secondary_namespace}/{key}");
		self.start(operation, target, async move {
			let op = queued?;
			let span = op.span.clone();
			work(core, op).instrument(span).await
		})
	}

	/// Validates the key and takes the operation's place in its queue: the call that fixes the
	/// order.
	fn queue(
		&self, operation: Operation, primary_namespace: &str, secondary_namespace: &str, key: &str,
		bytes: Option<u64>,
	) -> Result<KeyedOp, Error> {
		let key = KvKey::new(primary_namespace, secondary_namespace, key)?;
		let turn = self.core.queues.enqueue(self.core.keys.object_path(&key));
		let span =
			op_span(operation, primary_namespace, secondary_namespace, key.key.as_str(), bytes);
		Ok(KeyedOp { operation, key, turn, span })
	}

	/// Starts `work` on the store's runtime at once, so that it runs even if the caller never
	/// polls the returned future; the queue position taken in the calling thread depends on it.
	fn start<T: Send + 'static>(
		&self, operation: Operation, target: String,
		work: impl Future<Output = Result<T, Error>> + Send + 'static,
	) -> impl Future<Output = Result<T, Error>> + Send + 'static {
		let task = self.runtime.spawn(work);
		async move { task.await.unwrap_or(Err(Error::Cancelled { operation, target })) }
	}
}

/// Work on one copy, the primary or the replica, that the replica's fill, verification and
/// records need (see [`crate::replica`]).
impl ObjectKvStore {
	/// Makes the replica's object of `key` equal to the primary's, inside the key's turn: a write
	/// or remove of the key called meanwhile waits, so an older copy never lands after it.
	/// With `clear_journal`, the key's journal entry on the primary (see
	/// [`ReplicaMode::LagWhenUnreachable`](crate::replica::ReplicaMode)) is removed once the
	/// replica holds the primary's, in the same turn.
	pub(crate) fn start_replica_copy(
		&self, key: KvKey, clear_journal: bool,
	) -> impl Future<Output = Result<Copied, Error>> + Send + 'static {
		let turn = self.core.queues.enqueue(self.core.keys.object_path(&key));
		let span = op_span(
			Operation::Write,
			&key.primary_namespace,
			&key.secondary_namespace,
			&key.key,
			None,
		);
		let op = KeyedOp { operation: Operation::Write, key, turn, span };
		let core = Arc::clone(&self.core);
		let target = op.key.to_string();
		self.start(Operation::Write, target, async move {
			let span = op.span.clone();
			core.copy_to_replica(op, clear_journal).instrument(span).await
		})
	}

	/// The keys the primary's replica journal names (see [`crate::replica::journal_path`]).
	pub(crate) fn start_list_journal(
		&self,
	) -> impl Future<Output = Result<Vec<KvKey>, Error>> + Send + 'static {
		let core = Arc::clone(&self.core);
		let target = crate::replica::JOURNAL_FOLDER.to_owned();
		self.start(Operation::ListAll, target.clone(), async move {
			let span = op_span(Operation::ListAll, "", "", &target, None);
			let folder = core.keys.root().clone().join(crate::replica::JOURNAL_FOLDER);
			let entries = core.list_recursive(&folder, Operation::ListAll, &target, &span).await?;
			entries
				.iter()
				.map(|entry| {
					let name = entry.location.filename().unwrap_or_default();
					crate::replica::journal_key(name)
						.and_then(|key| {
							let mut parts = key.splitn(3, '/');
							let (p, s, k) = (parts.next()?, parts.next()?, parts.next()?);
							KvKey::new(p, s, k).ok()
						})
						.ok_or_else(|| Error::ForeignObject {
							path: entry.location.to_string(),
							reason: "it is not a replica journal entry",
						})
				})
				.collect()
		})
	}

	/// Every key on the primary (`replica` false) or on the replica.
	pub(crate) fn start_list_copy(
		&self, replica: bool,
	) -> impl Future<Output = Result<Vec<KvKey>, Error>> + Send + 'static {
		let side = self.core.side(replica);
		let target = side_target(ALL_KEYS, replica);
		self.start(Operation::ListAll, target, async move {
			let core = side?;
			let span = op_span(Operation::ListAll, "", "", "", None);
			core.list_all(span.clone()).instrument(span).await
		})
	}

	/// The replica record of the primary (`replica` false) or of the replica; `None` if absent.
	pub(crate) fn start_record_read(
		&self, replica: bool,
	) -> impl Future<Output = Result<Option<Bytes>, Error>> + Send + 'static {
		let side = self.core.side(replica);
		let target = side_target(crate::replica::REPLICA_RECORD, replica);
		self.start(Operation::Read, target.clone(), async move {
			let core = side?;
			let span = op_span(Operation::Read, "", "", &target, None);
			let path = crate::replica::record_path(core.keys.root());
			core.get_object(&span, &path, &target).instrument(span.clone()).await
		})
	}

	/// Writes the replica record of one copy, as a write of the store (under its lease).
	pub(crate) fn start_record_write(
		&self, replica: bool, text: String,
	) -> impl Future<Output = Result<(), Error>> + Send + 'static {
		let side = self.core.side(replica);
		let target = side_target(crate::replica::REPLICA_RECORD, replica);
		self.start(Operation::Write, target.clone(), async move {
			let core = side?;
			let span = op_span(Operation::Write, "", "", &target, None);
			let path = crate::replica::record_path(core.keys.root());
			let bytes = Bytes::from(text);
			let put = core.attempt_mutation(&span, Operation::Write, &target, || {
				futures::TryFutureExt::map_ok(
					core.writer.put(&path, PutPayload::from(bytes.clone())),
					drop,
				)
			});
			put.instrument(span.clone()).await
		})
	}
}

/// What copying one key to the replica found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Copied {
	/// Both copies held the same (or neither held it).
	Equal,
	/// The replica lacked the primary's object, or held another, and now holds it.
	Written,
	/// The replica held an object the primary does not, and no longer does.
	Removed,
}

fn side_target(what: &str, replica: bool) -> String {
	match replica {
		true => format!("{what} on the replica"),
		false => what.to_owned(),
	}
}

/// How errors of whole-store listings name their target.
pub(crate) const ALL_KEYS: &str = "all keys";

fn namespace_target(primary: &str, secondary: &str) -> String {
	format!("namespace {primary}/{secondary}")
}

/// One queued operation on one key.
struct KeyedOp {
	operation: Operation,
	key: KvKey,
	/// Its place in the key's queue, which holds the key's object path.
	turn: Turn,
	span: Span,
}

fn op_span(
	operation: Operation, primary_namespace: &str, secondary_namespace: &str, key: &str,
	bytes: Option<u64>,
) -> Span {
	let span = tracing::debug_span!(
		"ldk_object_store",
		op = %operation,
		primary_namespace,
		secondary_namespace,
		key,
		bytes = field::Empty,
		keys = field::Empty,
		outcome = field::Empty,
		attempts = field::Empty,
		elapsed_us = field::Empty,
	);
	if let Some(bytes) = bytes {
		span.record("bytes", bytes);
	}
	span
}

impl Core {
	async fn read(self: Arc<Self>, mut op: KeyedOp) -> Result<Vec<u8>, Error> {
		op.turn.wait().await;
		if let Some(files) = &self.local_files {
			return self
				.attempt(&op.span, op.operation, &op.key, || {
					let (files, path) = (files.clone(), op.turn.path().clone());
					async move {
						// One hop to the blocking pool for the whole read, not object_store's two.
						tokio::task::spawn_blocking(move || read_local_file(&files, &path))
							.await
							.map_err(|e| object_store::Error::Generic {
								store: LOCAL_STORE,
								source: Box::new(e),
							})?
					}
				})
				.await
				.inspect(|data| {
					op.span.record("bytes", data.len());
				});
		}
		let data = self
			.attempt(&op.span, op.operation, &op.key, || async {
				let got = self.backend.get(op.turn.path()).await?;
				// An object only ever created is written without its version: remembering it
				// would only grow the map, by one entry per update a startup load reads.
				if let Some(fencing) = self.fencing.as_ref().filter(|_| !only_created(&op.key)) {
					fencing.observe(&got.meta);
				}
				let data = got.bytes().await?;
				op.span.record("bytes", data.len());
				Ok(data)
			})
			.await?;
		// Without a copy when nothing else holds the buffer.
		Ok(Vec::from(data))
	}

	/// A read on a local directory whose turn has come, in a thread that may block (a
	/// synchronous caller's, or the blocking pool's): with a place under the bounds on requests
	/// in flight taken without waiting, it reads the file itself, holding its place in the key's
	/// queue like any read. Any outcome but the object or its absence (and a full bound) hands
	/// the operation back, to go the common way with its retries and timeout.
	fn try_read_local(&self, op: KeyedOp) -> Result<Result<Vec<u8>, Error>, Box<KeyedOp>> {
		let Some(files) = &self.local_files else { return Err(Box::new(op)) };
		let started = Instant::now();
		let attempt = self.try_permits().map(|_permits| {
			let _entered = op.span.enter();
			read_local_file(files, op.turn.path())
		});
		match attempt {
			Some(read) if read.is_ok() || is_not_found(&read) => {
				let _entered = op.span.enter();
				if let Ok(data) = &read {
					op.span.record("bytes", data.len());
				}
				// Errors name the key; an object read needs no name.
				let target = if read.is_ok() { String::new() } else { op.key.to_string() };
				Ok(finish(&op.span, op.operation, &target, started, 1, read))
			},
			_ => Err(Box::new(op)),
		}
	}

	async fn write(self: Arc<Self>, mut op: KeyedOp, bytes: Bytes) -> Result<(), Error> {
		op.turn.wait().await;
		let target = op.key.to_string();
		let here = self.put_object(&op.span, &op.key, op.turn.path(), &bytes, &target);
		let (key, bytes, target) = (&op.key, &bytes, &target);
		self.on_both(std::slice::from_ref(key), &op.span, here, move |replica, span| async move {
			let path = replica.keys.object_path(key);
			replica.put_object(&span, key, &path, bytes, target).await
		})
		.await
	}

	/// Runs `here` on this copy and, at once, `there` on the replica if there is one: done when
	/// both are (see [`both`]). In a pair that may lag, a replica that failed, or is stale
	/// already, does not fail the operation: the primary's record marks the replica stale and a
	/// journal entry names each of `keys`, both durable before the operation is done.
	async fn on_both<'a, Here, There, Fut>(
		&'a self, keys: &'a [KvKey], span: &'a Span, here: Here, there: There,
	) -> Result<(), Error>
	where
		Here: Future<Output = Result<(), Error>>,
		There: FnOnce(&'a Core, Span) -> Fut,
		Fut: Future<Output = Result<(), Error>>,
	{
		let Some(replica) = &self.replica else { return here.await };
		// Boxed: the work on two copies is a large state machine, and inline it would make
		// every write's task as large, with a replica or not.
		Box::pin(self.on_both_copies(replica, keys, span, here, there)).await
	}

	/// [`Self::on_both`] with a replica.
	async fn on_both_copies<'a, Here, There, Fut>(
		&'a self, replica: &'a Core, keys: &'a [KvKey], span: &'a Span, here: Here, there: There,
	) -> Result<(), Error>
	where
		Here: Future<Output = Result<(), Error>>,
		There: FnOnce(&'a Core, Span) -> Fut,
		Fut: Future<Output = Result<(), Error>>,
	{
		if let Some(lag) = self.lag.as_ref().filter(|lag| lag.is_stale()) {
			self.record_stale(lag, span).await?;
			let (done, journaled) = futures::join!(here, self.journal(lag, keys, span));
			return done.and(journaled);
		}
		let replica_span = replica_span(span);
		let (done, copied) = futures::join!(
			here,
			there(replica, replica_span.clone()).instrument(replica_span.clone())
		);
		match (&self.lag, done, copied) {
			// The shared lease's loss is this instance's, not the replica's.
			(Some(lag), Ok(()), Err(err)) if err.failure_kind() != Some(FailureKind::LeaseLost) => {
				tracing::error!(
					error = %err,
					"the replica failed: going on with the primary alone, the replica marked stale \
					 (LagWhenUnreachable)"
				);
				lag.go_stale();
				self.record_stale(lag, span).await?;
				self.journal(lag, keys, span).await
			},
			(_, done, copied) => both((done, copied)),
		}
	}

	/// Makes sure the primary's record says the replica is stale (once per stale episode).
	async fn record_stale(&self, lag: &crate::replica::Lag, span: &Span) -> Result<(), Error> {
		let mut recorded = lag.recorded.lock().await;
		if *recorded {
			return Ok(());
		}
		let generation = lag.generation.load(std::sync::atomic::Ordering::SeqCst);
		let record = crate::replica::ReplicaRecord::new(
			crate::replica::Role::Primary,
			generation,
			crate::replica::SyncState::Stale,
		)
		.lagging(true);
		self.put_record(span, record.encode()).await?;
		*recorded = true;
		lag.tracker.update(|health| health.sync = crate::replica::SyncState::Stale);
		Ok(())
	}

	/// Writes the journal entries of `keys` on this copy (the primary).
	async fn journal(
		&self, lag: &crate::replica::Lag, keys: &[KvKey], span: &Span,
	) -> Result<(), Error> {
		for key in keys {
			let path = crate::replica::journal_path(self.keys.root(), &key.to_string());
			let target = format!("the replica journal's entry of {key}");
			self.attempt_mutation(span, Operation::Write, &target, || {
				futures::TryFutureExt::map_ok(self.writer.put(&path, PutPayload::default()), drop)
			})
			.await?;
			let lag_keys = lag.journaled.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
			lag.tracker.update(|health| health.lag_keys = lag_keys);
		}
		Ok(())
	}

	/// Writes this copy's replica record, under the lease.
	async fn put_record(&self, span: &Span, text: String) -> Result<(), Error> {
		let path = crate::replica::record_path(self.keys.root());
		let bytes = Bytes::from(text);
		self.attempt_mutation(span, Operation::Write, crate::replica::REPLICA_RECORD, || {
			futures::TryFutureExt::map_ok(
				self.writer.put(&path, PutPayload::from(bytes.clone())),
				drop,
			)
		})
		.await
	}

	async fn copy_to_replica(
		self: Arc<Self>, mut op: KeyedOp, clear_journal: bool,
	) -> Result<Copied, Error> {
		op.turn.wait().await;
		let copied = Arc::clone(&self).copy_in_turn(&op).await?;
		if clear_journal {
			let path = crate::replica::journal_path(self.keys.root(), &op.key.to_string());
			let target = format!("the replica journal's entry of {}", op.key);
			self.delete_objects(&op.span, std::slice::from_ref(&path), &target).await?;
		}
		Ok(copied)
	}

	async fn copy_in_turn(self: Arc<Self>, op: &KeyedOp) -> Result<Copied, Error> {
		let replica = self.side(true)?;
		let target = op.key.to_string();
		let there_path = replica.keys.object_path(&op.key);
		let span = replica_span(&op.span);
		let (here, there) = futures::join!(
			self.get_object(&op.span, op.turn.path(), &target),
			replica.get_object(&span, &there_path, &target).instrument(span.clone())
		);
		let there = there.map_err(Error::on_replica)?;
		let copied = match (here?, there) {
			(Some(data), Some(held)) if data == held => return Ok(Copied::Equal),
			(None, None) => return Ok(Copied::Equal),
			(Some(data), held) => {
				if held.is_some() {
					// Update objects are written create-only: remove the wrong one first.
					replica.delete_object(&span, &op.key, &there_path, &target).await?;
				}
				replica
					.put_object(&span, &op.key, &there_path, &data, &target)
					.await
					.map(|()| Copied::Written)
			},
			(None, Some(_)) => replica
				.delete_object(&span, &op.key, &there_path, &target)
				.await
				.map(|()| Copied::Removed),
		};
		copied.map_err(Error::on_replica)
	}

	/// The object at `path` on this copy, `None` if absent; observed for fencing.
	async fn get_object(
		&self, span: &Span, path: &Path, target: &str,
	) -> Result<Option<Bytes>, Error> {
		let got = self
			.attempt(span, Operation::Read, target, || async {
				let got = self.backend.get(path).await?;
				if let Some(fencing) = &self.fencing {
					fencing.observe(&got.meta);
				}
				got.bytes().await
			})
			.await;
		match got {
			Ok(data) => Ok(Some(data)),
			Err(err) if err.failure_kind() == Some(FailureKind::NotFound) => Ok(None),
			Err(err) => Err(err),
		}
	}

	/// This copy (`replica` false) or its replica.
	fn side(self: &Arc<Self>, replica: bool) -> Result<Arc<Core>, Error> {
		match (replica, &self.replica) {
			(false, _) => Ok(Arc::clone(self)),
			(true, Some(replica)) => Ok(Arc::clone(replica)),
			(true, None) => Err(Error::Storage {
				operation: Operation::Read,
				target: "the replica".into(),
				kind: FailureKind::Unsupported,
				attempts: 0,
				source: object_store::Error::Generic {
					store: "ldk-object-store",
					source: "this store has no replica".into(),
				},
			}),
		}
	}

	/// Writes one object, with retries, fencing and under the lease: the work of a write once its
	/// turn came, on one copy.
	async fn put_object(
		&self, span: &Span, key: &KvKey, path: &Path, bytes: &Bytes, target: &str,
	) -> Result<(), Error> {
		let create_only = only_created(key);
		self.attempt_mutation(span, Operation::Write, target, || async {
			match &self.fencing {
				Some(fencing) => fencing.put(self.writer.as_ref(), path, bytes, create_only).await,
				None => self.writer.put(path, PutPayload::from(bytes.clone())).await.map(drop),
			}
		})
		.await
	}

	async fn remove(self: Arc<Self>, mut op: KeyedOp) -> Result<(), Error> {
		op.turn.wait().await;
		let target = op.key.to_string();
		let here = self.delete_object(&op.span, &op.key, op.turn.path(), &target);
		let (key, target) = (&op.key, &target);
		self.on_both(std::slice::from_ref(key), &op.span, here, move |replica, span| async move {
			let path = replica.keys.object_path(key);
			replica.delete_object(&span, key, &path, target).await
		})
		.await
	}

	/// Deletes one object (absent is fine), on one copy.
	async fn delete_object(
		&self, span: &Span, key: &KvKey, path: &Path, target: &str,
	) -> Result<(), Error> {
		let result = self
			.attempt_mutation(span, Operation::Remove, target, || async {
				match self.writer.delete(path).await {
					// Local files, Azure and GCS report a missing object; the remove still
					// achieved what it promises: nothing is stored under the key. (A missing
					// bucket is not that.)
					Err(e) if FailureKind::of(&e) == FailureKind::NotFound => {},
					other => other?,
				}
				self.sync_local_dirs(std::slice::from_ref(path)).await
			})
			.await;
		if let Some(fencing) = &self.fencing {
			fencing.removed(path, result.is_ok(), !only_created(key));
		}
		result
	}

	async fn list(
		self: Arc<Self>, primary: String, secondary: String, span: Span,
	) -> Result<Vec<String>, Error> {
		let prefix = self.keys.namespace_path(&primary, &secondary);
		let target = namespace_target(&primary, &secondary);
		let listing = self.list_delimited(&prefix, &target, &span).await?;
		crate::listing::keys_of_listing(&listing, &prefix, self.keys.root())
			.map(|meta| Ok(self.key_in(meta, &primary, Some(&secondary))?.key))
			.collect()
	}

	async fn list_namespaces(
		self: Arc<Self>, primary: String, target: String, span: Span,
	) -> Result<Vec<String>, Error> {
		let prefix = self.keys.namespace_path(&primary, "");
		let listing = self.list_delimited(&prefix, &target, &span).await?;
		listing
			.common_prefixes
			.iter()
			.map(|namespace| {
				let name = namespace.filename().unwrap_or_default();
				validate_namespace(&primary, name).map_err(|_| Error::ForeignObject {
					path: namespace.to_string(),
					reason: "its name is outside LDK's alphabet or length",
				})?;
				Ok(name.to_owned())
			})
			.collect()
	}

	/// Every key below `primary`, from one recursive listing.
	async fn list_below(
		self: Arc<Self>, primary: String, target: String, span: Span,
	) -> Result<Vec<KvKey>, Error> {
		let prefix = self.keys.namespace_path(&primary, "");
		let objects = self.list_recursive(&prefix, Operation::List, &target, &span).await?;
		crate::listing::keys_of_full_listing(&objects, self.keys.root())
			.map(|meta| self.key_in(meta, &primary, None))
			.collect()
	}

	/// The key of a listed object, which must lie in `primary` (and `secondary`, if given).
	fn key_in(
		&self, meta: &object_store::ObjectMeta, primary: &str, secondary: Option<&str>,
	) -> Result<KvKey, Error> {
		let key = self.keys.kv_key(&meta.location)?;
		if key.primary_namespace != primary
			|| secondary.is_some_and(|secondary| key.secondary_namespace != secondary)
		{
			return Err(Error::ForeignObject {
				path: meta.location.to_string(),
				reason: "the backend listed it in the wrong namespace",
			});
		}
		Ok(key)
	}

	async fn list_all(self: Arc<Self>, span: Span) -> Result<Vec<KvKey>, Error> {
		let objects = self.list_everything(&span).await?;
		crate::listing::keys_of_full_listing(&objects, self.keys.root())
			.map(|meta| self.keys.kv_key(&meta.location))
			.collect()
	}

	/// Every object below the root, as the backend lists it.
	async fn list_everything(&self, span: &Span) -> Result<Vec<object_store::ObjectMeta>, Error> {
		self.list_recursive(self.keys.root(), Operation::ListAll, ALL_KEYS, span).await
	}

	/// Every object below `prefix`, as the backend lists it (no delimiter).
	async fn list_recursive(
		&self, prefix: &Path, operation: Operation, target: &str, span: &Span,
	) -> Result<Vec<object_store::ObjectMeta>, Error> {
		self.attempt(span, operation, target, || {
			self.backend.list(non_root(prefix).then_some(prefix)).try_collect::<Vec<_>>()
		})
		.await
	}

	async fn remove_many(
		self: Arc<Self>, mut turns: Vec<Turn>, target: String, span: Span,
	) -> Result<(), Error> {
		for turn in turns.iter_mut() {
			turn.wait().await;
		}
		let paths: Vec<Path> = turns.iter().map(|turn| turn.path().clone()).collect();
		let here = self.delete_objects(&span, &paths, &target);
		let result = match &self.replica {
			None => here.await,
			Some(replica) => {
				let there_paths = paths
					.iter()
					.map(|path| Ok(replica.keys.object_path(&self.keys.kv_key(path)?)))
					.collect::<Result<Vec<Path>, Error>>();
				let span = replica_span(&span);
				let there = async { replica.delete_objects(&span, &there_paths?, &target).await };
				both(futures::join!(here, there.instrument(span.clone())))
			},
		};
		// The turns are held until here, so later operations on these keys wait for the batch.
		drop(turns);
		result
	}

	/// Deletes several objects with as few requests as the backend allows, on one copy.
	async fn delete_objects(&self, span: &Span, paths: &[Path], target: &str) -> Result<(), Error> {
		let result = self
			.attempt_mutation(span, Operation::Remove, target, || async {
				// The stream must own its paths ('static).
				let owned: Vec<Path> = paths.to_vec();
				let locations = futures::stream::iter(owned.into_iter().map(Ok)).boxed();
				let mut deleted = self.writer.delete_stream(locations);
				while let Some(outcome) = deleted.next().await {
					match outcome {
						Ok(_) => {},
						Err(e) if FailureKind::of(&e) == FailureKind::NotFound => {},
						Err(err) => return Err(err),
					}
				}
				self.sync_local_dirs(paths).await
			})
			.await;
		if let Some(fencing) = &self.fencing {
			// Batches delete monitor updates (see `Fencing::removed`), and archived channels'.
			paths.iter().for_each(|path| fencing.removed(path, result.is_ok(), false));
		}
		result
	}

	/// One listing with a delimiter: the objects and the prefixes directly below `prefix`.
	async fn list_delimited(
		&self, prefix: &Path, target: &str, span: &Span,
	) -> Result<object_store::ListResult, Error> {
		self.attempt(span, Operation::List, target, || {
			self.backend.list_with_delimiter(non_root(prefix).then_some(prefix))
		})
		.await
	}

	/// On a local directory, fsyncs the directories that held `removed`, in one blocking step:
	/// object_store's `with_fsync` leaves deletes unsynced, and a remove that LDK was told is
	/// done must not come back after a crash (`FilesystemStore` syncs the directory too). Also
	/// after "not found": an earlier attempt may have unlinked the file and failed before its
	/// sync.
	async fn sync_local_dirs(&self, removed: &[Path]) -> Result<(), object_store::Error> {
		let Some(files) = &self.local_files else { return Ok(()) };
		let mut dirs = removed
			.iter()
			.map(|path| {
				let file = files.path_to_filesystem(path)?;
				Ok(file.parent().map(std::path::Path::to_path_buf))
			})
			.collect::<Result<Vec<_>, object_store::Error>>()?;
		dirs.sort_unstable();
		dirs.dedup();
		tokio::task::spawn_blocking(move || dirs.iter().flatten().try_for_each(|dir| sync_dir(dir)))
			.await
			.map_err(|e| object_store::Error::Generic { store: LOCAL_STORE, source: Box::new(e) })?
	}

	/// The leases every write depends on: this copy's, then the replica's if it has its own.
	fn leases(&self) -> Vec<Arc<LeaseState>> {
		let mut leases = vec![Arc::clone(&self.lease)];
		leases.extend(
			self.replica
				.iter()
				.filter(|replica| !Arc::ptr_eq(&replica.lease, &self.lease))
				.map(|replica| Arc::clone(&replica.lease)),
		);
		leases
	}

	/// Places under the view's bound and the store's, if both have one free now.
	fn try_permits(&self) -> Option<(Option<Slot<'_>>, tokio::sync::SemaphorePermit<'_>)> {
		let view = match &self.view_limit {
			Some(limit) => Some(limit.try_acquire()?),
			None => None,
		};
		Some((view, self.in_flight.try_acquire().ok()?))
	}

	/// How long closing may take to drain the writes and removes in flight: the longest one
	/// attempt of them may last, then the margin after which an abandoned one cannot land.
	fn close_limit(&self) -> Duration {
		self.retry.attempt_timeout + Duration::from_secs(1)
	}

	/// [`Self::attempt`] for a write or remove: each attempt runs under a permit of the writer
	/// lease ([`LeaseState::enter`]), refused once the lease is lost or the store closed, and
	/// dropped unanswered when the lease's trust ends while the request is in flight, so no
	/// request of this store is outstanding past the end of its trust. On a local directory an
	/// attempt is not abandoned at the attempt timeout: its work goes on on a blocking thread,
	/// and the key's next operation must not start beside it.
	async fn attempt_mutation<T, F, Fut>(
		&self, span: &Span, operation: Operation, target: &str, request: F,
	) -> Result<T, Error>
	where
		F: FnMut() -> Fut,
		Fut: Future<Output = Result<T, object_store::Error>>,
	{
		self.attempts(span, operation, target, request, true).await
	}

	/// Places under the view's bound and the store's, waiting for them: the view's first, so
	/// that a request waiting for it holds no place under the store's. (The semaphores are never
	/// closed, so acquiring cannot fail.)
	async fn permits(&self) -> (Option<Slot<'_>>, Option<tokio::sync::SemaphorePermit<'_>>) {
		let view = match &self.view_limit {
			Some(limit) => limit.acquire().await,
			None => None,
		};
		(view, self.in_flight.acquire().await.ok())
	}

	/// Runs `request` under the bound on requests in flight, with retries, and records the
	/// outcome on `span`. Each attempt first waits for a place under the bound and only then
	/// starts the per-attempt timeout, so a long queue never makes an unsent request time out.
	async fn attempt<T, F, Fut>(
		&self, span: &Span, operation: Operation, target: &(impl fmt::Display + ?Sized), request: F,
	) -> Result<T, Error>
	where
		F: FnMut() -> Fut,
		Fut: Future<Output = Result<T, object_store::Error>>,
	{
		self.attempts(span, operation, target, request, false).await
	}

	/// [`Self::attempt`], and with `mutation` [`Self::attempt_mutation`].
	async fn attempts<T, F, Fut>(
		&self, span: &Span, operation: Operation, target: &(impl fmt::Display + ?Sized),
		mut request: F, mutation: bool,
	) -> Result<T, Error>
	where
		F: FnMut() -> Fut,
		Fut: Future<Output = Result<T, object_store::Error>>,
	{
		let started = Instant::now();
		let abandoned = crate::lease::Abandoned::default();
		let (result, attempts) = self
			.retry
			.run(|| {
				// Boxed: the request is held in several branches below, and inline each
				// would take its full size in every operation's task (a write's grew past
				// 70 KB, and allocating that for every write cost more than the write).
				let request = Box::pin(request());
				let abandoned = &abandoned;
				async move {
					let (view, _store) = self.permits().await;
					// Timed from here, where the request is sent, to its answer: the adaptive
					// bound learns the server's latency, not the wait for a place.
					let sent = Instant::now();
					let sending = async {
						if !mutation {
							return self.retry.timed(request).await;
						}
						// Refused without a request: the view's place goes back with no signal.
						let permit = self.lease.enter()?;
						if self.untimed_mutations {
							permit.run(request, abandoned).await
						} else {
							permit.run(self.retry.timed(request), abandoned).await
						}
					};
					match view {
						Some(view) if view.is_adaptive() => {
							let (outcome, latency) = answer_time(sent, sending).await;
							view.finish(Signal::of(&outcome, latency));
							outcome
						},
						_ => sending.await,
					}
				}
			})
			.await;
		// An attempt abandoned without an answer may still land, up to the safety margin later:
		// the operation ends (and the key's next one starts) only after that, so that a late
		// request can never undo a later operation on the key. Fencing cannot stop every such
		// request: a remove is never conditional, and a create-only put lands after a remove.
		if let Some(at) = abandoned.at() {
			self.lease.wait_out(at).await;
		}
		finish(span, operation, target, started, attempts, result)
	}
}

/// Whether `key` is a monitor update's: written once and never replaced, so fencing writes it
/// create-only and need not remember its version.
fn only_created(key: &KvKey) -> bool {
	key.primary_namespace == crate::persister::names::UPDATES
}

/// The span of an operation's request on the replica, below the operation's own span (each records
/// its own outcome and attempts).
fn replica_span(parent: &Span) -> Span {
	tracing::debug_span!(
		parent: parent,
		"replica",
		outcome = field::Empty,
		attempts = field::Empty,
		elapsed_us = field::Empty,
	)
}

/// The outcome of one operation sent to both copies: done only when both are; otherwise the
/// primary's failure, or the replica's, marked as the replica's.
fn both(outcomes: (Result<(), Error>, Result<(), Error>)) -> Result<(), Error> {
	match outcomes {
		(Err(err), _) => Err(err),
		(Ok(()), Err(err)) => Err(err.on_replica()),
		(Ok(()), Ok(())) => Ok(()),
	}
}

/// Where a local read started on the blocking pool ended: done there, or handed to the runtime.
enum LocalRead {
	Done(Result<Vec<u8>, Error>),
	Handed(tokio::task::JoinHandle<Result<Vec<u8>, Error>>),
}

/// How object_store's `LocalFileSystem` names itself in its errors.
const LOCAL_STORE: &str = "LocalFileSystem";

fn is_not_found<T>(result: &Result<T, object_store::Error>) -> bool {
	matches!(result, Err(e) if FailureKind::of(e) == FailureKind::NotFound)
}

/// Reads the object at `location` of `files` as its `get` and `bytes` would, with the same
/// outcomes: the file at object_store's own path for the location, "not found" only when no
/// file is there (or a directory is, which holds no object either), the whole file otherwise.
/// object_store publishes every write by renaming a complete file into place, so an open file
/// is always one whole version of the object. Blocking: call it where blocking is allowed.
fn read_local_file(
	files: &LocalFileSystem, location: &Path,
) -> Result<Vec<u8>, object_store::Error> {
	use std::io::Read;
	let path = files.path_to_filesystem(location)?;
	let failed = |source: std::io::Error| match source.kind() {
		std::io::ErrorKind::NotFound => object_store::Error::NotFound {
			path: path.display().to_string(),
			source: source.into(),
		},
		_ => object_store::Error::Generic {
			store: LOCAL_STORE,
			source: format!("reading {}: {source}", path.display()).into(),
		},
	};
	let file = std::fs::File::open(&path).map_err(failed)?;
	let metadata = file.metadata().map_err(failed)?;
	if metadata.is_dir() {
		return Err(failed(std::io::Error::new(std::io::ErrorKind::NotFound, "is a directory")));
	}
	// Exactly the length the metadata gave, as object_store reads it (and without the second
	// metadata call `read_to_end` makes on a file for its size hint).
	let len = metadata.len();
	let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
	file.take(len).read_to_end(&mut data).map_err(failed)?;
	if data.len() as u64 != len {
		let short = format!("{} bytes of {len}", data.len());
		return Err(failed(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, short)));
	}
	Ok(data)
}

/// Fsyncs `dir` so that the removal of an entry in it survives a crash. A directory that does
/// not exist held nothing to remove (object_store never removes directories here).
fn sync_dir(dir: &std::path::Path) -> Result<(), object_store::Error> {
	let synced = std::fs::File::open(dir).and_then(|dir| dir.sync_all());
	match synced {
		Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(object_store::Error::Generic {
			store: LOCAL_STORE,
			source: format!("syncing directory {} after a remove: {e}", dir.display()).into(),
		}),
		_ => Ok(()),
	}
}

fn non_root(prefix: &Path) -> bool {
	!prefix.as_ref().is_empty()
}

/// Records the outcome on the operation's span, logs it, and maps a backend error to ours.
fn finish<T>(
	span: &Span, operation: Operation, target: &(impl fmt::Display + ?Sized), started: Instant,
	attempts: u32, result: Result<T, object_store::Error>,
) -> Result<T, Error> {
	span.record("attempts", attempts);
	span.record("elapsed_us", started.elapsed().as_micros() as u64);
	match result {
		Ok(value) => {
			span.record("outcome", "ok");
			tracing::debug!("done");
			Ok(value)
		},
		Err(source) => {
			let kind = FailureKind::of(&source);
			span.record("outcome", field::display(kind));
			let err =
				Error::Storage { operation, target: target.to_string(), kind, attempts, source };
			if kind == FailureKind::NotFound {
				tracing::debug!("not found");
			} else {
				tracing::warn!(error = %err, "failed");
			}
			Err(err)
		},
	}
}

/// Raw listings and ranged reads for [`crate::inspect`], under the same bound on requests in
/// flight, retry policy and tracing as every other operation.
impl ObjectKvStore {
	/// Every object below the store's root (directory markers included).
	pub(crate) async fn list_objects(&self) -> Result<Vec<object_store::ObjectMeta>, Error> {
		let core = Arc::clone(&self.core);
		let work = async move {
			let span = op_span(Operation::ListAll, "", "", "", None);
			core.list_everything(&span).instrument(span.clone()).await
		};
		self.start(Operation::ListAll, ALL_KEYS.to_owned(), work).await
	}

	/// One delimiter listing of any folder `prefix` (not only a namespace): for tools that look
	/// for node roots below a location. `target` names it in errors.
	#[doc(hidden)]
	pub async fn list_folder(&self, prefix: Path, target: String) -> Result<ListResult, Error> {
		let core = Arc::clone(&self.core);
		let name = target.clone();
		let work = async move {
			let span = op_span(Operation::List, "", "", &target, None);
			core.list_delimited(&prefix, &target, &span).instrument(span.clone()).await
		};
		self.start(Operation::List, name, work).await
	}

	/// The bytes `range` of the object at `path` (any path below the backend's root), for tools;
	/// `target` names it in errors.
	#[doc(hidden)]
	pub async fn read_object_range(
		&self, path: Path, range: std::ops::Range<u64>, target: String,
	) -> Result<Bytes, Error> {
		self.read_range(path, range, target).await
	}

	/// The bytes `range` of the object at `path`; `target` names it in errors.
	pub(crate) async fn read_range(
		&self, path: Path, range: std::ops::Range<u64>, target: String,
	) -> Result<Bytes, Error> {
		let core = Arc::clone(&self.core);
		let name = target.clone();
		let work = async move {
			let span = op_span(Operation::Read, "", "", &target, None);
			let read = core.attempt(&span, Operation::Read, &target, || {
				core.backend.get_range(&path, range.clone())
			});
			read.instrument(span.clone()).await
		};
		self.start(Operation::Read, name, work).await
	}
}

#[cfg(test)]
mod tests {
	use super::*;

	/// Every operation runs as a task of its own, allocated whole when it starts: a large state
	/// machine costs every write that allocation (and the memory's page faults). A write's task
	/// had grown past 70 KB (its request held inline in several branches of the attempt loop,
	/// and the replica's work inline beside the primary's), and with it the CPU per write had
	/// doubled; boxed, the request and the replica's work are allocated only as large as they
	/// are, and only when they run.
	#[test]
	fn an_operation_task_stays_small() {
		const MOST: usize = 16 * 1024;
		let store =
			crate::StoreBuilder::from_store(Arc::new(object_store::memory::InMemory::new()))
				.without_writer_lease()
				.build()
				.expect("store");
		let op = |operation| store.queue(operation, "ns", "", "key", None).expect("op");
		let core = || Arc::clone(&store.core);
		let sizes = [
			("write", size_of_val(&core().write(op(Operation::Write), Bytes::new()))),
			("remove", size_of_val(&core().remove(op(Operation::Remove)))),
			("read", size_of_val(&core().read(op(Operation::Read)))),
			("list", size_of_val(&core().list("ns".into(), String::new(), Span::none()))),
		];
		for (operation, size) in sizes {
			assert!(size <= MOST, "a {operation} task is {size} bytes (at most {MOST})");
		}
	}

	/// Fencing writes update objects create-only, so it keeps no version of them: it used to
	/// keep one per update written, and one per update a startup load read (51,000 entries for
	/// 1,000 monitors × 50 updates). A monitor's version it keeps: its next write is
	/// conditioned on it.
	#[test]
	fn fencing_remembers_monitors_but_not_updates() {
		use crate::persister::names::{MONITORS, UPDATES};
		use lightning::util::persist::KVStoreSync;
		let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
		let build = || {
			crate::StoreBuilder::from_store(Arc::clone(&inner))
				.without_writer_lease()
				.with_fencing(true)
				.build()
				.expect("store")
		};
		let (monitor, update) = (("monitor_key", MONITORS), ("7", UPDATES));
		let writer = build();
		KVStoreSync::write(&writer, monitor.1, "", monitor.0, vec![1]).expect("write");
		KVStoreSync::write(&writer, update.1, "monitor_key", update.0, vec![2]).expect("write");
		let known = |store: &ObjectKvStore, ns, secondary, key| {
			let path = store.core.keys.object_path(&KvKey::new(ns, secondary, key).expect("key"));
			store.core.fencing.as_ref().expect("fencing on").knows(&path)
		};
		assert!(known(&writer, monitor.1, "", monitor.0), "the written monitor's version");
		assert!(!known(&writer, update.1, "monitor_key", update.0), "a written update's version");
		// A store that starts now, as after a restart: it knows no version yet.
		let reader = build();
		assert_eq!(KVStoreSync::read(&reader, monitor.1, "", monitor.0).expect("read"), [1]);
		assert_eq!(KVStoreSync::read(&reader, update.1, "monitor_key", update.0).unwrap(), [2]);
		assert!(known(&reader, monitor.1, "", monitor.0), "the read monitor's version");
		assert!(!known(&reader, update.1, "monitor_key", update.0), "a read update's version");
	}
}
