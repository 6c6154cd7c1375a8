//! Two LDK nodes keeping their state in an `ObjectKvStore`, then a restart that reads it back.
//!
//! ```text
//! cargo run --example ldk_node_flow [-- [<store URL>] [--wipe] [--payments N] [--keep-open] [--verbose]]
//! ```
//!
//! Phase 1 (persist): two nodes of LDK's functional-test harness, whose `ChainMonitor`s persist
//! their channel monitors through the store, open a channel, pay each other, write their
//! `ChannelManager`s, network graphs and scorers under LDK's keys, and force-close the channel
//! (unless `--keep-open`). After every step the stored monitors are read back and compared with
//! the live ones. Then everything is dropped.
//!
//! Phase 2 (restart): new stores are built on the same URL; every key is listed and read, the
//! monitors are loaded with LDK's `read_channel_monitors`, and each `ChannelManager` is
//! deserialized from the stored bytes, as a node does when it starts. The example prints what
//! it read and checks it against the state phase 1 ended with.
//!
//! The default store is the local directory `./ldk-node-flow-data` (emptied first). Any URL the
//! builder knows works: `s3://bucket/prefix` (credentials and `AWS_ENDPOINT` for S3-compatible
//! servers from the `AWS_*` variables), `gs://…`, `az://…`, `file:///abs/dir`, or `memory://`.
//! Each node uses its own prefix below the URL (`node-0`, `node-1`). A store that already holds
//! keys is refused unless `--wipe` is given.
//!
//! LDK's harness prints every log line to stdout. To keep the output readable, the example runs
//! the flow in a child process of itself with that output discarded; `--verbose` runs it in this
//! process and shows everything.

#[path = "../tests/common/ldk_flow.rs"]
mod ldk_flow;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Instant;

use ldk_object_store::{ObjectKvStore, StoreBuilder};
use lightning::util::persist::{KVStoreSync, MigratableKVStore};
use object_store::memory::InMemory;
use object_store::ObjectStore;

use ldk_flow::{run_persist_phase, run_restart_phase, FlowOptions, PersistSummary, NODE_NAMES};

const DEFAULT_DIR: &str = "ldk-node-flow-data";
/// Set in the child process that runs the flow.
const CHILD_ENV: &str = "LDK_NODE_FLOW_CHILD";
/// Marks the child's report lines on its stderr, apart from the harness's own messages.
const REPORT_MARK: &str = "\u{1}report\u{1}";

struct Args {
	url: String,
	is_default: bool,
	wipe: bool,
	verbose: bool,
	options: FlowOptions,
	/// The arguments as given, for the child process.
	raw: Vec<String>,
}

fn usage() -> String {
	"usage: cargo run --example ldk_node_flow [-- [<store URL>] [--wipe] [--payments N] \
	 [--keep-open] [--verbose]]"
		.to_owned()
}

fn parse_args() -> Result<Args, String> {
	let raw: Vec<String> = std::env::args().skip(1).collect();
	let mut url = None;
	let mut wipe = false;
	let mut verbose = false;
	let mut options = FlowOptions::default();
	let mut it = raw.iter();
	while let Some(arg) = it.next() {
		match arg.as_str() {
			"--wipe" => wipe = true,
			"--verbose" => verbose = true,
			"--keep-open" => options.force_close = false,
			"--payments" => {
				let n =
					it.next().ok_or_else(|| format!("--payments needs a number\n{}", usage()))?;
				options.payments =
					n.parse().map_err(|_| format!("--payments: {n:?} is not a number"))?;
			},
			"-h" | "--help" => return Err(usage()),
			other if other.starts_with('-') => {
				return Err(format!("unknown option {other}\n{}", usage()))
			},
			other if url.is_none() => url = Some(other.to_owned()),
			other => return Err(format!("unexpected argument {other}\n{}", usage())),
		}
	}
	let is_default = url.is_none();
	let url = match url {
		Some(url) => url,
		None => {
			let dir = std::env::current_dir()
				.map_err(|e| format!("finding the current directory: {e}"))?
				.join(DEFAULT_DIR);
			std::fs::create_dir_all(&dir)
				.map_err(|e| format!("creating {}: {e}", dir.display()))?;
			format!("file://{}", dir.display())
		},
	};
	Ok(Args { url, is_default, wipe, verbose, options, raw })
}

