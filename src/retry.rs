//! Retrying transient failures with exponential backoff and jitter (through `backon`).
//!
//! HTTP backends already repeat single requests inside `object_store` (its `RetryConfig`); this
//! layer repeats whole operations on top of any backend, including in-memory and local ones and the
//! wrappers used for fault injection, and is the single place where our policy is applied. What
//! is transient is ours to say ([`FailureKind::is_transient`]); `backon` supplies the schedule.

use std::future::Future;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

use crate::error::FailureKind;

/// How operations are retried when the backend reports a transient failure (server error,
/// throttling, timeout, dropped or refused connection, and the 4xx answers that S3 documents as
/// retryable). Facts about the object or the credentials (not found, 403, 401, precondition
/// failed) are never retried.
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
	/// One request that takes longer is abandoned as timed out (and retried): a stalled request
	/// must not hold its key's queue forever. Only the request is timed, not the wait for a
	/// place under the bound on requests in flight.
	pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
	/// 6 attempts, backoff from 100 ms doubling up to 5 s (each pause jittered up to twice its
	/// length), no new attempt after 60 s, and 30 s at most per request (so a stalled request is
	/// abandoned with time left to retry it; a 4 MB monitor takes about 4 s at 1 MB/s).
	fn default() -> Self {
		RetryPolicy {
			max_attempts: 6,
			initial_backoff: Duration::from_millis(100),
			max_backoff: Duration::from_secs(5),
			max_elapsed: Duration::from_secs(60),
			attempt_timeout: Duration::from_secs(30),
		}
	}
}

impl RetryPolicy {
	/// A policy that makes exactly one attempt.
	pub fn none() -> Self {
		RetryPolicy { max_attempts: 1, ..Default::default() }
	}

	/// The pauses between attempts: `backon`'s exponential schedule with jitter.
	fn backoff(&self) -> impl BackoffBuilder {
		ExponentialBuilder::default()
			.with_min_delay(self.initial_backoff)
			.with_max_delay(self.max_backoff)
			.with_factor(2.0)
			.with_jitter()
			.with_max_times(self.max_attempts.max(1) as usize - 1)
	}

	/// Runs `attempt` until it succeeds, fails permanently, or the policy is exhausted. Returns the
	/// outcome and the number of attempts made. Time each request inside `attempt` with
	/// [`Self::timed`], after anything it waits for that is not the request.
	pub(crate) async fn run<T, F, Fut>(
		&self, mut attempt: F,
	) -> (Result<T, object_store::Error>, u32)
	where
		F: FnMut() -> Fut,
		Fut: Future<Output = Result<T, object_store::Error>>,
	{
		let start = Instant::now();
		let mut attempts = 0;
		let result = (|| {
			attempts += 1;
			attempt()
		})
		.retry(self.backoff())
		.sleep(tokio::time::sleep)
		.when(|err| FailureKind::of(err).is_transient())
		// No retry starts past the time budget.
		.adjust(|_, pause| pause.filter(|pause| start.elapsed() + *pause <= self.max_elapsed))
		.notify(|err, pause| {
			tracing::debug!(failure = %FailureKind::of(err), ?pause, "transient failure, retrying");
		})
		.await;
		(result, attempts)
	}

	/// Runs one request with the per-attempt timeout; a request that takes longer fails as
	/// timed out (a transient failure).
	pub(crate) async fn timed<T>(
		&self, request: impl Future<Output = Result<T, object_store::Error>>,
	) -> Result<T, object_store::Error> {
		within(self.attempt_timeout, request).await
	}
}

/// Runs `request`, abandoned as timed out (a transient failure) once it takes longer than
/// `limit`.
pub(crate) async fn within<T>(
	limit: Duration, request: impl Future<Output = Result<T, object_store::Error>>,
) -> Result<T, object_store::Error> {
	match tokio::time::timeout(limit, request).await {
		Ok(outcome) => outcome,
		Err(_) => Err(object_store::Error::Generic {
			store: "ldk-object-store",
			source: Box::new(std::io::Error::new(
				std::io::ErrorKind::TimedOut,
				format!("request abandoned after {limit:?}"),
			)),
		}),
	}
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
		let policy = fast(3);
		let (res, attempts) = policy
			.run(|| {
				policy.timed(async {
					if calls.fetch_add(1, Ordering::SeqCst) == 0 {
						std::future::pending::<()>().await;
					}
					Ok::<_, object_store::Error>(1)
				})
			})
			.await;
		assert_eq!(res.unwrap(), 1);
		assert_eq!(attempts, 2);
	}
}
