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
	// Each part on a prefix of its own; for a pair, both copies must then hold the same.
	let part = |label: &str| backend.fresh(label);
	let rwr = part("rwr");
	suite::read_write_remove(&rwr.store()).await;
	rwr.assert_copies_equal().await;
	let listing = part("list");
	suite::list_one_namespace_only(&listing.store(), &listing).await;
	listing.assert_copies_equal().await;
	suite::invalid_names_are_refused(&part("invalid").store()).await;
	let large = part("large");
	suite::large_values(&large.store()).await;
	large.assert_copies_equal().await;
	let target = backends::memory("migration-target").store();
	let all = part("all");
	suite::list_all_keys_and_migration(&all.store(), target).await;
	all.assert_copies_equal().await;
	let order = part("order");
	suite::order_of_calls_decides(&order.store()).await;
	order.assert_copies_equal().await;
	let race = part("race");
	suite::last_call_wins_under_concurrency(&race.store(), 200).await;
	race.assert_copies_equal().await;
	let pages = part("pages");
	suite::list_across_pages(&pages.store()).await;
	pages.assert_copies_equal().await;
	let markers = part("markers");
	suite::directory_markers_are_not_keys(&markers.store(), &markers).await;

	// The ordering checks again with random latency on every request, so that later requests
	// would overtake earlier ones if the store let them.
	let latency = Arc::new(RandomLatency { max: Duration::from_millis(5) });
	let slow = part("slow").wrapped(|s| Hooked::wrap(s, latency));
	suite::order_of_calls_decides(&slow.store()).await;
	suite::last_call_wins_under_concurrency(&slow.store(), 300).await;
	slow.assert_copies_equal().await;
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

// The same suite on pairs (see `ldk_object_store::replica`): every write and remove goes to both
// copies, and after each part both copies hold the same keys and contents. A pair doubles the
// load on the servers, which share CI's two cores with the whole suite: the lease is given more
// time (the lease itself is tested in tests/lease.rs, tests/takeover.rs and tests/replica.rs).

fn pair(primary: Backend, replica: Backend) -> Backend {
	patient(primary.paired_with(replica))
}

fn patient(pair: Backend) -> Backend {
	pair.tuned(|builder| {
		builder.with_writer_lease(
			ldk_object_store::lease::LeaseConfig::default()
				.with_ttl(Duration::from_secs(120))
				.with_safety_margin(Duration::from_secs(40)),
		)
	})
}

#[tokio::test]
async fn conformance_pair_memory_memory() {
	run_suite(pair(backends::memory("conformance"), backends::memory("replica"))).await;
}

#[tokio::test]
async fn conformance_pair_localstack_seaweedfs() {
	if let (Some(primary), Some(replica)) =
		(backends::s3("LOCALSTACK", "conformance"), backends::s3("SEAWEEDFS", "replica"))
	{
		run_suite(pair(primary, replica)).await;
	}
}

#[tokio::test]
async fn conformance_pair_localstack_azurite() {
	if let (Some(primary), Some(replica)) =
		(backends::s3("LOCALSTACK", "conformance"), backends::azurite("replica"))
	{
		run_suite(pair(primary, replica)).await;
	}
}

#[tokio::test]
async fn conformance_pair_localstack_directory() {
	if let Some(primary) = backends::s3("LOCALSTACK", "conformance") {
		run_suite(patient(primary.paired_with_directory())).await;
	}
}
