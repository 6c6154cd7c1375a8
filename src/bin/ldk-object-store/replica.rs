//! `replica`: the second copy of a node's state (see `ldk_object_store::replica`). `status` shows
//! both copies' records, `fill` and `repair` make the replica equal to the primary, `verify`
//! compares them, `promote` makes the replica the primary, `detach` lets the primary go on alone.
//!
//! Which options reach which copy: the command's `-o` options reach every cloud URL (a local
//! directory takes none), `--replica-option` the replica's alone, after them (so it overrides
//! one of the same key). A replica URL taken from `LDK_OBJECT_STORE_REPLICA_URL` brings
//! `LDK_OBJECT_STORE_REPLICA_OPTIONS` with it, as a node reads them.

use std::fmt::Write;

use ldk_object_store::config::{ENV_REPLICA_OPTIONS, ENV_REPLICA_URL};
use ldk_object_store::lease::{self, LeaseInfo};
use ldk_object_store::replica::{self, Difference, ObjectDigest, ReplicaRecord, Role, SyncState};
use ldk_object_store::{ConfigError, ObjectKvStore, StoreBuilder};
use serde_json::{json, Value};

use crate::location::{self, StoreArg};
use crate::output::{redact, CommandResult, Outcome, Output};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
	#[command(subcommand)]
	command: Command,
	/// A backend option of the replica's location only, `key=value` (aws_endpoint,
	/// aws_region, …; repeatable): applied after the `-o` options, so that a replica in another
	/// cloud or region gets its own endpoint, region or credentials.
	#[arg(long = "replica-option", global = true, value_name = "KEY=VALUE", value_parser = crate::parse_option)]
	replica_options: Vec<(String, String)>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
	/// Show both copies' replica records and writer leases.
	///
	/// Each copy's record: its role (primary, replica, retired), the pair's generation, whether
	/// the replica is in sync, filling or stale, and when it was written; and who holds each
	/// copy's writer lease. Read-only: works while a node runs. There is no journal of updates
	/// yet, so no lag is measured: "in sync" is what the records say (every acknowledged update
	/// reached both copies).
	Status(PairArgs),
	/// Make the replica equal to the primary and record it in sync (node stopped).
	///
	/// Takes the writer lease on both copies (refused while a node or another tool holds
	/// either), copies and removes what differs, and ends with a whole pass that finds no
	/// difference. A replica already recorded in sync is left as it is (`repair` compares it
	/// anyway). A location that holds another node's keys but no replica record is refused
	/// untouched. Interrupted, it resumes at the next fill or start with the replica. Afterwards
	/// the node must start with this replica (LDK_OBJECT_STORE_REPLICA_URL), or detach it first.
	Fill(PairArgs),
	/// `fill`, comparing every key even if the replica is recorded in sync.
	///
	/// Repairs what differs: a replica changed or damaged behind the node's back. Refused while
	/// a node or another tool holds either copy's writer lease.
	Repair(PairArgs),
	/// Compare both copies key by key; exit code 1 on any difference.
	///
	/// Compares the size and SHA-256 of each object and names every difference. Read-only (no
	/// writer lease): works while a node runs; a difference is looked at twice, 2 s apart, so
	/// that a write caught between the copies is not reported.
	Verify(PairArgs),
	/// Make the replica the primary, when the primary is lost.
	///
	/// Refused while an instance holds the replica's writer lease, and unless the replica is
	/// recorded in sync and, where the old primary (--primary) can be read, its record agrees
	/// (same generation, in sync): a replica that is filling or stale may miss acknowledged
	/// updates. Records the replica as a primary of the next generation, then the old primary,
	/// where it can be reached, as retired, so that no node starts on it again. Then start the
	/// node on the promoted location.
	Promote(PromoteArgs),
	/// Let the primary go on without its replica.
	///
	/// Under the primary's writer lease (refused while a node runs on it), records the replica
	/// as stale (never promoted without --force), then the primary as having no replica, at the
	/// next generation. Refused if the replica's location is not this primary's replica (a copy
	/// promoted meanwhile). Without the replica's URL it needs --force.
	Detach(DetachArgs),
}

