//! End to end on the S3-like model: each persister writes its own store through a real
//! `ChainMonitor` over the main benchmark's workload (`benches/persistence/plan.rs`: the same
//! channels, the same number of updates for each, in the same order), then the node starts again
//! on the S3-like model, after a clean shutdown and after a crash, each load on a model of its
//! own.
//!
//! - **LDK 0.3.0-rc3**: its `MonitorUpdatingPersister` under a 0.3 `ChainMonitor`, over the
//!   adapter's `KVStoreSync` (the sync persister runs the async one's code through LDK's
//!   `KVStoreSyncWrapper`, so it stores what the async one would). It has no shutdown step: a
//!   crash and a clean shutdown leave the same store. Loaded with `MonitorUpdatingPersisterAsync`
//!   over the adapter with object_store's retries.
//! - **This crate** with `PersisterConfig::default()` under a 0.2.7 `ChainMonitor`: a crash
//!   leaves the store as the last update left it; a clean shutdown runs `consolidate`. Loaded with
//!   `PersisterConfig::default()`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use bitcoin::BlockHash;
use futures::TryStreamExt;
use ldk_object_store::PersisterConfig;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use store_models::{Control, Counts, LatencyStore, S3LikeStore, S3Model, S3Params};

use crate::fixtures::ChannelFixture;
use crate::kv03::ObjectKv03;
use crate::plan::{bursts, counts, replay};
use crate::{load, loaders, mib, secs, Bench, Loader, Measured, ROOT};

/// LDK's `maximum_pending_updates` for LDK 0.3's persister: the main benchmark's workload gives
/// LDK 0.2.7's the same.
const MAX_PENDING: u64 = 100;

/// How a stored state came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
	Clean,
	Crash,
}

impl Stop {
	fn name(self) -> &'static str {
		match self {
			Stop::Clean => "a clean shutdown",
			Stop::Crash => "a crash",
		}
	}
}

/// What one persister's working life wrote.
pub struct Life {
	pub who: &'static str,
	/// Requests during the life (registering the channels excluded).
	pub writes: Counts,
	/// Objects stored after each stop.
	pub stores: Vec<(Stop, Arc<dyn ObjectStore>, usize)>,
}

/// One start on the S3-like model.
pub struct Start {
	pub loader: Loader,
	pub written_by: &'static str,
	pub stop: Stop,
	pub objects: usize,
	pub result: Result<Measured, String>,
}

pub struct Section {
	pub n: usize,
	pub updates: u64,
	pub lives: Vec<Life>,
	pub starts: Vec<Start>,
}

/// Every object below the root of `from`, copied into a fresh in-memory store; how many.
fn snapshot(bench: &Bench, from: &Arc<dyn ObjectStore>) -> (Arc<dyn ObjectStore>, usize) {
	let to: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
	let copied = bench.rt.block_on(async {
		let metas: Vec<_> = from.list(Some(&ObjectPath::from(ROOT))).try_collect().await?;
		for meta in &metas {
			let bytes = from.get(&meta.location).await?.bytes().await?;
			to.put(&meta.location, bytes.into()).await?;
		}
		Ok::<_, object_store::Error>(metas.len())
	});
	(to, copied.expect("copying an in-memory store"))
}

/// A counted store with no round trip over a fresh in-memory one, for a working life.
fn counted() -> (Arc<dyn ObjectStore>, Arc<dyn ObjectStore>, Arc<Control>) {
	let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
	let control = Arc::new(Control::default());
	(Arc::clone(&inner), LatencyStore::wrap(inner, Arc::clone(&control)), control)
}

