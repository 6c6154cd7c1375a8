//! The `ldk-object-store` command line on real data: a store written by a real LDK flow through
//! the monitor persister (monitors, pending updates, a force-close), then damaged on purpose.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backends::{self, Backend};
use common::dual_flow::{dual_flow, stored_layout};
use lightning::util::persist::{KVStoreSync, MigratableKVStore};
use object_store::local::LocalFileSystem;
use serde_json::Value;

fn command(args: &[&str]) -> Command {
	let mut command = Command::new(env!("CARGO_BIN_EXE_ldk-object-store"));
	command.args(args);
	command
}

fn cli(args: &[&str]) -> Output {
	command(args).output().expect("runs")
}

/// Runs every command at once (each may spend seconds in retries) and returns their outputs.
fn cli_all(commands: Vec<Command>) -> Vec<Output> {
	let children: Vec<_> = commands
		.into_iter()
		.map(|mut c| c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("runs"))
		.collect();
	children.into_iter().map(|child| child.wait_with_output().expect("ends")).collect()
}

/// The names in a directory, sorted.
fn entries(dir: &Path) -> Vec<String> {
	let mut names: Vec<String> = std::fs::read_dir(dir)
		.unwrap()
		.map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
		.collect();
	names.sort();
	names
}

/// `-o` options for an S3 endpoint, with made-up credentials.
fn s3_at(endpoint: &str) -> Vec<String> {
	[
		format!("aws_endpoint={endpoint}"),
		"aws_allow_http=true".into(),
		"aws_access_key_id=k".into(),
		"aws_secret_access_key=hunter2-secret".into(),
	]
	.into_iter()
	.flat_map(|option| ["-o".to_owned(), option])
	.collect()
}

/// An address where nothing listens: a port just bound and released.
fn closed_port() -> String {
	let listener = TcpListener::bind("127.0.0.1:0").unwrap();
	let address = listener.local_addr().unwrap();
	drop(listener);
	format!("http://{address}")
}

/// A server that accepts connections and never answers.
fn silent_server() -> String {
	let listener = TcpListener::bind("127.0.0.1:0").unwrap();
	let address = listener.local_addr().unwrap();
	std::thread::spawn(move || {
		let mut held = Vec::new();
		for connection in listener.incoming() {
			held.push(connection);
		}
	});
	format!("http://{address}")
}

fn with(options: &[String], args: &[&str]) -> Vec<String> {
	options.iter().cloned().chain(args.iter().map(|a| a.to_string())).collect()
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
	let other_url = format!("file://{}/other/{}", dir.path().display(), ours_backends[1].prefix);

	// Pointed at a parent of node roots, the read-only commands refuse (exit 2) and name them.
	let parent = format!("file://{}/ours", dir.path().display());
	for command in ["ls", "verify", "gc"] {
		let output = cli(&[command, &parent]);
		assert_eq!(code(&output), 2, "{command}: {}", text(&output));
		assert!(text(&output).contains("no node data"), "{command}: {}", text(&output));
		assert!(text(&output).contains(&url), "{command}: {}", text(&output));
	}
	let output = cli(&["ls", &format!("file://{}", dir.path().display())]);
	assert_eq!(code(&output), 2, "{}", text(&output));
	assert!(text(&output).contains("2 node root(s)"), "{}", text(&output));
	assert!(
		text(&output).contains(&url) && text(&output).contains(&other_url),
		"{}",
		text(&output)
	);
	// A bare absolute path is the same location as its file:// URL.
	let bare = url.trim_start_matches("file://");
	assert!(bare.starts_with('/'));
	assert_eq!(json(&["ls", bare]), json(&["ls", &url]));

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

	// gc: a stale update object, an archived channel's leftover update, and the update of a
	// channel whose monitor is neither stored nor archived (kept: it may be a channel being
	// opened); dry run (exit 1, nothing deleted), then --apply.
	let (archived, unknown) = ("cd".repeat(32), "ce".repeat(32));
	KVStoreSync::write(&store, "monitor_updates", &monitor, &stored_id.to_string(), vec![0])
		.unwrap();
	KVStoreSync::write(&store, "archived_monitors", "", &archived, vec![0]).unwrap();
	KVStoreSync::write(&store, "monitor_updates", &archived, "3", vec![0]).unwrap();
	KVStoreSync::write(&store, "monitor_updates", &unknown, "4", vec![0]).unwrap();
	let (status, dry) = json(&["gc", &url]);
	assert_eq!((status, dry["objects"].as_u64()), (1, Some(2)), "{dry}");
	assert_eq!(dry["kept_namespaces"][0], unknown.as_str(), "{dry}");
	assert_eq!(KVStoreSync::list(&store, "monitor_updates", &archived).unwrap().len(), 1);
	let (status, applied) = json(&["gc", "--apply", &url]);
	assert_eq!((status, applied["objects"].as_u64()), (0, Some(2)));
	assert!(KVStoreSync::list(&store, "monitor_updates", &archived).unwrap().is_empty());
	assert_eq!(KVStoreSync::list(&store, "monitor_updates", &unknown).unwrap().len(), 1);
	KVStoreSync::remove(&store, "monitor_updates", &unknown, "4", false).unwrap();
	KVStoreSync::remove(&store, "archived_monitors", "", &archived, false).unwrap();
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
	assert!(refused.to_string().contains("holds the lock"), "{refused}");
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

	// doctor on a local directory: everything passes and nothing is left behind, not even the
	// probes' empty directory.
	let before = json(&["ls", &url]).1;
	let node_dir = Path::new(url.trim_start_matches("file://"));
	let files_before = entries(node_dir);
	let (status, doctor) = json(&["doctor", &url]);
	assert_eq!(status, 0, "{doctor}");
	assert_eq!(json(&["ls", &url]).1, before, "doctor left objects behind");
	assert_eq!(entries(node_dir), files_before, "doctor left files or directories behind");

	// On a server, the same: a parent prefix of two nodes is refused and the nodes are named.
	if backends::s3("LOCALSTACK", "cli_parent_prefix").is_some() {
		let bucket = std::env::var("LDK_OS_TEST_LOCALSTACK_URL").unwrap();
		let endpoint = std::env::var("LDK_OS_TEST_LOCALSTACK_ENDPOINT").unwrap();
		let options = vec![
			"-o".to_owned(),
			format!("aws_endpoint={endpoint}"),
			"-o".into(),
			"aws_allow_http=true".into(),
		];
		let parent = format!("{}/cli-parent-{:x}", bucket.trim_end_matches('/'), fastrand::u64(..));
		let (node_a, node_b) = (format!("{parent}/node-a"), format!("{parent}/node-b"));
		for (from, to) in [(&url, &node_a), (&other_url, &node_b)] {
			let output = cli(&with(&options, &["migrate", from, to])
				.iter()
				.map(String::as_str)
				.collect::<Vec<_>>());
			assert_eq!(code(&output), 0, "{}", text(&output));
		}
		let run = |args: &[&str]| {
			cli(&with(&options, args).iter().map(String::as_str).collect::<Vec<_>>())
		};
		for command in ["ls", "verify", "gc"] {
			let output = run(&[command, &parent]);
			assert_eq!(code(&output), 2, "{command}: {}", text(&output));
			assert!(text(&output).contains(&node_a), "{command}: {}", text(&output));
			assert!(text(&output).contains(&node_b), "{command}: {}", text(&output));
		}
		assert_eq!(code(&run(&["verify", &node_a])), 0);
		let output = run(&["ls", &format!("{parent}/nothing-here")]);
		assert_eq!(code(&output), 2, "{}", text(&output));
		assert!(text(&output).contains("nothing is stored there"), "{}", text(&output));
	}
}