#[derive(Debug, clap::Args)]
struct PairArgs {
	/// The primary: a store URL (s3://bucket/prefix, gs://, az://, file:///abs/dir) or a local
	/// directory's path.
	#[command(flatten)]
	primary: StoreArg,
	#[command(flatten)]
	replica: ReplicaArg,
}

#[derive(Debug, clap::Args)]
struct ReplicaArg {
	/// The replica: a store URL or a local directory's path. Default:
	/// LDK_OBJECT_STORE_REPLICA_URL (with LDK_OBJECT_STORE_REPLICA_OPTIONS as its options).
	#[arg(long = "replica", value_name = "REPLICA_URL")]
	url: Option<String>,
}

#[derive(Debug, clap::Args)]
struct PromoteArgs {
	/// The replica to promote: a store URL or a local directory's path.
	#[arg(value_name = "REPLICA_URL")]
	replica: String,
	/// The old primary, if it can still be reached: its record is checked, then it is recorded
	/// as retired.
	#[arg(long, value_name = "URL")]
	primary: Option<String>,
	/// Promote although the records say the replica may miss acknowledged updates (filling,
	/// stale, no record, or an old primary of another generation). For when the replica is all
	/// there is left: the node may then have lost updates, which for a Lightning node can lose
	/// money.
	#[arg(long)]
	force: bool,
}

#[derive(Debug, clap::Args)]
struct DetachArgs {
	/// The primary, which goes on alone: a store URL or a local directory's path.
	#[command(flatten)]
	primary: StoreArg,
	#[command(flatten)]
	replica: ReplicaArg,
	/// Detach without reaching the replica. Its record is then not changed: if it comes back it
	/// still claims to be in sync at the older generation, and only a promotion that can read
	/// this primary (`promote --primary`) sees from the generation that it is not.
	#[arg(long)]
	force: bool,
}

/// One copy's location and the backend options it gets.
struct Side {
	url: String,
	options: Vec<(String, String)>,
}

impl Side {
	/// The location `raw` (a URL or a path) with the command's `-o` options, then `own`.
	fn at(
		raw: &str, global: &[(String, String)], own: impl IntoIterator<Item = (String, String)>,
	) -> Result<Self, String> {
		let url = location::url(raw)?;
		let mut options = location::cloud_options(&url, global).to_vec();
		options.extend(own);
		Ok(Side { url, options })
	}

	/// A location that must exist (a missing directory is never created).
	fn existing(
		raw: &str, global: &[(String, String)], own: impl IntoIterator<Item = (String, String)>,
	) -> Result<Self, String> {
		let side = Side::at(raw, global, own)?;
		location::must_exist(&side.url)?;
		Ok(side)
	}

	/// The replica given on the command line, or else by the environment; `None` if neither.
	fn replica(
		given: Option<&str>, global: &[(String, String)], own: &[(String, String)],
	) -> Result<Option<Self>, String> {
		let (raw, env_options) = match given {
			Some(raw) => (raw.to_owned(), Vec::new()),
			None => match std::env::var(ENV_REPLICA_URL) {
				Ok(url) if !url.trim().is_empty() => (url.trim().to_owned(), env_options()?),
				_ => return Ok(None),
			},
		};
		Side::at(&raw, global, env_options.into_iter().chain(own.iter().cloned())).map(Some)
	}

	fn required_replica(
		given: Option<&str>, global: &[(String, String)], own: &[(String, String)],
	) -> Result<Self, String> {
		Side::replica(given, global, own)?.ok_or_else(|| {
			format!("no replica given: pass --replica REPLICA_URL, or set {ENV_REPLICA_URL}")
		})
	}