/// LDK 0.3.0-rc3's working life.
fn ldk03_life(
	bench: &Bench, channels: &[&ChannelFixture], counts: &[usize], plan: &[(usize, usize)],
) -> Life {
	use lightning::chain::chainmonitor::ChainMonitor;
	use lightning::chain::channelmonitor::{ChannelMonitor, ChannelMonitorUpdate};
	use lightning::chain::{ChannelMonitorUpdateStatus, Watch};
	use lightning::sign::NodeSigner;
	use lightning::util::ser::{Readable, ReadableArgs};

	let env = bench.env03;
	let (inner, store, control) = counted();
	let kv = ObjectKv03::new(store, ROOT);
	let persister = lightning::util::persist::MonitorUpdatingPersister::new(
		&kv,
		&env.logger,
		MAX_PENDING,
		&env.keys,
		&env.keys,
		&env.broadcaster,
		&env.fees,
	);
	let monitors = ChainMonitor::new(
		None::<&'static NoChain03>,
		&env.broadcaster,
		&env.logger,
		&env.fees,
		&persister,
		&env.keys,
		env.keys.get_peer_storage_key(),
		false,
	);
	let ids: Vec<_> = channels
		.iter()
		.map(|c| {
			let (_, monitor) = <(
				lightning::chain::BlockLocator,
				ChannelMonitor<lightning::sign::InMemorySigner>,
			)>::read(&mut &c.monitor[..], (&env.keys, &env.keys))
			.expect("LDK 0.3 decodes the fixture monitor");
			let id = monitor.channel_id();
			let status = monitors.watch_channel(id, monitor).expect("a new channel");
			assert_eq!(status, ChannelMonitorUpdateStatus::Completed, "{}", c.label);
			id
		})
		.collect();
	control.counters.reset();
	replay(plan, counts, |channel, i| {
		let bytes = &channels[channel].updates[i];
		let update = ChannelMonitorUpdate::read(&mut &bytes[..]).expect("LDK 0.3 decodes it");
		let status = monitors.update_channel(ids[channel], &update);
		assert_eq!(status, ChannelMonitorUpdateStatus::Completed, "{}", channels[channel].label);
	});
	let writes = control.counters.snapshot();
	drop(monitors);
	let (stored, objects) = snapshot(bench, &inner);
	// Nothing happens at shutdown: a crash leaves what a clean stop leaves.
	Life {
		who: "LDK 0.3.0-rc3 `MonitorUpdatingPersister` (100)",
		writes,
		stores: vec![(Stop::Clean, Arc::clone(&stored), objects), (Stop::Crash, stored, objects)],
	}
}

/// No chain source: the workload connects no blocks (LDK 0.3's `ChainMonitor` takes one by
/// type).
pub struct NoChain03;

impl lightning::chain::Filter for NoChain03 {
	fn register_tx(&self, _txid: &bitcoin::Txid, _script: &bitcoin::Script) {}
	fn register_output(&self, _output: lightning::chain::WatchedOutput) {}
}

/// The same for LDK 0.2.7's `ChainMonitor`.
pub struct NoChain02;

impl lightning_02::chain::Filter for NoChain02 {
	fn register_tx(&self, _txid: &bitcoin::Txid, _script: &bitcoin::Script) {}
	fn register_output(&self, _output: lightning_02::chain::WatchedOutput) {}
}