#[test]
fn read_only_commands_never_create_a_directory_nor_call_an_empty_one_clean() {
	let dir = tempfile::tempdir().unwrap();
	let missing = dir.path().join("no-such-node");
	let missing_url = format!("file://{}", missing.display());
	let missing_path = missing.display().to_string();
	for command in ["ls", "verify", "gc", "doctor"] {
		for location in [&missing_url, &missing_path] {
			let output = cli(&[command, location]);
			assert_eq!(code(&output), 2, "{command} {location}: {}", text(&output));
			assert!(text(&output).contains("does not exist"), "{command}: {}", text(&output));
			assert!(!missing.exists(), "{command} {location} created the directory");
		}
	}
	let output = cli(&["migrate", &missing_url, &format!("file://{}/copy", dir.path().display())]);
	assert_eq!(code(&output), 2, "{}", text(&output));
	assert!(!missing.exists() && !dir.path().join("copy").exists(), "migrate created a directory");

	// An empty directory is not a clean node; neither is one with other files only.
	let empty = dir.path().join("empty");
	std::fs::create_dir(&empty).unwrap();
	let empty_url = format!("file://{}", empty.display());
	for command in ["ls", "verify", "gc"] {
		let output = cli(&[command, &empty_url]);
		assert_eq!(code(&output), 2, "{command}: {}", text(&output));
		assert!(text(&output).contains("nothing is stored there"), "{command}: {}", text(&output));
	}
	let (status, report) =
		json(&["migrate", &empty_url, &format!("file://{}/copy", dir.path().display())]);
	assert_eq!(status, 2, "{report}");
	assert!(report["error"].as_str().unwrap().contains("nothing to migrate"), "{report}");
	std::fs::write(empty.join("notes"), b"not a node").unwrap();
	let output = cli(&["verify", &empty_url]);
	assert_eq!(code(&output), 2, "{}", text(&output));
	assert!(text(&output).contains("1 object(s), but no ChannelManager"), "{}", text(&output));

	// doctor on an existing directory leaves it as it found it.
	let (status, report) = json(&["doctor", &empty_url]);
	assert_eq!(status, 0, "{report}");
	assert_eq!(entries(&empty), ["notes"], "doctor left something behind");
}

#[test]
fn help_goes_to_stdout_with_exit_code_0() {
	for args in [vec!["--help"], vec!["doctor", "--help"], vec!["--version"]] {
		let output = cli(&args);
		assert_eq!(code(&output), 0, "{args:?}: {}", text(&output));
		assert!(
			!output.stdout.is_empty() && output.stderr.is_empty(),
			"{args:?}: {}",
			text(&output)
		);
	}
	assert!(String::from_utf8_lossy(&cli(&["doctor", "--help"]).stdout).contains("--timeout"));
}

