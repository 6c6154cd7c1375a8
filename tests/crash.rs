//! Crashes: a child process that persists updates for many channels is killed with SIGKILL at
//! random moments; after each kill, a fresh process (this one) loads everything.
//!
//! The data are real: two nodes of LDK's harness open several channels, pay over all of them in
//! both directions and force-close one, and node 0's `Persist` calls are recorded with the monitor
//! bytes at each call (`common::crash_support`). The parent writes them to a fixture once. Each
//! iteration then re-executes this test binary as a child (`crash_child`, which does nothing
//! unless `LDK_OS_CRASH_CHILD` is set) that replays the calls, with short random pauses, into an
//! async-mode `MonitorPersister` over a `file://` store (local files outlive the kill; every other
//! iteration behind a random latency of up to 3 ms per request, so that many writes are in flight
//! at once and finish out of order, as on a remote store), printing
//! `durable <channel id> <update id>` for every completion the persister reports, flushed at once.
//! The parent kills it after a random delay spread over the child's whole run (before it starts
//! writing, while it writes, after it finished), then checks the directory:
//!
//! - every stored monitor loads without error, in every `LoadMode`, and LDK's own
//!   `MonitorUpdatingPersister` loads the same monitors;
//! - no update beyond a gap is applied: the loaded id is the stored monitor's id plus the run of
//!   consecutive update objects after it (`Inventory::scan`);
//! - every completion the child reported is a completion LDK waits for, reported once;
//! - durability, as LDK counts it: for each channel, let `p` be the highest id such that every
//!   completion up to `p` was reported (LDK's `ChainMonitor` unblocks a channel only when all of
//!   its pending updates are complete); then the channel's monitor exists and loads at `p` or
//!   later. A reported update *after* an unreported one may be missing: writes of different
//!   objects run concurrently, and LDK ignores updates past a gap (see `Persist`'s docs); such
//!   cases are counted and printed, not failed;
//! - consistency with the recording: the loaded monitor equals a full monitor the recording wrote
//!   at the stored id with the recorded updates after it applied;
//! - a child that ran to the end left every channel at its final update id.
//!
//! `LDK_OS_CRASH_ITERATIONS` sets the number of kills (default 200; the ignored test
//! `kills_at_random_moments_long` runs 2000), `LDK_OS_CRASH_SEED` the random seed (printed).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bitcoin::Network;
use common::crash_support::*;
use common::dual_flow::{config, decode, replay_keys, Monitor, MODES};
use common::ldk_flow::{compare_monitors, MonitorMatch};
use common::wrappers::{Hooked, RandomLatency};
use ldk_object_store::inspect::Inventory;
use ldk_object_store::persister::MonitorUpdateSink;
use ldk_object_store::{LoadMode, MonitorPersister, ObjectKvStore, PersisterConfig, StoreBuilder};
use lightning::chain::chainmonitor::Persist;
use lightning::chain::channelmonitor::ChannelMonitorUpdate;
use lightning::chain::ChannelMonitorUpdateStatus;
use lightning::ln::types::ChannelId;
use lightning::util::logger::{Logger, Record};
use lightning::util::persist::MonitorUpdatingPersister;
use lightning::util::test_utils::{TestBroadcaster, TestFeeEstimator, TestKeysInterface};
use object_store::local::LocalFileSystem;

const CHILD_TEST: &str = "crash_child";
/// `<fixture path>;<store dir>`: set only for the child.
const CHILD_ENV: &str = "LDK_OS_CRASH_CHILD";
const MAX_PENDING_ENV: &str = "LDK_OS_CRASH_MAX_PENDING";
const SEED_ENV: &str = "LDK_OS_CRASH_SEED";
const PAUSE_ENV: &str = "LDK_OS_CRASH_PAUSE_US";
/// Set for the control test's children, which report each completion when the call is made,
/// before anything is written.
const EARLY_ENV: &str = "LDK_OS_CRASH_REPORT_EARLY";
/// Most random latency (µs) the child adds before each request, as a remote store would have,
/// so that many writes are in flight at once and finish out of order.
const LATENCY_ENV: &str = "LDK_OS_CRASH_LATENCY_US";

