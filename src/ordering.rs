//! Per-key ordering: operations on one key run one at a time, in the order they were called.
//!
//! LDK fixes the order of writes and removes to a key by the order of the synchronous calls, while
//! the futures may be awaited in any order, or not at all until much later. Each call therefore
//! takes its place in the key's queue before it returns (a [`Turn`]), and its work waits until the
//! call before it on the same key has finished. This is stronger than LDK's own version counters:
//! a stale write is never sent at all after a newer one, the store has at most one attempt per
//! key outstanding at a time, and a read sees every write that was called before it. Different
//! keys do not wait for each other. (An attempt abandoned on its timeout, or whose answer was
//! lost, may still be delivered by the network later: its operation therefore ends only once the
//! lease's safety margin, the longest a request may stay in the network, has passed since, so the
//! key's next operation never runs beside it. On a local directory writes and removes are never
//! abandoned: see `store.rs`.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use object_store::path::Path;
use tokio::sync::oneshot;

/// The tail of every key's queue that has work pending.
#[derive(Debug, Default)]
pub(crate) struct KeyQueues {
	next_id: AtomicU64,
	tails: Mutex<HashMap<Path, Tail>>,
}

#[derive(Debug)]
struct Tail {
	id: u64,
	done: oneshot::Receiver<()>,
}

impl KeyQueues {
	/// Takes the next place in `path`'s queue. Call this synchronously, in the call that fixes the
	/// order.
	pub(crate) fn enqueue(self: &Arc<Self>, path: Path) -> Turn {
		self.take_turn(&mut self.lock(), path)
	}

	/// Takes one place in each of `paths`' queues, all at once: no other call can take a place in
	/// any of these queues in between. Every queue therefore orders its operations by one global
	/// sequence of calls, so an operation that holds several turns (a batch delete) can never wait
	/// in a cycle with another one, whatever order their keys come in. Duplicates are taken once
	/// (a second turn on one key would wait for the first, held by the same operation, forever).
	pub(crate) fn enqueue_many(
		self: &Arc<Self>, paths: impl IntoIterator<Item = Path>,
	) -> Vec<Turn> {
		let mut paths: Vec<Path> = paths.into_iter().collect();
		paths.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
		paths.dedup();
		let mut tails = self.lock();
		paths.into_iter().map(|path| self.take_turn(&mut tails, path)).collect()
	}

	/// Appends a turn to `path`'s queue; the caller holds the map's lock.
	fn take_turn(self: &Arc<Self>, tails: &mut HashMap<Path, Tail>, path: Path) -> Turn {
		let (done, done_rx) = oneshot::channel();
		let id = self.next_id.fetch_add(1, Ordering::Relaxed);
		let previous = tails.insert(path.clone(), Tail { id, done: done_rx });
		Turn {
			queues: Arc::clone(self),
			path,
			id,
			previous: previous.map(|tail| tail.done),
			_done: done,
		}
	}

	/// The number of keys with work pending.
	#[cfg(test)]
	pub(crate) fn pending_keys(&self) -> usize {
		self.lock().len()
	}

	fn lock(&self) -> MutexGuard<'_, HashMap<Path, Tail>> {
		// The map stays consistent even if a holder panicked: every update is a single call.
		self.tails.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
	}
}

/// One operation's place in its key's queue. Dropping it (when the operation is over, whatever its
/// outcome) lets the next operation on the key start.
#[derive(Debug)]
pub(crate) struct Turn {
	queues: Arc<KeyQueues>,
	path: Path,
	id: u64,
	previous: Option<oneshot::Receiver<()>>,
	// Never sent on: dropping it is the signal.
	_done: oneshot::Sender<()>,
}

impl Turn {
	/// The key's object path.
	pub(crate) fn path(&self) -> &Path {
		&self.path
	}

	/// Waits until every earlier operation on the key has finished.
	pub(crate) async fn wait(&mut self) {
		if let Some(previous) = self.previous.as_mut() {
			// An error only means the predecessor finished (its sender was dropped). The receiver
			// stays in place until then, so a cancelled wait can be resumed.
			let _ = previous.await;
			self.previous = None;
		}
	}

	/// Whether an earlier operation on the key is still pending. Once false it stays false.
	pub(crate) fn is_pending(&mut self) -> bool {
		match self.previous.as_mut().map(|previous| previous.try_recv()) {
			Some(Err(oneshot::error::TryRecvError::Empty)) => true,
			Some(_) => {
				// The predecessor finished (its sender was dropped).
				self.previous = None;
				false
			},
			None => false,
		}
	}

	/// [`Self::wait`] for a synchronous caller: parks the thread only while an earlier operation
	/// is pending, so the common case (nothing pending) costs no waker.
	pub(crate) fn wait_blocking(&mut self) {
		if self.previous.is_some() {
			crate::runtime::block_on(self.wait());
		}
	}
}

impl Drop for Turn {
	fn drop(&mut self) {
		let mut tails = self.queues.lock();
		if tails.get(&self.path).is_some_and(|tail| tail.id == self.id) {
			tails.remove(&self.path);
		}
	}
}

#[cfg(test)]
mod tests {
	use super::*;
	use std::time::Duration;

	#[tokio::test]
	async fn later_turns_wait_for_earlier_ones_and_entries_are_dropped() {
		let queues = Arc::new(KeyQueues::default());
		let key = Path::from("k");
		let mut first = queues.enqueue(key.clone());
		let mut second = queues.enqueue(key);
		let mut other = queues.enqueue(Path::from("other"));
		assert_eq!(queues.pending_keys(), 2);

		other.wait().await;
		first.wait().await;
		let blocked = tokio::time::timeout(Duration::from_millis(50), second.wait()).await;
		assert!(blocked.is_err(), "the second turn ran before the first finished");

		assert!(second.is_pending());
		drop(first);
		assert!(!second.is_pending(), "the first turn is over");
		assert!(!other.is_pending());
		tokio::time::timeout(Duration::from_secs(5), second.wait()).await.unwrap();
		drop(second);
		drop(other);
		assert_eq!(queues.pending_keys(), 0);
	}
}
