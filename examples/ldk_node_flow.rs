//! Two LDK nodes keeping their channel monitors in object storage through this crate's
//! [`MonitorPersister`], then a restart that loads them back with its parallel loader.
//!
//! ```text
//! cargo run --example ldk_node_flow [-- [<store URL>] [--wipe] [--payments N] [--verbose]]
//! ```
//!
//! The two nodes are LDK's own functional-test harness (`lightning`'s `_test_utils` feature): real
//! `ChannelManager`s and `ChainMonitor`s exchanging real messages in memory, with a simulated
//! chain. Each node's `ChainMonitor` persists through a `MonitorPersister` in sync mode (the mode
//! to pick unless you need async) that writes a full monitor every 7 updates
//! (`maximum_pending_updates: 7`; the default is 100), so a short flow shows everything:
//!
//! 1. node-0 opens channels A and B to node-1: a full monitor per channel, `monitors/<key>`;
//! 2. payments over A: one object per update, `monitor_updates/<key>/<id>`; every 7th update a
//!    consolidation (the full monitor again) after which the stale updates are pruned in one
//!    batch request;
//! 3. node-0 force-closes B; the commitment transaction confirms; blocks are connected until both
//!    sides' outputs are claimable (LDK hands them out as `SpendableOutputs`), then LDK's archival
//!    delay of 4,032 blocks, and `ChainMonitor::archive_fully_resolved_channel_monitors` moves B's
//!    monitor to `archived_monitors/<key>` and the persister deletes its update objects;
//! 4. more payments over A, so that updates are pending when the nodes stop.
//!
//! Then everything is dropped and each node restarts from its store: a new persister loads every
//! monitor with `read_all_channel_monitors_with_updates` (in parallel, applying the pending
//! updates), the `ChannelManager` is deserialized over them, and the example prints how many
//! monitors and updates it loaded, with how many requests and in what time, and checks that the
//! monitors equal those the nodes had when they stopped.
//!
//! The default store is the local directory `./ldk-node-flow-data` (emptied first); each node has
//! its own root below it (`node-0`, `node-1`). Any URL the builder knows works:
//! `s3://bucket/prefix` (credentials and `AWS_ENDPOINT` for S3-compatible servers from the
//! `AWS_*` variables), `gs://…`, `az://…`, `file:///abs/dir`, or `memory://`. A store that already
//! holds keys is refused unless `--wipe` is given.
//!
//! LDK's harness prints every log line to stdout. To keep the output readable, the example runs
//! the flow in a child process of itself with that output discarded; `--verbose` runs it in this
//! process and shows everything.

#[path = "../tests/common/ldk_flow.rs"]
mod ldk_flow;

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::ops::Range;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use bitcoin::{BlockHash, Network};
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use ldk_object_store::{MonitorPersister, ObjectKvStore, PersisterConfig, StoreBuilder};
use lightning::chain::channelmonitor::{Balance, ChannelMonitor, ARCHIVAL_DELAY_BLOCKS};
use lightning::events::Event;
use lightning::ln::channelmanager::ChannelManagerReadArgs;
use lightning::ln::functional_test_utils::{
	connect_block, connect_blocks, create_chanmon_cfgs, create_dummy_block,
	test_default_channel_config, Node, TestChanMonCfg, TestChannelManager,
};
use lightning::ln::msgs::BaseMessageHandler;
use lightning::ln::types::ChannelId;
use lightning::routing::gossip::NetworkGraph;
use lightning::sign::SpendableOutputDescriptor;
use lightning::util::persist::{
	KVStoreSync, MigratableKVStore, CHANNEL_MANAGER_PERSISTENCE_KEY,
	CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE, CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
};
use lightning::util::ser::{ReadableArgs, Writeable};
use lightning::util::test_channel_signer::TestChannelSigner;
use lightning::util::test_utils::{
	TestBroadcaster, TestChainMonitor, TestFeeEstimator, TestKeysInterface, TestLogger,
	TestMessageRouter, TestRouter, TestScorer,
};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
	CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
	PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use ldk_flow::{
	compare_monitors, force_close_and_confirm, open_channel, pay_on, with_network_of,
	write_manager, MonitorMatch, NODE_NAMES,
};

const DEFAULT_DIR: &str = "ldk-node-flow-data";
/// Set in the child process that runs the flow.
const CHILD_ENV: &str = "LDK_NODE_FLOW_CHILD";
/// Marks the child's report lines on its stderr, apart from the harness's own messages.
const REPORT_MARK: &str = "\u{1}report\u{1}";
/// Updates between two full-monitor writes: small, so that a short flow crosses it.
const MAX_PENDING: u64 = 7;
const CHANNEL_SAT: u64 = 1_000_000;