	fn builder(&self, lease: bool) -> Result<StoreBuilder, String> {
		crate::builder(&self.url, &self.options, lease)
	}

	/// A read-only store over this copy (no writer lease: it works beside a running node).
	async fn reader(&self) -> Result<ObjectKvStore, String> {
		self.builder(false)?.build_async().await.map_err(|e| crate::cannot_open(&self.url, e))
	}

	fn shown(&self) -> String {
		redact(&self.url)
	}
}

/// [`ENV_REPLICA_OPTIONS`]: `key=value` pairs separated by commas.
fn env_options() -> Result<Vec<(String, String)>, String> {
	let raw = std::env::var(ENV_REPLICA_OPTIONS).unwrap_or_default();
	raw.split(',')
		.map(str::trim)
		.filter(|option| !option.is_empty())
		.map(|option| {
			let (key, value) = option.split_once('=').ok_or_else(|| {
				// The value may be a secret: name the variable only.
				format!("{ENV_REPLICA_OPTIONS}: each option is key=value, separated by commas")
			})?;
			Ok((key.trim().to_owned(), value.trim().to_owned()))
		})
		.collect()
}

pub(crate) async fn run(args: &Args, global: &[(String, String)], out: &Output) -> CommandResult {
	let own = &args.replica_options;
	match &args.command {
		Command::Status(pair) => {
			let primary = Side::existing(&pair.primary.location, global, [])?;
			let replica = Side::replica(pair.replica.url.as_deref(), global, own)?;
			status(&primary, replica.as_ref(), out).await
		},
		Command::Fill(pair) | Command::Repair(pair) => {
			let repair = matches!(args.command, Command::Repair(_));
			let primary = Side::existing(&pair.primary.location, global, [])?;
			// A new replica's directory is created.
			let replica = Side::required_replica(pair.replica.url.as_deref(), global, own)?;
			fill(&primary, &replica, repair, out).await
		},
		Command::Verify(pair) => {
			let primary = Side::existing(&pair.primary.location, global, [])?;
			let replica = Side::required_replica(pair.replica.url.as_deref(), global, own)?;
			location::must_exist(&replica.url)?;
			verify(&primary, &replica, out).await
		},
		Command::Promote(args) => {
			let replica = Side::existing(&args.replica, global, own.iter().cloned())?;
			let primary =
				args.primary.as_deref().map(|raw| Side::at(raw, global, [])).transpose()?;
			promote(&replica, primary.as_ref(), args.force, out).await
		},
		Command::Detach(args) => {
			let primary = Side::existing(&args.primary.location, global, [])?;
			let replica = Side::replica(args.replica.url.as_deref(), global, own)?;
			detach(&primary, replica.as_ref(), args.force, out).await
		},
	}
}

/// What a copy's record and lease say.
struct Seen {
	record: Option<ReplicaRecord>,
	/// A `file://` store's OS lock: whether a process holds it.
	locked: Option<bool>,
	/// An object lease, if there is one.
	lease: Option<LeaseInfo>,
	/// Keys the journal names: written while the replica lagged, not yet repaired.
	journal: usize,
}

