//! `lease URL`: who holds the writer lease of a node's prefix, and `--break` for an operator who
//! knows that holder is dead.

use std::io::BufRead;

use ldk_object_store::lease::{self, LeaseInfo};
use serde_json::json;

use crate::location;
use crate::output::{redact, CommandResult, Outcome, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
	#[command(flatten)]
	store: crate::location::StoreArg,
	/// Take the lease away from its holder, so that a new instance starts at once. Only when
	/// that holder is certainly dead: two live instances of one node lose money.
	#[arg(long = "break")]
	break_it: bool,
	/// Confirm --break without typing the holder's instance id.
	#[arg(long, requires = "break_it")]
	yes: bool,
}

fn info_json(info: &LeaseInfo) -> serde_json::Value {
	json!({
		"instance": info.instance,
		"host": info.host,
		"pid": info.pid,
		"generation": info.generation,
		"expires_unix_ms": info.expires_unix_ms,
		"released": info.is_released(),
	})
}

pub(crate) async fn run(args: &Args, options: &[(String, String)], out: &Output) -> CommandResult {
	// The same location forms as every other command; a missing directory is never created.
	let url = args.store.existing_url()?;
	if let Some(dir) = location::local_dir(&url) {
		// A file:// store holds an OS lock instead; it ends with its process.
		let locked =
			lease::directory_is_locked(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
		let text = if locked {
			"locked by a running process (a file:// store's lock ends with its process: stop it)"
		} else {
			"free"
		};
		out.report(&format!("{}: {text}\n", redact(&url)), json!({ "locked": locked }));
		return if args.break_it {
			Err("a file:// store's lock cannot be broken: stop the process that holds it".into())
		} else {
			Ok(Outcome::from_problems(0))
		};
	}
	// Read-only: this tool must not contend for the lease it shows.
	let store = crate::open(&url, options)?;
	let held = lease::read_lease(&store).await.map_err(|e| format!("reading the lease: {e}"))?;
	let Some(held) = held else {
		out.report(
			"no writer lease: no instance has started on this prefix\n",
			json!({ "lease": null }),
		);
		return Ok(Outcome::from_problems(0));
	};
	if !args.break_it {
		let text = format!(
			"holder: {}\ngeneration: {}\nexpires: {}\n",
			held.holder(),
			held.generation,
			held.expiry_text()
		);
		out.report(&text, json!({ "lease": info_json(&held) }));
		return Ok(Outcome::from_problems(0));
	}
	if !args.yes {
		eprintln!(
			"Breaking the lease of {}, generation {}, expires {}.\nIf that instance is alive, two \
			 instances of the node will run. Type its instance id to confirm:",
			held.holder(),
			held.generation,
			held.expiry_text()
		);
		let mut typed = String::new();
		std::io::stdin().lock().read_line(&mut typed).map_err(|e| e.to_string())?;
		if typed.trim() != held.instance {
			return Err("not confirmed: the lease was left as it is".into());
		}
	}
	let broken = lease::break_lease(&store, &held.instance).await?;
	out.report(
		&format!("broke the lease of {} (generation {})\n", broken.holder(), broken.generation),
		json!({ "broken": info_json(&broken) }),
	);
	Ok(Outcome::from_problems(0))
}