type Monitor = ChannelMonitor<TestChannelSigner>;
type Persister<'a> = MonitorPersister<
	&'a TestLogger,
	&'a TestKeysInterface,
	&'a TestKeysInterface,
	&'a TestBroadcaster,
	&'a TestFeeEstimator,
>;
type Report<'r> = &'r dyn Fn(&str);

struct Args {
	url: String,
	is_default: bool,
	wipe: bool,
	verbose: bool,
	payments: u32,
	/// The arguments as given, for the child process.
	raw: Vec<String>,
}

fn usage() -> String {
	"usage: cargo run --example ldk_node_flow [-- [<store URL>] [--wipe] [--payments N] [--verbose]]"
		.to_owned()
}

fn parse_args() -> Result<Args, String> {
	let raw: Vec<String> = std::env::args().skip(1).collect();
	let (mut url, mut wipe, mut verbose, mut payments) = (None, false, false, 8);
	let mut it = raw.iter();
	while let Some(arg) = it.next() {
		match arg.as_str() {
			"--wipe" => wipe = true,
			"--verbose" => verbose = true,
			"--payments" => {
				let n =
					it.next().ok_or_else(|| format!("--payments needs a number\n{}", usage()))?;
				payments = n.parse().map_err(|_| format!("--payments: {n:?} is not a number"))?;
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
		Some(url) if url.ends_with("://") => url,
		Some(url) => url.trim_end_matches('/').to_owned(),
		None => {
			let dir = std::env::current_dir()
				.map_err(|e| format!("finding the current directory: {e}"))?
				.join(DEFAULT_DIR);
			std::fs::create_dir_all(&dir)
				.map_err(|e| format!("creating {}: {e}", dir.display()))?;
			format!("file://{}", dir.display())
		},
	};
	Ok(Args { url, is_default, wipe, verbose, payments, raw })
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
	if !(child || args.verbose) {
		return run_in_child(&args);
	}
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
			report(&format!("\nFAILED: {msg}"));
			ExitCode::FAILURE
		},
	}
}

/// Runs the flow in a child process with the harness's stdout discarded, printing the child's
/// report as it comes; on failure also what else the child said (a panic message).
fn run_in_child(args: &Args) -> ExitCode {
	let spawned = std::env::current_exe().and_then(|exe| {
		Command::new(exe)
			.args(&args.raw)
			.env(CHILD_ENV, "1")
			.stdin(Stdio::null())
			.stdout(Stdio::null())
			.stderr(Stdio::piped())
			.spawn()
	});
	let mut child = match spawned {
		Ok(child) => child,
		Err(e) => {
			eprintln!("cannot start the flow: {e}; try --verbose");
			return ExitCode::FAILURE;
		},
	};
	let (mut other, mut closed) = (Vec::new(), false);
	if let Some(stderr) = child.stderr.take() {
		for line in BufReader::new(stderr).lines().map_while(Result::ok) {
			match line.strip_prefix(REPORT_MARK) {
				// Stop quietly if our own output was closed (`| head`).
				Some(report) if writeln!(std::io::stdout(), "{report}").is_err() => {
					let _ = child.kill();
					closed = true;
					break;
				},
				Some(_) => {},
				None if line.contains("Block Connection Style") => {},
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

// ---------------------------------------------------------------------------------------------
// Counting the requests the persister sends: an `ObjectStore` wrapper around the real store.

#[derive(Clone, Copy)]
enum Req {
	/// A full monitor written (`monitors/…`).
	MonitorPut,
	/// An update object written (`monitor_updates/…`).
	UpdatePut,
	/// A monitor archived (`archived_monitors/…`).
	ArchivePut,
	/// Anything else written (the `ChannelManager`).
	OtherPut,
	MonitorGet,
	UpdateGet,
	/// A read answered "not found" (how the loader learns that a monitor's updates end).
	MissingGet,
	OtherGet,
	List,
	/// One delete request, however many objects it deletes.
	Delete,
	/// Objects deleted.
	Deleted,
}

const KINDS: usize = 11;

#[derive(Debug, Default)]
struct Counts([AtomicUsize; KINDS]);

/// What the counters said at one moment; the difference of two is what happened in between.
#[derive(Clone, Copy, Default)]
struct Tally([usize; KINDS]);

impl Counts {
	fn add(&self, req: Req, n: usize) {
		self.0[req as usize].fetch_add(n, Ordering::Relaxed);
	}

	fn tally(&self) -> Tally {
		Tally(std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed)))
	}
}

impl Tally {
	fn get(&self, req: Req) -> usize {
		self.0[req as usize]
	}

	fn since(&self, earlier: &Tally) -> Tally {
		Tally(std::array::from_fn(|i| self.0[i] - earlier.0[i]))
	}

	fn requests(&self) -> usize {
		self.0.iter().sum::<usize>() - self.get(Req::Deleted)
	}
}

/// Counts every request to the real store below it, by the kind of object.
#[derive(Debug)]
struct Counted {
	inner: Arc<dyn ObjectStore>,
	counts: Arc<Counts>,
}

/// Which LDK namespace an object path is in.
fn namespace_of(location: &Path) -> &'static str {
	let parts: Vec<&str> = location.as_ref().split('/').collect();
	for ns in ["monitor_updates", "archived_monitors", "monitors"] {
		if parts.contains(&ns) {
			return ns;
		}
	}
	""
}

impl fmt::Display for Counted {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		write!(f, "Counted({})", self.inner)
	}
}