#[test]
fn doctor_is_bounded_and_says_what_went_wrong() {
	// A server that accepts and never answers: the first check times out within its half of the
	// default --timeout, is reported as a timeout, and the store is unusable (exit 2).
	let started = Instant::now();
	let silent = s3_at(&silent_server());
	let (status, report) = json(
		&with(&silent, &["doctor", "s3://bucket/p"]).iter().map(String::as_str).collect::<Vec<_>>(),
	);
	let took = started.elapsed();
	assert_eq!(status, 2, "{report}");
	assert_eq!(report["checks"][0]["timed_out"], true, "{report}");
	assert_eq!(report["checks"][1]["run"], false, "{report}");
	// A watchdog, not a speed claim: before the bound, this took 210 s.
	assert!(took < Duration::from_secs(60), "doctor took {took:?}");
	let output = cli(&with(&silent, &["doctor", "--timeout", "2", "s3://bucket/p"])
		.iter()
		.map(String::as_str)
		.collect::<Vec<_>>());
	assert_eq!(code(&output), 2, "{}", text(&output));
	assert!(text(&output).contains("timed out: no answer within"), "{}", text(&output));

	// A closed port: a connection failure, not a timeout, and the other checks are not run.
	let closed = s3_at(&closed_port());
	let (status, report) = json(
		&with(&closed, &["doctor", "s3://bucket/p"]).iter().map(String::as_str).collect::<Vec<_>>(),
	);
	assert_eq!(status, 2, "{report}");
	assert_eq!(
		(&report["checks"][0]["ok"], &report["checks"][0]["timed_out"]),
		(&false.into(), &false.into()),
		"{report}"
	);
	assert_eq!(report["unusable"], "no connection to the store", "{report}");
	assert!(!report.to_string().contains("hunter2"), "{report}");

	// No credentials at all: said so, and no advice about s3:ListBucket.
	let mut bare = command(&[
		"-o",
		&format!("aws_endpoint={}", closed_port()),
		"-o",
		"aws_allow_http=true",
		"doctor",
		"--timeout",
		"5",
		"s3://bucket/p",
	]);
	for var in [
		"AWS_ACCESS_KEY_ID",
		"AWS_SECRET_ACCESS_KEY",
		"AWS_SESSION_TOKEN",
		"AWS_WEB_IDENTITY_TOKEN_FILE",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI",
		"AWS_SKIP_SIGNATURE",
	] {
		bare.env_remove(var);
	}
	let output = bare.output().unwrap();
	assert_eq!(code(&output), 2, "{}", text(&output));
	assert!(text(&output).contains("no AWS credentials are configured"), "{}", text(&output));
	assert!(!text(&output).contains("s3:ListBucket"), "{}", text(&output));
}

#[test]
fn an_unreachable_store_exits_2_for_every_command_after_the_retry_policy() {
	let closed = s3_at(&closed_port());
	// A source with a key, for a migrate whose destination is unreachable.
	let dir = tempfile::tempdir().unwrap();
	std::fs::write(dir.path().join("manager"), b"m").unwrap();
	let local = format!("file://{}", dir.path().display());
	let runs: Vec<Vec<String>> = vec![
		with(&closed, &["ls", "s3://bucket/p"]),
		with(&closed, &["verify", "s3://bucket/p"]),
		with(&closed, &["gc", "s3://bucket/p"]),
		with(&closed, &["doctor", "s3://bucket/p"]),
		with(&closed, &["migrate", "s3://bucket/p", &local]),
		with(&closed, &["migrate", &local, "s3://bucket/p"]),
	];
	let outputs = cli_all(
		runs.iter()
			.map(|args| command(&args.iter().map(String::as_str).collect::<Vec<_>>()))
			.collect(),
	);
	for (args, output) in runs.iter().zip(&outputs) {
		let shown = text(output);
		assert_eq!(code(output), 2, "{args:?}: {shown}");
		assert!(!shown.contains("hunter2"), "{args:?}: {shown}");
		// Display, not Debug: no struct dumps.
		assert!(!shown.contains(" { ") && !shown.contains("Storage"), "{args:?}: {shown}");
	}
	// The listings go through the store's retry policy, like every other operation.
	for output in &outputs[..3] {
		let shown = text(output);
		assert!(shown.contains("attempt(s)") && !shown.contains("after 1 attempt(s)"), "{shown}");
	}
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
	// A node with a short lease (3 s to live, renewed every second).
	let start_node = || {
		ldk_object_store::StoreBuilder::from_url(&url)
			.with_option("aws_endpoint", endpoint.clone())
			.with_option("aws_allow_http", "true")
			.with_writer_lease(
				ldk_object_store::lease::LeaseConfig::default()
					.with_ttl(std::time::Duration::from_secs(3))
					.with_safety_margin(std::time::Duration::from_secs(1)),
			)
			.build()
			.unwrap()
	};
	let node = start_node();
	let held = node.writer_lease().unwrap();
	let (status, shown) = run(&[&url]);
	assert_eq!(status, 0, "{shown}");
	assert_eq!(shown["lease"]["instance"], held.info().instance.as_str());
	assert_eq!(shown["lease"]["generation"], 1);
	// Without confirmation nothing happens (stdin is empty).
	let (status, _) = run(&[&url, "--break"]);
	assert_eq!(status, 2);
	assert!(held.is_held());
	// A live holder's lease is not broken without --force: it renewed recently.
	let (status, refused) = run(&[&url, "--break", "--yes"]);
	assert_eq!(status, 2, "{refused}");
	assert!(refused.to_string().contains("looks alive"), "{refused}");
	assert!(held.is_held());

	// A dead holder (frozen, as a stopped process): once its lease expired, `--break` watches it
	// for its time to live plus the skew allowance, then releases it.
	held.freeze_for_testing(true);
	std::thread::sleep(std::time::Duration::from_secs(4));
	let (status, broken) = run(&[&url, "--break", "--yes"]);
	assert_eq!(status, 0, "{broken}");
	assert_eq!(broken["broken"]["instance"], held.info().instance.as_str());
	assert_eq!(broken["released"], true, "{broken}");
	assert!(node.write("", "", "manager", vec![1]).is_err());
	let (_, after) = run(&[&url]);
	assert_eq!(after["lease"]["released"], true, "{after}");
	assert_eq!(after["lease"]["generation"], 2, "{after}");
	drop(node);

	// `--force` against a live holder: it stops at its next renewal, and the lease belongs to
	// nobody until the holder's trust has ended for sure.
	let node = start_node();
	let held = node.writer_lease().unwrap();
	let (status, forced) = run(&[&url, "--break", "--force", "--yes"]);
	assert_eq!(status, 0, "{forced}");
	assert_eq!(forced["released"], false, "{forced}");
	assert!(forced["free_after_unix_ms"].as_u64().is_some(), "{forced}");
	let waiting = std::thread::spawn(move || futures::executor::block_on(held.lost()));
	let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
	while !waiting.is_finished() {
		assert!(std::time::Instant::now() < deadline, "the holder never noticed");
		std::thread::sleep(std::time::Duration::from_millis(20));
	}
	assert!(node.write("", "", "manager", vec![2]).is_err());
	let (_, after) = run(&[&url]);
	assert_eq!(after["lease"]["broken"], true, "{after}");
	assert_eq!(after["lease"]["generation"], 4, "{after}");
}

