//! The encryption key never reaches a log line, an error message or a `Debug` output, also when
//! operations fail (tampered objects, a wrong key, a malformed key). A test binary of its own,
//! because the capturing `tracing` subscriber is global (the store logs from its own runtime's
//! threads).

mod common;

use std::sync::Arc;

use ldk_object_store::encryption::{EncryptNames, EncryptedStore, EncryptionKey};
use ldk_object_store::{RetryPolicy, StoreBuilder};
use lightning::util::persist::{KVStoreSync, MigratableKVStore};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

const KEY_HEX: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00123456789abcdef0fedcba987654321";
const CONTENTS: &[u8] = b"SECRET-CONTENTS-do-not-log";

/// Forms of the key that must never be seen: its hex in both cases, and the start of the
/// `Debug` output of its bytes.
fn forbidden() -> Vec<String> {
	let raw: Vec<u8> =
		(0..32).map(|i| u8::from_str_radix(&KEY_HEX[2 * i..2 * i + 2], 16).unwrap()).collect();
	vec![
		KEY_HEX.to_string(),
		KEY_HEX.to_uppercase(),
		KEY_HEX[..16].to_string(),
		format!("{:?}", &raw[..6]).trim_end_matches(']').to_string(),
		format!("{:02x?}", &raw[..6]).trim_end_matches(']').to_string(),
	]
}

fn assert_clean(what: &str, text: &str) {
	for secret in forbidden() {
		assert!(!text.contains(&secret), "key material {secret:?} in {what}: {text}");
	}
	assert!(!text.contains(std::str::from_utf8(CONTENTS).unwrap()), "contents in {what}: {text}");
}

#[test]
fn the_key_never_reaches_logs_errors_or_debug_output() {
	let log = common::log_capture::capture(tracing::Level::TRACE);
	let runtime = tokio::runtime::Runtime::new().unwrap();
	let mut texts: Vec<(String, String)> = Vec::new();
	let mut record = |what: &str, text: String| {
		tracing::error!(what, %text, "recorded");
		texts.push((what.to_string(), text));
	};

	let key = EncryptionKey::from_hex(KEY_HEX).unwrap();
	record("key Debug", format!("{key:?}"));
	assert_eq!(format!("{key:?}"), "EncryptionKey(<redacted>)");
	for bad in [&KEY_HEX[..63], &format!("{}x", &KEY_HEX[..63])] {
		let err = EncryptionKey::from_hex(bad).unwrap_err();
		record("key error", format!("{err} / {err:?}"));
	}

	let raw: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
	for names in [EncryptNames::No, EncryptNames::Yes] {
		let encrypted = Arc::new(
			EncryptedStore::new(Arc::clone(&raw), key.clone(), names).with_identity("node-log"),
		);
		record("store Debug", format!("{encrypted:?} / {encrypted}"));
		assert!(format!("{encrypted:?}").contains("node-log"), "the identity is not secret");
		let quick = RetryPolicy { max_attempts: 2, ..RetryPolicy::none() };
		let store = StoreBuilder::from_store(encrypted.clone())
			.with_prefix("node")
			.with_retry(quick.clone())
			.build()
			.unwrap();
		record("builder Debug", format!("{:?}", StoreBuilder::from_store(encrypted.clone())));
		KVStoreSync::write(&store, "monitors", "", "abcd_0", CONTENTS.to_vec()).unwrap();
		assert_eq!(KVStoreSync::read(&store, "monitors", "", "abcd_0").unwrap(), CONTENTS);
		record("list", format!("{:?}", store.list_all_keys().unwrap()));

		// A tampered object: the read fails (twice, with a retry in between).
		let logical = Path::from("node/monitors/abcd_0");
		let stored = encrypted.stored_path(&logical).unwrap();
		runtime.block_on(async {
			let mut bytes = raw.get(&stored).await.unwrap().bytes().await.unwrap().to_vec();
			bytes[30] ^= 0xff;
			raw.put(&stored, PutPayload::from(bytes)).await.unwrap();
		});
		let err = KVStoreSync::read(&store, "monitors", "", "abcd_0").unwrap_err();
		record("tampered read", format!("{err} / {err:?}"));
		let err = runtime.block_on(encrypted.get(&logical)).unwrap_err();
		record("tampered get", format!("{err} / {err:?}"));

		// A wrong key.
		let wrong = Arc::new(EncryptedStore::new(
			Arc::clone(&raw),
			EncryptionKey::from_bytes([7; 32]),
			names,
		));
		KVStoreSync::write(&store, "", "", "manager", CONTENTS.to_vec()).unwrap();
		// With plaintext names its writer lease is found but does not decrypt: refused at build.
		// (With encrypted names a wrong key looks up another name; `with_encryption` checks the
		// key before the lease.)
		let lease = StoreBuilder::from_store(wrong.clone()).with_prefix("node").build();
		if names == EncryptNames::No {
			let err = lease.expect_err("a wrong key cannot read the lease");
			record("wrong key lease", format!("{err} / {err:?}"));
		}
		let wrong_store = StoreBuilder::from_store(wrong.clone())
			.with_prefix("node")
			.with_retry(quick)
			.without_writer_lease()
			.build();
		let err = KVStoreSync::read(&wrong_store.unwrap(), "", "", "manager").unwrap_err();
		record("wrong key read", format!("{err} / {err:?}"));
		if let Err(err) = runtime.block_on(wrong.check_key()) {
			record("wrong key check", format!("{err} / {err:?}"));
		}
		KVStoreSync::remove(&store, "", "", "manager", false).unwrap();
		KVStoreSync::remove(&store, "monitors", "", "abcd_0", false).unwrap();
	}

	let log = log.text();
	println!("{log}");
	assert!(log.contains("EncryptionKey(<redacted>)"), "the key's Debug output was logged");
	assert!(log.contains("op=read"), "the store's own spans were captured");
	assert!(log.contains("failed to decrypt"), "the failures were logged");
	assert_clean("the log", &log);
	for (what, text) in &texts {
		assert_clean(what, text);
	}
}