#[async_trait]
impl ObjectStore for Counted {
	async fn put_opts(
		&self, location: &Path, payload: PutPayload, opts: PutOptions,
	) -> object_store::Result<PutResult> {
		let req = match namespace_of(location) {
			"monitors" => Req::MonitorPut,
			"monitor_updates" => Req::UpdatePut,
			"archived_monitors" => Req::ArchivePut,
			_ => Req::OtherPut,
		};
		self.counts.add(req, 1);
		self.inner.put_opts(location, payload, opts).await
	}

	async fn put_multipart_opts(
		&self, location: &Path, opts: PutMultipartOptions,
	) -> object_store::Result<Box<dyn MultipartUpload>> {
		self.counts.add(Req::OtherPut, 1);
		self.inner.put_multipart_opts(location, opts).await
	}

	async fn get_opts(
		&self, location: &Path, options: GetOptions,
	) -> object_store::Result<GetResult> {
		let result = self.inner.get_opts(location, options).await;
		let req = match (&result, namespace_of(location)) {
			(Err(object_store::Error::NotFound { .. }), _) => Req::MissingGet,
			(_, "monitors") => Req::MonitorGet,
			(_, "monitor_updates") => Req::UpdateGet,
			_ => Req::OtherGet,
		};
		self.counts.add(req, 1);
		result
	}

	async fn get_ranges(
		&self, location: &Path, ranges: &[Range<u64>],
	) -> object_store::Result<Vec<Bytes>> {
		self.counts.add(Req::OtherGet, 1);
		self.inner.get_ranges(location, ranges).await
	}

	fn delete_stream(
		&self, locations: BoxStream<'static, object_store::Result<Path>>,
	) -> BoxStream<'static, object_store::Result<Path>> {
		self.counts.add(Req::Delete, 1);
		let counts = Arc::clone(&self.counts);
		self.inner.delete_stream(locations.inspect(move |_| counts.add(Req::Deleted, 1)).boxed())
	}

	fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
		self.counts.add(Req::List, 1);
		self.inner.list(prefix)
	}

	async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
		self.counts.add(Req::List, 1);
		self.inner.list_with_delimiter(prefix).await
	}

	async fn copy_opts(
		&self, from: &Path, to: &Path, options: CopyOptions,
	) -> object_store::Result<()> {
		self.counts.add(Req::OtherPut, 1);
		self.inner.copy_opts(from, to, options).await
	}
}

// ---------------------------------------------------------------------------------------------
// The stores.

/// One node's store, twice: `store` counts its requests (the node uses it), `plain` does not
/// (the example looks through it at what is stored).
struct NodeStore {
	name: &'static str,
	/// The URL of this node's root, for the command-line tool.
	url: String,
	store: ObjectKvStore,
	plain: ObjectKvStore,
	counts: Arc<Counts>,
}

/// Opens both nodes' stores at `<url>/node-i`. `memory://` stores would each be a new, empty
/// memory, so for that scheme all stores share `memory`.
fn open_stores(url: &str, memory: &Arc<dyn ObjectStore>) -> Result<[NodeStore; 2], String> {
	let open = |name: &'static str| -> Result<NodeStore, String> {
		let builder = if url.starts_with("memory:") {
			StoreBuilder::from_store(Arc::clone(memory))
		} else {
			// The example sets up new nodes: their directories may not exist yet.
			StoreBuilder::from_url(url).create_if_missing(true)
		};
		// One writer lease per node prefix: the node's (counted) store takes it, except on
		// `file://`, where the lease is an OS lock on the directory that only a store built from
		// the URL can take; there the plain store holds it for the process.
		let local = url.starts_with("file:");
		let builder = builder.with_prefix(name);
		let plain = if local { builder } else { builder.without_writer_lease() }
			.build()
			.map_err(|e| format!("cannot build a store for {url}: {e}"))?;
		let counts = Arc::new(Counts::default());
		let counted =
			Counted { inner: Arc::clone(plain.raw_backend()), counts: Arc::clone(&counts) };
		let builder = StoreBuilder::from_store(Arc::new(counted))
			.with_prefix(plain.key_mapper().root().as_ref());
		let store = if local { builder.without_writer_lease() } else { builder }
			.build()
			.map_err(|e| format!("cannot build a store for {url}: {e}"))?;
		Ok(NodeStore { name, url: format!("{url}/{name}"), store, plain, counts })
	};
	Ok([open(NODE_NAMES[0])?, open(NODE_NAMES[1])?])
}

