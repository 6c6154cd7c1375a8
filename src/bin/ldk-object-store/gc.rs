//! `gc`: delete update objects that no load will read: those at or below their monitor's update
//! id (what is stale for the monitor object read now stays stale when the node writes a newer
//! one), and the update namespaces of archived channels. A namespace whose monitor is neither
//! stored nor archived is kept: it may be a channel whose first monitor write is still in flight.

use std::fmt::Write;

use serde_json::json;

use crate::output::{CommandResult, Outcome, Output};

use lightning::util::persist::CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE as UPDATES;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
	#[command(flatten)]
	store: crate::location::StoreArg,
	/// Delete; without it, only show what would be deleted.
	#[arg(long)]
	apply: bool,
}

pub(crate) async fn run(args: &Args, options: &[(String, String)], out: &Output) -> CommandResult {
	// --apply deletes, so it takes the writer lease: refused while a node runs on the prefix.
	let (store, url) = crate::open_existing(&args.store.location, options, args.apply)?;
	let inventory = crate::roots::node_inventory(&store, &url).await?;
	let mut batches: Vec<(String, Vec<String>, &str)> = Vec::new();
	for monitor in &inventory.monitors {
		if !monitor.stale.is_empty() {
			let keys = monitor.stale.iter().map(u64::to_string).collect();
			batches.push((monitor.key.clone(), keys, "stale"));
		}
	}
	let mut kept = Vec::new();
	for (monitor, keys) in &inventory.orphaned_updates {
		if inventory.archived.contains(monitor) {
			batches.push((monitor.clone(), keys.clone(), "archived channel's"));
		} else {
			kept.push(monitor.clone());
		}
	}

	let total: usize = batches.iter().map(|(_, keys, _)| keys.len()).sum();
	let mut text = String::new();
	let bar = out.progress(total as u64, "deleting");
	for (monitor, keys, why) in &batches {
		let _ = writeln!(text, "{monitor}: {} {why} update object(s)", keys.len());
		if args.apply {
			// Checked again right before deleting: the listing may be old by now.
			let archived = *why != "stale"
				&& ldk_object_store::inspect::orphan_is_archived(&store, monitor)
					.await
					.map_err(|e| e.to_string())?;
			if *why == "stale" || archived {
				store.remove_many(UPDATES, monitor, keys).await.map_err(|e| e.to_string())?;
			}
			bar.inc(keys.len() as u64);
		}
	}
	for monitor in &kept {
		let _ = writeln!(
			text,
			"{monitor}: kept its update objects: its monitor is neither stored nor archived (a \
			 channel being opened, or damage; `verify` says more)"
		);
	}
	bar.finish_and_clear();
	let verb = if args.apply { "deleted" } else { "would delete (dry run; --apply deletes)" };
	let _ = writeln!(text, "{verb}: {total} update object(s)");
	out.report(
		&text,
		json!({
			"applied": args.apply,
			"kept_namespaces": kept,
			"objects": total,
			"namespaces": batches.iter().map(|(m, keys, why)| json!({
				"monitor": m, "reason": why, "keys": keys,
			})).collect::<Vec<_>>(),
		}),
	);
	// A dry run that finds garbage is a finding (exit 1), so scripts can act on it.
	Ok(Outcome::from_problems(if args.apply { 0 } else { total }))
}
