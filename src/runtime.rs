//! The runtime the store's I/O runs on, and the bridge that lets synchronous callers wait for it.
//!
//! ldk-node calls `KVStoreSync` from plain threads and from the worker threads of its own tokio
//! runtime, multi-thread or current-thread. `block_on` panics inside a runtime and
//! `block_in_place` panics on a current-thread one, so the store owns a small runtime, runs every
//! operation there, and a synchronous caller parks its thread until the task is done, without entering any runtime
//! (so it also works inside another executor's `block_on`).
//! Async callers await the task's handle, which works on any executor.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};

thread_local! {
	/// Set on every thread of a store's runtime, workers and blocking pool alike.
	static STORE_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread belongs to a store's runtime: such a thread must never wait for
/// work of that runtime (with one worker it would wait for itself).
pub(crate) fn on_store_thread() -> bool {
	STORE_THREAD.with(Cell::get)
}

/// A multi-thread runtime owned by the store and stopped without blocking when the last clone of
/// the store is dropped, even from inside another runtime.
#[derive(Debug)]
pub(crate) struct StoreRuntime {
	runtime: Option<Runtime>,
	handle: Handle,
}

impl StoreRuntime {
	pub(crate) fn new(worker_threads: usize) -> std::io::Result<Self> {
		let runtime = Builder::new_multi_thread()
			.worker_threads(worker_threads.max(1))
			.thread_name("ldk-object-store")
			.on_thread_start(|| STORE_THREAD.with(|flag| flag.set(true)))
			.enable_all()
			.build()?;
		let handle = runtime.handle().clone();
		Ok(StoreRuntime { runtime: Some(runtime), handle })
	}

	/// Test hook: no runtime of its own; everything runs on the runtime of the caller (a
	/// current-thread runtime with paused time, for the takeover model). Such a store must be
	/// built with `build_async`, used through the async traits only, and closed explicitly.
	#[cfg(feature = "_test_hooks")]
	pub(crate) fn current() -> Self {
		StoreRuntime { runtime: None, handle: Handle::current() }
	}

	/// Whether the store owns its runtime (always, but for the test hook above): only then may
	/// a thread wait for its tasks.
	pub(crate) fn is_owned(&self) -> bool {
		self.runtime.is_some()
	}

	/// Stops the runtime from a thread that may block, waiting up to `limit` for its blocking
	/// tasks (a local file being renamed into place, say) to end.
	pub(crate) fn shut_down_within(mut self, limit: Duration) {
		if let Some(runtime) = self.runtime.take() {
			runtime.shutdown_timeout(limit);
		}
	}

	/// Starts `work` now; its handle resolves to `None` if the runtime stopped before it finished.
	pub(crate) fn spawn<T, F>(&self, work: F) -> impl Future<Output = Option<T>> + Send + 'static
	where
		T: Send + 'static,
		F: Future<Output = T> + Send + 'static,
	{
		let task = self.handle.spawn(work);
		async move { task.await.ok() }
	}

	/// The runtime's handle, for work that must spawn on it without owning the runtime.
	pub(crate) fn handle(&self) -> &Handle {
		&self.handle
	}
}

impl Drop for StoreRuntime {
	fn drop(&mut self) {
		if let Some(runtime) = self.runtime.take() {
			// Dropping a runtime blocks, which panics inside an async context; this does not.
			runtime.shutdown_background();
		}
	}
}

/// Polls `future` on the calling thread, parking between wake-ups. Meant for futures whose work
/// runs elsewhere (on the store's runtime), so nothing here needs a runtime context.
///
/// The future is polled outside Tokio's cooperative budget: called from inside a task of some
/// runtime (ldk-node makes synchronous calls there), a join handle would otherwise count against
/// that task's budget, and once it is spent answer "pending" and wake itself at once, forever,
/// since this loop never yields to the runtime that would refill it.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
	struct Unpark(Thread);
	impl Wake for Unpark {
		fn wake(self: Arc<Self>) {
			self.0.unpark();
		}
	}
	let waker = Waker::from(Arc::new(Unpark(thread::current())));
	let mut cx = Context::from_waker(&waker);
	let mut future = pin!(tokio::task::coop::unconstrained(future));
	loop {
		if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
			return output;
		}
		// Spurious wake-ups only cost another poll.
		thread::park();
	}
}