/// Makes sure the nodes start from empty stores.
fn prepare_stores(args: &Args, stores: &[NodeStore; 2], report: Report) -> Result<(), String> {
	let mut removed = 0;
	for node in stores {
		let keys = node.plain.list_all_keys().map_err(|e| {
			format!(
				"cannot list {}: {e}\n(for S3 check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, \
				 AWS_REGION, and AWS_ENDPOINT / AWS_ALLOW_HTTP=true for a local server)",
				node.url
			)
		})?;
		let may_wipe = args.wipe || args.is_default;
		if !keys.is_empty() && !may_wipe {
			return Err(format!(
				"{} already holds {} keys; pass --wipe to delete them first, or use an empty \
				 location",
				node.url,
				keys.len()
			));
		}
		for (p, s, k) in keys {
			KVStoreSync::remove(&node.plain, &p, &s, &k, false)
				.map_err(|e| format!("removing {p}/{s}/{k} from {}: {e}", node.url))?;
			removed += 1;
		}
	}
	if removed > 0 {
		report(&format!("(removed {removed} keys left by an earlier run)"));
	}
	Ok(())
}

/// The ids of the update objects stored for monitor `key`, sorted.
fn update_ids(store: &ObjectKvStore, key: &str) -> Vec<u64> {
	let mut ids: Vec<u64> = KVStoreSync::list(store, "monitor_updates", key)
		.unwrap_or_else(|e| panic!("listing monitor_updates/{key}: {e}"))
		.iter()
		.filter_map(|id| id.parse().ok())
		.collect();
	ids.sort();
	ids
}

fn describe_ids(ids: &[u64]) -> String {
	match ids {
		[] => "no update objects".to_owned(),
		[one] => format!("update object {one}"),
		[first, .., last] => format!("update objects {first}..={last}"),
	}
}

/// `3 things`, `1 thing`, with thousands separators.
fn count(n: usize, thing: &str) -> String {
	format!("{} {thing}{}", sat(n as u64), if n == 1 { "" } else { "s" })
}

/// `1234567` as `1,234,567`.
fn sat(amount: u64) -> String {
	let digits = amount.to_string();
	let mut out = String::new();
	for (i, c) in digits.chars().enumerate() {
		if i > 0 && (digits.len() - i).is_multiple_of(3) {
			out.push(',');
		}
		out.push(c);
	}
	out
}

/// A monitor's balances as a Lightning developer reads them.
fn describe_balances(balances: &[Balance]) -> String {
	if balances.is_empty() {
		return "nothing left to claim".to_owned();
	}
	let parts: Vec<String> = balances
		.iter()
		.map(|b| {
			let amount = sat(b.claimable_amount_satoshis());
			match b {
				Balance::ClaimableOnChannelClose { .. } => format!("{amount} sat ours on close"),
				Balance::ClaimableAwaitingConfirmations { confirmation_height, .. } => {
					format!("{amount} sat claimable at height {confirmation_height}")
				},
				_ => format!("{amount} sat in an HTLC or contested output"),
			}
		})
		.collect();
	parts.join(", ")
}

fn spendable_sat(descriptor: &SpendableOutputDescriptor) -> u64 {
	match descriptor {
		SpendableOutputDescriptor::StaticOutput { output, .. } => output.value.to_sat(),
		SpendableOutputDescriptor::DelayedPaymentOutput(d) => d.output.value.to_sat(),
		SpendableOutputDescriptor::StaticPaymentOutput(d) => d.output.value.to_sat(),
	}
}

// ---------------------------------------------------------------------------------------------
// Phase 1: the flow.

/// A live monitor when the nodes stop, to compare the restart with.
struct LiveMonitor {
	key: String,
	update_id: u64,
	encoded: Vec<u8>,
}

struct LiveNode {
	node_id: bitcoin::secp256k1::PublicKey,
	channels: Vec<ChannelId>,
	monitors: Vec<LiveMonitor>,
}

