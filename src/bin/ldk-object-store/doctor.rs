//! `doctor`: is this store fit to keep a Lightning node's state?
//!
//! The whole command is bounded by `--timeout`: the first check gets half of it, each later one an
//! equal share of the time left, and one that runs out says so. A store that does not answer the first check is unreachable
//! (exit code 2), and the other checks are not run.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt::Write;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ldk_object_store::{FailureKind, ObjectKvStore};
use lightning::io::ErrorKind;
use lightning::util::persist::KVStore;
use object_store::{PutMode, PutOptions, PutPayload};
use serde_json::json;

use crate::credentials::missing_credentials;
use crate::location;
use crate::output::{redact, CommandResult, Outcome, Output};

/// A namespace no LDK component uses, so the probes cannot touch a node's data.
const PROBE_NAMESPACE: &str = "ldk_object_store_doctor";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
	#[command(flatten)]
	store: crate::location::StoreArg,
	/// The most the whole command takes, in seconds. The first check (listing) gets half, each
	/// later one an equal share of the time left; one that runs out is reported as timed out.
	#[arg(long, default_value_t = 20.0, value_name = "SECONDS", value_parser = parse_seconds)]
	timeout: f64,
}

fn parse_seconds(raw: &str) -> Result<f64, String> {
	match raw.parse::<f64>() {
		Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(s),
		_ => Err(format!("{raw:?} is not a number of seconds between 0 and 86400")),
	}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
	Ok,
	Failed,
	TimedOut,
	NotRun,
}

impl Status {
	fn label(self) -> &'static str {
		match self {
			Status::Ok => "ok  ",
			Status::Failed => "FAIL",
			Status::TimedOut => "TIME",
			Status::NotRun => "skip",
		}
	}
}

struct Check {
	name: &'static str,
	status: Status,
	detail: String,
}

const LIST: &str = "list the root (credentials, bucket, network)";
const MISSING: &str = "a missing key reads as NotFound";
const ROUND_TRIP: &str = "write, read back and remove";
const CONDITIONAL: &str = "conditional writes (create-only)";
const REPLACE: &str = "conditional writes (replace if unchanged), needed by the writer lease";
const CHECKS: u32 = 5;

/// Runs `check` within an equal share of the time left before `deadline`; `None` if it ran out.
async fn within<T>(
	deadline: Instant, checks_left: u32, check: impl Future<Output = T>,
) -> (Option<T>, Duration) {
	let budget = deadline.saturating_duration_since(Instant::now()) / checks_left.max(1);
	(tokio::time::timeout(budget, check).await.ok(), budget)
}

fn timed_out(budget: Duration) -> String {
	format!(
		"timed out: no answer within {:.1} s (--timeout bounds the whole command)",
		budget.as_secs_f64()
	)
}

/// The store's classification of a failed operation, if it is one of ours.
fn failure_kind(err: &lightning::io::Error) -> Option<FailureKind> {
	match err.get_ref()?.downcast_ref::<ldk_object_store::Error>()? {
		ldk_object_store::Error::Storage { kind, .. } => Some(*kind),
		_ => None,
	}
}

/// The store's own message for a failed operation (the `io::Error` around it adds nothing).
fn message(err: &lightning::io::Error) -> String {
	match err.get_ref().and_then(|inner| inner.downcast_ref::<ldk_object_store::Error>()) {
		Some(inner) => inner.to_string(),
		None => err.to_string(),
	}
}

/// The request never got an answer from the server.
fn no_answer(err: &lightning::io::Error) -> bool {
	matches!(failure_kind(err), Some(FailureKind::TimedOut) | Some(FailureKind::ConnectFailed))
		|| matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::NotConnected)
}