/// Channels of the recorded flow, and payments over them.
const CHANNELS: usize = 6;
const PAYMENTS: u64 = 36;
/// Longest pause of the child between two calls.
const PAUSE_US: u64 = 300;
/// The child's latency (µs), by iteration: none (local files) and a few milliseconds.
const LATENCY_US: [u64; 2] = [0, 3000];
/// `maximum_pending_updates` for the child, by iteration: consolidations every few updates (with
/// their prunes), long runs of update objects, and a full monitor for every update (what the
/// defaults write for a small monitor: queued full writes replaced by newer ones, each reporting
/// every update it holds, and no pruning after the first).
const MAX_PENDING: [u64; 4] = [5, 3, 12, 1];

fn env_u64(name: &str) -> Option<u64> {
	std::env::var(name)
		.ok()
		.map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")))
}

/// A logger that drops everything: LDK's `TestLogger` prints every line, thousands per load.
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

/// What a persister of node 0's monitors needs, loading or writing in any order.
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

	fn ours(&self, store: &ObjectKvStore, config: PersisterConfig) -> Ours<'_> {
		let (keys, broadcaster, fees) = (&self.keys, &self.broadcaster, &self.fee_estimator);
		MonitorPersister::new(store, config, &self.logger, keys, keys, broadcaster, fees)
	}

	fn ours_async(&'static self, store: &ObjectKvStore, config: PersisterConfig) -> Ours<'static> {
		let (keys, broadcaster, fees) = (&self.keys, &self.broadcaster, &self.fee_estimator);
		MonitorPersister::new_async(store, config, &self.logger, keys, keys, broadcaster, fees)
			.expect("completion thread")
	}

	/// Every monitor LDK's own `MonitorUpdatingPersister` loads from `store`.
	fn ldk_load(&self, store: &ObjectKvStore, max_pending: u64) -> Vec<Monitor> {
		let (keys, broadcaster, fees) = (&self.keys, &self.broadcaster, &self.fee_estimator);
		let persister = MonitorUpdatingPersister::new(
			store,
			&self.logger,
			max_pending,
			keys,
			keys,
			broadcaster,
			fees,
		);
		let mut loaded: Vec<Monitor> = persister
			.read_all_channel_monitors_with_updates()
			.unwrap_or_else(|e| panic!("LDK's persister cannot load: {e}"))
			.into_iter()
			.map(|(_, m)| m)
			.collect();
		loaded.sort_by_key(|m| m.persistence_key().to_string());
		loaded
	}

	fn apply(&self, monitor: &Monitor, update: &ChannelMonitorUpdate) {
		let (b, f, l) = (&self.broadcaster, &self.fee_estimator, &self.logger);
		monitor
			.update_monitor(update, &b, &f, &l)
			.unwrap_or_else(|()| panic!("update {} does not apply", update.update_id));
		// Keep what a force-close update broadcasts from piling up.
		self.broadcaster.txn_broadcast();
	}
}

fn file_store(dir: &Path) -> ObjectKvStore {
	StoreBuilder::from_url(format!("file://{}", dir.display()))
		.create_if_missing(true)
		.build()
		.expect("file:// store")
}

// ------------------------------------------------------------------------------------------------
// The child

/// Prints each completion on its own line and flushes it before returning.
#[derive(Default)]
struct PrintingSink {
	reported: AtomicUsize,
	/// Print nothing (the control's children print at the call instead).
	silent: bool,
}

impl MonitorUpdateSink for PrintingSink {
	fn monitor_update_completed(&self, channel_id: ChannelId, update_id: u64) {
		if !self.silent {
			report(channel_id, update_id);
		}
		self.reported.fetch_add(1, Ordering::SeqCst);
	}
}

fn report(channel_id: ChannelId, update_id: u64) {
	let mut out = std::io::stdout().lock();
	writeln!(out, "{MARK}durable {channel_id} {update_id}").expect("stdout");
	out.flush().expect("stdout");
}

/// Starts every line the parent reads (libtest may print its own text before it on a line).
const MARK: &str = "@crash ";

fn say(line: &str) {
	let mut out = std::io::stdout().lock();
	writeln!(out, "{MARK}{line}").expect("stdout");
	out.flush().expect("stdout");
}