fn run_flow(args: &Args, report: Report) -> Result<(), String> {
	report(&format!("LDK nodes persisting to {}", args.url));
	let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
	if args.url.starts_with("memory:") {
		report("(memory: both phases share one in-memory backend, gone when the example ends)");
	}
	let stores = open_stores(&args.url, &memory)?;
	prepare_stores(args, &stores, report)?;

	report("");
	report("Phase 1: two nodes of LDK's functional-test harness (real ChannelManagers and");
	report("ChainMonitors, messages in memory, a simulated chain), each persisting its channel");
	report(&format!(
		"monitors through a MonitorPersister (sync mode, a full monitor every {MAX_PENDING} updates)"
	));
	let started = Instant::now();
	let chanmon_cfgs = create_chanmon_cfgs(2);
	let persisters = [0, 1].map(|i| persister(&stores[i].store, &chanmon_cfgs[i]));
	let live = with_network_of(&chanmon_cfgs, [&persisters[0], &persisters[1]], |nodes| {
		persist_flow(nodes, &stores, args.payments, report)
	})?;
	drop(persisters);
	// Dropping the last handle of a store releases its writer lease, so the restart can take it.
	drop(stores);
	report(&format!(
		"  took {:.1?}; nodes, monitors, persisters and stores dropped",
		started.elapsed()
	));

	report("");
	report("Phase 2: restart. New stores on the same URL; per node a new MonitorPersister loads");
	report(
		"every monitor with read_all_channel_monitors_with_updates (up to 128 at once, each with",
	);
	report("its pending updates applied), then the ChannelManager is read over them");
	let fresh = open_stores(&args.url, &memory)?;
	for (i, node) in fresh.iter().enumerate() {
		restart(i, node, &live[i], report)?;
	}

	report("");
	report("What each node's store holds:");
	for node in &fresh {
		report_layout(node, report)?;
	}
	report("");
	if args.url.starts_with("memory:") {
		report("OK (the data was in memory and is gone now)");
	} else {
		report("OK. Inspect the data with the command-line tool:");
		report("  cargo install --path . --features cli --locked");
		for node in &fresh {
			report(&format!("  ldk-object-store ls {}", node.url));
			report(&format!("  ldk-object-store verify {}", node.url));
		}
		if !args.url.starts_with("file:") {
			report("  (in a shell with the same AWS_* / GOOGLE_* / AZURE_* variables as this run)");
		}
	}
	Ok(())
}

fn persister<'a>(store: &ObjectKvStore, cfg: &'a TestChanMonCfg) -> Persister<'a> {
	let config = PersisterConfig::default().with_maximum_pending_updates(MAX_PENDING);
	MonitorPersister::new(
		store,
		config,
		&cfg.logger,
		&cfg.keys_manager,
		&cfg.keys_manager,
		&cfg.tx_broadcaster,
		&cfg.fee_estimator,
	)
}

/// Follows what the persister writes between steps of the flow.
struct Watch<'s> {
	stores: &'s [NodeStore; 2],
	last: [Tally; 2],
}

impl Watch<'_> {
	/// What node `i`'s persister wrote since the last call (for all channels), and what the
	/// store holds for channel `label`'s monitor `key`.
	fn step(&mut self, i: usize, label: &str, key: &str) -> String {
		let now = self.stores[i].counts.tally();
		let delta = now.since(&self.last[i]);
		self.last[i] = now;
		let mut wrote = vec![count(delta.get(Req::UpdatePut), "update object")];
		if delta.get(Req::MonitorPut) > 0 {
			wrote.push(count(delta.get(Req::MonitorPut), "full monitor"));
		}
		if delta.get(Req::Delete) > 0 {
			let requests = count(delta.get(Req::Delete), "batch delete request");
			wrote.push(format!("pruned the stale updates ({requests})"));
		}
		let stored = describe_ids(&update_ids(&self.stores[i].plain, key));
		format!(
			"{}: wrote {}; stored for {label}: monitor + {stored}",
			NODE_NAMES[i],
			wrote.join(", ")
		)
	}
}

fn monitor_key(node: &Node<'_, '_, '_>, channel: ChannelId) -> String {
	let monitor = node.chain_monitor.chain_monitor.get_monitor(channel).expect("a live monitor");
	monitor.persistence_key().to_string()
}

fn balances(node: &Node<'_, '_, '_>, channel: ChannelId) -> Vec<Balance> {
	let monitor = node.chain_monitor.chain_monitor.get_monitor(channel).expect("a live monitor");
	monitor.get_claimable_balances()
}

