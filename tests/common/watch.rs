//! Waiting in tests without hanging them: a watchdog for calls that could wedge, and a bounded
//! wait for a condition.

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `work` on its own thread and fails the test if it has not returned within `limit`.
pub fn watchdog<T: Send + 'static>(
	what: &str, limit: Duration, work: impl FnOnce() -> T + Send + 'static,
) -> T {
	let (done, finished) = mpsc::channel();
	std::thread::spawn(move || {
		let _ = done.send(work());
	});
	match finished.recv_timeout(limit) {
		Ok(value) => value,
		Err(_) => panic!("{what} did not return within {limit:?}: the node is wedged"),
	}
}

/// Polls `done` until it holds; fails the test if it does not within `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
	let deadline = Instant::now() + limit;
	while !done() {
		assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
		std::thread::sleep(Duration::from_millis(10));
	}
}
