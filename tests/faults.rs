//! Failures of the backend, injected by wrappers around real stores: a missing object answered with
//! 403 or 500 is never "not found", transient failures are retried, and the bounds on requests in
//! flight hold.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::backends::{self, Backend};
use common::wrappers::{CountInFlight, FailFirst, Hooked, InFlight, MissingAnswers};
use futures::future::join_all;
use ldk_object_store::{FailureKind, RetryPolicy};
use lightning::io::ErrorKind;
use lightning::util::persist::{KVStore, KVStoreSync};

fn quick_retries(max_attempts: u32) -> RetryPolicy {
	RetryPolicy {
		max_attempts,
		initial_backoff: Duration::from_millis(1),
		max_backoff: Duration::from_millis(5),
		max_elapsed: Duration::from_secs(30),
	}
}

/// A read of a missing object that the backend answers with 403 or 500 fails with that, and the
/// message names the operation and the key; only the real absence is `NotFound`.
fn missing_answered_with_errors_is_never_not_found(backend: &Backend) {
	let plain = backend.store();
	assert_eq!(
		KVStoreSync::read(&plain, "monitors", "", "absent").unwrap_err().kind(),
		ErrorKind::NotFound
	);

	for (answer, kind) in [
		(MissingAnswers::Forbidden, ErrorKind::PermissionDenied),
		(MissingAnswers::ServerError, ErrorKind::Other),
	] {
		let faulty = backend.wrapped(|s| Hooked::wrap(s, Arc::new(answer)));
		let store = faulty.builder().with_retry(quick_retries(3)).build().unwrap();
		let err = KVStoreSync::read(&store, "monitors", "", "absent").unwrap_err();
		assert_eq!(err.kind(), kind, "{err}");
		let message = err.to_string();
		assert!(message.contains("read of monitors//absent"), "{message}");
		let inner =
			err.get_ref().and_then(|e| e.downcast_ref::<ldk_object_store::Error>()).unwrap();
		assert_ne!(inner.failure_kind(), Some(FailureKind::NotFound));
		// Present objects still read through the same wrapper.
		KVStoreSync::write(&store, "monitors", "", "present", vec![7]).unwrap();
		assert_eq!(KVStoreSync::read(&store, "monitors", "", "present").unwrap(), vec![7]);
	}
}

#[test]
fn strict_not_found_memory() {
	missing_answered_with_errors_is_never_not_found(&backends::memory("strict"));
}

#[test]
fn strict_not_found_localstack() {
	if let Some(backend) = backends::s3("LOCALSTACK", "strict") {
		missing_answered_with_errors_is_never_not_found(&backend);
	}
}

/// SeaweedFS checks signatures: a client with a wrong secret gets a real 403 from a real server,
/// for a key that does not exist too.
#[test]
fn wrong_credentials_on_a_real_server_are_not_not_found() {
	let (Ok(url), Ok(endpoint)) = (
		std::env::var("LDK_OS_TEST_SEAWEEDFS_URL"),
		std::env::var("LDK_OS_TEST_SEAWEEDFS_ENDPOINT"),
	) else {
		assert!(backends::s3("SEAWEEDFS", "credentials").is_none());
		return;
	};
	let store = ldk_object_store::StoreBuilder::from_url(format!("{url}/wrong-credentials"))
		.with_option("aws_endpoint", endpoint)
		.with_option("aws_allow_http", "true")
		.with_option("aws_access_key_id", "test")
		.with_option("aws_secret_access_key", "not-the-secret")
		.with_retry(quick_retries(2))
		.build()
		.unwrap();
	for err in [
		KVStoreSync::read(&store, "monitors", "", "absent").unwrap_err(),
		KVStoreSync::list(&store, "monitors", "").unwrap_err(),
	] {
		assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
	}
	let err = KVStoreSync::write(&store, "monitors", "", "k", vec![1]).unwrap_err();
	assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
	assert!(!err.to_string().contains("not-the-secret"), "the secret leaked: {err}");
}

/// Transient failures are retried until they pass; without retries they surface as errors that
/// are not `NotFound`.
fn transient_failures_are_retried(backend: &Backend) {
	let faults = FailFirst::new(3);
	let flaky = backend.wrapped(|s| Hooked::wrap(s, Arc::clone(&faults)));
	let store = flaky.builder().with_retry(quick_retries(5)).build().unwrap();
	KVStoreSync::write(&store, "p", "", "k", vec![1]).unwrap();
	assert_eq!(faults.requests.load(Ordering::SeqCst), 4, "3 failures, then the write");
	assert_eq!(KVStoreSync::read(&store, "p", "", "k").unwrap(), vec![1]);

	let faults = FailFirst::new(1);
	let flaky = backend.wrapped(|s| Hooked::wrap(s, Arc::clone(&faults)));
	let store = flaky.builder().with_retry(RetryPolicy::none()).build().unwrap();
	let err = KVStoreSync::read(&store, "p", "", "absent").unwrap_err();
	assert_eq!(err.kind(), ErrorKind::Other, "{err}");
	assert!(err.to_string().contains("read of p//absent failed after 1 attempt(s)"), "{err}");
	assert!(err.to_string().contains("503"), "{err}");
}

#[test]
fn retries_memory() {
	transient_failures_are_retried(&backends::memory("retries"));
}

#[test]
fn retries_localstack() {
	if let Some(backend) = backends::s3("LOCALSTACK", "retries") {
		transient_failures_are_retried(&backend);
	}
}

/// Never more requests in flight than configured, and never two for one key, while many
/// operations on a few keys and many keys run at once.
async fn bounds_hold(backend: &Backend) {
	let counter = Arc::new(InFlight::default());
	let counted =
		backend.wrapped(|s| Hooked::wrap(s, Arc::new(CountInFlight(Arc::clone(&counter)))));
	let store = counted.builder().with_max_in_flight(4).build().unwrap();
	let mut futures = Vec::new();
	for i in 0..300 {
		let key = format!("k{}", i % 12);
		futures.push(KVStore::write(&store, "bounds", "", &key, vec![i as u8]));
		if i % 5 == 0 {
			futures.push(KVStore::remove(&store, "bounds", "", &key, true));
		}
	}
	for result in join_all(futures).await {
		result.unwrap();
	}
	let (max_total, max_per_key) = counter.maxima();
	assert!(counter.requests() >= 300);
	assert_eq!(
		max_total,
		4,
		"the bound of 4 was {}",
		if max_total > 4 { "exceeded" } else { "never reached" }
	);
	assert_eq!(max_per_key, 1, "two requests for one key were in flight at once");
}

#[tokio::test]
async fn bounds_memory() {
	bounds_hold(&backends::memory("bounds")).await;
}

#[tokio::test]
async fn bounds_localstack() {
	if let Some(backend) = backends::s3("LOCALSTACK", "bounds") {
		bounds_hold(&backend).await;
	}
}