fn persist_flow<'a, 'b>(
	nodes: &Vec<Node<'a, 'b, 'b>>, stores: &[NodeStore; 2], payments: u32, report: Report,
) -> Result<[LiveNode; 2], String> {
	let mut watch = Watch { stores, last: [Tally::default(); 2] };
	let chan_a = open_channel(nodes, CHANNEL_SAT);
	let chan_b = open_channel(nodes, CHANNEL_SAT);
	let (key_a, key_b) = (monitor_key(&nodes[0], chan_a), monitor_key(&nodes[0], chan_b));
	report(&format!(
		"  node-0 opened channels A and B to node-1, {} sat each, pushing {} sat of each to node-1",
		sat(CHANNEL_SAT),
		sat(CHANNEL_SAT / 2)
	));
	report(&format!("    A: channel {chan_a}, monitor key {key_a}"));
	report(&format!("    B: channel {chan_b}, monitor key {key_b}"));
	for i in 0..2 {
		report(&format!("    {}", watch.step(i, "A", &key_a)));
	}
	let scid_a = nodes[0]
		.node
		.list_channels()
		.iter()
		.find(|c| c.channel_id == chan_a)
		.and_then(|c| c.short_channel_id)
		.ok_or("channel A has no short channel id")?;

	let mut paid = 0u32;
	let mut pay_some = |count: u32, watch: &mut Watch| {
		for _ in 0..count {
			let n = paid;
			let (from, to) = if n.is_multiple_of(2) { (0, 1) } else { (1, 0) };
			let amount_sat = 1_000 + u64::from(n) * 100;
			pay_on(&nodes[from], &nodes[to], amount_sat * 1000, u64::from(n), None, Some(scid_a));
			report(&format!(
				"  payment {}: {} -> {} {} sat over A",
				n + 1,
				NODE_NAMES[from],
				NODE_NAMES[to],
				sat(amount_sat)
			));
			for i in 0..2 {
				report(&format!("    {}", watch.step(i, "A", &key_a)));
			}
			paid += 1;
		}
	};
	pay_some(payments / 2, &mut watch);

	// B: node-0 force-closes; the harness checks the closing events and broadcasts, and node-1
	// sees the commitment transaction in a block. node-0 sees that block too.
	force_close_and_confirm(nodes, chan_b, CHANNEL_SAT, "closed by the example");
	let block =
		nodes[1].blocks.lock().expect("the harness's blocks").last().expect("a block").0.clone();
	let commitment = block.txdata.first().expect("the commitment transaction").clone();
	let commitment_txid = commitment.compute_txid();
	connect_block(&nodes[0], &create_dummy_block(nodes[0].best_block_hash(), 42, vec![commitment]));
	report(&format!(
		"  node-0 force-closed B; its commitment transaction confirmed at height {}",
		nodes[0].best_block_info().1
	));
	for (i, node) in nodes.iter().enumerate() {
		report(&format!(
			"    {}; B: {}",
			watch.step(i, "B", &key_b),
			describe_balances(&balances(node, chan_b))
		));
	}

	// Blocks until both sides of B have nothing left to claim. LDK hands each output out once
	// it is spendable (`SpendableOutputs`, for the wallet or `OutputSweeper` to sweep).
	let mut blocks = 0;
	while !(balances(&nodes[0], chan_b).is_empty() && balances(&nodes[1], chan_b).is_empty()) {
		if blocks >= 1_000 {
			return Err("channel B's balances did not resolve within 1,000 blocks".into());
		}
		for node in nodes {
			connect_blocks(node, 1);
		}
		blocks += 1;
		for (i, node) in nodes.iter().enumerate() {
			for event in node.chain_monitor.chain_monitor.get_and_clear_pending_events() {
				if let Event::SpendableOutputs { outputs, .. } = event {
					let total: u64 = outputs.iter().map(spendable_sat).sum();
					report(&format!(
						"    after {blocks} blocks {} got SpendableOutputs: {} sat to sweep",
						NODE_NAMES[i],
						sat(total)
					));
				}
			}
		}
	}
	// The ChannelManager takes the monitors' events, as the background processor has it do; a
	// monitor is archived only once they are taken. There is nothing else to handle here.
	for (i, node) in nodes.iter().enumerate() {
		let (msgs, events) = (
			node.node.get_and_clear_pending_msg_events(),
			node.node.get_and_clear_pending_events(),
		);
		if !(msgs.is_empty() && events.is_empty()) {
			return Err(format!("{}: unexpected events {events:?} {msgs:?}", NODE_NAMES[i]));
		}
	}
	// The first call notes that B is resolved; LDK archives it ARCHIVAL_DELAY_BLOCKS later.
	for node in nodes {
		node.chain_monitor.chain_monitor.archive_fully_resolved_channel_monitors();
	}
	for node in nodes {
		connect_blocks(node, ARCHIVAL_DELAY_BLOCKS);
	}
	report(&format!(
		"  {} more blocks (LDK's archival delay); meanwhile LDK had the monitors written again \
		 (whole, no updates):",
		sat(u64::from(ARCHIVAL_DELAY_BLOCKS))
	));
	for i in 0..2 {
		report(&format!("    {}", watch.step(i, "A", &key_a)));
	}
	let funding_b =
		nodes[0].chain_monitor.chain_monitor.get_monitor(chan_b).expect("B").get_funding_txo();
	report("  then archive_fully_resolved_channel_monitors:");
	for (i, node) in nodes.iter().enumerate() {
		let pending = update_ids(&stores[i].plain, &key_b).len();
		node.chain_monitor.chain_monitor.archive_fully_resolved_channel_monitors();
		let stored_monitors = KVStoreSync::list(&stores[i].plain, "monitors", "")
			.map_err(|e| format!("listing monitors: {e}"))?;
		let archived = KVStoreSync::list(&stores[i].plain, "archived_monitors", "")
			.map_err(|e| format!("listing archived_monitors: {e}"))?;
		if node.chain_monitor.chain_monitor.list_monitors().contains(&chan_b)
			|| stored_monitors.contains(&key_b)
			|| !archived.contains(&key_b)
			|| !update_ids(&stores[i].plain, &key_b).is_empty()
		{
			return Err(format!("{}: channel B was not archived", NODE_NAMES[i]));
		}
		report(&format!(
			"    {}: B's monitor now in archived_monitors/ with its updates applied; \
			 its monitor object and {} deleted",
			NODE_NAMES[i],
			count(pending, "update object")
		));
		watch.step(i, "B", &key_b);
	}
	// A real chain source forgets what an archived monitor watched; the harness's keeps it, and
	// compares it on drop with what the remaining monitors register.
	for node in nodes {
		let gone = [funding_b.txid, commitment_txid];
		let (txn, outputs) = (&node.chain_source.watched_txn, &node.chain_source.watched_outputs);
		txn.lock().expect("watched txn").retain(|(txid, _)| !gone.contains(txid));
		outputs.lock().expect("watched outputs").retain(|(o, _)| !gone.contains(&o.txid));
	}

	pay_some(payments - payments / 2, &mut watch);

	// The managers, as the background processor writes them.
	for i in 0..2 {
		write_manager(&nodes[i], &stores[i].store);
	}
	report("  wrote both ChannelManagers");

	let mut live = Vec::new();
	for (i, node) in nodes.iter().enumerate() {
		let monitor = node.chain_monitor.chain_monitor.get_monitor(chan_a).expect("A's monitor");
		report(&format!(
			"  {} stops with A at update {}: {}",
			NODE_NAMES[i],
			monitor.get_latest_update_id(),
			describe_balances(&monitor.get_claimable_balances())
		));
		live.push(LiveNode {
			node_id: node.node.get_our_node_id(),
			channels: node.node.list_channels().iter().map(|c| c.channel_id).collect(),
			monitors: vec![LiveMonitor {
				key: key_a.clone(),
				update_id: monitor.get_latest_update_id(),
				encoded: monitor.encode(),
			}],
		});
	}
	let [n0, n1]: [LiveNode; 2] = live.try_into().map_err(|_| "two nodes")?;
	Ok([n0, n1])
}

