//! The `ldk-object-store` command line on real data: a store written by a real LDK flow through
//! the monitor persister (monitors, pending updates, a force-close), then damaged on purpose.

mod common;

use std::process::{Command, Output};
use std::sync::Arc;

use common::backends::{self, Backend};
use common::dual_flow::{dual_flow, stored_layout};
use lightning::util::persist::KVStoreSync;
use object_store::local::LocalFileSystem;
use serde_json::Value;

fn cli(args: &[&str]) -> Output {
	Command::new(env!("CARGO_BIN_EXE_ldk-object-store")).args(args).output().expect("runs")
}

fn code(output: &Output) -> i32 {
	output.status.code().expect("exit code")
}

fn text(output: &Output) -> String {
	format!(
		"{}{}",
		String::from_utf8_lossy(&output.stdout),
		String::from_utf8_lossy(&output.stderr)
	)
}

fn json(args: &[&str]) -> (i32, Value) {
	let mut all = vec!["--json"];
	all.extend_from_slice(args);
	let output = cli(&all);
	let value =
		serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output)));
	(code(&output), value)
}

/// A backend in a directory of its own, and its `file://` URL.
fn dir_backend(dir: &tempfile::TempDir, name: &str) -> (Backend, String) {
	let root = dir.path().join(name);
	std::fs::create_dir_all(&root).unwrap();
	// In code a directory cannot hold a lease object; the CLI's file:// URL takes the OS lock.
	let backend = backends::memory(name)
		.wrapped(|_| Arc::new(LocalFileSystem::new_with_prefix(&root).unwrap()))
		.tuned(|builder| builder.without_writer_lease());
	let url = format!("file://{}/{}", root.display(), backend.prefix);
	(backend, url)
}