/// The child: replays the fixture into an async persister over the store directory, then waits
/// for every completion. Does nothing unless started by the parent.
#[test]
fn crash_child() {
	let Ok(spec) = std::env::var(CHILD_ENV) else { return };
	let (fixture, dir) = spec.split_once(';').expect("<fixture>;<store dir>");
	let calls = read_fixture(Path::new(fixture));
	let max_pending = env_u64(MAX_PENDING_ENV).unwrap_or(5);
	let pause_us = env_u64(PAUSE_ENV).unwrap_or(PAUSE_US);
	fastrand::seed(env_u64(SEED_ENV).unwrap_or(0));

	let parts: &'static Parts = Box::leak(Box::new(Parts::new()));
	let store = match env_u64(LATENCY_ENV).unwrap_or(0) {
		0 => file_store(Path::new(dir)),
		latency => {
			// What `file://` builds, behind random latency.
			std::fs::create_dir_all(dir).expect("store dir");
			let files = LocalFileSystem::new_with_prefix(dir).expect("local files");
			let max = Duration::from_micros(latency);
			let slow = Hooked::wrap(Arc::new(files), Arc::new(RandomLatency { max }));
			// A directory wrapped in code cannot hold a lease object (only `file://` URLs take
			// the OS lock); the parent never runs a second writer on it.
			StoreBuilder::from_store(slow).without_writer_lease().build().expect("store")
		},
	};
	let persister = parts.ours_async(&store, config(max_pending, LoadMode::Probe));
	let early = std::env::var(EARLY_ENV).is_ok();
	let sink = Arc::new(PrintingSink { reported: AtomicUsize::new(0), silent: early });
	persister.bind_chain_monitor(&sink);
	let expected = calls.iter().filter(|c| c.completion().is_some()).count();

	// Decoding a monitor takes milliseconds in a debug build, most of a child's time if done for
	// every call. The persister reads only the channel id from the monitor of a call it stores as
	// an update object, so such calls get the channel's last decoded monitor; every call whose
	// monitor is written gets its own.
	let mut monitors: HashMap<&str, Monitor> = HashMap::new();
	say("ready");
	for call in &calls {
		if call.writes_full_monitor(max_pending) || !monitors.contains_key(call.name.as_str()) {
			monitors.insert(&call.name, decode(&call.monitor, &parts.keys));
		}
		let monitor = &monitors[call.name.as_str()];
		let name = call.monitor_name(monitor);
		let status = match &call.kind {
			CallKind::New => persister.persist_new_channel(name, monitor),
			CallKind::Update(update) => {
				persister.update_persisted_channel(name, update.as_ref(), monitor)
			},
		};
		assert_eq!(status, ChannelMonitorUpdateStatus::InProgress);
		if let (true, Some(update_id)) = (early, call.completion()) {
			report(call.channel_id, update_id);
		}
		std::thread::sleep(Duration::from_micros(fastrand::u64(0..=pause_us)));
	}
	let deadline = Instant::now() + Duration::from_secs(120);
	while sink.reported.load(Ordering::SeqCst) < expected {
		assert!(Instant::now() < deadline, "completions missing after 120 s");
		std::thread::sleep(Duration::from_millis(1));
	}
	say("done");
}

// ------------------------------------------------------------------------------------------------
// The parent

/// What one child printed, and how it ended.
struct ChildRun {
	ready: bool,
	done: bool,
	killed: bool,
	reported: Vec<(ChannelId, u64)>,
	/// From spawning to exit (or kill).
	elapsed: Duration,
	/// From spawning to the "ready" and "done" lines, if seen.
	ready_at: Option<Duration>,
	done_at: Option<Duration>,
}

/// How a child runs.
#[derive(Clone, Copy, Debug)]
struct ChildSpec {
	max_pending: u64,
	seed: u64,
	latency_us: u64,
	/// Report each completion when the call is made (the control's broken children).
	report_early: bool,
}

