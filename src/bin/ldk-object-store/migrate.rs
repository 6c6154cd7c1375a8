//! `migrate`: copy every key from one store to another and verify each copy.

use std::fmt::Write;

use futures::stream::{self, StreamExt};
use ldk_object_store::ObjectKvStore;
use lightning::io::ErrorKind;
use lightning::util::persist::{KVStore, MigratableKVStore};
use serde_json::json;

use crate::location;
use crate::output::{redact, CommandResult, Outcome, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
	/// Source store URL (an LDK FilesystemStore directory is `file:///its/dir` or `/its/dir`).
	from: String,
	/// Destination store URL (a local directory is created if needed).
	to: String,
	/// Replace keys that already exist in the destination with other contents.
	#[arg(long)]
	overwrite: bool,
	/// Keys copied at once.
	#[arg(long, default_value_t = 16)]
	concurrency: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyResult {
	Copied,
	AlreadyThere,
	Conflict,
}

async fn copy_one(
	from: &ObjectKvStore, to: &ObjectKvStore, (p, s, k): &(String, String, String), overwrite: bool,
) -> Result<CopyResult, String> {
	let name = format!("{p}/{s}/{k}");
	let data = KVStore::read(from, p, s, k).await.map_err(|e| format!("reading {name}: {e}"))?;
	match KVStore::read(to, p, s, k).await {
		Ok(existing) if existing == data => return Ok(CopyResult::AlreadyThere),
		Ok(_) if !overwrite => return Ok(CopyResult::Conflict),
		Ok(_) => {},
		Err(e) if e.kind() == ErrorKind::NotFound => {},
		Err(e) => return Err(format!("checking {name} in the destination: {e}")),
	}
	KVStore::write(to, p, s, k, data.clone()).await.map_err(|e| format!("writing {name}: {e}"))?;
	let copy = KVStore::read(to, p, s, k).await.map_err(|e| format!("verifying {name}: {e}"))?;
	if copy != data {
		return Err(format!("verifying {name}: the copy differs from the source"));
	}
	Ok(CopyResult::Copied)
}

pub(crate) async fn run(args: &Args, options: &[(String, String)], out: &Output) -> CommandResult {
	let from_url = crate::location::url(&args.from)?;
	let to_url = crate::location::url(&args.to)?;
	let (from_options, to_options) =
		(location::cloud_options(&from_url, options), location::cloud_options(&to_url, options));
	if !options.is_empty() && from_options.is_empty() && to_options.is_empty() {
		return Err("-o options are for cloud stores, and neither store is one".to_owned());
	}
	let (from, from_url) = crate::open_existing(&from_url, from_options, false)?;
	// The destination's one writer: refused while a node runs on it.
	let to = crate::open_writer(&to_url, to_options)?;
	let keys = from.list_all_keys().map_err(|e| format!("listing {}: {e}", redact(&from_url)))?;
	if keys.is_empty() {
		return Err(format!("nothing to migrate: no keys at {}", redact(&from_url)));
	}
	// An unreachable destination is a command that cannot run (exit 2), not one failure per key.
	KVStore::list(&to, "", "")
		.await
		.map_err(|e| format!("cannot reach {}: {e}", redact(&to_url)))?;
	let bar = out.progress(keys.len() as u64, "copying");
	let results: Vec<(String, Result<CopyResult, String>)> = stream::iter(&keys)
		.map(|key| {
			let (from, to, bar) = (&from, &to, &bar);
			async move {
				let result = copy_one(from, to, key, args.overwrite).await;
				bar.inc(1);
				(format!("{}/{}/{}", key.0, key.1, key.2), result)
			}
		})
		.buffer_unordered(args.concurrency.max(1))
		.collect()
		.await;
	bar.finish_and_clear();

	let count = |what: CopyResult| results.iter().filter(|(_, r)| r.as_ref() == Ok(&what)).count();
	let (copied, skipped, conflicts) =
		(count(CopyResult::Copied), count(CopyResult::AlreadyThere), count(CopyResult::Conflict));
	let mut errors: Vec<&String> = results.iter().filter_map(|(_, r)| r.as_ref().err()).collect();
	errors.sort();
	let mut conflicting: Vec<&String> =
		results.iter().filter(|(_, r)| r == &Ok(CopyResult::Conflict)).map(|(k, _)| k).collect();
	conflicting.sort();

	let mut text = format!(
		"{} → {}: {} key(s): {copied} copied and verified, {skipped} already there, {conflicts} \
		 conflicting, {} failed\n",
		redact(&from_url),
		redact(&to_url),
		keys.len(),
		errors.len()
	);
	for key in &conflicting {
		let _ = writeln!(text, "  conflict: {key} exists in the destination with other contents (--overwrite replaces it)");
	}
	for error in &errors {
		let _ = writeln!(text, "  error: {error}");
	}
	if !errors.is_empty() {
		text.push_str("  run the same command again to resume: copied keys are skipped\n");
	}
	out.report(
		&text,
		json!({
			"keys": keys.len(), "copied": copied, "already_there": skipped,
			"conflicts": conflicting, "errors": errors,
		}),
	);
	Ok(Outcome::from_problems(conflicts + errors.len()))
}
