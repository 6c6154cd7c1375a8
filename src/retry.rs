//! Retrying transient failures with exponential backoff and jitter.
//!
//! HTTP backends already repeat single requests inside `object_store` (its `RetryConfig`); this
//! layer repeats whole operations on top of any backend, including in-memory and local ones and the
//! wrappers used for fault injection, and is the single place where our policy is applied.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use crate::error::FailureKind;

/// How operations are retried when the backend reports a transient failure (server error,
/// throttling, timeout, dropped or refused connection). Facts about the object or the credentials
/// (not found, 403, 401, precondition failed) are never retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
	/// Attempts in total, the first one included; `1` disables retries.
	pub max_attempts: u32,
	/// The pause before the first retry; it doubles after each retry.
	pub initial_backoff: Duration,
	/// The longest pause between two attempts.
	pub max_backoff: Duration,
	/// No retry starts once this much time has passed since the first attempt.
	pub max_elapsed: Duration,
	/// One attempt that takes longer is abandoned as timed out (and retried): a stalled request
	/// must not hold its key's queue forever.
	pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
	/// 6 attempts, backoff from 100 ms doubling up to 5 s, no new attempt after 60 s, and 120 s
	/// at most per attempt.
	fn default() -> Self {
		RetryPolicy {
			max_attempts: 6,
			initial_backoff: Duration::from_millis(100),
			max_backoff: Duration::from_secs(5),
			max_elapsed: Duration::from_secs(60),
			attempt_timeout: Duration::from_secs(120),
		}
	}
}

impl RetryPolicy {
	/// A policy that makes exactly one attempt.
	pub fn none() -> Self {
		RetryPolicy { max_attempts: 1, ..Default::default() }
	}

	/// Runs `attempt` until it succeeds, fails permanently, or the policy is exhausted. Returns the
	/// outcome and the number of attempts made.
	pub(crate) async fn run<T, F, Fut>(
		&self, mut attempt: F,
	) -> (Result<T, object_store::Error>, u32)
	where
		F: FnMut() -> Fut,
		Fut: Future<Output = Result<T, object_store::Error>>,
	{
		let start = Instant::now();
		let mut backoff = self.initial_backoff;
		let mut attempts = 0;
		loop {
			attempts += 1;
			let outcome = tokio::time::timeout(self.attempt_timeout, attempt()).await;
			let err = match outcome {
				Ok(Ok(value)) => return (Ok(value), attempts),
				Ok(Err(err)) => err,
				Err(_) => object_store::Error::Generic {
					store: "ldk-object-store",
					source: Box::new(std::io::Error::new(
						std::io::ErrorKind::TimedOut,
						format!("attempt abandoned after {:?}", self.attempt_timeout),
					)),
				},
			};
			let kind = FailureKind::of(&err);
			let exhausted = attempts >= self.max_attempts.max(1)
				|| start.elapsed() + backoff > self.max_elapsed;
			if !kind.is_transient() || exhausted {
				return (Err(err), attempts);
			}
			tracing::debug!(attempt = attempts, failure = %kind, "transient failure, retrying");
			tokio::time::sleep(jitter(backoff)).await;
			backoff = (backoff * 2).min(self.max_backoff);
		}
	}
}

/// A pause between half and all of `backoff`, so that clients that failed together do not retry
/// together.
fn jitter(backoff: Duration) -> Duration {
	let random = RandomState::new().build_hasher().finish();
	let half = backoff / 2;
	half + Duration::from_nanos(random % (half.as_nanos() as u64).max(1))
}

#[cfg(test)]
mod tests {
	use super::*;
	use std::sync::atomic::{AtomicU32, Ordering};

	fn fast(max_attempts: u32) -> RetryPolicy {
		RetryPolicy {
			max_attempts,
			initial_backoff: Duration::from_millis(1),
			max_backoff: Duration::from_millis(2),
			max_elapsed: Duration::from_secs(10),
			attempt_timeout: Duration::from_millis(200),
		}
	}

	fn generic() -> object_store::Error {
		object_store::Error::Generic { store: "test", source: "503 Slow Down".into() }
	}

	#[tokio::test]
	async fn transient_failures_are_retried_until_success() {
		let calls = AtomicU32::new(0);
		let (res, attempts) = fast(5)
			.run(|| async {
				if calls.fetch_add(1, Ordering::SeqCst) < 3 {
					Err(generic())
				} else {
					Ok(7)
				}
			})
			.await;
		assert_eq!(res.unwrap(), 7);
		assert_eq!(attempts, 4);
	}

	#[tokio::test]
	async fn retries_stop_at_the_limit() {
		let (res, attempts) = fast(3).run(|| async { Err::<(), _>(generic()) }).await;
		assert!(res.is_err());
		assert_eq!(attempts, 3);
	}

	#[tokio::test]
	async fn permanent_failures_are_not_retried() {
		let (res, attempts) = fast(5)
			.run(|| async {
				Err::<(), _>(object_store::Error::PermissionDenied {
					path: "k".into(),
					source: "403".into(),
				})
			})
			.await;
		assert!(res.is_err());
		assert_eq!(attempts, 1);
	}

	#[tokio::test]
	async fn a_stalled_attempt_times_out_and_is_retried() {
		let calls = AtomicU32::new(0);
		let (res, attempts) = fast(3)
			.run(|| async {
				if calls.fetch_add(1, Ordering::SeqCst) == 0 {
					std::future::pending::<()>().await;
				}
				Ok::<_, object_store::Error>(1)
			})
			.await;
		assert_eq!(res.unwrap(), 1);
		assert_eq!(attempts, 2);
	}

	#[test]
	fn jitter_stays_within_bounds() {
		for _ in 0..100 {
			let d = jitter(Duration::from_millis(100));
			assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100), "{d:?}");
		}
	}
}