/// This crate's working life with `PersisterConfig::default()`.
fn ours_life(
	bench: &Bench, channels: &[&ChannelFixture], counts: &[usize], plan: &[(usize, usize)],
) -> Life {
	use lightning_02::chain::chainmonitor::ChainMonitor;
	use lightning_02::chain::channelmonitor::{ChannelMonitor, ChannelMonitorUpdate};
	use lightning_02::chain::{ChannelMonitorUpdateStatus, Watch};
	use lightning_02::sign::NodeSigner;
	use lightning_02::util::ser::{Readable, ReadableArgs};

	let env = bench.env02;
	let (inner, store, control) = counted();
	let kv = loaders::our_store(store, ROOT, ldk_object_store::config::DEFAULT_MAX_IN_FLIGHT);
	let persister = loaders::ours(&kv, env, PersisterConfig::default());
	let monitors = ChainMonitor::new(
		None::<&'static NoChain02>,
		&env.broadcaster,
		&env.logger,
		&env.fees,
		&persister,
		&env.keys,
		env.keys.get_peer_storage_key(),
	);
	let ids: Vec<_> = channels
		.iter()
		.map(|c| {
			let (_, monitor) =
				<(BlockHash, ChannelMonitor<lightning_02::sign::InMemorySigner>)>::read(
					&mut &c.monitor[..],
					(&env.keys, &env.keys),
				)
				.expect("the fixture monitor decodes");
			let id = monitor.channel_id();
			let status = monitors.watch_channel(id, monitor).expect("a new channel");
			assert_eq!(status, ChannelMonitorUpdateStatus::Completed, "{}", c.label);
			id
		})
		.collect();
	control.counters.reset();
	replay(plan, counts, |channel, i| {
		let bytes = &channels[channel].updates[i];
		let update = ChannelMonitorUpdate::read(&mut &bytes[..]).expect("it decodes");
		let status = monitors.update_channel(ids[channel], &update);
		assert_eq!(status, ChannelMonitorUpdateStatus::Completed, "{}", channels[channel].label);
	});
	let writes = control.counters.snapshot();
	// A crash now leaves the store as it is.
	let (crashed, crashed_objects) = snapshot(bench, &inner);
	persister.consolidate(&monitors).expect("consolidate");
	drop(monitors);
	let (clean, clean_objects) = snapshot(bench, &inner);
	Life {
		who: "this crate, `PersisterConfig::default()`",
		writes,
		stores: vec![(Stop::Clean, clean, clean_objects), (Stop::Crash, crashed, crashed_objects)],
	}
}

/// Both lives over the first `n` startup channels, then each stored state loaded on a fresh
/// S3-like model with `params`: this crate's by this crate's defaults, LDK 0.3's by LDK 0.3's
/// loader.
pub fn run(
	bench: &Bench, channels: &[&ChannelFixture], updates: usize, params: S3Params,
) -> Section {
	let n = channels.len();
	let counts = counts(n, updates);
	let plan = bursts(&counts);
	let total: u64 = counts.iter().map(|c| *c as u64).sum();
	let expected: HashMap<String, u64> = channels
		.iter()
		.zip(&counts)
		.map(|(c, k)| (c.key.clone(), c.update_id + *k as u64))
		.collect();
	eprintln!("end to end: {n} channels, {total} updates through each persister");
	let lives = vec![
		ours_life(bench, channels, &counts, &plan),
		ldk03_life(bench, channels, &counts, &plan),
	];
	let mut starts = Vec::new();
	for (life, loader) in lives.iter().zip([Loader::OursDefault, Loader::Ldk03Retry]) {
		for (stop, inner, objects) in &life.stores {
			let model = S3Model::new(params);
			let control = Arc::new(Control::default());
			let store = LatencyStore::wrap(
				S3LikeStore::wrap(Arc::clone(inner), Arc::clone(&model)),
				Arc::clone(&control),
			);
			let result = load(bench, loader, &store, &control, Some(&model), &expected);
			match &result {
				Ok(m) => eprintln!(
					"end to end, after {}: {}: {} ({} requests, {} throttled)",
					stop.name(),
					loader.name(),
					secs(m.elapsed),
					m.counts.requests(),
					m.s3.as_ref().map_or(0, store_models::S3Counts::throttled_total)
				),
				Err(e) => {
					eprintln!("end to end, after {}: {}: failed: {e}", stop.name(), loader.name())
				},
			}
			starts.push(Start {
				loader,
				written_by: life.who,
				stop: *stop,
				objects: *objects,
				result,
			});
		}
	}
	Section { n, updates: total, lives, starts }
}

