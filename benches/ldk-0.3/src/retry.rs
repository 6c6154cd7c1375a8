//! Retries for the LDK 0.3 adapter on the S3-like model, as `object_store`'s own HTTP client
//! retries (its `RetryConfig::default()` in 0.14: up to 10 retries, none started more than
//! 3 minutes after the first attempt; exponential backoff with decorrelated jitter from 100 ms,
//! base 2, at most 15 s). object_store's retry lives inside its HTTP client (`pub(crate)`), and
//! the model answers below it, as an `ObjectStore`, so this is a small loop with the same
//! parameters and the same rule for what is retried: a 5xx or 429 status, or a body naming
//! `SlowDown` or `InternalError`.

use std::future::Future;
use std::time::{Duration, Instant};

/// object_store 0.14's `RetryConfig::default()` and `BackoffConfig::default()`.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
	pub init_backoff: Duration,
	pub max_backoff: Duration,
	pub base: f64,
	pub max_retries: usize,
	pub retry_timeout: Duration,
}

impl Default for Retry {
	fn default() -> Self {
		Retry {
			init_backoff: Duration::from_millis(100),
			max_backoff: Duration::from_secs(15),
			base: 2.0,
			max_retries: 10,
			retry_timeout: Duration::from_secs(3 * 60),
		}
	}
}

impl Retry {
	/// One line for the table's configuration cell.
	pub fn describe(&self) -> String {
		format!(
			"retries 5xx/`SlowDown` up to {} times within {} s, backoff from {} ms, ×{} with \
			 decorrelated jitter, ≤ {} s (object_store 0.14's `RetryConfig::default()`)",
			self.max_retries,
			self.retry_timeout.as_secs(),
			self.init_backoff.as_millis(),
			self.base,
			self.max_backoff.as_secs()
		)
	}

	/// Runs `attempt` until it succeeds, fails with an error that is not retried, or the
	/// retries are exhausted.
	pub async fn run<T, F, Fut>(&self, mut attempt: F) -> object_store::Result<T>
	where
		F: FnMut() -> Fut,
		Fut: Future<Output = object_store::Result<T>>,
	{
		let start = Instant::now();
		let mut retries = 0;
		// Decorrelated jitter: the first wait is `init_backoff`, each next one uniform in
		// [init_backoff, base × the previous one's upper end), capped at `max_backoff`.
		let init = self.init_backoff.as_secs_f64();
		let mut next = init;
		loop {
			match attempt().await {
				Ok(value) => return Ok(value),
				Err(e) => {
					let exhausted =
						retries >= self.max_retries || start.elapsed() > self.retry_timeout;
					if exhausted || !retryable(&e) {
						return Err(e);
					}
					let upper = next * self.base;
					let drawn = init + store_models::rng().f64() * (upper - init);
					let wait =
						std::mem::replace(&mut next, drawn.min(self.max_backoff.as_secs_f64()));
					retries += 1;
					tokio::time::sleep(Duration::from_secs_f64(wait)).await;
				},
			}
		}
	}
}

/// What object_store's client retries: a server error (5xx), 429, or a body naming `SlowDown`
/// or `InternalError`. The model's errors carry the status and body in their message.
fn retryable(error: &object_store::Error) -> bool {
	let object_store::Error::Generic { source, .. } = error else { return false };
	let message = source.to_string();
	message.contains("SlowDown")
		|| message.contains("InternalError")
		|| message.contains("status code: 5")
		|| message.contains("status code: 429")
}