async fn look(side: &Side) -> Result<Seen, String> {
	let store = side.reader().await?;
	let record = replica::read_record(&store)
		.await
		.map_err(|e| format!("reading the replica record of {}: {e}", side.shown()))?;
	let (locked, lease) = match location::local_dir(&side.url) {
		Some(dir) => {
			let locked =
				lease::directory_is_locked(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
			(Some(locked), None)
		},
		None => {
			let held = lease::read_lease(&store)
				.await
				.map_err(|e| format!("reading the writer lease of {}: {e}", side.shown()))?;
			(None, held)
		},
	};
	let journal = replica::journal(&store)
		.await
		.map_err(|e| format!("reading the replica journal of {}: {e}", side.shown()))?
		.len();
	Ok(Seen { record, locked, lease, journal })
}

fn record_json(record: &ReplicaRecord) -> Value {
	json!({
		"role": record.role.to_string(),
		"generation": record.generation,
		"sync": record.sync.to_string(),
		"updated_unix_ms": record.updated_unix_ms,
		"mode": if record.may_lag { "lag-when-unreachable" } else { "strict" },
	})
}

/// A record in words: on a primary, `sync` is its replica's state; on a replica, its own.
fn record_text(record: &ReplicaRecord) -> String {
	let (role, generation) = (record.role, record.generation);
	match (role, record.sync) {
		(Role::Primary, SyncState::None) => format!("{role}, generation {generation}, no replica"),
		(Role::Primary, sync) => format!("{role}, generation {generation}, replica {sync}"),
		(Role::Replica, sync) => format!("{role}, generation {generation}, {sync}"),
		(Role::Retired, _) => format!("{role}, generation {generation}"),
	}
}

/// What a record means for the operator.
fn meaning(record: &ReplicaRecord) -> String {
	let generation = record.generation;
	match (record.role, record.sync) {
		(Role::Primary, SyncState::None) => "no replica attached: a node starts on it alone".into(),
		(Role::Primary, SyncState::InSync) => {
			"its replica holds every update the primary acknowledged (as the records say; no lag \
			 is measured). A node starts on it only with that replica, or after `replica detach`"
				.into()
		},
		(Role::Primary, SyncState::Filling) => {
			"its replica is being filled and misses acknowledged updates until a fill ends (a \
			 node started with it, or `replica fill`, finishes it)"
				.into()
		},
		(Role::Primary, SyncState::Stale) => {
			"its replica is stale: writes no longer reach it".into()
		},
		(Role::Replica, SyncState::InSync) => {
			"holds every update its primary acknowledged, as of the record: `replica promote` takes \
			 it (if the primary can be read, its record must agree)"
				.into()
		},
		(Role::Replica, SyncState::Filling) => {
			"being filled: it misses acknowledged updates, and is not promoted without --force"
				.into()
		},
		(Role::Replica, _) => {
			"detached from its primary: writes no longer reach it, and it is not promoted without \
			 --force"
				.into()
		},
		(Role::Retired, _) => format!(
			"retired when its replica was promoted (generation {generation}): it misses every \
			 update since, and no node starts on it. To use it again, give it as the promoted \
			 copy's replica, which fills it"
		),
	}
}

/// "12 s ago", from a time in milliseconds since the Unix epoch, by this machine's clock.
fn ago(unix_ms: u64) -> String {
	let now = std::time::SystemTime::now()
		.duration_since(std::time::UNIX_EPOCH)
		.map_or(0, |elapsed| elapsed.as_millis() as u64);
	let at = format!("unix time {}.{:03} s", unix_ms / 1000, unix_ms % 1000);
	let Some(seconds) = now.checked_sub(unix_ms).map(|ms| ms / 1000) else {
		return format!("{at} (in the future by this machine's clock)");
	};
	let elapsed = match seconds {
		0..120 => format!("{seconds} s"),
		120..7200 => format!("{} min", seconds / 60),
		7200..172_800 => format!("{} h", seconds / 3600),
		_ => format!("{} days", seconds / 86_400),
	};
	format!("{at} ({elapsed} ago by this machine's clock)")
}

fn seen_text(name: &str, side: &Side, seen: &Seen) -> String {
	let mut text = format!("{name}: {}\n", side.shown());
	match &seen.record {
		Some(record) => {
			let _ = writeln!(text, "  record: {}", record_text(record));
			let _ = writeln!(text, "          {}", meaning(record));
			let _ = writeln!(text, "  updated: {}", ago(record.updated_unix_ms));
			if record.may_lag {
				let _ = writeln!(
					text,
					"  mode: lag-when-unreachable; journal: {} key(s) the replica misses",
					seen.journal
				);
			}
		},
		None => {
			let _ =
				writeln!(text, "  record: none (never part of a pair: a node starts on it alone)");
		},
	}
	let lease = match (seen.locked, &seen.lease) {
		(Some(true), _) => "locked by a running process (a node, or a tool writing to it)".into(),
		(Some(false), _) => "free".into(),
		(None, None) => "none (no instance has started on it)".into(),
		(None, Some(info)) if info.is_released() => {
			format!("released (generation {})", info.generation)
		},
		(None, Some(info)) => {
			format!(
				"{}, generation {}, expires {}",
				info.holder(),
				info.generation,
				info.expiry_text()
			)
		},
	};
	let _ = writeln!(text, "  lease: {lease}");
	text
}

fn seen_json(side: &Side, seen: &Seen) -> Value {
	let lease = match (seen.locked, &seen.lease) {
		(Some(locked), _) => json!({ "locked": locked }),
		(None, Some(info)) => crate::lease::info_json(info),
		(None, None) => Value::Null,
	};
	json!({
		"url": side.shown(),
		"record": seen.record.as_ref().map(record_json),
		"lease": lease,
		"journal_keys": seen.journal,
	})
}

/// A note where the two records do not describe one pair in sync with each other.
fn pair_note(primary: Option<&ReplicaRecord>, replica: Option<&ReplicaRecord>) -> Option<String> {
	let (primary, replica) = (primary?, replica?);
	if replica.role == Role::Primary {
		return Some(format!(
			"the replica's location is itself a primary (generation {}): it was promoted, or it \
			 is another node's store",
			replica.generation
		));
	}
	(primary.role == Role::Primary && primary.generation != replica.generation).then(|| {
		format!(
			"the generations differ (primary {}, replica {}): the replica is not in sync with \
			 this primary, whatever its own record says; started with it, a node fills it again",
			primary.generation, replica.generation
		)
	})
}

async fn status(primary: &Side, replica: Option<&Side>, out: &Output) -> CommandResult {
	let primary_seen = look(primary).await?;
	let replica_seen = match replica {
		Some(side) => {
			location::must_exist(&side.url)?;
			Some(look(side).await?)
		},
		None => None,
	};
	let mut text = seen_text("primary", primary, &primary_seen);
	let note = match (replica, &replica_seen) {
		(Some(side), Some(seen)) => {
			text.push_str(&seen_text("replica", side, seen));
			pair_note(primary_seen.record.as_ref(), seen.record.as_ref())
		},
		_ => {
			let _ = writeln!(text, "replica: not given (--replica or {ENV_REPLICA_URL})");
			None
		},
	};
	if let Some(note) = &note {
		let _ = writeln!(text, "note: {note}");
	}
	let replica_json = match (replica, &replica_seen) {
		(Some(side), Some(seen)) => seen_json(side, seen),
		_ => Value::Null,
	};
	out.report(
		&text,
		json!({
			"primary": seen_json(primary, &primary_seen),
			"replica": replica_json,
			"note": note,
		}),
	);
	Ok(Outcome::Clean)
}

/// A command refused or failed at its start; `held` says what to do when it is because another
/// instance holds a writer lease.
fn refused(what: &str, err: ConfigError, held: &str) -> String {
	match err {
		ConfigError::LeaseHeld { .. } | ConfigError::DirectoryLocked { .. } => {
			format!("{what}: {err}\n({held})")
		},
		_ => format!("{what}: {err}"),
	}
}

/// What to do when a running node holds a lease this command needs.
const NODE_RUNS: &str = "a node runs on this pair, or another tool: stop it first. A node \
                         started with its replica fills it itself";

async fn fill(primary: &Side, replica: &Side, repair: bool, out: &Output) -> CommandResult {
	let what = if repair { "repair" } else { "fill" };
	let mut builder = primary.builder(true)?.with_replica(replica.builder(true)?);
	if repair {
		builder = builder.repair_replica();
	}
	let store = builder
		.build_async()
		.await
		.map_err(|e| refused(&format!("cannot start the {what}"), e, NODE_RUNS))?;
	let bar = out.progress(0, if repair { "repairing" } else { "filling" });
	let mut last_error = None;
	let waited = store
		.replica_in_sync(|health| {
			bar.set_length(health.keys_total);
			bar.set_position(health.keys_checked);
			bar.set_message(format!(
				"pass {}: {} copied, {} removed; keys checked",
				health.pass, health.copied, health.removed
			));
			if health.last_error != last_error {
				if let Some(err) = &health.last_error {
					bar.suspend(|| eprintln!("the {what} failed, and is retried: {err}"));
				}
				last_error = health.last_error.clone();
			}
		})
		.await;
	bar.finish_and_clear();
	// Releases both leases, so that the node starts at once.
	store.close().await;
	let health = waited.map_err(|e| {
		format!(
			"the {what} did not finish: {e}. The replica is recorded as filling; the next start \
			 with it (a node's, or `replica fill`) resumes it"
		)
	})?;
	let ran = health.pass > 0;
	let mut text = if ran {
		format!(
			"the replica {} is in sync with {} (generation {}): {} pass(es), the last one \
			 compared {} key(s) and found them equal; {} object(s) copied, {} removed\n",
			replica.shown(),
			primary.shown(),
			health.generation,
			health.pass,
			health.keys_checked,
			health.copied,
			health.removed
		)
	} else {
		format!(
			"the replica {} was already recorded in sync with {} (generation {}): nothing \
			 compared (`replica repair` compares every key)\n",
			replica.shown(),
			primary.shown(),
			health.generation
		)
	};
	let _ = writeln!(
		text,
		"start the node with this replica ({ENV_REPLICA_URL}), or detach it first \
		 (`replica detach`): a node started on the primary alone is refused"
	);
	out.report(
		&text,
		json!({
			"primary": primary.shown(),
			"replica": replica.shown(),
			"generation": health.generation,
			"sync": health.sync.to_string(),
			"compared": ran,
			"passes": health.pass,
			"keys_checked": health.keys_checked,
			"copied": health.copied,
			"removed": health.removed,
		}),
	);
	Ok(Outcome::Clean)
}

fn digest_json(digest: &Option<ObjectDigest>) -> Value {
	match digest {
		Some(digest) => json!({ "size": digest.size, "sha256": digest.sha256 }),
		None => Value::Null,
	}
}

fn difference_json(difference: &Difference) -> Value {
	json!({
		"key": difference.key,
		"primary": digest_json(&difference.primary),
		"replica": digest_json(&difference.replica),
	})
}

async fn verify(primary: &Side, replica: &Side, out: &Output) -> CommandResult {
	let (primary_store, replica_store) = (primary.reader().await?, replica.reader().await?);
	let bar = out.progress(0, "comparing");
	let mut keys = 0;
	let compared = replica::compare(&primary_store, &replica_store, |done, total| {
		keys = total;
		bar.set_length(total);
		bar.set_position(done);
	})
	.await;
	bar.finish_and_clear();
	let differences = compared.map_err(|e| format!("comparing the copies: {e}"))?;
	// Differences are expected while the replica is filled: say so if the record does.
	let filling = match replica::read_record(&replica_store).await {
		Ok(Some(record)) => record.sync != SyncState::InSync,
		_ => false,
	};
	let mut text = String::new();
	for difference in &differences {
		let _ = writeln!(text, "DIFFERS  {difference}");
	}
	let _ = writeln!(
		text,
		"{} and {}: {keys} key(s) compared, {} difference(s)",
		primary.shown(),
		replica.shown(),
		differences.len()
	);
	if filling && !differences.is_empty() {
		let _ = writeln!(
			text,
			"note: the replica's record does not say in sync (see `replica status`): it misses \
			 updates until a fill ends"
		);
	} else if !differences.is_empty() {
		let _ = writeln!(text, "`replica repair` (with the node stopped) makes the replica equal");
	}
	out.report(
		&text,
		json!({
			"primary": primary.shown(),
			"replica": replica.shown(),
			"keys": keys,
			"differences": differences.iter().map(difference_json).collect::<Vec<_>>(),
		}),
	);
	Ok(Outcome::from_problems(differences.len()))
}

async fn promote(
	replica: &Side, primary: Option<&Side>, force: bool, out: &Output,
) -> CommandResult {
	let old = primary.map(|side| side.builder(false)).transpose()?;
	let promoted = replica::promote(replica.builder(true)?, old, force).await.map_err(|e| {
		let held = "an instance writing to the pair holds the lease on both copies: stop \
			            it first; if it is dead, its lease expires (or `ldk-object-store lease \
			            REPLICA_URL --break`)";
		refused(&format!("{} was not promoted", replica.shown()), e, held)
	})?;
	let mut text = format!(
		"promoted {}: it is now the primary, generation {}, without a replica\n",
		replica.shown(),
		promoted.generation
	);
	let old_primary = match primary {
		Some(side) if promoted.old_primary_retired => format!(
			"the old primary {} is recorded as retired: no node starts on it again (to use it \
			 again, give it as the new primary's replica, which fills it)",
			side.shown()
		),
		Some(side) => format!(
			"the old primary {} was not recorded as retired (see the warnings): never start a \
			 node on it",
			side.shown()
		),
		None => "the old primary was not given (--primary), so it is not recorded as retired: \
		         never start a node on it"
			.to_owned(),
	};
	let _ = writeln!(text, "{old_primary}");
	for warning in &promoted.warnings {
		let _ = writeln!(text, "warning: {warning}");
	}
	let _ = writeln!(
		text,
		"start the node on {} (without {ENV_REPLICA_URL}, or with a new replica there, which is \
		 filled at its start)",
		replica.shown()
	);
	out.report(
		&text,
		json!({
			"promoted": replica.shown(),
			"generation": promoted.generation,
			"old_primary": primary.map(Side::shown),
			"old_primary_retired": promoted.old_primary_retired,
			"warnings": promoted.warnings,
		}),
	);
	Ok(Outcome::Clean)
}

async fn detach(
	primary: &Side, replica: Option<&Side>, force: bool, out: &Output,
) -> CommandResult {
	let Some(replica) = replica else {
		if !force {
			return Err(format!(
				"no replica given (--replica or {ENV_REPLICA_URL}), so its record cannot be \
				 marked stale: if it comes back, it still claims to be in sync at the older \
				 generation, and a promotion sees that it is not only when it can read this \
				 primary (`promote --primary`). Give the replica, or --force to detach without it"
			));
		}
		let generation = replica::detach(primary.builder(true)?, None)
			.await
			.map_err(|e| refused(&format!("{} was not detached", primary.shown()), e, NODE_RUNS))?;
		let text = format!(
			"{} goes on alone at generation {generation}. The replica was not reached: its record \
			 still says in sync at the older generation. Never promote it without \
			 `--primary {}` (which sees the generation differ), and if the replica was promoted \
			 meanwhile, do not start a node on this copy\n",
			primary.shown(),
			primary.shown()
		);
		let value =
			json!({ "primary": primary.shown(), "generation": generation, "replica": null });
		out.report(&text, value);
		return Ok(Outcome::Clean);
	};
	let generation =
		replica::detach(primary.builder(true)?, Some(replica.builder(false)?))
			.await
			.map_err(|e| refused(&format!("{} was not detached", primary.shown()), e, NODE_RUNS))?;
	let text = format!(
		"{} goes on alone at generation {generation}; the replica {} is recorded as stale (never \
		 promoted without --force; given again as the replica, it is filled)\n",
		primary.shown(),
		replica.shown()
	);
	out.report(
		&text,
		json!({ "primary": primary.shown(), "generation": generation, "replica": replica.shown() }),
	);
	Ok(Outcome::Clean)
}
