//! `gc`: delete update objects that no load will read. Safe while the node runs: what is stale
//! for the monitor object read now stays stale when the node writes a newer one.

use std::fmt::Write;

use ldk_object_store::inspect::Inventory;
use serde_json::json;

use crate::output::{CommandResult, Outcome, Output};

const UPDATES: &str =
	lightning::util::persist::CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
	/// Store URL.
	url: String,
	/// Delete; without it, only show what would be deleted.
	#[arg(long)]
	apply: bool,
}

pub(crate) async fn run(args: &Args, options: &[(String, String)], out: &Output) -> CommandResult {
	let store = if args.apply {
		crate::open_writer(&args.url, options)?
	} else {
		crate::open(&args.url, options)?
	};
	let inventory = Inventory::scan(&store).await.map_err(|e| e.to_string())?;
	let mut batches: Vec<(String, Vec<String>, &str)> = Vec::new();
	for monitor in &inventory.monitors {
		if !monitor.stale.is_empty() {
			let keys = monitor.stale.iter().map(u64::to_string).collect();
			batches.push((monitor.key.clone(), keys, "stale"));
		}
	}
	for (monitor, keys) in &inventory.orphaned_updates {
		batches.push((monitor.clone(), keys.clone(), "orphaned"));
	}

	let total: usize = batches.iter().map(|(_, keys, _)| keys.len()).sum();
	let mut text = String::new();
	let bar = out.progress(total as u64, "deleting");
	for (monitor, keys, why) in &batches {
		let _ = writeln!(text, "{monitor}: {} {why} update object(s)", keys.len());
		if args.apply {
			store.start_remove_many(UPDATES, monitor, keys).await.map_err(|e| e.to_string())?;
			bar.inc(keys.len() as u64);
		}
	}
	bar.finish_and_clear();
	let verb = if args.apply { "deleted" } else { "would delete (dry run; --apply deletes)" };
	let _ = writeln!(text, "{verb}: {total} update object(s)");
	out.report(
		&text,
		json!({
			"applied": args.apply,
			"objects": total,
			"namespaces": batches.iter().map(|(m, keys, why)| json!({
				"monitor": m, "reason": why, "keys": keys,
			})).collect::<Vec<_>>(),
		}),
	);
	// A dry run that finds garbage is a finding (exit 1), so scripts can act on it.
	Ok(Outcome::from_problems(if args.apply { 0 } else { total }))
}
