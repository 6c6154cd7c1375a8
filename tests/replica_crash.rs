//! Crashes of a node with a replica: a child process that starts a primary with its replica (a
//! new, empty one to fill, or one in sync but changed behind the pair's back, to repair) and goes
//! on writing is killed with SIGKILL at random moments; after each kill, this process checks both
//! copies, then restarts the pair.
//!
//! Both copies are `file://` directories: their contents outlive the kill, and a directory's
//! writer lease is an OS lock that the kill releases. The primary holds a real node's state: the
//! first half of node 0's `Persist` calls of an LDK flow (`common::crash_support`: channels,
//! payments both ways, a force-close), written by this crate's persister without consolidation,
//! so the monitors and their update objects are LDK's bytes, and a few hundred other objects
//! (3,000 in the long run). The child (`replica_crash_child`, which does nothing unless
//! `LDK_OS_REPLICA_CRASH_CHILD` is set) builds the pair, which starts the fill (or, with
//! `repair_replica()`, the repair); meanwhile it replays the second half of the calls into an
//! async `MonitorPersister` over the pair and, from another thread, writes new keys and removes
//! old ones, printing each request before it is sent and each completion it is told of. It
//! closes the store once the replica is in sync and it is done writing. Two runs to the end
//! measure how long that takes; then three kills in four land while the replica is filled or
//! repaired, the others after it is in sync. After each kill:
//!
//! - **the start records the truth first**: once the pair's start returned, both copies' records
//!   were written by it (as filling);
//! - **acknowledged means on both**: every write and remove the child was told succeeded, and
//!   every monitor update the persister reported durable, is on both copies (update objects byte
//!   for byte alike);
//! - **a record never claims too much**: a record written by the child that says in sync means
//!   `replica::compare` finds no difference, but where a request was in flight at the kill (it
//!   may have reached one copy only). A record from before the child started may still say in
//!   sync: the replica was changed behind the pair's back, which no store can know until it
//!   compares;
//! - **a restart resumes**: the pair started again (in this process) fills again, records the
//!   replica in sync on both copies, `compare` finds nothing, and the monitors load from the
//!   replica exactly as from the primary, each at least at its last update reported durable
//!   (as LDK counts it: every completion up to it). One case needs the operator's repair
//!   (`repair_replica()`) after the restart, and the test runs it: a repair killed before its
//!   start placed the directory's running mark, as the copies were changed behind the pair's
//!   back before. A request in flight at a kill after the replica was in sync may have reached
//!   one copy only; the kill leaves the running mark, so the restart compares in full and the
//!   copies must then be equal.
//!
//! `LDK_OS_REPLICA_CRASH_KILLS` sets the number of kills (default 16, half during a fill, half
//! during a repair; the ignored test `kills_during_fill_and_repair_long` makes 200 with 3,000
//! objects: `cargo test --test replica_crash -- --ignored kills`), `LDK_OS_REPLICA_CRASH_SEED`
//! the random seed (printed).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bitcoin::Network;
use common::backends;
use common::crash_support::{read_fixture, record_flow, write_fixture, CallKind, RecordedCall};
use common::dual_flow::{config, decode, replay_keys, Monitor};
use common::wrappers::{Guard, Hook, Hooked, Request};
use ldk_object_store::lease::LeaseConfig;
use ldk_object_store::persister::MonitorUpdateSink;
use ldk_object_store::replica::{self, ReplicaRecord, SyncState};
use ldk_object_store::{ConfigError, LoadMode, MonitorPersister, ObjectKvStore, StoreBuilder};
use lightning::chain::chainmonitor::Persist;
use lightning::chain::ChannelMonitorUpdateStatus;
use lightning::ln::types::ChannelId;
use lightning::util::logger::{Logger, Record};
use lightning::util::persist::{KVStore, KVStoreSync, MigratableKVStore};
use lightning::util::test_utils::{TestBroadcaster, TestFeeEstimator, TestKeysInterface};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;

const CHILD_TEST: &str = "replica_crash_child";
/// `<fixture>;<primary dir>;<replica dir>;<repair: 0 or 1>;<seed>;<other objects>`: set only for
/// the child.
const CHILD_ENV: &str = "LDK_OS_REPLICA_CRASH_CHILD";
const SEED_ENV: &str = "LDK_OS_REPLICA_CRASH_SEED";
const KILLS_ENV: &str = "LDK_OS_REPLICA_CRASH_KILLS";

/// Channels and payments of the recorded flow.
const CHANNELS: usize = 3;
const PAYMENTS: u64 = 12;
/// Never reached: every update is an update object, none is pruned, so each one the persister
/// reported durable stays where it was written.
const MAX_PENDING: u64 = 1_000_000;
/// Namespace of the objects besides the node's monitors, as a node's payment store would be.
const OTHER_NAMESPACE: &str = "payments";
/// Writes and removes of the child's second thread, and its longest pause between two.
const CHILD_WRITES: usize = 150;
const CHILD_PAUSE_US: u64 = 3_000;
/// Namespace of the child's new keys.
const NEW_NAMESPACE: &str = "crash";

/// Starts every line the parent reads (libtest may print its own text before it on a line).
const MARK: &str = "@replica-crash ";

fn say(line: &str) {
	let mut out = std::io::stdout().lock();
	writeln!(out, "{MARK}{line}").expect("stdout");
	out.flush().expect("stdout");
}

fn env_u64(name: &str) -> Option<u64> {
	std::env::var(name)
		.ok()
		.map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")))
}