fn run_child(
	fixture: &Path, dir: &Path, spec: ChildSpec, kill_after: Option<Duration>,
) -> ChildRun {
	let ChildSpec { max_pending, seed, latency_us, report_early } = spec;
	let started = Instant::now();
	let mut command = Command::new(std::env::current_exe().expect("test binary"));
	command
		.args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
		.env(CHILD_ENV, format!("{};{}", fixture.display(), dir.display()))
		.env(MAX_PENDING_ENV, max_pending.to_string())
		.env(SEED_ENV, seed.to_string())
		.env(LATENCY_ENV, latency_us.to_string())
		.env_remove(EARLY_ENV);
	if report_early {
		command.env(EARLY_ENV, "1");
	}
	let mut child = command
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
	if let Some(delay) = kill_after {
		std::thread::sleep(delay);
		// SIGKILL; a child that has exited already is only reaped.
		let _ = child.kill();
	}
	let status = child.wait().expect("waiting for the child");
	let elapsed = started.elapsed();
	let lines = reader.join().unwrap();
	let errors = errors.join().unwrap();
	let killed = status.signal() == Some(9);
	assert!(killed || status.success(), "the child failed ({status}):\n{errors}");

	let mut run = ChildRun {
		ready: false,
		done: false,
		killed,
		reported: Vec::new(),
		elapsed,
		ready_at: None,
		done_at: None,
	};
	for (at, line) in lines {
		let Some(start) = line.find(MARK) else { continue };
		let mut words = line[start + MARK.len()..].split_whitespace();
		match words.next() {
			Some("ready") => {
				run.ready = true;
				run.ready_at = Some(at);
			},
			Some("done") => {
				run.done = true;
				run.done_at = Some(at);
			},
			Some("durable") => {
				let channel = words.next().expect("a channel id");
				let id: u64 = words.next().and_then(|w| w.parse().ok()).expect("an update id");
				let bytes: Vec<u8> = (0..32)
					.map(|i| u8::from_str_radix(&channel[2 * i..2 * i + 2], 16).unwrap())
					.collect();
				run.reported.push((ChannelId(bytes.try_into().unwrap()), id));
			},
			_ => {},
		}
	}
	assert!(killed || run.done, "the child exited without finishing:\n{errors}");
	run
}

/// The recording, indexed for the checks, with caches of expected monitors.
struct Expectations<'a> {
	by_monitor: BTreeMap<String, Vec<&'a RecordedCall>>,
	/// Per channel: its monitor key, the completions LDK waits for in ascending order, and its
	/// final update id.
	channels: BTreeMap<ChannelId, (String, Vec<u64>, u64)>,
	parts: Parts,
	/// (monitor key, stored id, loaded id, max pending) → the monitors a load may produce.
	candidates: HashMap<(String, u64, u64, u64), Vec<Monitor>>,
	/// (monitor key, update id) → the live monitor right after LDK made that update.
	live: HashMap<(String, u64), Monitor>,
	/// (monitor key, stored id, loaded id, max pending, candidate) → how the load compares with
	/// the live monitor.
	live_match: HashMap<(String, u64, u64, u64, usize), MonitorMatch>,
}

impl<'a> Expectations<'a> {
	fn new(calls: &'a [RecordedCall]) -> Self {
		let by_monitor = calls_by_monitor(calls);
		let mut channels = BTreeMap::new();
		for (key, calls) in &by_monitor {
			let mut completions: Vec<u64> = calls.iter().filter_map(|c| c.completion()).collect();
			let sorted = {
				let mut s = completions.clone();
				s.sort_unstable();
				s.dedup();
				s
			};
			assert_eq!(completions, sorted, "{key}: completions out of order or repeated");
			completions.shrink_to_fit();
			let last = calls.last().unwrap().latest_update_id;
			channels.insert(calls[0].channel_id, (key.clone(), completions, last));
		}
		Expectations {
			by_monitor,
			channels,
			parts: Parts::new(),
			candidates: HashMap::new(),
			live: HashMap::new(),
			live_match: HashMap::new(),
		}
	}