#[test]
fn ls_verify_gc_migrate_and_doctor_on_real_node_data() {
	let dir = tempfile::tempdir().unwrap();
	let (ours, url) = dir_backend(&dir, "ours");
	let (other, _) = dir_backend(&dir, "other");
	let ours_backends = [ours, other];
	dual_flow(&[backends::memory("ldk-a"), backends::memory("ldk-b")], &ours_backends, 1000, 6);
	let store = ours_backends[0].store();
	let (monitor, stored_id, pending) = stored_layout(&store);
	assert!(pending.len() > 3);

	// ls: one monitor with its pending updates.
	let (status, listing) = json(&["ls", &url]);
	assert_eq!(status, 0);
	assert_eq!(listing["monitors"][0]["key"], monitor.as_str());
	assert_eq!(listing["monitors"][0]["update_id"], stored_id);
	assert_eq!(listing["monitors"][0]["pending_updates"], pending.len());

	// verify: clean, then a gap is a problem (exit 1) that names the updates past it.
	let (status, report) = json(&["verify", &url]);
	assert_eq!(status, 0, "{report}");
	assert_eq!(report["monitors"][0]["update_id"], pending.last().copied().unwrap());
	let gap = pending[pending.len() / 2];
	let gap_key = gap.to_string();
	let removed = KVStoreSync::read(&store, "monitor_updates", &monitor, &gap_key).unwrap();
	KVStoreSync::remove(&store, "monitor_updates", &monitor, &gap_key, false).unwrap();
	let output = cli(&["verify", &url]);
	assert_eq!(code(&output), 1, "{}", text(&output));
	assert!(text(&output).contains("gap before update"), "{}", text(&output));
	KVStoreSync::write(&store, "monitor_updates", &monitor, &gap_key, removed).unwrap();
	// A corrupt update object fails the load, by name.
	let last = pending.last().unwrap().to_string();
	let good = KVStoreSync::read(&store, "monitor_updates", &monitor, &last).unwrap();
	KVStoreSync::write(&store, "monitor_updates", &monitor, &last, vec![1, 2, 3]).unwrap();
	let output = cli(&["verify", &url]);
	assert_eq!(code(&output), 1);
	assert!(
		text(&output).contains(&format!("monitor_updates/{monitor}/{last}")),
		"{}",
		text(&output)
	);
	KVStoreSync::write(&store, "monitor_updates", &monitor, &last, good).unwrap();

	// gc: a stale and an orphaned update object; dry run (exit 1, nothing deleted), then --apply.
	let orphan = "cd".repeat(32);
	KVStoreSync::write(&store, "monitor_updates", &monitor, &stored_id.to_string(), vec![0])
		.unwrap();
	KVStoreSync::write(&store, "monitor_updates", &orphan, "3", vec![0]).unwrap();
	let (status, dry) = json(&["gc", &url]);
	assert_eq!((status, dry["objects"].as_u64()), (1, Some(2)), "{dry}");
	assert_eq!(KVStoreSync::list(&store, "monitor_updates", &orphan).unwrap().len(), 1);
	let (status, applied) = json(&["gc", "--apply", &url]);
	assert_eq!((status, applied["objects"].as_u64()), (0, Some(2)));
	assert!(KVStoreSync::list(&store, "monitor_updates", &orphan).unwrap().is_empty());
	assert_eq!(stored_layout(&store).2, pending, "gc touched a pending update");
	assert_eq!(json(&["gc", &url]).0, 0);

	// migrate: copies and verifies; a second run skips; a conflict is refused unless --overwrite.
	let target = format!("file://{}/migrated", dir.path().display());
	let (status, first) = json(&["migrate", &url, &target]);
	assert_eq!(status, 0, "{first}");
	assert_eq!(first["copied"], first["keys"]);
	let (status, second) = json(&["migrate", &url, &target]);
	assert_eq!((status, &second["already_there"]), (0, &first["keys"]));
	// While a node runs on the destination, migrate refuses to write there.
	let node = ldk_object_store::StoreBuilder::from_url(&target).build().unwrap();
	let (status, refused) = json(&["migrate", &url, &target]);
	assert_eq!(status, 2, "{refused}");
	assert!(refused.to_string().contains("writer lease"), "{refused}");
	let (status, lease) = json(&["lease", &target]);
	assert_eq!((status, &lease["locked"]), (0, &serde_json::Value::Bool(true)), "{lease}");
	drop(node);
	assert_eq!(json(&["lease", &target]).1["locked"], false);
	// Another writer's conflicting key, written while no node runs.
	let migrated =
		ldk_object_store::StoreBuilder::from_url(&target).without_writer_lease().build().unwrap();
	KVStoreSync::write(&migrated, "monitors", "", &monitor, vec![9]).unwrap();
	let (status, conflict) = json(&["migrate", &url, &target]);
	assert_eq!(status, 1);
	assert_eq!(conflict["conflicts"][0], format!("monitors//{monitor}"));
	assert_eq!(
		KVStoreSync::read(&migrated, "monitors", "", &monitor).unwrap(),
		vec![9],
		"overwritten"
	);
	assert_eq!(json(&["migrate", "--overwrite", &url, &target]).0, 0);
	assert_eq!(json(&["verify", &target]).0, 0, "the migrated copy must load");

	// doctor on a local directory: everything passes and nothing is left behind.
	let before = json(&["ls", &url]).1;
	let (status, doctor) = json(&["doctor", &url]);
	assert_eq!(status, 0, "{doctor}");
	assert_eq!(json(&["ls", &url]).1, before, "doctor left objects behind");
}

#[test]
fn bad_arguments_and_unreachable_stores_exit_2_with_a_message() {
	for (args, expected) in [
		(vec!["ls", "ftp://x"], "unsupported store URL scheme"),
		(vec!["ls", "s3:///no-bucket"], "names no bucket"),
		(vec!["-o", "nonsense", "ls", "memory://"], "KEY=VALUE"),
		(vec!["-o", "aws_bogus=1", "ls", "s3://b"], "aws_bogus"),
		(vec!["verify"], "URL"),
	] {
		let output = cli(&args);
		assert_eq!(code(&output), 2, "{args:?}: {}", text(&output));
		assert!(text(&output).contains(expected), "{args:?}: {}", text(&output));
	}
	// Nothing listens on this port: a clear connection error, exit 2, and no secret in it.
	let output = cli(&[
		"-o",
		"aws_endpoint=http://127.0.0.1:9",
		"-o",
		"aws_allow_http=true",
		"-o",
		"aws_access_key_id=k",
		"-o",
		"aws_secret_access_key=hunter2-secret",
		"ls",
		"s3://bucket/p",
	]);
	assert_eq!(code(&output), 2, "{}", text(&output));
	assert!(!text(&output).contains("hunter2"), "{}", text(&output));
}