/// `lease` takes every location form the other commands take: a `file://` URL, an absolute path
/// and a relative one (before, a plain path failed with "relative URL without a base").
#[test]
fn lease_takes_the_same_locations_as_the_other_commands() {
	let dir = tempfile::tempdir().unwrap();
	let node = dir.path().join("node");
	std::fs::create_dir(&node).unwrap();
	let url = format!("file://{}", node.display());
	let absolute = node.display().to_string();
	let expected = json(&["lease", &url]);
	assert_eq!(expected.0, 0, "{}", expected.1);
	assert_eq!(expected.1["locked"], false, "{}", expected.1);
	assert_eq!(json(&["lease", &absolute]), expected);
	for relative in ["node", "./node"] {
		let output =
			command(&["--json", "lease", relative]).current_dir(dir.path()).output().unwrap();
		assert_eq!(code(&output), 0, "{relative}: {}", text(&output));
		let shown: Value = serde_json::from_slice(&output.stdout).unwrap();
		assert_eq!(shown, expected.1, "{relative}");
	}
	// A missing directory is an error, as for the other read-only commands, and is not created.
	let output = command(&["lease", "./no-such-node"]).current_dir(dir.path()).output().unwrap();
	assert_eq!(code(&output), 2, "{}", text(&output));
	assert!(text(&output).contains("does not exist"), "{}", text(&output));
	assert!(!dir.path().join("no-such-node").exists());
}

/// On a folder that is no node root, `ls`, `verify` and `gc` find the node roots below it level
/// by level, without listing what lies below a found root, below a cache folder (`CACHEDIR.TAG`,
/// as in Cargo's `target/`) or deeper than 4 levels. Those places hold a symlink to their own
/// folder: listing one fails ("File system loop found"), so the command succeeding in finding the
/// roots shows that none of them was listed. Before, one listing of everything below the location
/// walked all of a repository's `target/` (and failed here on the first loop).
#[cfg(unix)]
#[test]
fn parent_folders_are_searched_level_by_level_without_listing_unrelated_trees() {
	use std::os::unix::fs::symlink;
	let dir = tempfile::tempdir().unwrap();
	let parent = dir.path().join("parent");
	let write = |path: &str, contents: &[u8]| {
		let path = parent.join(path);
		std::fs::create_dir_all(path.parent().unwrap()).unwrap();
		std::fs::write(path, contents).unwrap();
	};
	let never_listed = |folder: &str| {
		let folder = parent.join(folder);
		std::fs::create_dir_all(&folder).unwrap();
		symlink(".", folder.join("loop")).unwrap();
	};
	// Only the names matter to the search (it reads no node data), so plain bytes stand in for a
	// node's objects.
	write("notes.txt", b"not a node");
	write("node-a/manager", b"m");
	write(".hidden-node/manager", b"m");
	write(&format!("nodes/node-b/monitors/{}_0", "ab".repeat(32)), b"monitor");
	never_listed("nodes/node-b/extra");
	// An empty monitors folder does not make a node root.
	std::fs::create_dir_all(parent.join("decoy/monitors")).unwrap();
	// A cache, by the Cache Directory Tagging Specification.
	write("target/CACHEDIR.TAG", b"Signature: 8a477f597d28d172789f06886806bc55\n# cargo\n");
	never_listed("target/debug");
	// A tag without the signature does not make a cache.
	write("not-a-cache/CACHEDIR.TAG", b"Signature: this is not the signature of the spec\n");
	write("not-a-cache/node-c/manager", b"m");
	// A node root 4 levels down is found; nothing deeper is listed.
	write("deep/1/2/node-d/manager", b"m");
	never_listed("deep/1/2/3/4");

	let url = format!("file://{}", parent.display());
	let roots = ["node-a", ".hidden-node", "nodes/node-b", "not-a-cache/node-c", "deep/1/2/node-d"];
	for command in ["ls", "verify", "gc"] {
		let output = cli(&[command, &url]);
		let shown = text(&output);
		assert_eq!(code(&output), 2, "{command}: {shown}");
		assert!(shown.contains("5 node root(s) below it"), "{command}: {shown}");
		for root in roots {
			assert!(shown.contains(&format!("{url}/{root}\n")), "{command}, {root}: {shown}");
		}
		assert!(!shown.contains("decoy"), "{command}: {shown}");
		// parent, its 7 folders, decoy/monitors, deep/1, nodes/node-b and its monitors,
		// not-a-cache/node-c, deep/1/2, deep/1/2/3 and deep/1/2/node-d.
		assert!(
			shown.contains(
				"searched 16 folder(s), up to 4 levels down, skipping the cache folder(s) target \
				 (tagged by a CACHEDIR.TAG); deeper folders were not searched"
			),
			"{command}: {shown}"
		);
	}

	// Without node roots below, the error says how far it looked and what to point it at.
	for root in ["node-a", ".hidden-node", "nodes", "not-a-cache", "deep/1/2/node-d"] {
		std::fs::remove_dir_all(parent.join(root)).unwrap();
	}
	let output = cli(&["verify", &url]);
	let shown = text(&output);
	assert_eq!(code(&output), 2, "{shown}");
	assert!(shown.contains("nor in the folders below it (searched 8 folder(s)"), "{shown}");
	assert!(shown.contains("point the command at a node's root"), "{shown}");

	// At most 1,000 folders are listed: a node root past them is not found, and the error says
	// that the search stopped.
	for i in 0..1000 {
		std::fs::create_dir(parent.join(format!("empty-{i:04}"))).unwrap();
	}
	write("zz-node/manager", b"m");
	let output = cli(&["verify", &url]);
	let shown = text(&output);
	assert_eq!(code(&output), 2, "{shown}");
	assert!(shown.contains("searched 1000 folder(s)"), "{shown}");
	assert!(shown.contains("stopped at 1000 folders, so some were not searched"), "{shown}");
	assert!(!shown.contains("zz-node"), "{shown}");
}

