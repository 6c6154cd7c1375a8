//! The conformance suite against every backend: in-memory, a local directory, and each server the
//! environment configures (see `tests/common/backends.rs`): the S3 servers and Azurite. Google
//! Cloud Storage has no emulator here that takes object_store's uploads; `tests/cloud_emulators.rs`
//! tests what fake-gcs-server does serve.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::backends::{self, Backend};
use common::conformance as suite;
use common::wrappers::{Hooked, RandomLatency};

async fn run_suite(backend: Backend) {
	println!("conformance on {}", backend.name);
	suite::read_write_remove(&backend.fresh("rwr").store()).await;
	let listing = backend.fresh("list");
	suite::list_one_namespace_only(&listing.store(), &listing).await;
	suite::invalid_names_are_refused(&backend.fresh("invalid").store()).await;
	suite::large_values(&backend.fresh("large").store()).await;
	let target = backends::memory("migration-target").store();
	suite::list_all_keys_and_migration(&backend.fresh("all").store(), target).await;
	suite::order_of_calls_decides(&backend.fresh("order").store()).await;
	suite::last_call_wins_under_concurrency(&backend.fresh("race").store(), 200).await;
	suite::list_across_pages(&backend.fresh("pages").store()).await;
	let markers = backend.fresh("markers");
	suite::directory_markers_are_not_keys(&markers.store(), &markers).await;

	// The ordering checks again with random latency on every request, so that later requests
	// would overtake earlier ones if the store let them.
	let latency = Arc::new(RandomLatency { max: Duration::from_millis(5) });
	let slow = backend.fresh("slow").wrapped(|s| Hooked::wrap(s, latency));
	suite::order_of_calls_decides(&slow.store()).await;
	suite::last_call_wins_under_concurrency(&slow.store(), 300).await;
}

#[tokio::test]
async fn conformance_memory() {
	run_suite(backends::memory("conformance")).await;
}

#[tokio::test]
async fn conformance_local_directory() {
	run_suite(backends::local_dir("conformance")).await;
}

#[tokio::test]
async fn conformance_localstack() {
	if let Some(backend) = backends::s3("LOCALSTACK", "conformance") {
		run_suite(backend).await;
	}
}

#[tokio::test]
async fn conformance_seaweedfs() {
	if let Some(backend) = backends::s3("SEAWEEDFS", "conformance") {
		run_suite(backend).await;
	}
}

#[tokio::test]
async fn conformance_minio() {
	if let Some(backend) = backends::s3("MINIO", "conformance") {
		run_suite(backend).await;
	}
}

#[tokio::test]
async fn conformance_azurite() {
	if let Some(backend) = backends::azurite("conformance") {
		run_suite(backend).await;
	}
}