// ---------------------------------------------------------------------------------------------
// Phase 2: the restart, as a node starts.

fn restart(index: usize, node: &NodeStore, live: &LiveNode, report: Report) -> Result<(), String> {
	let name = node.name;
	// Fresh components from the same seed, as a node has them at start-up.
	let cfgs = create_chanmon_cfgs(index + 1);
	let cfg = &cfgs[index];
	let persister = persister(&node.store, cfg);

	let started = Instant::now();
	let loaded: Vec<(BlockHash, Monitor)> = persister
		.read_all_channel_monitors_with_updates_blocking()
		.map_err(|e| format!("{name}: loading the monitors: {e}"))?;
	let took = started.elapsed();
	let c = node.counts.tally();
	report(&format!(
		"  {name}: read_all_channel_monitors_with_updates loaded {} and applied {} in {took:.1?} \
		 with {}: {}, {}, {}, {} (the end of the updates), {}",
		count(loaded.len(), "monitor"),
		count(c.get(Req::UpdateGet), "update"),
		count(c.requests(), "request"),
		count(c.get(Req::List), "list"),
		count(c.get(Req::MonitorGet), "monitor read"),
		count(c.get(Req::UpdateGet), "update read"),
		count(c.get(Req::MissingGet), "\"not found\""),
		count(c.get(Req::MonitorPut) + c.get(Req::UpdatePut) + c.get(Req::OtherPut), "write"),
	));

	// Each loaded monitor equals the one the node had when it stopped.
	let mut decoder = TestKeysInterface::new(&[index as u8; 32], Network::Testnet);
	decoder.disable_all_state_policy_checks = true;
	let keys: Vec<String> = loaded.iter().map(|(_, m)| m.persistence_key().to_string()).collect();
	let expected: Vec<&str> = live.monitors.iter().map(|m| m.key.as_str()).collect();
	if keys != expected {
		return Err(format!("{name}: loaded monitors {keys:?}, the node had {expected:?}"));
	}
	for ((_, monitor), live) in loaded.iter().zip(&live.monitors) {
		let (_, live_monitor) =
			<(BlockHash, Monitor)>::read(&mut &live.encoded[..], (&decoder, &decoder))
				.map_err(|e| format!("{name}: decoding the live monitor: {e:?}"))?;
		if monitor.get_latest_update_id() != live.update_id {
			return Err(format!(
				"{name}: monitor {} loaded at update {}, the live one was at {}",
				live.key,
				monitor.get_latest_update_id(),
				live.update_id
			));
		}
		// LDK writes a monitor for new blocks only every so often, so the stored chain state may
		// lag the live one (a restarting node syncs the chain from the monitor's block).
		let (stored_height, live_height) =
			(monitor.current_best_block().height, live_monitor.current_best_block().height);
		let how = match compare_monitors(monitor, &live_monitor, &decoder) {
			MonitorMatch::Different if stored_height < live_height => format!(
				"its chain state at height {stored_height}, the live monitor's at {live_height} \
				 (LDK writes monitors for new blocks only now and then)"
			),
			MonitorMatch::Different => {
				return Err(format!("{name}: monitor {} differs from the live one", live.key))
			},
			_ => "equal to the live one".to_owned(),
		};
		report(&format!(
			"    monitor {} at update {}, {how}; {}",
			live.key,
			live.update_id,
			describe_balances(&monitor.get_claimable_balances())
		));
	}

	// The ChannelManager over those monitors, then the monitors into a new ChainMonitor.
	let bytes = KVStoreSync::read(
		&node.store,
		CHANNEL_MANAGER_PERSISTENCE_PRIMARY_NAMESPACE,
		CHANNEL_MANAGER_PERSISTENCE_SECONDARY_NAMESPACE,
		CHANNEL_MANAGER_PERSISTENCE_KEY,
	)
	.map_err(|e| format!("{name}: reading the channel manager: {e}"))?;
	let graph = Arc::new(NetworkGraph::new(Network::Testnet, &cfg.logger));
	let scorer = RwLock::new(TestScorer::new());
	let router = TestRouter::new(Arc::clone(&graph), &cfg.logger, &scorer);
	let message_router = TestMessageRouter::new_default(Arc::clone(&graph), &cfg.keys_manager);
	let chain_monitor = TestChainMonitor::new(
		Some(&cfg.chain_source),
		&cfg.tx_broadcaster,
		&cfg.logger,
		&cfg.fee_estimator,
		&persister,
		&cfg.keys_manager,
	);
	let read_args = ChannelManagerReadArgs::new(
		&cfg.keys_manager,
		&cfg.keys_manager,
		&cfg.keys_manager,
		&cfg.fee_estimator,
		&chain_monitor,
		&cfg.tx_broadcaster,
		&router,
		&message_router,
		&cfg.logger,
		test_default_channel_config(),
		loaded.iter().map(|(_, m)| m).collect(),
	);
	let (_, manager) = <(BlockHash, TestChannelManager<'_, '_>)>::read(&mut &bytes[..], read_args)
		.map_err(|e| format!("{name}: deserializing the channel manager: {e:?}"))?;
	for (_, monitor) in loaded {
		let channel_id = monitor.channel_id();
		chain_monitor
			.load_existing_monitor(channel_id, monitor)
			.map_err(|()| format!("{name}: loading monitor {channel_id}"))?;
	}
	let channels: Vec<ChannelId> = manager.list_channels().iter().map(|c| c.channel_id).collect();
	if manager.get_our_node_id() != live.node_id || channels != live.channels {
		return Err(format!("{name}: the reloaded ChannelManager differs from the live one"));
	}
	report(&format!(
		"    ChannelManager ({} bytes) reloaded over them: node id {}, {}",
		sat(bytes.len() as u64),
		live.node_id,
		count(channels.len(), "open channel")
	));
	Ok(())
}