fn main() -> ExitCode {
	let args = match parse_args() {
		Ok(args) => args,
		Err(msg) => {
			eprintln!("{msg}");
			return ExitCode::from(2);
		},
	};
	let child = std::env::var_os(CHILD_ENV).is_some();
	if child || args.verbose {
		let report = |text: &str| {
			for line in text.split('\n') {
				if child {
					eprintln!("{REPORT_MARK}{line}");
				} else {
					println!("{line}");
				}
			}
		};
		match run_flow(&args, &report) {
			Ok(()) => ExitCode::SUCCESS,
			Err(msg) => {
				report("");
				report(&format!("FAILED: {msg}"));
				ExitCode::FAILURE
			},
		}
	} else {
		run_in_child(&args)
	}
}

/// Runs the flow in a child process with the harness's stdout discarded, printing the child's
/// report as it comes; on failure also what else the child said (a panic message).
fn run_in_child(args: &Args) -> ExitCode {
	let exe = match std::env::current_exe() {
		Ok(exe) => exe,
		Err(e) => {
			eprintln!("cannot find this program to run the flow: {e}; try --verbose");
			return ExitCode::FAILURE;
		},
	};
	let spawned = Command::new(exe)
		.args(&args.raw)
		.env(CHILD_ENV, "1")
		.stdin(Stdio::null())
		.stdout(Stdio::null())
		.stderr(Stdio::piped())
		.spawn();
	let mut child = match spawned {
		Ok(child) => child,
		Err(e) => {
			eprintln!("cannot start the flow: {e}; try --verbose");
			return ExitCode::FAILURE;
		},
	};
	let mut other = Vec::new();
	let mut closed = false;
	if let Some(stderr) = child.stderr.take() {
		for line in BufReader::new(stderr).lines().map_while(Result::ok) {
			match line.strip_prefix(REPORT_MARK) {
				Some(report) => {
					// Stop quietly if our own output was closed (`| head`).
					if writeln!(std::io::stdout(), "{report}").is_err() {
						let _ = child.kill();
						closed = true;
						break;
					}
				},
				None if is_harness_chatter(&line) => {},
				None => other.push(line),
			}
		}
	}
	match child.wait() {
		Ok(status) if status.success() || closed => ExitCode::SUCCESS,
		Ok(status) => {
			// A failed check was reported above; a panic (in LDK's harness or a check) is here.
			if !other.is_empty() {
				eprintln!("\nthe flow stopped ({status}):");
				for line in &other {
					eprintln!("  {line}");
				}
				eprintln!("(run with --verbose to see LDK's log)");
			}
			ExitCode::FAILURE
		},
		Err(e) => {
			eprintln!("waiting for the flow: {e}");
			ExitCode::FAILURE
		},
	}
}

fn is_harness_chatter(line: &str) -> bool {
	line.starts_with("Using Block Connection Style")
		|| line.starts_with("Connecting block using Block Connection Style")
}

/// Makes the per-node stores. `memory://` stores would each be a new, empty memory, so for
/// that scheme both phases share one in-memory backend.
fn store_factory(url: &str) -> Result<impl Fn(&str) -> ObjectKvStore, String> {
	let shared: Option<Arc<dyn ObjectStore>> =
		url.starts_with("memory:").then(|| Arc::new(InMemory::new()) as Arc<dyn ObjectStore>);
	let build = {
		let url = url.to_owned();
		move |name: &str| match &shared {
			Some(memory) => StoreBuilder::from_store(Arc::clone(memory)).with_prefix(name).build(),
			None => StoreBuilder::from_url(&url).with_prefix(name).build(),
		}
	};
	// Fail here, clearly, rather than inside LDK.
	build(NODE_NAMES[0]).map_err(|e| format!("cannot build a store for {url}: {e}"))?;
	Ok(move |name: &str| {
		build(name).unwrap_or_else(|e| panic!("building the store for {name}: {e}"))
	})
}

