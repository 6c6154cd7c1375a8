//! Closing a store when its last clone is dropped, without ever blocking a store thread.

use std::sync::Arc;
use std::time::Duration;

use super::state::LeaseState;
use crate::runtime::{on_store_thread, StoreRuntime};

/// Closes the store (drains, then releases the lease) when the last clone is dropped.
///
/// Dropping is a fallback: an application should call `ObjectKvStore::close` at shutdown, since
/// a clone kept alive anywhere (ldk-node 0.7.1 keeps some forever with a bitcoind-RPC chain
/// source) means the drop never comes.
#[derive(Debug)]
pub(crate) struct Guard {
	/// The store's lease, and its replica's.
	states: Vec<Arc<LeaseState>>,
	runtime: Option<Arc<StoreRuntime>>,
	/// How long closing may take: draining requests, then releasing.
	limit: Duration,
}

impl Guard {
	pub(crate) fn new(
		states: Vec<Arc<LeaseState>>, runtime: Arc<StoreRuntime>, limit: Duration,
	) -> Self {
		Guard { states, runtime: Some(runtime), limit }
	}
}

/// Closes every lease of a store at once (drains each copy's requests, then releases each).
pub(crate) async fn close_all(states: Vec<Arc<LeaseState>>, limit: Duration) {
	futures::future::join_all(states.into_iter().map(|state| state.close(limit))).await;
}

impl Drop for Guard {
	fn drop(&mut self) {
		let Some(runtime) = self.runtime.take() else { return };
		if !runtime.is_owned() {
			// A test's runtime: the test closes the store itself; nothing may block here.
			drop(runtime.spawn(close_all(self.states.clone(), self.limit)));
			return;
		}
		// On a thread of its own: the store's runtime must be stopped outside of it, after the
		// close, and a store thread must never wait for its own runtime (with one worker it would
		// wait for itself, and the lock of a `file://` store would stay held).
		let (states, limit) = (self.states.clone(), self.limit);
		let (done, finished) = std::sync::mpsc::channel::<()>();
		let closer =
			std::thread::Builder::new().name("ldk-object-store-close".into()).spawn(move || {
				let closing = runtime.spawn(close_all(states.clone(), limit));
				let _ = crate::runtime::block_on(closing);
				let drained = states.iter().all(|state| state.in_flight() == 0);
				if let Ok(runtime) = Arc::try_unwrap(runtime) {
					// Waits for blocking tasks (a local file being renamed into place).
					runtime.shut_down_within(limit);
				}
				if !drained {
					// A request may still run on a blocking thread: keep a directory locked
					// until the process ends rather than let a successor in beside it.
					states.iter().for_each(|state| state.keep_directory_locked());
				}
				let _ = done.send(());
			});
		match closer {
			Ok(_) if !on_store_thread() => {
				// A caller may start a successor right after the drop: wait for the close.
				let _ = finished.recv_timeout(self.limit * 2);
			},
			Ok(_) => {},
			Err(err) => {
				tracing::warn!(error = %err, "no thread to close the store on; its lease expires on its own")
			},
		}
	}
}