	/// Whether `monitor`, loaded for `key` from a full monitor stored at `stored` and the update
	/// objects up to its own id, is what the recording leads to: a full monitor the persister
	/// writes at `stored` (with `max_pending`) with the recorded updates after it applied. Returns
	/// which of those full monitors it came from, or what is wrong.
	fn follows_recording(
		&mut self, key: &str, stored: u64, max_pending: u64, monitor: &Monitor,
	) -> Result<usize, &'static str> {
		let loaded = monitor.get_latest_update_id();
		let cache_key = (key.to_owned(), stored, loaded, max_pending);
		if !self.candidates.contains_key(&cache_key) {
			let calls = &self.by_monitor[key];
			let updates: Vec<_> = (stored + 1..=loaded)
				.map(|id| {
					let mut found = calls.iter().filter_map(|c| match &c.kind {
						CallKind::Update(Some(u)) if u.update_id == id => Some(u),
						_ => None,
					});
					let update = found.next().unwrap_or_else(|| panic!("{key}: no update {id}"));
					assert!(found.next().is_none(), "{key}: update {id} recorded twice");
					update
				})
				.collect();
			let parts = &self.parts;
			let monitors = calls
				.iter()
				.filter(|c| c.latest_update_id == stored && c.writes_full_monitor(max_pending))
				.map(|c| {
					let monitor = decode(&c.monitor, &parts.keys);
					updates.iter().for_each(|update| parts.apply(&monitor, update));
					monitor
				})
				.collect();
			self.candidates.insert(cache_key.clone(), monitors);
		}
		let candidates = &self.candidates[&cache_key];
		if candidates.is_empty() {
			return Err("the recording wrote no full monitor at the stored id");
		}
		let keys = &self.parts.keys;
		candidates
			.iter()
			.position(|candidate| {
				candidate == monitor
					|| compare_monitors(monitor, candidate, keys) != MonitorMatch::Different
			})
			.ok_or("it is none of the monitors the recording leads to")
	}

	/// How `monitor` (loaded from full monitor `candidate` of those stored at `stored`, see
	/// [`Self::follows_recording`]) compares with the live monitor right after the call that made
	/// its latest update.
	fn compare_with_live(
		&mut self, key: &str, stored: u64, max_pending: u64, candidate: usize, monitor: &Monitor,
	) -> MonitorMatch {
		let update_id = monitor.get_latest_update_id();
		let match_key = (key.to_owned(), stored, update_id, max_pending, candidate);
		if let Some(found) = self.live_match.get(&match_key) {
			return *found;
		}
		let live_key = (key.to_owned(), update_id);
		if !self.live.contains_key(&live_key) {
			let call = self.by_monitor[key]
				.iter()
				.find(|c| c.completion() == Some(update_id))
				.unwrap_or_else(|| panic!("{key}: no call made update {update_id}"));
			self.live.insert(live_key.clone(), decode(&call.monitor, &self.parts.keys));
		}
		let live = &self.live[&live_key];
		let found = compare_monitors(monitor, live, &self.parts.keys);
		// Monitors differ from the live ones where LDK connected blocks after the stored full
		// monitor was written and did not write it again (it need not); never otherwise.
		assert!(
			found != MonitorMatch::Different
				|| monitor.current_best_block() != live.current_best_block(),
			"{key}: loaded at {update_id} from a monitor stored at {stored}, it differs from the \
			 live monitor at that update although both saw the same blocks"
		);
		self.live_match.insert(match_key, found);
		found
	}
}

#[derive(Default, Debug)]
struct Stats {
	iterations: usize,
	killed_before: usize,
	killed_during: usize,
	after_the_end: usize,
	reported: usize,
	monitors_loaded: usize,
	loaded_id_sum: u64,
	loaded_id_max: u64,
	/// Channels whose monitor was at or past every reported update.
	at_or_past_reported: usize,
	/// (channel, iteration) cases where a reported update lay beyond an unreported one and was
	/// not loaded (allowed; see the module docs).
	reported_past_a_gap: usize,
	orphaned_update_namespaces: usize,
	objects_beyond_gap: usize,
	/// Temporary files of `object_store`'s local uploads (`<object>#<n>`) that a kill left
	/// behind: it landed in the middle of a write.
	half_written: usize,
	kills_mid_write: usize,
	equal_to_live: usize,
	equal_to_live_but_events: usize,
	differs_from_live: usize,
	check_time: Duration,
	child_time: Duration,
}

/// The files below `dir` that `object_store`'s `LocalFileSystem` writes before renaming them into
/// place (`<object>#<n>`); listings skip them.
fn staging_files(dir: &Path) -> usize {
	let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
	entries
		.flatten()
		.map(|entry| {
			let path = entry.path();
			if path.is_dir() {
				staging_files(&path)
			} else {
				usize::from(entry.file_name().to_string_lossy().contains('#'))
			}
		})
		.sum()
}