pub(crate) async fn run(args: &Args, options: &[(String, String)], out: &Output) -> CommandResult {
	let started = Instant::now();
	let deadline = started + Duration::from_secs_f64(args.timeout);
	let url = args.store.existing_url()?;
	let local_dir = location::local_dir(&url);
	let entries_before = local_dir.as_deref().map(entries).unwrap_or_default();
	let no_credentials = missing_credentials(&url, options);

	// Building sends requests when the store is encrypted (the key is checked): bound it too.
	let opening = tokio::task::spawn_blocking({
		let (url, options) = (url.clone(), options.to_vec());
		move || crate::open(&url, &options)
	});
	let store = match tokio::time::timeout_at(deadline.into(), opening).await {
		Ok(Ok(opened)) => opened?,
		Ok(Err(e)) => return Err(format!("opening {} failed: {e}", redact(&url))),
		Err(_) => {
			return Err(format!(
				"no answer from {} within {} s while opening it",
				redact(&url),
				args.timeout
			))
		},
	};

	let mut checks = Vec::new();
	let nonce = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
	let probe_key = format!("probe-{nonce}");
	// The how-to is printed once, above the checks (and in the JSON as `credentials_hint`).
	let explain = |err: &lightning::io::Error| match &no_credentials {
		Some(_) => format!("{} — no credentials are configured", message(err)),
		None => message(err),
	};

	// 1. Listing: credentials, bucket, network. Without an answer nothing else can work, so it
	// gets half the time: enough for the retries that tell a refused connection from silence.
	let (listing, budget) = within(deadline, 2, KVStore::list(&store, "", "")).await;
	let stop = match &listing {
		None => Some("the store did not answer the first check in time"),
		Some(Err(e)) if no_answer(e) => Some("no connection to the store"),
		Some(Err(_)) if no_credentials.is_some() => Some("there are no credentials"),
		_ => None,
	};
	checks.push(match &listing {
		Some(Ok(keys)) => Check {
			name: LIST,
			status: Status::Ok,
			detail: format!("{} key(s) at the top level", keys.len()),
		},
		Some(Err(e)) => Check { name: LIST, status: Status::Failed, detail: explain(e) },
		None => Check { name: LIST, status: Status::TimedOut, detail: timed_out(budget) },
	});

	if let Some(why) = stop {
		for name in [MISSING, ROUND_TRIP, CONDITIONAL, REPLACE] {
			checks.push(Check { name, status: Status::NotRun, detail: format!("not run: {why}") });
		}
	} else {
		let scheme = url.split("://").next().unwrap_or_default();
		let no_credentials = no_credentials.is_some();
		checks.push(
			missing_key(&store, &probe_key, deadline, scheme, no_credentials, &explain).await,
		);
		checks.push(round_trip(&store, &probe_key, deadline, &explain).await);
		let (conditional, budget) =
			within(deadline, 2, conditional_writes(&store, &format!("{probe_key}-create"))).await;
		checks.push(outcome_check(CONDITIONAL, conditional, budget));
		let (replace, budget) =
			within(deadline, 1, conditional_replace(&store, &format!("{probe_key}-update"))).await;
		checks.push(outcome_check(REPLACE, replace, budget));
	}

	// Local directories keep the folders a probe key needed; the probes must leave nothing.
	if let Some(dir) = &local_dir {
		remove_new_empty_dirs(dir, &entries_before);
	}

	let problems =
		checks.iter().filter(|c| matches!(c.status, Status::Failed | Status::TimedOut)).count();
	let not_run = checks.iter().filter(|c| c.status == Status::NotRun).count();
	let mut text = String::new();
	if let Some(hint) = &no_credentials {
		let _ = writeln!(text, "note: {hint}");
	}
	for c in &checks {
		let _ = writeln!(text, "{} {}: {}", c.status.label(), c.name, c.detail);
	}
	let elapsed = started.elapsed().as_secs_f64();
	let _ = write!(text, "{problems} problem(s)");
	if not_run > 0 {
		let _ = write!(text, ", {not_run} check(s) not run");
	}
	let _ = writeln!(text, ", in {elapsed:.1} s");
	if let Some(why) = stop {
		let _ = writeln!(text, "{} is unusable: {why}", redact(&url));
	}
	out.report(
		&text,
		json!({
			"checks": checks.iter().map(|c| json!({
				"check": c.name,
				"ok": c.status == Status::Ok,
				"timed_out": c.status == Status::TimedOut,
				"run": c.status != Status::NotRun,
				"detail": c.detail,
			})).collect::<Vec<_>>(),
			"credentials": no_credentials.is_none(),
			"credentials_hint": no_credentials,
			"problems": problems,
			"not_run": not_run,
			"unusable": stop,
			"seconds": elapsed,
		}),
	);
	Ok(if stop.is_some() { Outcome::CouldNotRun } else { Outcome::from_problems(problems) })
}