fn now_ms() -> u64 {
	SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A logger that drops everything: LDK's `TestLogger` prints every line.
struct Quiet;

impl Logger for Quiet {
	fn log(&self, _record: Record) {}
}

type Ours<'a> = MonitorPersister<
	&'a Quiet,
	&'a TestKeysInterface,
	&'a TestKeysInterface,
	&'a TestBroadcaster,
	&'a TestFeeEstimator,
>;

/// What a persister of node 0's monitors needs.
struct Parts {
	keys: TestKeysInterface,
	broadcaster: TestBroadcaster,
	fee_estimator: TestFeeEstimator,
	logger: Quiet,
}

impl Parts {
	fn new() -> Self {
		Parts {
			keys: replay_keys(),
			broadcaster: TestBroadcaster::new(Network::Testnet),
			fee_estimator: TestFeeEstimator::new(253),
			logger: Quiet,
		}
	}

	fn ours(&self, store: &ObjectKvStore) -> Ours<'_> {
		let (keys, broadcaster, fees) = (&self.keys, &self.broadcaster, &self.fee_estimator);
		let config = config(MAX_PENDING, LoadMode::Probe);
		MonitorPersister::new(store, config, &self.logger, keys, keys, broadcaster, fees)
	}

	fn ours_async(&'static self, store: &ObjectKvStore) -> Ours<'static> {
		let (keys, broadcaster, fees) = (&self.keys, &self.broadcaster, &self.fee_estimator);
		let config = config(MAX_PENDING, LoadMode::Probe);
		MonitorPersister::new_async(store, config, &self.logger, keys, keys, broadcaster, fees)
			.expect("completion thread")
	}

	/// Hands `calls` to `persister` as node 0's `ChainMonitor` did, `before(i)` before call `i`,
	/// each answered with `status`. Returns the number of monitors.
	fn replay(
		&self, persister: &Ours<'_>, calls: &[RecordedCall], status: ChannelMonitorUpdateStatus,
		mut before: impl FnMut(usize),
	) -> usize {
		// Decoding a monitor takes milliseconds in a debug build. The persister reads only the
		// channel id from the monitor of a call it stores as an update object, so such calls get
		// the channel's last decoded monitor; every call whose monitor is written gets its own.
		let mut monitors: HashMap<&str, Monitor> = HashMap::new();
		for (i, call) in calls.iter().enumerate() {
			if call.writes_full_monitor(MAX_PENDING) || !monitors.contains_key(call.name.as_str()) {
				monitors.insert(&call.name, decode(&call.monitor, &self.keys));
			}
			let monitor = &monitors[call.name.as_str()];
			let name = call.monitor_name(monitor);
			before(i);
			let answered = match &call.kind {
				CallKind::New => persister.persist_new_channel(name, monitor),
				CallKind::Update(update) => {
					persister.update_persisted_channel(name, update.as_ref(), monitor)
				},
			};
			assert_eq!(answered, status, "call {i}");
		}
		monitors.len()
	}

	/// Every monitor stored in `store`, by monitor key.
	fn load(&self, store: &ObjectKvStore, label: &str) -> BTreeMap<String, Monitor> {
		self.ours(store)
			.read_all_channel_monitors_with_updates_blocking()
			.unwrap_or_else(|e| panic!("{label}: the monitors do not load: {e}"))
			.into_iter()
			.map(|(_, m)| (m.persistence_key().to_string(), m))
			.collect()
	}
}

fn url(dir: &Path) -> String {
	format!("file://{}", dir.display())
}

/// The pair as a node starts it: the primary at `primary` with its replica at `replica`.
fn pair(primary: &Path, replica: &Path, repair: bool) -> StoreBuilder {
	let builder = StoreBuilder::from_url(url(primary))
		.with_replica(StoreBuilder::from_url(url(replica)).create_if_missing(true));
	match repair {
		true => builder.repair_replica(),
		false => builder,
	}
}

/// One copy on its own, to look at (no lease: the copy's record is not checked either).
fn view(dir: &Path) -> ObjectKvStore {
	let builder = StoreBuilder::from_url(url(dir)).create_if_missing(true);
	builder.without_writer_lease().build().expect("a view of a copy")
}

/// The value the child writes at its `n`th new key.
fn new_value(seed: u64, n: usize) -> Vec<u8> {
	format!("{seed:016x}-{n}:").repeat(1 + n % 40).into_bytes()
}

/// The object a recorded call writes, as `(primary namespace, secondary namespace, key)`.
fn written_key(call: &RecordedCall) -> (String, String, String) {
	match &call.kind {
		CallKind::Update(Some(update)) => {
			("monitor_updates".to_owned(), call.name.clone(), update.update_id.to_string())
		},
		_ => ("monitors".to_owned(), String::new(), call.name.clone()),
	}
}

// ------------------------------------------------------------------------------------------------
// The child

/// Prints each completion on its own line and flushes it before returning.
#[derive(Default)]
struct PrintingSink {
	reported: AtomicUsize,
}

impl MonitorUpdateSink for PrintingSink {
	fn monitor_update_completed(&self, channel_id: ChannelId, update_id: u64) {
		say(&format!("durable {channel_id} {update_id}"));
		self.reported.fetch_add(1, Ordering::SeqCst);
	}
}

/// The child: starts the pair, replays the fixture's calls into an async persister over it while
/// a second thread writes and removes keys and a third prints when the replica is in sync; then
/// closes the store. Does nothing unless started by the parent.
#[test]
fn replica_crash_child() {
	let Ok(spec) = std::env::var(CHILD_ENV) else { return };
	let fields: Vec<&str> = spec.split(';').collect();
	let [fixture, primary, replica, repair, seed, other_objects] = fields[..] else {
		panic!("{CHILD_ENV}={spec}: expected 6 fields")
	};
	let other_objects: usize = other_objects.parse().expect("a number of objects");
	let calls = read_fixture(Path::new(fixture));
	let seed: u64 = seed.parse().expect("seed");
	let parts: &'static Parts = Box::leak(Box::new(Parts::new()));

	let store = pair(Path::new(primary), Path::new(replica), repair == "1")
		.build()
		.expect("the pair starts");
	say("started");
	let watcher = {
		let store = store.clone();
		std::thread::spawn(move || {
			let runtime = tokio::runtime::Runtime::new().expect("runtime");
			let synced = runtime.block_on(async {
				tokio::time::timeout(Duration::from_secs(120), store.replica_in_sync(|_| {})).await
			});
			synced.expect("in sync within 120 s").expect("the replica gets in sync");
			say("in-sync");
		})
	};

	// A node's other writes: new keys, and removes of old ones.
	let writer = {
		let store = store.clone();
		std::thread::spawn(move || {
			let mut rng = fastrand::Rng::with_seed(seed);
			for n in 0..CHILD_WRITES {
				if n % 3 == 2 {
					let key = format!("p{}", rng.usize(..other_objects));
					say(&format!("remove {key}"));
					KVStoreSync::remove(&store, OTHER_NAMESPACE, "", &key, false)
						.expect("a remove");
					say(&format!("removed {key}"));
				} else {
					let key = format!("w{n}");
					say(&format!("write {key}"));
					KVStoreSync::write(&store, NEW_NAMESPACE, "", &key, new_value(seed, n))
						.expect("a write");
					say(&format!("wrote {key}"));
				}
				std::thread::sleep(Duration::from_micros(rng.u64(..=CHILD_PAUSE_US)));
			}
		})
	};

	// The node's monitor updates, as its `ChainMonitor` hands them over.
	let persister = parts.ours_async(&store);
	let sink = Arc::new(PrintingSink::default());
	persister.bind_chain_monitor(&sink);
	let expected = calls.iter().filter(|c| c.completion().is_some()).count();
	let mut rng = fastrand::Rng::with_seed(seed ^ 1);
	parts.replay(&persister, &calls, ChannelMonitorUpdateStatus::InProgress, |i| {
		std::thread::sleep(Duration::from_micros(rng.u64(..=CHILD_PAUSE_US)));
		say(&format!("call {i}"));
	});
	writer.join().expect("the writer thread");
	let deadline = Instant::now() + Duration::from_secs(120);
	while sink.reported.load(Ordering::SeqCst) < expected {
		assert!(Instant::now() < deadline, "completions missing after 120 s");
		std::thread::sleep(Duration::from_millis(1));
	}
	watcher.join().expect("the watcher thread");
	drop(persister);
	store.close_blocking();
	say("done");
}

// ------------------------------------------------------------------------------------------------
// The parent

/// How much the test does.
#[derive(Clone, Copy, Debug)]
struct Size {
	/// Objects besides the node's monitors.
	other_objects: usize,
	kills: usize,
}

const QUICK: Size = Size { other_objects: 200, kills: 16 };
const LONG: Size = Size { other_objects: 3_000, kills: 200 };

/// What one child printed, and how it ended.
#[derive(Default)]
struct ChildRun {
	started: bool,
	done: bool,
	/// The persister calls made, by index, and the completions reported.
	calls: BTreeSet<usize>,
	durable: Vec<(ChannelId, u64)>,
	/// New keys written and old keys removed: sent, and acknowledged.
	writing: BTreeSet<String>,
	wrote: BTreeSet<String>,
	removing: BTreeSet<String>,
	removed: BTreeSet<String>,
	/// When "in-sync" and "done" were seen, from the spawn.
	in_sync_at: Option<Duration>,
	done_at: Option<Duration>,
}

fn parse_channel(hex: &str) -> ChannelId {
	let bytes: Vec<u8> =
		(0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
	ChannelId(bytes.try_into().unwrap())
}

/// The two directories of one pair.
struct Copies {
	primary: PathBuf,
	replica: PathBuf,
}

impl Copies {
	fn in_dir(dir: &Path) -> Self {
		Copies { primary: dir.join("primary"), replica: dir.join("replica") }
	}

	fn pair(&self, repair: bool) -> StoreBuilder {
		pair(&self.primary, &self.replica, repair)
	}

	/// Each copy's replica record.
	fn records(&self) -> (Option<ReplicaRecord>, Option<ReplicaRecord>) {
		let read = |dir: &Path| {
			futures::executor::block_on(replica::read_record(&view(dir))).expect("reading a record")
		};
		(read(&self.primary), read(&self.replica))
	}

	/// What `replica::compare` finds (on a tokio runtime: it waits on tokio's timer).
	fn differences(&self) -> Vec<replica::Difference> {
		let (p, r) = (view(&self.primary), view(&self.replica));
		let runtime = tokio::runtime::Runtime::new().expect("runtime");
		runtime.block_on(replica::compare(&p, &r, |_, _| {})).expect("comparing the copies")
	}
}

/// A node's state before its replica is added: the primary's directory, the same with an
/// in-sync replica, and the child's fixture (the calls after that state).
struct Templates {
	work: tempfile::TempDir,
	alone: PathBuf,
	synced: Copies,
	fixture: PathBuf,
	/// The calls the child replays.
	calls: Vec<RecordedCall>,
	other_objects: usize,
}

/// Node 0's calls in the recorded flow, recorded once per process.
fn recording() -> &'static [RecordedCall] {
	static RECORDING: OnceLock<Vec<RecordedCall>> = OnceLock::new();
	RECORDING.get_or_init(|| {
		let started = Instant::now();
		let calls = record_flow(CHANNELS, PAYMENTS).calls;
		println!("recorded {} calls of node 0 in {:.1?}", calls.len(), started.elapsed());
		calls
	})
}

impl Templates {
	fn new(other_objects: usize) -> Self {
		let started = Instant::now();
		let recording = recording();
		let (before, after) = recording.split_at(recording.len() / 2);
		let work = tempfile::tempdir().expect("temp dir");
		let alone = work.path().join("alone");
		let fixture = work.path().join("calls.bin");
		write_fixture(&fixture, after);

		let parts = Parts::new();
		let store = StoreBuilder::from_url(url(&alone))
			.create_if_missing(true)
			.build()
			.expect("the primary alone");
		let monitors = parts.replay(
			&parts.ours(&store),
			before,
			ChannelMonitorUpdateStatus::Completed,
			|_| {},
		);
		let mut rng = fastrand::Rng::with_seed(3);
		let writes: Vec<_> = (0..other_objects)
			.map(|i| {
				let value: Vec<u8> = (0..rng.usize(64..1024)).map(|_| rng.u8(..)).collect();
				KVStore::write(&store, OTHER_NAMESPACE, "", &format!("p{i}"), value)
			})
			.collect();
		for written in futures::executor::block_on(futures::future::join_all(writes)) {
			written.expect("writing the node's other objects");
		}
		let all = store.list_all_keys().expect("listing");
		let updates = all.iter().filter(|(p, _, _)| p == "monitor_updates").count();
		store.close_blocking();
		drop(store);

		// The same node with a replica in sync, for the repairs.
		let synced = Copies::in_dir(&work.path().join("synced"));
		copy_dir(&alone, &synced.primary);
		let store = synced.pair(false).build().expect("the pair");
		in_sync(&store, "making the synced template");
		store.close_blocking();
		drop(store);
		println!(
			"a node's state: {} objects ({} monitors, {updates} update objects, from {} of {} \
			 calls); the child replays {} calls; templates made in {:.1?}",
			all.len(),
			monitors,
			before.len(),
			recording.len(),
			after.len(),
			started.elapsed()
		);
		Templates { work, alone, synced, fixture, calls: after.to_vec(), other_objects }
	}

	/// Fresh copies in `dir`: the node's primary with an empty replica, or a replica in sync
	/// changed behind the pair's back (returns the objects changed).
	fn copies(&self, dir: &Path, repair: bool, rng: &mut fastrand::Rng) -> (Copies, usize) {
		let copies = Copies::in_dir(dir);
		if !repair {
			copy_dir(&self.alone, &copies.primary);
			return (copies, 0);
		}
		copy_dir(&self.synced.primary, &copies.primary);
		copy_dir(&self.synced.replica, &copies.replica);
		let changed = tamper(&copies.replica, rng);
		(copies, changed)
	}

	/// Runs a child on `copies`, killed after `kill_after` if given.
	fn run_child(
		&self, copies: &Copies, repair: bool, seed: u64, kill_after: Option<Duration>,
	) -> ChildRun {
		let started = Instant::now();
		let spec = format!(
			"{};{};{};{};{seed};{}",
			self.fixture.display(),
			copies.primary.display(),
			copies.replica.display(),
			u8::from(repair),
			self.other_objects
		);
		let mut child = Command::new(std::env::current_exe().expect("test binary"))
			.args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
			.env(CHILD_ENV, spec)
			.stdin(Stdio::null())
			.stdout(Stdio::piped())
			.stderr(Stdio::piped())
			.spawn()
			.expect("spawning the child");
		let stdout = child.stdout.take().unwrap();
		let reader = std::thread::spawn(move || {
			let mut lines = Vec::new();
			for line in BufReader::new(stdout).lines() {
				let Ok(line) = line else { break };
				lines.push((started.elapsed(), line));
			}
			lines
		});
		let mut stderr = child.stderr.take().unwrap();
		let errors = std::thread::spawn(move || {
			let mut text = String::new();
			let _ = stderr.read_to_string(&mut text);
			text
		});
		// A child that hangs fails the test instead of stalling it.
		let deadline = started + kill_after.unwrap_or(Duration::from_secs(300));
		while child.try_wait().expect("the child").is_none() && Instant::now() < deadline {
			std::thread::sleep(Duration::from_millis(1));
		}
		// SIGKILL; a child that has exited already is only reaped.
		let _ = child.kill();
		let status = child.wait().expect("waiting for the child");
		let lines = reader.join().unwrap();
		let errors = errors.join().unwrap();
		let killed = status.signal() == Some(9);
		assert!(killed || status.success(), "the child failed ({status}):\n{errors}");
		assert!(kill_after.is_some() || !killed, "the child ran for more than 300 s");

		let mut run = ChildRun::default();
		for (at, line) in lines {
			let Some(start) = line.find(MARK) else { continue };
			let mut words = line[start + MARK.len()..].split_whitespace();
			let word = words.next().unwrap_or_default();
			let arg = words.next().unwrap_or_default().to_owned();
			match word {
				"started" => run.started = true,
				"call" => {
					run.calls.insert(arg.parse().expect("a call index"));
				},
				"durable" => {
					let id = words.next().and_then(|w| w.parse().ok()).expect("an update id");
					run.durable.push((parse_channel(&arg), id));
				},
				"write" => {
					run.writing.insert(arg);
				},
				"wrote" => {
					run.wrote.insert(arg);
				},
				"remove" => {
					run.removing.insert(arg);
				},
				"removed" => {
					run.removed.insert(arg);
				},
				"in-sync" => {
					run.in_sync_at = Some(at);
				},
				"done" => {
					run.done = true;
					run.done_at = Some(at);
				},
				_ => {},
			}
		}
		assert!(killed || run.done, "the child exited without finishing:\n{errors}");
		run
	}
}

/// Copies a directory tree of a copy's objects (no lock or staging file is in a template), as
/// hard links: a store replaces an object by renaming a new file over it and removes it by
/// unlinking, so it never changes a file that another tree links to.
fn copy_dir(from: &Path, to: &Path) {
	std::fs::create_dir_all(to).expect("creating a directory");
	for entry in std::fs::read_dir(from).expect("reading a directory") {
		let entry = entry.expect("a directory entry");
		let target = to.join(entry.file_name());
		if entry.file_type().expect("a file type").is_dir() {
			copy_dir(&entry.path(), &target);
		} else {
			std::fs::hard_link(entry.path(), target).expect("linking a file");
		}
	}
}

/// Changes a replica in sync behind its back: objects lost, changed and added, monitors and
/// update objects among them. Returns how many.
fn tamper(replica: &Path, rng: &mut fastrand::Rng) -> usize {
	// The directory as `object_store` sees it, without the `file://` store's syncs (nothing here
	// needs to survive a crash), at the same place for each key.
	let files = LocalFileSystem::new_with_prefix(replica).expect("the replica's directory");
	let builder = StoreBuilder::from_store(Arc::new(files)).without_writer_lease();
	let store = builder.build().expect("a view of the replica");
	let keys = store.list_all_keys().expect("listing the replica");
	let mut changed = 0;
	for (p, s, k) in &keys {
		let odds = if p == OTHER_NAMESPACE { 30 } else { 6 };
		match rng.usize(..odds) {
			0 => KVStoreSync::remove(&store, p, s, k, false).expect("removing"),
			1 => KVStoreSync::write(&store, p, s, k, b"changed behind its back".to_vec())
				.expect("changing"),
			_ => continue,
		}
		changed += 1;
	}
	for i in 0..10 {
		KVStoreSync::write(&store, "stray", "", &format!("s{i}"), vec![i; 10]).expect("adding");
		changed += 1;
	}
	let strays = KVStoreSync::list(&view(replica), "stray", "").expect("listing the replica");
	assert_eq!(strays.len(), 10, "the replica's `file://` store sees the changes");
	changed
}

fn in_sync(store: &ObjectKvStore, label: &str) -> replica::ReplicaHealth {
	let runtime = tokio::runtime::Runtime::new().expect("runtime");
	let waiting = async {
		tokio::time::timeout(Duration::from_secs(120), store.replica_in_sync(|_| {})).await
	};
	runtime
		.block_on(waiting)
		.unwrap_or_else(|_| panic!("{label}: not in sync within 120 s"))
		.unwrap_or_else(|e| panic!("{label}: the replica does not get in sync: {e}"))
}

fn describe(held: &Option<Vec<u8>>) -> String {
	match held {
		None => "absent".to_owned(),
		Some(data) => format!("{} bytes", data.len()),
	}
}

fn stored(store: &ObjectKvStore, (p, s, k): &(String, String, String)) -> Option<Vec<u8>> {
	match KVStoreSync::read(store, p, s, k) {
		Ok(data) => Some(data),
		Err(e) if e.kind() == lightning::io::ErrorKind::NotFound => None,
		Err(e) => panic!("reading {p}/{s}/{k}: {e}"),
	}
}

/// Per monitor key: the highest update id up to which every completion of `calls` was reported,
/// as LDK counts durability (a channel is unblocked only once all its pending updates
/// completed).
fn durable_prefix(calls: &[RecordedCall], run: &ChildRun) -> BTreeMap<String, u64> {
	let reported: BTreeSet<(ChannelId, u64)> = run.durable.iter().copied().collect();
	let mut prefix = BTreeMap::new();
	let mut gap = BTreeSet::new();
	for call in calls {
		let Some(id) = call.completion() else { continue };
		if gap.contains(&call.name) {
			continue;
		}
		if reported.contains(&(call.channel_id, id)) {
			prefix.insert(call.name.clone(), id);
		} else {
			gap.insert(call.name.clone());
		}
	}
	prefix
}

/// The keys, as `replica::compare` names them, of every write or remove the child had sent and
/// not seen acknowledged when it was killed: each may have reached one copy and not the other.
fn in_flight(calls: &[RecordedCall], run: &ChildRun) -> BTreeSet<String> {
	let reported: BTreeSet<(ChannelId, u64)> = run.durable.iter().copied().collect();
	let mut keys = BTreeSet::new();
	for &i in &run.calls {
		let call = &calls[i];
		if call.completion().is_none_or(|id| !reported.contains(&(call.channel_id, id))) {
			let (p, s, k) = written_key(call);
			keys.insert(format!("{p}/{s}/{k}"));
		}
	}
	keys.extend(run.writing.difference(&run.wrote).map(|k| format!("{NEW_NAMESPACE}//{k}")));
	keys.extend(run.removing.difference(&run.removed).map(|k| format!("{OTHER_NAMESPACE}//{k}")));
	keys
}

fn named(found: &[replica::Difference]) -> Vec<String> {
	found.iter().map(ToString::to_string).collect()
}

#[derive(Default, Debug)]
struct Stats {
	kills: usize,
	before_start: usize,
	filling: usize,
	after_in_sync: usize,
	after_the_end: usize,
	acknowledged_writes: usize,
	acknowledged_removes: usize,
	durable_updates: usize,
	in_sync_records_checked: usize,
	repaired_again: usize,
	child_time: Duration,
	check_time: Duration,
	restart_time: Duration,
	setup_time: Duration,
}

/// Checks the copies a killed child left behind. `spawned_ms`: the wall clock when it started.
fn check_after_kill(
	calls: &[RecordedCall], copies: &Copies, run: &ChildRun, spawned_ms: u64, seed: u64,
	label: &str, stats: &mut Stats,
) -> Left {
	let started = Instant::now();
	let (p_view, r_view) = (view(&copies.primary), view(&copies.replica));
	// Acknowledged means on both.
	for key in &run.wrote {
		let n: usize = key[1..].parse().expect("a write number");
		let key = (NEW_NAMESPACE.to_owned(), String::new(), key.clone());
		let value = new_value(seed, n);
		for (copy, view) in [("primary", &p_view), ("replica", &r_view)] {
			let held = stored(view, &key);
			assert!(
				held.as_ref() == Some(&value),
				"{label}: acknowledged write of {key:?}: {} on the {copy}",
				describe(&held)
			);
		}
	}
	for key in &run.removed {
		let key = (OTHER_NAMESPACE.to_owned(), String::new(), key.clone());
		for (copy, view) in [("primary", &p_view), ("replica", &r_view)] {
			let held = stored(view, &key);
			assert!(
				held.is_none(),
				"{label}: acknowledged remove of {key:?}: {} on the {copy}",
				describe(&held)
			);
		}
	}
	stats.acknowledged_writes += run.wrote.len();
	stats.acknowledged_removes += run.removed.len();
	let reported: BTreeSet<(ChannelId, u64)> = run.durable.iter().copied().collect();
	for call in calls {
		let Some(id) = call.completion() else { continue };
		if !reported.contains(&(call.channel_id, id)) {
			continue;
		}
		let key = written_key(call);
		let (on_primary, on_replica) = (stored(&p_view, &key), stored(&r_view, &key));
		assert!(on_primary.is_some(), "{label}: durable update {id} ({key:?}) not on the primary");
		assert!(on_replica.is_some(), "{label}: durable update {id} ({key:?}) not on the replica");
		if key.0 == "monitor_updates" {
			assert!(on_primary == on_replica, "{label}: {key:?} differs between the copies");
		}
		stats.durable_updates += 1;
	}

	// A record the child wrote never says in sync while the copies differ, but for a write or
	// remove in flight when the child was killed.
	let (p_record, r_record) = copies.records();
	let written = |record: &Option<ReplicaRecord>| {
		record.as_ref().is_some_and(|r| r.updated_unix_ms >= spawned_ms)
	};
	// The pair's start records the replica as filling, on both copies, before it returns.
	assert!(
		!run.started || (written(&p_record) && written(&r_record)),
		"{label}: the pair started without recording the replica as filling: {p_record:?}, \
		 {r_record:?}"
	);
	let claims: Vec<String> = [("primary", &p_record), ("replica", &r_record)]
		.into_iter()
		.filter(|(_, record)| written(record))
		.filter_map(|(copy, record)| {
			let record = record.as_ref()?;
			(record.sync == SyncState::InSync).then(|| format!("{copy}: {record}"))
		})
		.collect();
	let filling = [&p_record, &r_record]
		.iter()
		.any(|r| r.as_ref().is_some_and(|r| r.sync == SyncState::Filling));
	let left = Left { untouched: !written(&p_record) && !written(&r_record) };
	if !claims.is_empty() {
		let found = copies.differences();
		let in_flight = in_flight(calls, run);
		let unexplained: Vec<_> = found.iter().filter(|d| !in_flight.contains(&d.key)).collect();
		assert!(
			unexplained.is_empty(),
			"{label}: recorded in sync ({claims:?}) while the copies differ: {:#?}",
			named(&found)
		);
		if !found.is_empty() {
			println!(
				"{label}: recorded in sync ({claims:?}), the copies differ where a request was in \
				 flight: {:#?}",
				named(&found)
			);
		}
		stats.in_sync_records_checked += 1;
	}
	match (filling, claims.is_empty(), run.done) {
		(true, _, _) => stats.filling += 1,
		(false, false, false) => stats.after_in_sync += 1,
		(false, false, true) => stats.after_the_end += 1,
		(false, true, _) => stats.before_start += 1,
	}
	stats.check_time += started.elapsed();
	left
}

/// What a kill left that a restart cannot see.
struct Left {
	/// Both records as they were before the child started (killed before the pair started).
	untouched: bool,
}

/// Restarts the pair as a node would, until the replica is in sync, then checks that the copies
/// are equal, both records say so, and the monitors load alike from both, at least at every
/// update reported durable.
fn restart_and_check(
	calls: &[RecordedCall], copies: &Copies, run: &ChildRun, left: &Left, label: &str,
	stats: &mut Stats,
) {
	let started = Instant::now();
	let restart = |repair: bool| {
		let store = copies
			.pair(repair)
			.build()
			.unwrap_or_else(|e| panic!("{label}: the pair does not restart: {e}"));
		in_sync(&store, label);
		store.close_blocking();
	};
	restart(false);
	let mut found = copies.differences();
	if !found.is_empty() {
		if left.untouched {
			// Killed before the repair's start recorded the replica as filling: the records
			// still say what they said before the replica was changed behind the pair's back,
			// and nothing tells a restart otherwise. The operator runs the repair again.
			stats.repaired_again += 1;
		} else {
			// The kill left the directory's running mark, so the restart compared the copies
			// in full: a request in flight at the kill may not leave them different.
			panic!(
				"{label}: the copies differ after a restart that followed a kill: {:#?}",
				named(&found)
			);
		}
		restart(true);
		found = copies.differences();
	}
	let found = named(&found);
	assert!(found.is_empty(), "{label}: the copies differ after a restart: {found:#?}");
	let (p, r) = copies.records();
	assert_eq!(p.map(|p| p.sync), Some(SyncState::InSync), "{label}: the primary's record");
	assert_eq!(r.map(|r| r.sync), Some(SyncState::InSync), "{label}: the replica's record");

	let parts = Parts::new();
	let from_primary = parts.load(&view(&copies.primary), &format!("{label}, primary"));
	let from_replica = parts.load(&view(&copies.replica), &format!("{label}, replica"));
	assert!(from_primary == from_replica, "{label}: the replica loads other monitors");
	for (key, durable) in durable_prefix(calls, run) {
		let loaded = from_replica.get(&key).map(Monitor::get_latest_update_id);
		assert!(
			loaded.is_some_and(|id| id >= durable),
			"{label}: {key}: durable up to {durable}, loads from the replica at {loaded:?}"
		);
	}
	stats.restart_time += started.elapsed();
}

fn run_kills(size: Size) {
	let kills = env_u64(KILLS_ENV).map_or(size.kills, |n| n as usize);
	let seed = env_u64(SEED_ENV).unwrap_or_else(|| fastrand::u64(..));
	let mut rng = fastrand::Rng::with_seed(seed);
	println!("replica crash test: {kills} kills, seed {seed} ({SEED_ENV}={seed} repeats it)");
	let started = Instant::now();
	let templates = Templates::new(size.other_objects);
	let calls = &templates.calls;

	// Runs to the end, to learn when a child has the replica in sync, and when it is done.
	let mut spans = [(Duration::ZERO, Duration::ZERO); 2];
	for (repair, span) in [false, true].into_iter().zip(&mut spans) {
		let dir = templates.work.path().join(format!("calibration-{repair}"));
		let (copies, _) = templates.copies(&dir, repair, &mut rng);
		let spawned_ms = now_ms();
		let run = templates.run_child(&copies, repair, seed, None);
		*span = (run.in_sync_at.expect("in sync"), run.done_at.expect("done"));
		let label = format!("calibration (repair: {repair})");
		let stats = &mut Stats::default();
		let left = check_after_kill(calls, &copies, &run, spawned_ms, seed, &label, stats);
		restart_and_check(calls, &copies, &run, &left, &label, stats);
		let _ = std::fs::remove_dir_all(&dir);
	}
	println!(
		"a child has the replica in sync after {:.0?} and is done after {:.0?} (fill); {:.0?} and \
		 {:.0?} (repair); {:.1?} since the start",
		spans[0].0,
		spans[0].1,
		spans[1].0,
		spans[1].1,
		started.elapsed()
	);

	let mut stats = Stats::default();
	let mut removals = Vec::new();
	for i in 0..kills {
		let repair = i % 2 == 1;
		// Three kills in four while the replica is filled, the others while the child goes on
		// writing to the pair in sync, or after it finished.
		let (synced_at, done_at) = spans[usize::from(repair)];
		let delay = match rng.usize(..4) {
			0 => synced_at + (done_at.mul_f64(1.1) - synced_at).mul_f64(rng.f64()),
			_ => synced_at.mul_f64(rng.f64()),
		};
		let child_seed = seed ^ (i as u64 + 1);
		let dir = templates.work.path().join(format!("kill-{i}"));
		let setup_started = Instant::now();
		let (copies, changed) = templates.copies(&dir, repair, &mut rng);
		stats.setup_time += setup_started.elapsed();
		let spawned_ms = now_ms();
		let child_started = Instant::now();
		let run = templates.run_child(&copies, repair, child_seed, Some(delay));
		stats.child_time += child_started.elapsed();
		let what = match repair {
			true => format!("the repair of {changed} changed objects"),
			false => "the fill".to_owned(),
		};
		let label = format!("kill {i} after {delay:.0?} during {what}");
		let left =
			check_after_kill(calls, &copies, &run, spawned_ms, child_seed, &label, &mut stats);
		restart_and_check(calls, &copies, &run, &left, &label, &mut stats);
		stats.kills += 1;
		// Removing files that were synced takes a while here: meanwhile, the next kill.
		removals.push(std::thread::spawn(move || std::fs::remove_dir_all(dir)));
	}
	println!(
		"replica crash test: {} kills in {:.1?} ({:.1?} making copies, {:.1?} in children, \
		 {:.1?} checking after the kills, {:.1?} restarting and checking): {} before the pair started, {} while the \
		 replica was recorded filling, {} after it was in sync while the child wrote, {} after \
		 the child finished",
		stats.kills,
		started.elapsed(),
		stats.setup_time,
		stats.child_time,
		stats.check_time,
		stats.restart_time,
		stats.before_start,
		stats.filling,
		stats.after_in_sync,
		stats.after_the_end
	);
	println!(
		"  on both copies after the kills: {} acknowledged writes, {} acknowledged removes, {} \
		 durable monitor updates; {} kills left a record saying in sync, compared; {} repairs \
		 run again (killed before the repair began)",
		stats.acknowledged_writes,
		stats.acknowledged_removes,
		stats.durable_updates,
		stats.in_sync_records_checked,
		stats.repaired_again
	);
	assert!(kills < 8 || stats.filling >= kills / 4, "too few kills while the replica filled");
	for removal in removals {
		let _ = removal.join();
	}
}

#[test]
fn kills_during_fill_and_repair() {
	run_kills(QUICK);
}

#[test]
#[ignore = "long: 200 kills, 3,000 objects; `cargo test --test replica_crash -- --ignored`"]
fn kills_during_fill_and_repair_long() {
	run_kills(LONG);
}

// ------------------------------------------------------------------------------------------------
// The gap

/// A crash as the stores see it: a put whose path contains `held` never finishes, and once
/// `dead` is set no request does, as none of a killed process would.
#[derive(Debug, Default)]
struct Crash {
	held: std::sync::Mutex<Option<String>>,
	dead: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Hook for Crash {
	async fn enter(&self, request: Request, path: &ObjectPath) -> object_store::Result<Guard> {
		let held =
			self.held.lock().unwrap().as_ref().is_some_and(|held| {
				request == Request::Put && path.as_ref().contains(held.as_str())
			});
		if held || self.dead.load(Ordering::SeqCst) {
			std::future::pending::<()>().await;
		}
		Ok(Box::new(()))
	}
}

/// A write that reached the primary but not the replica when the node crashed was never
/// acknowledged, but a restart on the primary reads it, and the node builds on it: a restart
/// must then not leave the replica recorded in sync without it (were the primary lost next, the
/// promoted replica would lack state the node relied on; for a monitor update, LDK refuses to
/// start on a monitor older than its `ChannelManager`). Deterministic, in-process: the crash is a
/// store whose requests stop being answered.
#[test]
fn a_write_cut_off_by_a_crash_is_on_both_copies_or_neither_after_a_restart() {
	// Short, so that the restart waits seconds, not a minute; not so short that a loaded CI
	// machine misses a renewal.
	let short_lease = || {
		LeaseConfig::default()
			.with_ttl(Duration::from_secs(6))
			.with_safety_margin(Duration::from_secs(2))
			.with_clock_skew(Duration::from_secs(1))
	};
	let (primary, replica) = (backends::memory("cut-off"), backends::memory("replica"));
	let (on_primary, on_replica) = (Arc::new(Crash::default()), Arc::new(Crash::default()));
	let seen = |backend: &backends::Backend, hook: &Arc<Crash>| {
		backend.wrapped(|store| Hooked::wrap(store, Arc::clone(hook)))
	};
	let crashing = seen(&primary, &on_primary).paired_with(seen(&replica, &on_replica));
	let store = crashing.builder().with_writer_lease(short_lease()).build().expect("the pair");
	KVStoreSync::write(&store, "p", "s", "k", b"acknowledged".to_vec()).expect("a write");
	in_sync(&store, "before the crash");

	*on_replica.held.lock().unwrap() = Some("/p/s/k".to_owned());
	let cut_off = KVStore::write(&store, "p", "s", "k", b"never acknowledged".to_vec());
	let pending = std::thread::spawn(move || futures::executor::block_on(cut_off).is_ok());
	let after = primary.wrapped(|store| store).paired_with(replica.wrapped(|store| store));
	let deadline = Instant::now() + Duration::from_secs(10);
	while stored(&after.reader(), &key("p", "s", "k")).as_deref() != Some(b"never acknowledged") {
		assert!(Instant::now() < deadline, "the write did not reach the primary");
		std::thread::sleep(Duration::from_millis(5));
	}
	on_primary.dead.store(true, Ordering::SeqCst);
	on_replica.dead.store(true, Ordering::SeqCst);
	// The crashed instance's threads hang on for good, as nothing of it answers any more.
	std::mem::forget(store);
	drop(pending);

	// The node restarts on the same pair once the crashed instance's lease expired.
	let deadline = Instant::now() + Duration::from_secs(60);
	let store = loop {
		match after.builder().with_writer_lease(short_lease()).build() {
			Err(ConfigError::LeaseHeld { .. }) if Instant::now() < deadline => {
				std::thread::sleep(Duration::from_millis(500))
			},
			other => break other.expect("the restart"),
		}
	};
	let read = KVStoreSync::read(&store, "p", "s", "k").expect("a read");
	assert_eq!(read, b"never acknowledged", "the restarted node reads the primary's object");
	let health = in_sync(&store, "after the restart");
	let runtime = tokio::runtime::Runtime::new().expect("runtime");
	let (p, r) = (after.reader(), after.replica_reader());
	let found = runtime.block_on(replica::compare(&p, &r, |_, _| {})).expect("comparing");
	assert!(
		found.is_empty(),
		"the replica is recorded {} while the copies differ: {:#?}",
		health.sync,
		named(&found)
	);
}

fn key(p: &str, s: &str, k: &str) -> (String, String, String) {
	(p.to_owned(), s.to_owned(), k.to_owned())
}

/// The child of `a_write_cut_off_on_directories_is_compared_after_the_crash`: starts a pair of
/// local directories, writes `p/s/k` and waits until the replica is in sync; then the key's file
/// on the primary is replaced behind the store, as a write that reached the primary only before
/// a crash leaves it, and the process aborts (no destructor runs, as at a kill). Does nothing
/// unless started by that test.
#[test]
fn cut_off_child() {
	let Ok(spec) = std::env::var(CUT_OFF_CHILD_ENV) else { return };
	let (primary, replica) = spec.split_once(';').expect("primary;replica");
	let store = pair(Path::new(primary), Path::new(replica), false).build().expect("the pair");
	KVStoreSync::write(&store, "p", "s", "k", b"acknowledged".to_vec()).expect("a write");
	in_sync(&store, "the child");
	let file = Path::new(primary).join("p/s/k");
	assert_eq!(std::fs::read(&file).expect("the key's file"), b"acknowledged");
	std::fs::write(&file, b"never acknowledged").expect("replacing the key's file");
	std::process::abort();
}

const CUT_OFF_CHILD_ENV: &str = "LDK_OS_REPLICA_CUT_OFF_CHILD";

/// `a_write_cut_off_by_a_crash_is_on_both_copies_or_neither_after_a_restart` on local
/// directories, whose OS lock ends alike at a crash and at a clean stop: the running mark the
/// crashed process left makes the restart compare the copies in full. A clean stop leaves no mark:
/// the next start trusts the records (`tests/cli.rs`:
/// `replica_fill_verify_repair_and_promote_on_directories`).
#[test]
fn a_write_cut_off_on_directories_is_compared_after_the_crash() {
	let dir = tempfile::tempdir().expect("a temporary directory");
	let (primary, replica) = (dir.path().join("primary"), dir.path().join("replica"));
	std::fs::create_dir_all(&primary).expect("the primary's directory");
	let status = Command::new(std::env::current_exe().expect("test binary"))
		.args(["--exact", "cut_off_child", "--nocapture", "--test-threads=1"])
		.env(CUT_OFF_CHILD_ENV, format!("{};{}", primary.display(), replica.display()))
		.stdin(Stdio::null())
		.stdout(Stdio::null())
		.stderr(Stdio::null())
		.status()
		.expect("running the child");
	assert_eq!(status.signal(), Some(6), "the child aborts after its write: {status}");
	assert!(
		primary.join(ldk_object_store::lease::RUNNING_MARK).exists(),
		"the crashed process left its running mark"
	);

	let store = pair(&primary, &replica, false).build().expect("the restart");
	let read = KVStoreSync::read(&store, "p", "s", "k").expect("a read");
	assert_eq!(read, b"never acknowledged", "the restarted node reads the primary's object");
	let health = in_sync(&store, "after the restart");
	store.close_blocking();
	assert!(
		!primary.join(ldk_object_store::lease::RUNNING_MARK).exists(),
		"a clean close removes the running mark"
	);
	let runtime = tokio::runtime::Runtime::new().expect("runtime");
	let found = runtime
		.block_on(replica::compare(&view(&primary), &view(&replica), |_, _| {}))
		.expect("comparing");
	assert!(
		found.is_empty(),
		"the replica is recorded {} while the copies differ: {:#?}",
		health.sync,
		named(&found)
	);
}
