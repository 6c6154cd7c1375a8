//! The runtime the store's I/O runs on, and the bridge that lets synchronous callers wait for it.
//!
//! ldk-node calls `KVStoreSync` from plain threads and from the worker threads of its own tokio
//! runtime, multi-thread or current-thread. `block_on` panics inside a runtime and
//! `block_in_place` panics on a current-thread one, so the store owns a small runtime, runs every
//! operation there, and a synchronous caller parks its thread until the task is done, without entering any runtime
//! (so it also works inside another executor's `block_on`).
//! Async callers await the task's handle, which works on any executor.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use tokio::runtime::{Builder, Handle, Runtime};

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
			.enable_all()
			.build()?;
		let handle = runtime.handle().clone();
		Ok(StoreRuntime { runtime: Some(runtime), handle })
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
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
	struct Unpark(Thread);
	impl Wake for Unpark {
		fn wake(self: Arc<Self>) {
			self.0.unpark();
		}
	}
	let waker = Waker::from(Arc::new(Unpark(thread::current())));
	let mut cx = Context::from_waker(&waker);
	let mut future = pin!(future);
	loop {
		if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
			return output;
		}
		// Spurious wake-ups only cost another poll.
		thread::park();
	}
}
