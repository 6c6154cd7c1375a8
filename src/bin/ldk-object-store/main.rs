//! `ldk-object-store`: migrate, inspect, verify and clean up an LDK node's state in object storage.
//!
//! Exit codes: 0 all good, 1 problems found (verify, gc, doctor, migrate conflicts, replica
//! verify), 2 the command could not run or was refused (bad arguments, a location with no node
//! data, unreachable store, a lease held by a running node, a replica promotion refused).

mod credentials;
mod doctor;
mod gc;
mod lease;
mod location;
mod ls;
mod migrate;
mod output;
mod replica;
mod roots;
mod verify;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use ldk_object_store::{ObjectKvStore, StoreBuilder};

use output::Output;

/// Migrate, inspect, verify and clean up an LDK node's state in object storage.
///
/// Store URLs: s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, file:///abs/dir (or
/// just a path, /abs/dir or ./dir), memory://. Credentials come from the standard AWS_*, GOOGLE_* and AZURE_*
/// variables (AWS_ENDPOINT for MinIO, LocalStack, SeaweedFS). An encrypted store needs its key in
/// LDK_OBJECT_STORE_ENCRYPTION_KEY (and LDK_OBJECT_STORE_ENCRYPT_NAMES=true if names are).
///
/// Exit codes: 0 clean, 1 problems found, 2 the command could not run or was refused (bad
/// arguments, a location with no node data, an unreachable store, a lease held by a running
/// node).
#[derive(Debug, Parser)]
#[command(name = "ldk-object-store", version)]
struct Cli {
	/// Print one JSON document instead of text (and no progress bars).
	#[arg(long, global = true)]
	json: bool,
	/// A backend option, `key=value`, by object_store's names (aws_endpoint, aws_allow_http, …);
	/// repeatable. Applies to every store URL of the command.
	#[arg(long = "option", short = 'o', global = true, value_name = "KEY=VALUE", value_parser = parse_option)]
	options: Vec<(String, String)>,
	#[command(subcommand)]
	command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
	/// Copy every key from one store to another (an LDK FilesystemStore directory is a file://
	/// URL), then read each copy back and compare it. Safe to run again: keys already copied are
	/// skipped, and a key that exists with other contents is never overwritten unless asked.
	Migrate(migrate::Args),
	/// List the namespaces with their sizes, and each monitor with its size and pending updates.
	Ls(location::StoreArg),
	/// Load every monitor with its updates (as a node would at startup), and check keys, gaps,
	/// and stale or orphaned update objects. Exit code 1 if anything is wrong.
	Verify(verify::Args),
	/// Delete update objects that no load will ever read: those at or below their monitor's update
	/// id, and those of monitors that are no longer stored. Dry run unless --apply.
	Gc(gc::Args),
	/// Check that a store is usable: credentials, "not found" for a missing key (not 403),
	/// round-trip latency, and support for conditional writes. Leaves nothing behind.
	Doctor(doctor::Args),
	/// Show who holds the writer lease of a node's prefix, and until when; --break takes it
	/// away from a holder that is certainly dead.
	Lease(lease::Args),
	/// A second copy of the node's state in another region, cloud or directory: show both
	/// copies' records (status), fill or repair the replica, compare the copies (verify),
	/// promote the replica when the primary is lost, or detach it.
	Replica(replica::Args),
}

fn parse_option(raw: &str) -> Result<(String, String), String> {
	let (key, value) = raw.split_once('=').ok_or_else(|| format!("{raw:?} is not KEY=VALUE"))?;
	Ok((key.trim().to_owned(), value.to_owned()))
}

/// Builds the store for `url` (already a URL: see [`location::url`]), with the command's backend
/// options, without the writer lease: reading works while the node runs.
fn open(url: &str, options: &[(String, String)]) -> Result<ObjectKvStore, String> {
	open_with(url, options, false)
}

/// Builds the store for `url` as its one writer: takes the writer lease, so it is refused while
/// a node runs on that prefix. A missing `file://` directory is created (a migration's
/// destination).
fn open_writer(url: &str, options: &[(String, String)]) -> Result<ObjectKvStore, String> {
	open_with(url, options, true)
}

fn open_with(
	url: &str, options: &[(String, String)], lease: bool,
) -> Result<ObjectKvStore, String> {
	builder(url, options, lease)?.build().map_err(|e| cannot_open(url, e))
}

/// The builder [`open_with`] builds: the command's backend options, the encryption key from the
/// environment, and with `lease` the writer lease (and a missing `file://` directory created).
fn builder(url: &str, options: &[(String, String)], lease: bool) -> Result<StoreBuilder, String> {
	let mut builder = StoreBuilder::from_url(url).create_if_missing(lease);
	if !lease {
		builder = builder.without_writer_lease();
	}
	for (key, value) in options {
		builder = builder.with_option(key.clone(), value.clone());
	}
	// An encrypted node's store needs its key: LDK_OBJECT_STORE_ENCRYPTION_KEY (hex).
	builder.with_encryption_from_env().map_err(|e| cannot_open(url, e))
}

fn cannot_open(url: &str, e: ldk_object_store::ConfigError) -> String {
	format!("cannot open {}: {e}", output::redact(url))
}

/// Opens a location that must already exist, for a command that reads it (or, with `writer`,
/// cleans it up as its one writer): a missing directory is an error, never created. Returns the
/// store and its URL.
fn open_existing(
	location: &str, options: &[(String, String)], writer: bool,
) -> Result<(ObjectKvStore, String), String> {
	let url = location::existing(location)?;
	Ok((open_with(&url, options, writer)?, url))
}

fn main() -> ExitCode {
	let cli = match Cli::try_parse() {
		Ok(cli) => cli,
		// --help and --version go to stdout with exit code 0; usage errors to stderr with 2.
		Err(e) => {
			let _ = e.print();
			return match e.kind() {
				ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
				_ => ExitCode::from(2),
			};
		},
	};
	let out = Output::new(cli.json);
	let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
		Ok(runtime) => runtime,
		Err(e) => return out.fail(&format!("cannot start a runtime: {e}")),
	};
	let result = runtime.block_on(async {
		match &cli.command {
			Command::Migrate(args) => migrate::run(args, &cli.options, &out).await,
			Command::Ls(store) => ls::run(store, &cli.options, &out).await,
			Command::Verify(args) => verify::run(args, &cli.options, &out).await,
			Command::Gc(args) => gc::run(args, &cli.options, &out).await,
			Command::Doctor(args) => doctor::run(args, &cli.options, &out).await,
			Command::Lease(args) => lease::run(args, &cli.options, &out).await,
			Command::Replica(args) => replica::run(args, &cli.options, &out).await,
		}
	});
	// A request abandoned at a timeout may still be waiting for an answer: do not wait for it.
	runtime.shutdown_background();
	match result {
		Ok(outcome) => outcome.exit_code(),
		Err(message) => out.fail(&message),
	}
}