/// Checks the store a child left behind; `run` is what it reported.
fn check_store(
	expect: &mut Expectations<'_>, dir: &Path, run: &ChildRun, max_pending: u64, label: &str,
	stats: &mut Stats,
) {
	let started = Instant::now();
	// Completions: each expected, each once.
	let mut reported: BTreeMap<ChannelId, BTreeSet<u64>> = BTreeMap::new();
	for (channel, id) in &run.reported {
		let (key, completions, _) = expect
			.channels
			.get(channel)
			.unwrap_or_else(|| panic!("{label}: completion for unknown channel {channel}"));
		assert!(completions.contains(id), "{label}: {key}: update {id} reported, never expected");
		assert!(reported.entry(*channel).or_default().insert(*id), "{label}: {key} {id} twice");
	}
	stats.reported += run.reported.len();

	let half_written = staging_files(dir);
	stats.half_written += half_written;
	stats.kills_mid_write += usize::from(half_written > 0);
	let store = file_store(dir);
	let inventory = futures::executor::block_on(Inventory::scan(&store))
		.unwrap_or_else(|e| panic!("{label}: scanning the store: {e}"));
	let mut stored = BTreeMap::new();
	for entry in &inventory.monitors {
		let id = entry.update_id.clone().unwrap_or_else(|e| panic!("{label}: {}: {e}", entry.key));
		assert!(entry.sentinel, "{label}: {} lacks the sentinel", entry.key);
		assert!(entry.malformed.is_empty(), "{label}: {}: {:?}", entry.key, entry.malformed);
		stats.objects_beyond_gap += entry.beyond_gap.len();
		stored.insert(entry.key.clone(), (id, entry.pending.clone()));
	}
	stats.orphaned_update_namespaces += inventory.orphaned_updates.len();

	// Every stored monitor loads, in every mode, to the same monitors; LDK's reader agrees.
	let parts = Parts::new();
	let mut by_mode: Vec<Vec<Monitor>> = Vec::new();
	for mode in MODES {
		let persister = parts.ours(&store, config(max_pending, mode));
		let loaded = persister
			.read_all_channel_monitors_with_updates_blocking()
			.unwrap_or_else(|e| panic!("{label}: {mode:?} load failed: {e}"));
		assert_eq!(loaded.len(), stored.len(), "{label}: {mode:?}: monitors loaded");
		by_mode.push(loaded.into_iter().map(|(_, m)| m).collect());
	}
	assert!(by_mode.windows(2).all(|w| w[0] == w[1]), "{label}: load modes disagree");
	assert!(parts.ldk_load(&store, max_pending) == by_mode[0], "{label}: LDK's load differs");

	let mut loaded_ids = BTreeMap::new();
	for monitor in &by_mode[0] {
		let key = monitor.persistence_key().to_string();
		let (stored_id, pending) = &stored[&key];
		let id = monitor.get_latest_update_id();
		// Exactly the consecutive run after the stored monitor, nothing past a gap.
		assert_eq!(id, stored_id + pending.len() as u64, "{label}: {key}: loaded past a gap");
		let candidate = expect
			.follows_recording(&key, *stored_id, max_pending, monitor)
			.unwrap_or_else(|wrong| {
				panic!(
					"{label}: {key}: loaded at {id} from a monitor stored at {stored_id} (max \
					 pending {max_pending}): {wrong}"
				)
			});
		match expect.compare_with_live(&key, *stored_id, max_pending, candidate, monitor) {
			MonitorMatch::Equal => stats.equal_to_live += 1,
			MonitorMatch::EqualExceptReleasedEvents => stats.equal_to_live_but_events += 1,
			MonitorMatch::Different => stats.differs_from_live += 1,
		}
		stats.monitors_loaded += 1;
		stats.loaded_id_sum += id;
		stats.loaded_id_max = stats.loaded_id_max.max(id);
		loaded_ids.insert(monitor.channel_id(), (key, id));
	}

	// Durability of what was reported, as LDK counts it.
	for (channel, (key, completions, last)) in &expect.channels {
		let got = reported.get(channel);
		let loaded = loaded_ids.get(channel).map(|(_, id)| *id);
		let prefix =
			completions.iter().take_while(|id| got.is_some_and(|g| g.contains(id))).last().copied();
		if let Some(prefix) = prefix {
			let loaded = loaded.unwrap_or_else(|| {
				panic!("{label}: {key}: completions up to {prefix} reported, no monitor stored")
			});
			assert!(
				loaded >= prefix,
				"{label}: {key}: every update up to {prefix} reported durable, loaded at {loaded}"
			);
		}
		if let Some(highest) = got.and_then(|g| g.last()) {
			if loaded.is_some_and(|l| l >= *highest) {
				stats.at_or_past_reported += 1;
			} else {
				stats.reported_past_a_gap += 1;
				println!(
					"{label}: {key}: update {highest} reported durable after an unreported one \
					 ({} of {} reported), loaded at {loaded:?}, stored {:?}",
					got.map_or(0, |g| g.len()),
					completions.len(),
					stored.get(key)
				);
			}
		}
		if run.done {
			assert_eq!(
				loaded,
				Some(*last),
				"{label}: {key}: not at its final update after the end"
			);
		}
	}
	stats.check_time += started.elapsed();
}

