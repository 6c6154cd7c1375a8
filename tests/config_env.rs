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
	std::env::set_var("LDK_OBJECT_STORE_MAX_IN_FLIGHT", "many");
	let err = StoreBuilder::from_env().unwrap_err().to_string();
	assert!(err.contains("LDK_OBJECT_STORE_MAX_IN_FLIGHT") && err.contains("many"), "{err}");

	std::env::set_var("LDK_OBJECT_STORE_MAX_IN_FLIGHT", "8");
	std::env::set_var("LDK_OBJECT_STORE_MAX_ATTEMPTS", "2");
	let store = StoreBuilder::from_env().unwrap().build().unwrap();
	KVStoreSync::write(&store, "", "", "manager", vec![1, 2]).unwrap();
	assert_eq!(std::fs::read(dir.path().join("node-7/manager")).unwrap(), vec![1, 2]);
}