/// A missing key must answer "not found"; S3 answers 403 without s3:ListBucket.
async fn missing_key(
	store: &ObjectKvStore, probe_key: &str, deadline: Instant, scheme: &str, no_credentials: bool,
	explain: &impl Fn(&lightning::io::Error) -> String,
) -> Check {
	let absent = format!("{probe_key}-absent");
	let (missing, budget) =
		within(deadline, CHECKS - 1, KVStore::read(store, PROBE_NAMESPACE, "", &absent)).await;
	let (status, detail) = match &missing {
		None => (Status::TimedOut, timed_out(budget)),
		Some(Err(e)) if e.kind() == ErrorKind::NotFound => (Status::Ok, "not found".to_owned()),
		// Without credentials at all, that is the cause; `explain` says so.
		Some(Err(e))
			if e.kind() == ErrorKind::PermissionDenied
				&& scheme.starts_with("s3")
				&& !no_credentials =>
		{
			let advice = "grant s3:ListBucket, or LDK cannot tell absent from forbidden";
			(Status::Failed, format!("{} — {advice}", message(e)))
		},
		Some(Err(e)) => (Status::Failed, explain(e)),
		Some(Ok(_)) => (Status::Failed, "a key that was never written was found".to_owned()),
	};
	Check { name: MISSING, status, detail }
}

/// Write, read back, remove; the latency of each request.
async fn round_trip(
	store: &ObjectKvStore, probe_key: &str, deadline: Instant,
	explain: &impl Fn(&lightning::io::Error) -> String,
) -> Check {
	let mut latencies = Vec::new();
	let work = async {
		for i in 0..5 {
			let key = format!("{probe_key}-{i}");
			let started = Instant::now();
			KVStore::write(store, PROBE_NAMESPACE, "", &key, vec![i; 1024]).await?;
			let back = KVStore::read(store, PROBE_NAMESPACE, "", &key).await?;
			KVStore::remove(store, PROBE_NAMESPACE, "", &key, false).await?;
			if back != vec![i; 1024] {
				return Err(lightning::io::Error::new(
					ErrorKind::InvalidData,
					"read back other bytes",
				));
			}
			latencies.push(started.elapsed() / 3);
		}
		Ok(())
	};
	let (result, budget) = within(deadline, CHECKS - 2, work).await;
	latencies.sort();
	let median = latencies.get(latencies.len() / 2).copied().unwrap_or(Duration::ZERO);
	let (status, detail) = match result {
		Some(Ok(())) => {
			(Status::Ok, format!("median {:.1} ms per request", median.as_secs_f64() * 1000.0))
		},
		Some(Err(e)) => (Status::Failed, explain(&e)),
		None => (
			Status::TimedOut,
			format!("{}; a probe object may be left under {PROBE_NAMESPACE}/", timed_out(budget)),
		),
	};
	Check { name: ROUND_TRIP, status, detail }
}

/// The check of a probe that says what it saw, or why it failed, or ran out of time.
fn outcome_check(
	name: &'static str, outcome: Option<Result<String, String>>, budget: Duration,
) -> Check {
	match outcome {
		Some(Ok(detail)) => Check { name, status: Status::Ok, detail },
		Some(Err(detail)) => Check { name, status: Status::Failed, detail },
		None => Check { name, status: Status::TimedOut, detail: timed_out(budget) },
	}
}

