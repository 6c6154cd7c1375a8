//! `ls`: what the store holds, by namespace and by monitor.

use std::fmt::Write;

use serde_json::json;

use crate::location::StoreArg;
use crate::output::{bytes, CommandResult, Outcome, Output};

pub(crate) async fn run(
	location: &StoreArg, options: &[(String, String)], out: &Output,
) -> CommandResult {
	let (store, url) = crate::open_existing(&location.location, options, false)?;
	let inventory = crate::roots::node_inventory(&store, &url).await?;
	let mut text = String::new();
	let _ = writeln!(text, "{:<48} {:>8} {:>12}", "namespace (primary/secondary)", "keys", "bytes");
	for ((primary, secondary), stats) in &inventory.namespaces {
		let name = format!("{primary}/{secondary}");
		let _ = writeln!(text, "{name:<48} {:>8} {:>12}", stats.keys, bytes(stats.bytes));
	}
	let _ = writeln!(text, "\nmonitors: {}", inventory.monitors.len());
	for m in &inventory.monitors {
		let id = match &m.update_id {
			Ok(id) => id.to_string(),
			Err(why) => format!("unreadable ({why})"),
		};
		let _ = writeln!(
			text,
			"  {}  {:>10}  update id {id}, {} pending update(s) ({}), {} stale",
			m.key,
			bytes(m.bytes),
			m.pending.len(),
			bytes(m.update_bytes),
			m.stale.len(),
		);
	}
	if !inventory.orphaned_updates.is_empty() {
		let orphans: usize = inventory.orphaned_updates.values().map(Vec::len).sum();
		let _ = writeln!(text, "orphaned update objects (no monitor stored): {orphans}");
	}
	let json = json!({
		"namespaces": inventory.namespaces.iter().map(|((p, s), stats)| json!({
			"primary_namespace": p, "secondary_namespace": s, "keys": stats.keys, "bytes": stats.bytes,
		})).collect::<Vec<_>>(),
		"monitors": inventory.monitors.iter().map(|m| json!({
			"key": m.key,
			"bytes": m.bytes,
			"update_id": m.update_id.as_ref().ok(),
			"pending_updates": m.pending.len(),
			"pending_update_bytes": m.update_bytes,
			"stale_updates": m.stale.len(),
		})).collect::<Vec<_>>(),
		"orphaned_updates": inventory.orphaned_updates,
		"archived_monitors": inventory.archived,
	});
	out.report(&text, json);
	Ok(Outcome::Clean)
}