/// Prints the objects below a node's root, grouped as the persister lays them out.
fn report_layout(node: &NodeStore, report: Report) -> Result<(), String> {
	let mut keys = node.plain.list_all_keys().map_err(|e| format!("listing {}: {e}", node.url))?;
	keys.sort();
	report(&format!("  {}", node.url));
	let mut updates: Vec<(String, Vec<u64>)> = Vec::new();
	for (p, s, k) in &keys {
		let size =
			|| KVStoreSync::read(&node.plain, p, s, k).map(|b| b.len()).unwrap_or_default() as u64;
		match p.as_str() {
			"monitor_updates" => match updates.last_mut() {
				Some((key, ids)) if key == s => ids.extend(k.parse::<u64>().ok()),
				_ => updates.push((s.clone(), k.parse().ok().into_iter().collect())),
			},
			"monitors" => report(&format!(
				"    monitors/{k}  ({} bytes, full monitor with the 0xFF 0xFF prefix)",
				sat(size())
			)),
			"archived_monitors" => report(&format!(
				"    archived_monitors/{k}  ({} bytes, updates applied)",
				sat(size())
			)),
			_ => report(&format!("    {k}  ({} bytes)", sat(size()))),
		}
	}
	for (key, mut ids) in updates {
		ids.sort();
		report(&format!("    monitor_updates/{key}/  ({})", describe_ids(&ids)));
	}
	Ok(())
}