/// `PutMode::Update`: a replacement on the current ETag succeeds, one on a stale ETag is refused.
/// The writer lease depends on both.
async fn conditional_replace(store: &ObjectKvStore, key: &str) -> Result<String, String> {
	use object_store::UpdateVersion;
	let path = store.key_mapper().object_path(
		&ldk_object_store::keys::KvKey::new(PROBE_NAMESPACE, "", key).map_err(|e| e.to_string())?,
	);
	let backend = store.raw_backend();
	let update = |version: &UpdateVersion| PutOptions {
		mode: PutMode::Update(version.clone()),
		..Default::default()
	};
	let outcome = async {
		let first = backend
			.put_opts(&path, PutPayload::from_static(b"first"), PutOptions::default())
			.await
			.map_err(|e| format!("a plain write failed: {e}"))?;
		let first = UpdateVersion { e_tag: first.e_tag, version: first.version };
		if first.e_tag.is_none() && first.version.is_none() {
			return Err("writes return no ETag or version".to_owned());
		}
		backend
			.put_opts(&path, PutPayload::from_static(b"second"), update(&first))
			.await
			.map_err(|e| format!("a replacement on the current ETag failed: {e}"))?;
		let stale =
			backend.put_opts(&path, PutPayload::from_static(b"stale"), update(&first)).await;
		match stale {
			Err(e) if FailureKind::of(&e) == FailureKind::Precondition => {
				Ok("a replacement on a stale ETag is refused".to_owned())
			},
			Err(e) => Err(format!("a replacement on a stale ETag failed oddly: {e}")),
			Ok(_) => Err("the server ignored If-Match and overwrote the object".to_owned()),
		}
	}
	.await;
	let _ = KVStore::remove(store, PROBE_NAMESPACE, "", key, false).await;
	match outcome {
		// A file:// store holds an OS lock instead of a lease object.
		Err(why) if store.raw_backend().to_string().starts_with("LocalFileSystem") => Ok(format!(
			"not offered by a local directory ({why}); a file:// store takes an OS lock instead"
		)),
		other => other,
	}
}

async fn conditional_writes(store: &ObjectKvStore, key: &str) -> Result<String, String> {
	let path = store.key_mapper().object_path(
		&ldk_object_store::keys::KvKey::new(PROBE_NAMESPACE, "", key).map_err(|e| e.to_string())?,
	);
	let backend = store.raw_backend();
	let create = || PutOptions { mode: PutMode::Create, ..Default::default() };
	let first = backend.put_opts(&path, PutPayload::from_static(b"first"), create()).await;
	let second = match first {
		Ok(_) => backend.put_opts(&path, PutPayload::from_static(b"second"), create()).await,
		Err(e) => {
			return Err(format!("a create-only write failed: {e}"));
		},
	};
	let _ = KVStore::remove(store, PROBE_NAMESPACE, "", key, false).await;
	match second {
		Err(e)
			if FailureKind::of(&e) == FailureKind::AlreadyExists
				|| FailureKind::of(&e) == FailureKind::Precondition =>
		{
			Ok("a second create-only write is refused".to_owned())
		},
		Err(e) => Err(format!("the second create-only write failed oddly: {e}")),
		Ok(_) => Err("the server ignored If-None-Match and overwrote the object".to_owned()),
	}
}

/// The names directly in `dir`.
fn entries(dir: &Path) -> HashSet<OsString> {
	std::fs::read_dir(dir)
		.map(|read| read.filter_map(Result::ok).map(|entry| entry.file_name()).collect())
		.unwrap_or_default()
}

/// Removes the directories in `dir` that were not there `before` and hold nothing but empty
/// directories. A file anywhere below keeps its directory.
fn remove_new_empty_dirs(dir: &Path, before: &HashSet<OsString>) {
	for name in entries(dir) {
		if !before.contains(&name) {
			remove_if_empty(&dir.join(name));
		}
	}
}

fn remove_if_empty(path: &Path) {
	let Ok(meta) = std::fs::symlink_metadata(path) else { return };
	if !meta.is_dir() {
		return;
	}
	for name in entries(path) {
		remove_if_empty(&path.join(name));
	}
	// Fails, as it should, if anything is left inside.
	let _ = std::fs::remove_dir(path);
}