/// Node 0's calls in the recorded flow, recorded once per process.
fn recording() -> &'static Recording {
	static RECORDING: OnceLock<Recording> = OnceLock::new();
	RECORDING.get_or_init(|| {
		let started = Instant::now();
		let recording = record_flow(CHANNELS, PAYMENTS);
		let calls = &recording.calls;
		let full = calls.iter().filter(|c| !matches!(c.kind, CallKind::Update(Some(_)))).count();
		println!(
			"recorded {} calls of node 0 over {} channels ({} with an update, {} new monitors or \
			 chain-sync writes) in {:.1?}",
			calls.len(),
			recording.channels.len(),
			calls.len() - full,
			full,
			started.elapsed()
		);
		recording
	})
}

/// A test's working directory with the fixture in it, and what a child run to the end took.
struct Lab {
	work: tempfile::TempDir,
	fixture: PathBuf,
	/// How long a child ran, and when it was ready.
	span: Duration,
	ready_at: Duration,
}

fn lab(expect: &mut Expectations<'_>, seed: u64, report_early: bool) -> Lab {
	let work = tempfile::tempdir().expect("temp dir");
	let fixture = work.path().join("calls.bin");
	write_fixture(&fixture, &recording().calls);
	// A run to the end, to learn how long a child takes.
	let dir = work.path().join("calibration");
	let spec =
		ChildSpec { max_pending: MAX_PENDING[0], seed, latency_us: LATENCY_US[1], report_early };
	let run = run_child(&fixture, &dir, spec, None);
	check_store(expect, &dir, &run, MAX_PENDING[0], "calibration", &mut Stats::default());
	let ready_at = run.ready_at.unwrap_or_default();
	println!(
		"a child runs {:.0?} (ready after {ready_at:.0?}, done after {:.0?})",
		run.elapsed,
		run.done_at.unwrap_or_default(),
	);
	Lab { work, fixture, span: run.elapsed, ready_at }
}