fn run_flow(args: &Args, report: &dyn Fn(&str)) -> Result<(), String> {
	report(&format!("LDK nodes persisting to {}", args.url));
	if args.url.starts_with("memory:") {
		report("(memory: both phases share one in-memory backend, lost when the example ends)");
	}
	let open_store = store_factory(&args.url)?;
	prepare_store(args, &open_store, report)?;

	report("");
	report("Phase 1: persist");
	let started = Instant::now();
	let persisted = run_persist_phase(&open_store, &args.options);
	report_persist(&persisted, report);
	report(&format!(
		"  took {:.2?}; nodes, chain monitors, managers and stores dropped",
		started.elapsed()
	));

	report("");
	report("Phase 2: restart from new stores on the same URL");
	let started = Instant::now();
	let restarted = run_restart_phase(&open_store, Some(&persisted)).map_err(|e| e.to_string())?;
	for line in restarted.to_string().lines() {
		report(&format!("  {line}"));
	}
	report(&format!("  took {:.2?}", started.elapsed()));
	report("");
	report(&format!(
		"OK: the restart read {} keys ({} bytes) and {} monitors, matching the state phase 1 \
		 ended with",
		restarted.keys_read(),
		restarted.bytes_read(),
		restarted.monitor_count()
	));
	Ok(())
}

/// Makes sure the nodes start from empty stores: the flow checks exact key sets.
fn prepare_store(
	args: &Args, open_store: &dyn Fn(&str) -> ObjectKvStore, report: &dyn Fn(&str),
) -> Result<(), String> {
	let mut existing = Vec::new();
	for name in NODE_NAMES {
		let store = open_store(name);
		let keys = MigratableKVStore::list_all_keys(&store).map_err(|e| {
			format!(
				"cannot list the store for {name} at {}: {e}\n(for S3 check AWS_ACCESS_KEY_ID, \
				 AWS_SECRET_ACCESS_KEY, AWS_REGION, and AWS_ENDPOINT / AWS_ALLOW_HTTP=true for a \
				 local server)",
				args.url
			)
		})?;
		existing.extend(keys.into_iter().map(|k| (store.clone(), name, k)));
	}
	if existing.is_empty() {
		return Ok(());
	}
	if !(args.wipe || args.is_default) {
		let sample: Vec<String> =
			existing.iter().take(3).map(|(_, n, key)| format!("{n}: {}", key_path(key))).collect();
		return Err(format!(
			"the store already holds {} keys ({}, …); pass --wipe to delete them first, or use \
			 an empty location",
			existing.len(),
			sample.join(", ")
		));
	}
	for (store, name, (p, s, k)) in &existing {
		KVStoreSync::remove(store, p, s, k, false).map_err(|e| {
			format!("removing {name}: {}: {e}", key_path(&(p.clone(), s.clone(), k.clone())))
		})?;
	}
	report(&format!("removed {} keys left by an earlier run", existing.len()));
	Ok(())
}

/// `primary/secondary/key` without the empty namespaces, as the objects are laid out.
fn key_path((p, s, k): &(String, String, String)) -> String {
	[p, s, k]
		.iter()
		.filter(|part| !part.is_empty())
		.map(|part| part.as_str())
		.collect::<Vec<_>>()
		.join("/")
}

fn report_persist(p: &PersistSummary, report: &dyn Fn(&str)) {
	let o = &p.options;
	report(&format!(
		"  {} and {} opened a {} sat channel and made {} payments (alternating direction)",
		NODE_NAMES[0], NODE_NAMES[1], o.channel_value_sat, p.payments_made
	));
	report(&format!(
		"  wrote the ChannelManagers{}",
		if o.write_graph_and_scorer { ", network graphs and scorers" } else { "" }
	));
	if let Some(channel) = p.force_closed {
		report(&format!(
			"  {} force-closed channel {channel}; {} saw the commitment transaction confirmed; \
			 managers written again",
			NODE_NAMES[0], NODE_NAMES[1]
		));
	}
	report(&format!(
		"  stored monitors read back and compared with the live ones {} times: same update ids, \
		 equal monitors{}",
		p.monitor_checks,
		if p.force_closed.is_some() {
			" (after the force-close, up to the events LDK took from the live monitor, which it \
			 does not write again)"
		} else {
			""
		}
	));
	for node in &p.nodes {
		let bytes: usize = node.keys.iter().map(|k| k.bytes).sum();
		report(&format!("  {}: {} keys, {bytes} bytes", node.name, node.keys.len()));
		for m in &node.monitors {
			report(&format!("    monitor {} at update id {}", m.key, m.latest_update_id));
		}
		for c in &node.channels {
			report(&format!(
				"    open channel {}: outbound capacity {} msat, inbound capacity {} msat",
				c.channel_id, c.outbound_capacity_msat, c.inbound_capacity_msat
			));
		}
	}
}