#[test]
fn doctor_on_s3_servers() {
	for server in ["LOCALSTACK", "SEAWEEDFS"] {
		let Some(_) = backends::s3(server, "doctor") else { continue };
		let url = std::env::var(format!("LDK_OS_TEST_{server}_URL")).unwrap();
		let endpoint = std::env::var(format!("LDK_OS_TEST_{server}_ENDPOINT")).unwrap();
		let endpoint_option = format!("aws_endpoint={endpoint}");
		let url = format!("{url}/doctor-{:x}", fastrand::u64(..));
		let (status, report) =
			json(&["-o", &endpoint_option, "-o", "aws_allow_http=true", "doctor", &url]);
		assert_eq!(status, 0, "{server}: {report}");
		if server == "SEAWEEDFS" {
			// SeaweedFS checks signatures: with a wrong secret every check fails, none reads as "absent".
			let (status, report) = json(&[
				"-o",
				&endpoint_option,
				"-o",
				"aws_allow_http=true",
				"-o",
				"aws_secret_access_key=wrong",
				"doctor",
				&url,
			]);
			assert_eq!(status, 1, "{report}");
			assert_eq!(report["checks"][1]["ok"], false, "{report}");
		}
	}
}

/// `lease URL` shows the holder of an object lease; `--break` takes it away after confirmation,
/// and the holder learns at its next renewal that it lost it.
#[test]
fn lease_shows_and_breaks_the_holder() {
	let (Ok(url), Ok(endpoint)) = (
		std::env::var("LDK_OS_TEST_LOCALSTACK_URL"),
		std::env::var("LDK_OS_TEST_LOCALSTACK_ENDPOINT"),
	) else {
		assert!(backends::s3("LOCALSTACK", "cli-lease").is_none());
		return;
	};
	let url = format!("{url}/cli-lease-{:x}", fastrand::u64(..));
	let endpoint_option = format!("aws_endpoint={endpoint}");
	let args = |rest: &[&str]| {
		let mut all = vec!["-o", endpoint_option.as_str(), "-o", "aws_allow_http=true", "lease"];
		all.extend_from_slice(rest);
		all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
	};
	let run = |rest: &[&str]| {
		let all = args(rest);
		json(&all.iter().map(String::as_str).collect::<Vec<_>>())
	};
	assert_eq!(run(&[&url]).1["lease"], serde_json::Value::Null);
	let node = ldk_object_store::StoreBuilder::from_url(&url)
		.with_option("aws_endpoint", endpoint.clone())
		.with_option("aws_allow_http", "true")
		.with_writer_lease(
			ldk_object_store::lease::LeaseConfig::default()
				.with_ttl(std::time::Duration::from_secs(3))
				.with_safety_margin(std::time::Duration::from_secs(1)),
		)
		.build()
		.unwrap();
	let held = node.writer_lease().unwrap();
	let (status, shown) = run(&[&url]);
	assert_eq!(status, 0, "{shown}");
	assert_eq!(shown["lease"]["instance"], held.info().instance.as_str());
	assert_eq!(shown["lease"]["generation"], 1);
	// Without confirmation nothing happens (stdin is empty).
	let (status, _) = run(&[&url, "--break"]);
	assert_eq!(status, 2);
	assert!(held.is_held());
	let (status, broken) = run(&[&url, "--break", "--yes"]);
	assert_eq!(status, 0, "{broken}");
	assert_eq!(broken["broken"]["instance"], held.info().instance.as_str());
	let waiting = std::thread::spawn(move || futures::executor::block_on(held.lost()));
	let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
	while !waiting.is_finished() {
		assert!(std::time::Instant::now() < deadline, "the holder never noticed");
		std::thread::sleep(std::time::Duration::from_millis(20));
	}
	assert!(node.write("", "", "manager", vec![1]).is_err());
	let (_, after) = run(&[&url]);
	assert_eq!(after["lease"]["released"], true, "{after}");
	assert_eq!(after["lease"]["generation"], 2, "{after}");
}
