//! `verify`: load every monitor the way a node does at startup, and check what is around it.
//!
//! Decoding a `ChannelMonitor` needs a signer provider. The tool uses a throwaway `KeysManager`:
//! decoding and applying updates do not depend on the node's keys, nothing is signed for real,
//! nothing is broadcast, and nothing is written back.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::Transaction;
use futures::stream::{self, StreamExt};
use ldk_object_store::inspect::MonitorEntry;
use ldk_object_store::{LoadMode, MonitorPersister, PersisterConfig};
use lightning::chain::chaininterface::{BroadcasterInterface, ConfirmationTarget, FeeEstimator};
use lightning::sign::KeysManager;
use lightning::util::logger::{Logger, Record};
use serde_json::json;

use crate::output::{CommandResult, Outcome, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
	#[command(flatten)]
	store: crate::location::StoreArg,
	/// How pending updates are found: probe (as LDK does), pipelined, list (one listing of all
	/// updates) or list-each (one listing per monitor).
	#[arg(long, default_value = "probe", value_parser = ["probe", "pipelined", "list", "list-each"])]
	load_mode: String,
	/// Monitors loaded at once.
	#[arg(long, default_value_t = 16)]
	concurrency: usize,
}

struct Quiet;
impl Logger for Quiet {
	fn log(&self, _record: Record) {}
}

struct NoBroadcast;
impl BroadcasterInterface for NoBroadcast {
	fn broadcast_transactions(&self, _txs: &[&Transaction]) {}
}

struct FixedFee;
impl FeeEstimator for FixedFee {
	fn get_est_sat_per_1000_weight(&self, _target: ConfirmationTarget) -> u32 {
		253
	}
}

/// One monitor's findings.
struct Checked {
	key: String,
	loaded_update_id: Option<u64>,
	problems: Vec<String>,
	notes: Vec<String>,
}

fn structural(entry: &MonitorEntry) -> (Vec<String>, Vec<String>) {
	let (mut problems, mut notes) = (Vec::new(), Vec::new());
	if let Err(why) = &entry.update_id {
		problems.push(format!("monitor object unreadable: {why}"));
	}
	if !entry.malformed.is_empty() {
		problems.push(format!("update keys that are not ids: {}", entry.malformed.join(", ")));
	}
	if !entry.beyond_gap.is_empty() {
		let ids: Vec<String> = entry.beyond_gap.iter().map(u64::to_string).collect();
		problems.push(format!(
			"a gap before update(s) {}: they are never applied (a write was lost mid-way)",
			ids.join(", ")
		));
	}
	if !entry.sentinel && !entry.pending.is_empty() {
		problems.push("pending updates next to a monitor without the 0xFF 0xFF sentinel".into());
	}
	if !entry.stale.is_empty() {
		notes.push(format!("{} stale update object(s) (`gc` deletes them)", entry.stale.len()));
	}
	(problems, notes)
}

pub(crate) async fn run(args: &Args, options: &[(String, String)], out: &Output) -> CommandResult {
	let (store, url) = crate::open_existing(&args.store.location, options, false)?;
	let inventory = crate::roots::node_inventory(&store, &url).await?;
	let load_mode = match args.load_mode.as_str() {
		"pipelined" => LoadMode::Pipelined { window: 8 },
		"list" => LoadMode::List,
		"list-each" => LoadMode::ListEach,
		_ => LoadMode::Probe,
	};
	let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
	let keys = KeysManager::new(&[0x42; 32], now.as_secs(), now.subsec_nanos(), true);
	let config = PersisterConfig::default().with_load_mode(load_mode);
	let persister =
		MonitorPersister::new(&store, config, &Quiet, &keys, &keys, &NoBroadcast, &FixedFee);

	let bar = out.progress(inventory.monitors.len() as u64, "loading monitors");
	let mut checked: Vec<Checked> = stream::iter(&inventory.monitors)
		.map(|entry| {
			let (persister, bar) = (&persister, &bar);
			async move {
				let (mut problems, notes) = structural(entry);
				let loaded = persister.read_channel_monitor_with_updates(&entry.key).await;
				bar.inc(1);
				let loaded_update_id = match loaded {
					Ok((_, monitor)) => Some(monitor.get_latest_update_id()),
					Err(e) => {
						problems.push(format!("does not load: {e}"));
						None
					},
				};
				if let (Some(loaded), Ok(stored)) = (loaded_update_id, &entry.update_id) {
					let expected = stored + entry.pending.len() as u64;
					if loaded != expected {
						problems.push(format!("loaded at update {loaded}, expected {expected}"));
					}
				}
				Checked { key: entry.key.clone(), loaded_update_id, problems, notes }
			}
		})
		.buffer_unordered(args.concurrency.max(1))
		.collect()
		.await;
	bar.finish_and_clear();
	checked.sort_by(|a, b| a.key.cmp(&b.key));

	let orphans: usize = inventory.orphaned_updates.values().map(Vec::len).sum();
	let problems: usize = checked.iter().map(|c| c.problems.len()).sum();
	let mut text = String::new();
	for c in &checked {
		let state = if c.problems.is_empty() { "ok" } else { "PROBLEM" };
		let id = c.loaded_update_id.map_or_else(|| "-".to_owned(), |id| id.to_string());
		let _ = writeln!(text, "{state:<8} {}  update id {id}", c.key);
		for p in &c.problems {
			let _ = writeln!(text, "         problem: {p}");
		}
		for n in &c.notes {
			let _ = writeln!(text, "         note: {n}");
		}
	}
	if orphans > 0 {
		let _ = writeln!(text, "note: {orphans} orphaned update object(s) (`gc` deletes them)");
	}
	let _ = writeln!(text, "{} monitor(s) checked, {problems} problem(s)", checked.len());
	out.report(
		&text,
		json!({
			"monitors": checked.iter().map(|c| json!({
				"key": c.key, "update_id": c.loaded_update_id, "problems": c.problems, "notes": c.notes,
			})).collect::<Vec<_>>(),
			"orphaned_updates": orphans,
			"problems": problems,
		}),
	);
	Ok(Outcome::from_problems(problems))
}
