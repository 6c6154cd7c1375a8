//! Configuration from the environment. One test in its own binary: it changes the process's
//! environment.

use ldk_object_store::StoreBuilder;
use lightning::util::persist::KVStoreSync;

#[test]
fn store_from_environment_variables() {
	std::env::remove_var("LDK_OBJECT_STORE_URL");
	let err = StoreBuilder::from_env().unwrap_err().to_string();
	assert!(err.contains("LDK_OBJECT_STORE_URL"), "{err}");

	let dir = tempfile::tempdir().unwrap();
	std::env::set_var("LDK_OBJECT_STORE_URL", format!("file://{}", dir.path().display()));
	std::env::set_var("LDK_OBJECT_STORE_PREFIX", "node-7");
	// A new node: its directory is created (without this a missing one is refused).
	std::env::set_var("LDK_OBJECT_STORE_CREATE_IF_MISSING", "true");
	std::env::set_var("LDK_OBJECT_STORE_MAX_IN_FLIGHT", "many");
	let err = StoreBuilder::from_env().unwrap_err().to_string();
	assert!(err.contains("LDK_OBJECT_STORE_MAX_IN_FLIGHT") && err.contains("many"), "{err}");

	std::env::set_var("LDK_OBJECT_STORE_MAX_IN_FLIGHT", "8");
	std::env::set_var("LDK_OBJECT_STORE_MAX_ATTEMPTS", "2");
	let store = StoreBuilder::from_env().unwrap().build().unwrap();
	KVStoreSync::write(&store, "", "", "manager", vec![1, 2]).unwrap();
	assert_eq!(std::fs::read(dir.path().join("node-7/manager")).unwrap(), vec![1, 2]);

	// Encryption from the environment: a bad key is refused without being echoed; a good one
	// leaves only ciphertext (and encrypted names) on disk.
	std::env::set_var("LDK_OBJECT_STORE_ENCRYPTION_KEY", "zz-not-a-key-hunter2");
	let err = StoreBuilder::from_env().unwrap_err().to_string();
	assert!(err.contains("LDK_OBJECT_STORE_ENCRYPTION_KEY") && !err.contains("hunter2"), "{err}");
	let key = "11".repeat(32);
	std::env::set_var("LDK_OBJECT_STORE_ENCRYPTION_KEY", &key);
	std::env::set_var("LDK_OBJECT_STORE_ENCRYPT_NAMES", "true");
	std::env::set_var("LDK_OBJECT_STORE_PREFIX", "node-8");
	let builder = StoreBuilder::from_env().unwrap();
	assert!(!format!("{builder:?}").contains(&key), "the key leaked into Debug");
	let store = builder.build().unwrap();
	KVStoreSync::write(&store, "monitors", "", "secret_name", b"PLAINTEXT-MARKER".to_vec())
		.unwrap();
	assert_eq!(
		KVStoreSync::read(&store, "monitors", "", "secret_name").unwrap(),
		b"PLAINTEXT-MARKER"
	);
	let mut found = Vec::new();
	let mut dirs = vec![dir.path().join("node-8")];
	while let Some(d) = dirs.pop() {
		for entry in std::fs::read_dir(d).unwrap() {
			let path = entry.unwrap().path();
			if path.is_dir() {
				dirs.push(path);
			} else {
				found.push((path.display().to_string(), std::fs::read(&path).unwrap()));
			}
		}
	}
	assert_eq!(found.len(), 1);
	let (name, bytes) = &found[0];
	assert!(!name.contains("monitors") && !name.contains("secret_name"), "{name}");
	assert!(!bytes.windows(16).any(|w| w == b"PLAINTEXT-MARKER"));
	drop(store);

	// The writer lease is on unless turned off by name.
	std::env::remove_var("LDK_OBJECT_STORE_ENCRYPTION_KEY");
	std::env::set_var("LDK_OBJECT_STORE_PREFIX", "node-9");
	let leased = StoreBuilder::from_env().unwrap().build().unwrap();
	assert!(leased.writer_lease().unwrap().is_held());
	std::env::set_var("LDK_OBJECT_STORE_WRITER_LEASE", "maybe");
	let err = StoreBuilder::from_env().unwrap_err().to_string();
	assert!(err.contains("LDK_OBJECT_STORE_WRITER_LEASE") && err.contains("maybe"), "{err}");
	std::env::set_var("LDK_OBJECT_STORE_WRITER_LEASE", "false");
	let unleased = StoreBuilder::from_env().unwrap().build().unwrap();
	assert!(unleased.writer_lease().is_none());
}
