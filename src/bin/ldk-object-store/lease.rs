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
	/// Take the lease away from a dead holder. Refused while the holder renewed recently;
	/// otherwise watches the lease for its time to live plus the clock skew allowance (35 s by
	/// default) and releases it only if nobody renewed it meanwhile, so that the next instance
	/// starts at once and never beside a live holder.
	#[arg(long = "break")]
	break_it: bool,
	/// With --break: break a lease whose holder may be alive. The holder stops at its next
	/// renewal, and the next instance may start only once the holder's trust has ended for sure
	/// (time to live plus skew allowance from now, then watched as long again).
	#[arg(long, requires = "break_it")]
	force: bool,
	/// Confirm --break without typing the holder's instance id.
	#[arg(long, requires = "break_it")]
	yes: bool,
}

pub(crate) fn info_json(info: &LeaseInfo) -> serde_json::Value {
	json!({
		"instance": info.instance,
		"host": info.host,
		"pid": info.pid,
		"generation": info.generation,
		"expires_unix_ms": info.expires_unix_ms,
		"ttl_ms": info.ttl_ms,
		"released": info.is_released(),
		"broken": info.is_broken(),
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
	// The holder's own time to live, where its lease records it.
	let mut config = lease::LeaseConfig::default();
	if held.ttl_ms > 0 {
		config = config.with_ttl(std::time::Duration::from_millis(held.ttl_ms));
	}
	let mut told = false;
	let outcome = lease::break_lease(&store, &held.instance, args.force, &config, |left| {
		if !told {
			eprintln!(
				"watching the lease for {left:.0?}: it is released only if nobody renews it \
				 meanwhile"
			);
			told = true;
		}
	})
	.await?;
	let (text, value) = match outcome {
		lease::BreakOutcome::Released { broken } => (
			format!(
				"released the lease of {} (generation {}): it was not renewed for its time to \
				 live plus the skew allowance, so its holder no longer trusted it. The next \
				 instance starts at once.\n",
				broken.holder(),
				broken.generation
			),
			json!({ "broken": info_json(&broken), "released": true }),
		),
		lease::BreakOutcome::Forced { broken, free_after_unix_ms } => {
			let now = std::time::SystemTime::now()
				.duration_since(std::time::UNIX_EPOCH)
				.map_or(0, |d| d.as_millis() as u64);
			(
				format!(
					"broke the lease of {} (generation {}) by force: the holder stops at its next \
					 renewal. No instance can take the lease for {:.0} s (until unix time {} s); \
					 one started after that watches it for {:?} more, then starts.\n",
					broken.holder(),
					broken.generation,
					free_after_unix_ms.saturating_sub(now) as f64 / 1000.0,
					free_after_unix_ms / 1000,
					config.ttl + config.clock_skew,
				),
				json!({
					"broken": info_json(&broken),
					"released": false,
					"free_after_unix_ms": free_after_unix_ms,
				}),
			)
		},
		_ => return Err("the lease was broken in a way this tool does not describe".into()),
	};
	out.report(&text, value);
	Ok(Outcome::from_problems(0))
}