/// One copy of a pair for the `replica` commands: the URL of a parent of node roots (node `n`
/// is at `{url}/n`), the backend options a store built here needs, and the raw backend below
/// it (at `backend.prefix`).
struct Copy {
	url: String,
	options: Vec<(String, String)>,
	backend: Backend,
}

impl Copy {
	fn node(&self, name: &str) -> String {
		format!("{}/{name}", self.url)
	}

	fn builder(&self, name: &str) -> ldk_object_store::StoreBuilder {
		let builder = ldk_object_store::StoreBuilder::from_url(self.node(name));
		self.options.iter().fold(builder, |builder, (key, value)| builder.with_option(key, value))
	}

	/// A store over node `name` without the writer lease, to look or change things behind the
	/// pair's back.
	fn view(&self, name: &str) -> ldk_object_store::ObjectKvStore {
		self.builder(name).without_writer_lease().build().expect("a view builds")
	}

	/// Puts node `name`'s replica record as a writer of the pair would.
	fn put_record(&self, name: &str, record: &ldk_object_store::replica::ReplicaRecord) {
		use object_store::ObjectStoreExt;
		let root = object_store::path::Path::from(format!("{}/{name}", self.backend.prefix));
		let path = ldk_object_store::replica::record_path(&root);
		let runtime = tokio::runtime::Runtime::new().unwrap();
		runtime
			.block_on(self.backend.object_store.put(&path, record.encode().into_bytes().into()))
			.expect("the record is written");
	}
}

/// A pair of copies and the command-line options that reach them: `-o` for both, then
/// `--replica-option` for the replica's own.
struct Pair {
	primary: Copy,
	replica: Copy,
	options: Vec<String>,
	replica_options: Vec<String>,
}

impl Pair {
	/// `ldk-object-store [-o …] replica SUBCOMMAND ARGS… [--replica-option …]`, with no replica
	/// from the environment.
	fn command(&self, json: bool, args: &[impl AsRef<str>]) -> Command {
		let mut all: Vec<String> = json.then(|| "--json".to_owned()).into_iter().collect();
		all.extend(self.options.iter().cloned());
		all.push("replica".into());
		all.extend(args.iter().map(|arg| arg.as_ref().to_owned()));
		all.extend(self.replica_options.iter().cloned());
		let mut command = command(&all.iter().map(String::as_str).collect::<Vec<_>>());
		command.env_remove("LDK_OBJECT_STORE_REPLICA_URL");
		command.env_remove("LDK_OBJECT_STORE_REPLICA_OPTIONS");
		command
	}

	fn text(&self, args: &[impl AsRef<str>]) -> Output {
		self.command(false, args).output().expect("runs")
	}

	fn json(&self, args: &[impl AsRef<str>]) -> (i32, Value) {
		let output = self.command(true, args).output().expect("runs");
		let value = serde_json::from_slice(&output.stdout)
			.unwrap_or_else(|e| panic!("{e}: {}", text(&output)));
		(code(&output), value)
	}
}

/// Writes two real LDK nodes' state (a channel, payments) on the primary, node roots `node-0`
/// and `node-1`, through stores without a replica.
fn node_data_on(primary: &Copy) {
	let options =
		common::ldk_flow::FlowOptions { payments: 2, force_close: false, ..Default::default() };
	let open = |name: &str| primary.builder(name).create_if_missing(true).build().unwrap();
	common::ldk_flow::run_persist_phase(&open, &options);
}

fn sha256_hex(data: &[u8]) -> String {
	use hex_conservative::DisplayHex;
	use sha2::Digest;
	sha2::Sha256::digest(data)[..].to_lower_hex_string()
}

/// Whether a copy's lease, as `replica status --json` shows it, is free: an unlocked directory,
/// or a released object lease.
fn lease_free(lease: &Value) -> bool {
	lease["locked"] == false || lease["released"] == true
}

/// A pair of local directories.
fn directory_pair(dir: &tempfile::TempDir) -> Pair {
	let (primary, primary_url) = dir_backend(dir, "primary");
	let (replica, replica_url) = dir_backend(dir, "replica");
	Pair {
		primary: Copy { url: primary_url, options: Vec::new(), backend: primary },
		replica: Copy { url: replica_url, options: Vec::new(), backend: replica },
		options: Vec::new(),
		replica_options: Vec::new(),
	}
}