fn run_crashes(default_iterations: usize) {
	let iterations = env_u64("LDK_OS_CRASH_ITERATIONS").map_or(default_iterations, |n| n as usize);
	let seed = env_u64(SEED_ENV).unwrap_or_else(|| fastrand::u64(..));
	fastrand::seed(seed);
	println!("crash test: {iterations} kills, seed {seed} ({SEED_ENV}={seed} repeats it)");

	let started = Instant::now();
	let recording = recording();
	let mut expect = Expectations::new(&recording.calls);
	assert_eq!(expect.channels.len(), CHANNELS, "a monitor per channel");
	for (channel, (key, completions, last)) in &expect.channels {
		let closed = if *channel == recording.force_closed { " (force-closed)" } else { "" };
		println!("  {key}{closed}: {} completions, final update id {last}", completions.len());
	}
	let Lab { work, fixture, span, .. } = lab(&mut expect, seed, false);
	println!("kills are spread over 0..{:.0?}", span.mul_f64(1.2));
	let mut stats = Stats::default();

	for i in 0..iterations {
		let max_pending = MAX_PENDING[i % MAX_PENDING.len()];
		let delay = match fastrand::u8(0..20) {
			0 => Duration::ZERO,
			_ => span.mul_f64(fastrand::f64() * 1.2),
		};
		let dir = work.path().join(format!("store-{i}"));
		let child_started = Instant::now();
		let latency_us = LATENCY_US[i % LATENCY_US.len()];
		let spec =
			ChildSpec { max_pending, seed: seed ^ i as u64, latency_us, report_early: false };
		let run = run_child(&fixture, &dir, spec, Some(delay));
		stats.child_time += child_started.elapsed();
		match (run.ready, run.done || !run.killed) {
			(_, true) => stats.after_the_end += 1,
			(false, false) => stats.killed_before += 1,
			(true, false) => stats.killed_during += 1,
		}
		let label = format!(
			"kill {i} after {delay:.1?} (max pending {max_pending}, latency up to {latency_us} µs)"
		);
		check_store(&mut expect, &dir, &run, max_pending, &label, &mut stats);
		stats.iterations += 1;
		let _ = std::fs::remove_dir_all(&dir);
	}

	let loaded = stats.monitors_loaded.max(1) as u64;
	println!(
		"crash test: {} kills in {:.1?} ({:.1?} in children, {:.1?} checking): {} before the \
		 child wrote, {} while it wrote, {} after it finished",
		stats.iterations,
		started.elapsed(),
		stats.child_time,
		stats.check_time,
		stats.killed_before,
		stats.killed_during,
		stats.after_the_end
	);
	println!(
		"  {} updates reported durable; {} monitors loaded, update ids avg {:.1}, max {}; \
		 {} orphaned update namespaces (update written, new monitor not yet), {} update objects \
		 left beyond a gap",
		stats.reported,
		stats.monitors_loaded,
		stats.loaded_id_sum as f64 / loaded as f64,
		stats.loaded_id_max,
		stats.orphaned_update_namespaces,
		stats.objects_beyond_gap
	);
	println!(
		"  {} kills left a half-written object (an upload's temporary file, {} in all), which no \
		 listing or load saw",
		stats.kills_mid_write, stats.half_written
	);
	println!(
		"  channels at or past their highest reported update: {}; with a reported update past an \
		 unreported one, not loaded: {}",
		stats.at_or_past_reported, stats.reported_past_a_gap
	);
	println!(
		"  loaded monitors equal to LDK's live monitor at that id: {} (+{} but for released \
		 events); {} differ from it, all of them in the blocks seen (LDK does not write a monitor \
		 again for every block)",
		stats.equal_to_live, stats.equal_to_live_but_events, stats.differs_from_live
	);
	assert!(iterations < 20 || stats.killed_during > iterations / 4, "too few kills mid-run");
}

/// The checks have teeth: children that report each completion when the call is made, before
/// anything is written, are caught within a few kills.
#[test]
fn a_child_reporting_before_the_write_is_caught() {
	let seed = env_u64(SEED_ENV).unwrap_or_else(|| fastrand::u64(..));
	fastrand::seed(seed);
	let mut expect = Expectations::new(&recording().calls);
	let lab = lab(&mut expect, seed, true);
	for i in 0..50 {
		// Kills while the child writes.
		let delay = lab.ready_at + (lab.span - lab.ready_at).mul_f64(fastrand::f64());
		let dir = lab.work.path().join(format!("early-{i}"));
		let spec = ChildSpec {
			max_pending: MAX_PENDING[0],
			seed: seed ^ i,
			latency_us: LATENCY_US[0],
			report_early: true,
		};
		let run = run_child(&lab.fixture, &dir, spec, Some(delay));
		let label = format!("early reports, kill {i} after {delay:.1?}");
		let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
			check_store(&mut expect, &dir, &run, MAX_PENDING[0], &label, &mut Stats::default())
		}));
		if let Err(panic) = checked {
			let message = panic
				.downcast_ref::<String>()
				.cloned()
				.or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
				.unwrap_or_default();
			assert!(message.contains("reported"), "failed otherwise: {message}");
			println!("caught as expected after {} kills: {message}", i + 1);
			return;
		}
	}
	panic!("50 kills of a child that reports completions before writing went unnoticed");
}

#[test]
fn kills_at_random_moments() {
	run_crashes(200);
}

#[test]
#[ignore = "long: 2000 kills; `cargo test --test crash -- --ignored`"]
fn kills_at_random_moments_long() {
	run_crashes(2000);
}
