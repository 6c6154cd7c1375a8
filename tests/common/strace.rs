//! Counting the fsync calls of a child process under strace: the child is a test of the same
//! binary, run alone with `env` set to `<which>;<data dir>`, which tells it what to do and where.

use std::process::Command;

/// The fsync and fdatasync calls that the test `child` makes (and every thread it starts) when
/// run with `env` = `<which>;<a fresh data directory>`. `None` when strace is not installed,
/// unless `LDK_OS_TEST_REQUIRE_SERVERS=1` (as in CI, which installs it): then that fails.
pub fn syncs_of_child(child: &str, env: &str, which: &str) -> Option<usize> {
	let dir = tempfile::tempdir().unwrap();
	let trace = dir.path().join("trace");
	let data = dir.path().join("data");
	std::fs::create_dir_all(&data).unwrap();
	let status = Command::new("strace")
		.arg("-f")
		.args(["-e", "trace=fsync,fdatasync", "-o"])
		.arg(&trace)
		.arg(std::env::current_exe().unwrap())
		.args(["--exact", child, "--nocapture", "--test-threads=1"])
		.env(env, format!("{which};{}", data.display()))
		.status();
	match status {
		Ok(status) => assert!(status.success(), "the {which} child failed"),
		Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
			let required = std::env::var("LDK_OS_TEST_REQUIRE_SERVERS").is_ok_and(|v| v == "1");
			assert!(!required, "strace is not installed (.ci/run installs it)");
			println!("skipping the fsync count: strace is not installed");
			return None;
		},
		Err(e) => panic!("running strace: {e}"),
	}
	let trace = std::fs::read_to_string(&trace).unwrap();
	Some(
		trace.lines().filter(|line| line.contains("fsync(") || line.contains("fdatasync(")).count(),
	)
}