/// The section's markdown: the lives' writes, the starts, and the targets they bear on.
pub fn markdown(section: &Section, params: &S3Params) -> String {
	let n = section.n as f64;
	let mut out = String::new();
	let _ = writeln!(out, "#### End to end on the S3-like model\n");
	let _ = writeln!(
		out,
		"Each persister writes its own store through a real `ChainMonitor` over the main \
		 benchmark's workload (`benches/persistence/plan.rs`: {} channels, {} updates, each \
		 channel 1 to 49 of its recorded updates, in bursts of 1–8 in one random order shared by \
		 both), on an in-memory store with no round trip. LDK 0.3.0-rc3's \
		 `MonitorUpdatingPersister` (`maximum_pending_updates` {MAX_PENDING}) runs under a 0.3 \
		 `ChainMonitor` and has no shutdown step, so a crash leaves what a clean stop leaves; \
		 this crate's persister with `PersisterConfig::default()` runs under a 0.2.7 \
		 `ChainMonitor` (its store without a writer lease, so without fencing), and a clean \
		 shutdown runs its `consolidate`. Then each stored state is loaded on an S3-like model \
		 of its own ({}), LDK 0.3's by its `MonitorUpdatingPersisterAsync` with object_store's \
		 retries, this crate's by `PersisterConfig::default()`; every load is checked (each \
		 monitor at its recorded update id plus the updates it made).\n",
		section.n,
		section.updates,
		params.describe()
	);
	let _ = writeln!(
		out,
		"| persister | requests during the life | PUTs | deletes | requests / update |"
	);
	let _ = writeln!(out, "|---|---:|---:|---:|---:|");
	for life in &section.lives {
		let w = &life.writes;
		let _ = writeln!(
			out,
			"| {} | {} | {} | {} | {:.3} |",
			life.who,
			w.requests(),
			w.puts,
			w.delete_requests,
			w.requests() as f64 / section.updates.max(1) as f64
		);
	}
	let _ = writeln!(
		out,
		"\n| loader | store written by | after | objects stored | wall time | requests (GET + list \
		 pages) | requests / monitor | throttled (503) | peak heap | CPU |"
	);
	let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
	for s in &section.starts {
		let cells = match &s.result {
			Ok(m) => format!(
				"{} | {} ({} + {}) | {:.2} | {} | {} | {:.2} s",
				secs(m.elapsed),
				m.counts.requests(),
				m.counts.gets,
				m.counts.lists,
				m.counts.requests() as f64 / n,
				m.s3.as_ref().map_or(0, store_models::S3Counts::throttled_total),
				mib(m.peak_heap),
				m.cpu.as_secs_f64()
			),
			Err(e) => format!("**failed**: {} | — | — | — | — | —", crate::cell_text(e)),
		};
		let _ = writeln!(
			out,
			"| {} | {} | {} | {} | {cells} |",
			s.loader.name(),
			s.written_by,
			s.stop.name(),
			s.objects
		);
	}
	let time = |loader: Loader, stop: Stop| {
		section
			.starts
			.iter()
			.find(|s| s.loader == loader && s.stop == stop)
			.and_then(|s| s.result.as_ref().ok())
	};
	let _ = writeln!(out);
	for stop in [Stop::Clean, Stop::Crash] {
		let (Some(ours), Some(ldk)) =
			(time(Loader::OursDefault, stop), time(Loader::Ldk03Retry, stop))
		else {
			let _ = writeln!(out, "- After {}: a load failed, so no ratio.", stop.name());
			continue;
		};
		let speedup = ldk.elapsed.as_secs_f64() / ours.elapsed.as_secs_f64();
		let per_monitor = ours.counts.requests() as f64 / n;
		let _ = writeln!(
			out,
			"- After {}: this crate's defaults {speedup:.2}× LDK 0.3-rc3 (target ≥ 5×: {}), \
			 {per_monitor:.2} requests per monitor (target ≤ 1.2: {}).",
			stop.name(),
			if speedup >= 5.0 { "met" } else { "**not met**" },
			if per_monitor <= 1.2 { "met" } else { "**not met**" },
		);
	}
	out
}
