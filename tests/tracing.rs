//! Every operation leaves a `tracing` record with the operation, namespace, key, size, outcome and
//! duration, and never the object's contents or a credential.

mod common;

use ldk_object_store::StoreBuilder;
use lightning::util::persist::KVStoreSync;

#[test]
fn operations_are_traced_without_contents_or_secrets() {
	let log = common::log_capture::capture(tracing::Level::DEBUG);

	let dir = tempfile::tempdir().unwrap();
	let store = StoreBuilder::from_url(format!("file://{}", dir.path().display())).build().unwrap();
	let secret_value = b"SECRET-CONTENT-0123456789".to_vec();
	KVStoreSync::write(&store, "monitors", "", "abcd_1", secret_value.clone()).unwrap();
	assert_eq!(KVStoreSync::read(&store, "monitors", "", "abcd_1").unwrap(), secret_value);
	assert!(KVStoreSync::read(&store, "monitors", "", "missing").is_err());

	// A configuration error names the option but not its value.
	let err = StoreBuilder::from_url("s3://bucket")
		.with_option("aws_secret_access_key_typo", "hunter2-secret")
		.build()
		.unwrap_err();
	tracing::error!(%err, "configuration refused");

	// Closing a store is not losing its lease: no error, an info line.
	let leased = StoreBuilder::from_url("memory:///closing").build().unwrap();
	leased.close_blocking();

	let log = log.text();
	println!("{log}");
	assert!(log.contains("writer lease released"), "closing a store logs its release");
	assert!(!log.contains("writer lease lost"), "closing a store is not a loss");
	for expected in [
		"op=write",
		"op=read",
		"primary_namespace=\"monitors\"",
		"key=\"abcd_1\"",
		"bytes=25",
		"outcome=\"ok\"",
		"outcome=not found",
		"elapsed_us=",
		"attempts=1",
		"aws_secret_access_key_typo",
	] {
		assert!(log.contains(expected), "missing {expected:?} in the log");
	}
	assert!(!log.contains("SECRET-CONTENT"), "object contents reached the log");
	assert!(!log.contains("hunter2"), "a secret reached the log");
}