/// `fill` copies a node's state to a new replica and records both in sync (`status` shows it,
/// `verify` finds no difference); `verify` names a changed, a missing and an extra key (exit 1,
/// and in JSON with sizes and digests); `fill` trusts a replica recorded in sync, `repair` does
/// not and fixes all three; both are refused while a node runs on the pair, as `promote` is;
/// `promote` refuses a replica recorded as filling (a fill interrupted), and promotes one in
/// sync, after which the old primary is retired: `status` says so, and neither `fill` nor a node
/// starts on it; the promoted copy loads as a node (`verify`).
fn fill_verify_repair_promote(pair: &Pair) {
	use ldk_object_store::replica::{ReplicaRecord, Role, SyncState};
	node_data_on(&pair.primary);
	let (primary, replica) = (pair.primary.node("node-0"), pair.replica.node("node-0"));
	let with_replica = |args: &[&str]| {
		let mut all: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
		all.extend([primary.clone(), "--replica".into(), replica.clone()]);
		all
	};
	let run = |args: &[&str]| pair.json(&with_replica(args));
	let keys = MigratableKVStore::list_all_keys(&pair.primary.view("node-0")).unwrap();
	assert!(keys.len() >= 4, "{keys:?}");

	let (status, filled) = run(&["fill"]);
	assert_eq!(status, 0, "{filled}");
	assert_eq!(
		(&filled["sync"], &filled["generation"], &filled["compared"]),
		(&"in-sync".into(), &1.into(), &true.into()),
		"{filled}"
	);
	assert_eq!(
		(filled["copied"].as_u64(), filled["removed"].as_u64()),
		(Some(keys.len() as u64), Some(0))
	);
	assert!(filled["passes"].as_u64() >= Some(2), "a verifying pass ends a fill: {filled}");
	let (status, shown) = run(&["status"]);
	assert_eq!(status, 0, "{shown}");
	for (copy, role) in [("primary", "primary"), ("replica", "replica")] {
		let record = &shown[copy]["record"];
		assert_eq!((&record["role"], &record["generation"]), (&role.into(), &1.into()), "{shown}");
		assert_eq!(record["sync"], "in-sync", "{shown}");
		assert!(lease_free(&shown[copy]["lease"]), "{shown}");
	}
	let (status, verified) = run(&["verify"]);
	assert_eq!(status, 0, "{verified}");
	assert_eq!(verified["keys"].as_u64(), Some(keys.len() as u64), "{verified}");

	// Behind the pair's back, on the replica: a changed manager, a lost monitor, a stray key.
	let replica_view = pair.replica.view("node-0");
	let monitor = KVStoreSync::list(&replica_view, "monitors", "").unwrap()[0].clone();
	let manager = KVStoreSync::read(&replica_view, "", "", "manager").unwrap();
	KVStoreSync::write(&replica_view, "", "", "manager", b"not the manager".to_vec()).unwrap();
	KVStoreSync::remove(&replica_view, "monitors", "", &monitor, false).unwrap();
	KVStoreSync::write(&replica_view, "stray", "", "key", b"x".to_vec()).unwrap();
	let output = pair.text(&with_replica(&["verify"]));
	let shown = text(&output);
	assert_eq!(code(&output), 1, "{shown}");
	assert!(shown.contains("//manager: contents differ"), "{shown}");
	assert!(shown.contains(&format!("monitors//{monitor}: only on the primary")), "{shown}");
	assert!(shown.contains("stray//key: only on the replica"), "{shown}");
	let (status, verified) = run(&["verify"]);
	assert_eq!(status, 1, "{verified}");
	let differences = verified["differences"].as_array().unwrap();
	let monitor_bytes =
		KVStoreSync::read(&pair.primary.view("node-0"), "monitors", "", &monitor).unwrap();
	let expected = [
		serde_json::json!({
			"key": "//manager",
			"primary": { "size": manager.len(), "sha256": sha256_hex(&manager) },
			"replica": { "size": 15, "sha256": sha256_hex(b"not the manager") },
		}),
		serde_json::json!({
			"key": format!("monitors//{monitor}"),
			"primary": { "size": monitor_bytes.len(), "sha256": sha256_hex(&monitor_bytes) },
			"replica": null,
		}),
		serde_json::json!({
			"key": "stray//key",
			"primary": null,
			"replica": { "size": 1, "sha256": sha256_hex(b"x") },
		}),
	];
	assert_eq!(differences, &expected, "{verified}");

	// `fill` trusts the record: nothing compared, the differences stay.
	let (status, filled) = run(&["fill"]);
	assert_eq!(
		(status, &filled["compared"], &filled["copied"]),
		(0, &false.into(), &0.into()),
		"{filled}"
	);
	assert_eq!(run(&["verify"]).0, 1);

	// While a node runs on the pair, neither `fill`, `repair` nor `promote` starts.
	let node = pair
		.primary
		.builder("node-0")
		.with_replica(pair.replica.builder("node-0"))
		.build()
		.unwrap();
	// Each copy's lease is held by this process (each has an instance id of its own).
	let (_, shown) = run(&["status"]);
	for copy in ["primary", "replica"] {
		let lease = &shown[copy]["lease"];
		let ours = lease["released"] == false && lease["pid"] == std::process::id();
		assert!(lease["locked"] == true || ours, "{shown}");
	}
	let promote = vec!["promote".to_owned(), replica.clone()];
	for args in [with_replica(&["fill"]), with_replica(&["repair"]), promote] {
		let (status, refused) = pair.json(&args);
		assert_eq!(status, 2, "{args:?}: {refused}");
		assert!(refused["error"].as_str().unwrap().contains("holds the"), "{args:?}: {refused}");
	}
	node.close_blocking();
	drop(node);

	let (status, repaired) = run(&["repair"]);
	assert_eq!(status, 0, "{repaired}");
	assert_eq!(
		(&repaired["compared"], &repaired["copied"], &repaired["removed"]),
		(&true.into(), &2.into(), &1.into()),
		"{repaired}"
	);
	let (status, verified) = run(&["verify"]);
	assert_eq!((status, &verified["differences"]), (0, &serde_json::json!([])), "{verified}");

	// A replica recorded as filling, as a start that crashed during the fill leaves it, is not
	// promoted; a fill finishes it.
	pair.replica.put_record("node-0", &ReplicaRecord::new(Role::Replica, 1, SyncState::Filling));
	let (status, shown) = run(&["status"]);
	assert_eq!((status, &shown["replica"]["record"]["sync"]), (0, &"filling".into()), "{shown}");
	let (status, refused) = pair.json(&["promote", &replica, "--primary", &primary]);
	assert_eq!(status, 2, "{refused}");
	let refusal = refused["error"].as_str().unwrap();
	assert!(refusal.contains("filling") && refusal.contains("--force"), "{refused}");
	let (status, filled) = run(&["fill"]);
	assert_eq!((status, &filled["compared"]), (0, &true.into()), "{filled}");

	let (status, promoted) = pair.json(&["promote", &replica, "--primary", &primary]);
	assert_eq!(status, 0, "{promoted}");
	assert_eq!(
		(&promoted["generation"], &promoted["old_primary_retired"]),
		(&2.into(), &true.into()),
		"{promoted}"
	);
	assert_eq!(promoted["warnings"], serde_json::json!([]), "{promoted}");
	let (_, shown) = run(&["status"]);
	assert_eq!(
		(&shown["primary"]["record"]["role"], &shown["primary"]["record"]["generation"]),
		(&"retired".into(), &2.into()),
		"{shown}"
	);
	assert_eq!(
		(&shown["replica"]["record"]["role"], &shown["replica"]["record"]["sync"]),
		(&"primary".into(), &"none".into()),
		"{shown}"
	);
	let (status, refused) = run(&["fill"]);
	assert_eq!(status, 2, "{refused}");
	assert!(refused["error"].as_str().unwrap().contains("retired"), "{refused}");
	let err = pair.primary.builder("node-0").build().expect_err("the old primary is retired");
	assert!(err.to_string().contains("retired"), "{err}");
	// The promoted copy loads as a node: its monitor with every update.
	let mut load = vec!["--json".to_owned()];
	load.extend(pair.options.iter().cloned());
	load.extend(pair.replica_options.iter().map(|option| option.replace("--replica-option", "-o")));
	load.extend(["verify".to_owned(), replica.clone()]);
	let output = command(&load.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
	assert_eq!(code(&output), 0, "{}", text(&output));
	let loaded: Value = serde_json::from_slice(&output.stdout).unwrap();
	assert_eq!(loaded["monitors"].as_array().map(Vec::len), Some(1), "{loaded}");
}

#[test]
fn replica_fill_verify_repair_and_promote_on_directories() {
	let dir = tempfile::tempdir().unwrap();
	fill_verify_repair_promote(&directory_pair(&dir));
}

/// The same on a LocalStack primary and a SeaweedFS replica: one bucket name on two servers, so
/// `-o aws_endpoint` (both copies) is overridden by `--replica-option aws_endpoint` (the
/// replica's).
#[test]
fn replica_fill_verify_repair_and_promote_on_localstack_and_seaweedfs() {
	let (Some(primary), Some(replica)) =
		(backends::s3("LOCALSTACK", "cli-replica"), backends::s3("SEAWEEDFS", "cli-replica"))
	else {
		return;
	};
	let endpoint = |server: &str| std::env::var(format!("LDK_OS_TEST_{server}_ENDPOINT")).unwrap();
	let url = |server: &str, backend: &Backend| {
		let bucket = std::env::var(format!("LDK_OS_TEST_{server}_URL")).unwrap();
		format!("{}/{}", bucket.trim_end_matches('/'), backend.prefix)
	};
	let copy = |server: &str, backend: Backend| Copy {
		url: url(server, &backend),
		options: vec![
			("aws_endpoint".into(), endpoint(server)),
			("aws_allow_http".into(), "true".into()),
		],
		backend,
	};
	let pair = Pair {
		primary: copy("LOCALSTACK", primary),
		replica: copy("SEAWEEDFS", replica),
		options: vec![
			"-o".into(),
			format!("aws_endpoint={}", endpoint("LOCALSTACK")),
			"-o".into(),
			"aws_allow_http=true".into(),
		],
		replica_options: vec![
			"--replica-option".into(),
			format!("aws_endpoint={}", endpoint("SEAWEEDFS")),
		],
	};
	fill_verify_repair_promote(&pair);
}

/// `detach` without the replica needs `--force` and says why; with it, it records the replica
/// stale (not promoted) and the primary alone at the next generation, which then starts alone,
/// and not while a node runs on it. The replica comes from `LDK_OBJECT_STORE_REPLICA_URL` when
/// not given. And `detach` refuses to mark "stale" a replica promoted meanwhile (which would
/// let the older primary start beside it): its record is left as it is.
#[test]
fn replica_detach_marks_the_replica_stale_and_leaves_a_promoted_copy_alone() {
	let dir = tempfile::tempdir().unwrap();
	let pair = directory_pair(&dir);
	node_data_on(&pair.primary);
	let (primary, replica) = (pair.primary.node("node-0"), pair.replica.node("node-0"));
	let output = pair.text(&["fill", &primary]);
	assert_eq!(code(&output), 2, "{}", text(&output));
	assert!(text(&output).contains("no replica given"), "{}", text(&output));
	assert_eq!(pair.json(&["fill", &primary, "--replica", &replica]).0, 0);
	let from_env = pair
		.command(true, &["status", &primary])
		.env("LDK_OBJECT_STORE_REPLICA_URL", &replica)
		.output()
		.unwrap();
	let shown: Value = serde_json::from_slice(&from_env.stdout).unwrap();
	assert_eq!(shown["replica"]["record"]["role"], "replica", "{shown}");

	let output = pair.text(&["detach", &primary]);
	let shown = text(&output);
	assert_eq!(code(&output), 2, "{shown}");
	assert!(shown.contains("--force") && shown.contains("still claims to be in sync"), "{shown}");
	let (status, detached) = pair.json(&["detach", &primary, "--replica", &replica]);
	assert_eq!((status, &detached["generation"]), (0, &2.into()), "{detached}");
	let (_, shown) = pair.json(&["status", &primary, "--replica", &replica]);
	assert_eq!(
		(&shown["primary"]["record"]["sync"], &shown["primary"]["record"]["generation"]),
		(&"none".into(), &2.into()),
		"{shown}"
	);
	assert_eq!(
		(&shown["replica"]["record"]["sync"], &shown["replica"]["record"]["generation"]),
		(&"stale".into(), &1.into()),
		"{shown}"
	);
	assert!(shown["note"].as_str().unwrap().contains("generations differ"), "{shown}");
	let (status, refused) = pair.json(&["promote", &replica]);
	assert_eq!(status, 2, "{refused}");
	assert!(refused["error"].as_str().unwrap().contains("stale"), "{refused}");
	let alone = pair.primary.builder("node-0").build().expect("a detached primary starts alone");
	let (status, refused) = pair.json(&["detach", &primary, "--replica", &replica]);
	assert_eq!(status, 2, "{refused}");
	assert!(refused["error"].as_str().unwrap().contains("holds the"), "{refused}");
	alone.close_blocking();
	drop(alone);

	// Filled again, then promoted while the primary is out of reach (no --primary): the old
	// primary still says it has a replica in sync.
	assert_eq!(pair.json(&["fill", &primary, "--replica", &replica]).0, 0);
	let (status, promoted) = pair.json(&["promote", &replica]);
	assert_eq!((status, &promoted["old_primary_retired"]), (0, &false.into()), "{promoted}");
	let output = pair.text(&["promote", &replica]);
	assert_eq!(code(&output), 2, "{}", text(&output));
	assert!(text(&output).contains("already a primary"), "{}", text(&output));
	let (status, refused) = pair.json(&["detach", &primary, "--replica", &replica]);
	assert_eq!(status, 2, "{refused}");
	assert!(refused["error"].as_str().unwrap().contains("not this primary's replica"), "{refused}");
	let (_, shown) = pair.json(&["status", &primary, "--replica", &replica]);
	assert_eq!(
		(&shown["replica"]["record"]["role"], &shown["replica"]["record"]["generation"]),
		(&"primary".into(), &3.into()),
		"the promoted copy's record was changed: {shown}"
	);
	assert_eq!(shown["primary"]["record"]["generation"], 2, "{shown}");
}

/// Degraded mode end to end on a LocalStack primary and a SeaweedFS replica: a real flow's
/// monitor updates replayed through a real `ChainMonitor` on a `LagWhenUnreachable` pair whose
/// replica (the real SeaweedFS store behind a wrapper that fails the PUTs of one update) fails
/// mid-flow. The channel goes on; `replica_health()` shows the lag; while the replica still
/// fails, `replica status` shows the replica stale with the journaled keys, and `replica verify`
/// (read-only: it runs beside the node, which holds the lease) exits 1 naming only journaled
/// keys, among them the failed update; once the replica answers and the catch-up ends, `verify`
/// exits 0 with no difference and `status` shows both in sync with an empty journal.
#[test]
fn replica_lag_mode_shows_the_lag_catches_up_and_verify_then_finds_no_difference() {
	use common::failing_flow;
	let Some(copies) = failing_flow::server_copies("cli-replica-lag") else { return };
	let endpoint = |server: &str| std::env::var(format!("LDK_OS_TEST_{server}_ENDPOINT")).unwrap();
	let url = |server: &str| {
		let bucket = std::env::var(format!("LDK_OS_TEST_{server}_URL")).unwrap();
		format!("{}/{}", bucket.trim_end_matches('/'), copies.prefix)
	};
	let (primary, replica) = (url("LOCALSTACK"), url("SEAWEEDFS"));
	let pair = |subcommand: &str| {
		let (ls, sw) = (endpoint("LOCALSTACK"), endpoint("SEAWEEDFS"));
		let mut command = command(&[
			"--json",
			"-o",
			&format!("aws_endpoint={ls}"),
			"-o",
			"aws_allow_http=true",
			"replica",
			subcommand,
			&primary,
			"--replica",
			&replica,
			"--replica-option",
			&format!("aws_endpoint={sw}"),
		]);
		command.env_remove("LDK_OBJECT_STORE_REPLICA_URL");
		command.env_remove("LDK_OBJECT_STORE_REPLICA_OPTIONS");
		let output = command.output().expect("runs");
		let value: Value = serde_json::from_slice(&output.stdout)
			.unwrap_or_else(|e| panic!("{e}: {}", text(&output)));
		(code(&output), value)
	};
	let mut lagged = false;
	failing_flow::lag_flow(
		&copies,
		|lagging| {
			let (status, shown) = pair("status");
			assert_eq!(status, 0, "{shown}");
			assert_eq!(shown["primary"]["record"]["sync"], "stale", "{shown}");
			let journal_keys = shown["primary"]["journal_keys"].as_u64().unwrap_or(0);
			assert_eq!(journal_keys, lagging.journal.len() as u64, "{shown}");
			let (status, verified) = pair("verify");
			assert_eq!(status, 1, "the replica lacks an acknowledged update: {verified}");
			let differences = verified["differences"].as_array().unwrap();
			let failed = format!("/{}", lagging.fail_id);
			for difference in differences {
				let key = difference["key"].as_str().unwrap();
				assert!(lagging.journal.iter().any(|k| k == key), "not journaled: {verified}");
			}
			let missing =
				differences.iter().find(|d| d["key"].as_str().unwrap().ends_with(&failed));
			let missing = missing.unwrap_or_else(|| panic!("the failed update: {verified}"));
			assert!(missing["primary"].is_object() && missing["replica"].is_null(), "{verified}");
			println!(
				"while lagging: {journal_keys} key(s) journaled, verify found {} difference(s)",
				differences.len()
			);
			lagged = true;
		},
		|store| {
			let (status, verified) = pair("verify");
			assert_eq!(
				(status, &verified["differences"]),
				(0, &serde_json::json!([])),
				"{verified}"
			);
			let keys = MigratableKVStore::list_all_keys(store).unwrap();
			assert!(!keys.is_empty());
			assert_eq!(verified["keys"].as_u64(), Some(keys.len() as u64), "{verified}");
			let (status, shown) = pair("status");
			assert_eq!(status, 0, "{shown}");
			for copy in ["primary", "replica"] {
				assert_eq!(shown[copy]["record"]["sync"], "in-sync", "{copy}: {shown}");
				assert_eq!(shown[copy]["journal_keys"], 0, "{copy}: {shown}");
			}
		},
	);
	assert!(lagged);
}
