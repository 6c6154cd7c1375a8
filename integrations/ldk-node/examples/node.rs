//! An ldk-node 0.7 node whose whole state lives in an `ObjectKvStore`, handed to
//! `Builder::build_with_store`.
//!
//! ```sh
//! cd integrations/ldk-node
//! cargo run --example node                                 # store in ./ldk-node-data
//! cargo run --example node -- memory://                    # any store URL
//! cargo run --example node -- s3://bucket/node-1 --esplora http://127.0.0.1:3002
//! ```
//!
//! The node runs on regtest. It builds, starts, creates a BOLT 11 invoice and an on-chain address
//! (so that there is a payment and a wallet index to persist), stops, and prints every key it
//! wrote to the store. Run it twice against the same store: the second run reloads the node.
//!
//! - Store: the first argument, a URL for `StoreBuilder::from_url` (`file://`, `memory://`,
//!   `s3://`, `gs://`, `az://`; S3 settings from `AWS_*` variables). Default:
//!   `file://<current dir>/ldk-node-data`.
//! - Chain source: `--esplora URL` for a real Esplora server (electrs on regtest serves one on
//!   `http://127.0.0.1:3002`). Without it, a stub on 127.0.0.1 answers the fee-estimate request
//!   `Node::start` insists on; the node's chain sync then fails in the background and retries,
//!   which does not matter here.
//! - Local files: `--local-dir DIR` (default `./ldk-node-local`) holds the wallet seed
//!   (`keys_seed`, created on the first run) and ldk-node's log (`ldk_node.log`). ldk-node never
//!   puts the seed in the store, and a seed other than the one the store was made with cannot
//!   open it. Keep this directory outside the store's directory: the store refuses to list files
//!   whose names are not LDK keys.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ldk_node::bitcoin::Network;
use ldk_node::lightning::util::persist::{KVStoreSync, MigratableKVStore};
use ldk_node::logger::LogLevel;
use ldk_node::{BuildError, Builder, Node, NodeError};
use ldk_object_store::{ObjectKvStore, StoreBuilder};
use ldk_object_store_ldk_node::StubEsplora;

const USAGE: &str =
	"usage: node [STORE_URL] [--esplora URL] [--local-dir DIR]\n  STORE_URL defaults to file://<current dir>/ldk-node-data";

struct Args {
	store_url: String,
	esplora: Option<String>,
	local_dir: PathBuf,
}

fn parse_args() -> Result<Args, String> {
	let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current dir: {e}"))?;
	let mut store_url = None;
	let mut esplora = None;
	let mut local_dir = cwd.join("ldk-node-local");
	let mut args = std::env::args().skip(1);
	while let Some(arg) = args.next() {
		match arg.as_str() {
			"-h" | "--help" => return Err(USAGE.to_owned()),
			"--esplora" => {
				esplora = Some(args.next().ok_or(format!("--esplora needs a URL\n{USAGE}"))?);
			},
			"--local-dir" => {
				let dir = args.next().ok_or(format!("--local-dir needs a path\n{USAGE}"))?;
				local_dir = cwd.join(dir);
			},
			flag if flag.starts_with('-') => return Err(format!("unknown option {flag}\n{USAGE}")),
			url if store_url.is_none() => store_url = Some(url.to_owned()),
			extra => return Err(format!("unexpected argument {extra}\n{USAGE}")),
		}
	}
	let store_url =
		store_url.unwrap_or_else(|| format!("file://{}", cwd.join("ldk-node-data").display()));
	Ok(Args { store_url, esplora, local_dir })
}

fn main() -> ExitCode {
	match run() {
		Ok(()) => ExitCode::SUCCESS,
		Err(message) => {
			eprintln!("error: {message}");
			ExitCode::FAILURE
		},
	}
}

fn run() -> Result<(), String> {
	let args = parse_args()?;
	let store = StoreBuilder::from_url(&args.store_url)
		.build()
		.map_err(|e| format!("cannot open the store {}: {e}", args.store_url))?;
	// The store took its prefix's writer lease when it was built (a second instance of this node
	// is refused there). Should the lease ever be lost, every write fails; stop at once rather
	// than run on as a node that can no longer persist.
	if let Some(lease) = store.writer_lease() {
		println!("lease:     held as {}", lease.info());
		std::thread::spawn(move || loop {
			// An async application would await `lease.lost()` instead.
			std::thread::sleep(std::time::Duration::from_millis(500));
			if !lease.is_held() {
				let reason = lease.lost_reason().unwrap_or_default();
				// "released": this run's own clean shutdown.
				if reason != "released" {
					eprintln!("the store's writer lease is lost ({reason}); stopping");
					std::process::exit(1);
				}
				return;
			}
		});
	}
	let before = list_keys(&store).map_err(|e| format!("cannot list the store: {e}"))?;
	println!("store:     {} ({} keys in it)", args.store_url, before.len());

	// Keep the stub alive as long as the node runs.
	let (esplora_url, _stub) = match &args.esplora {
		Some(url) => (url.clone(), None),
		None => {
			let stub = StubEsplora::start().map_err(|e| format!("cannot start the stub: {e}"))?;
			(stub.url(), Some(stub))
		},
	};
	println!(
		"esplora:   {esplora_url}{}",
		if args.esplora.is_none() { " (stub: fee estimates only)" } else { "" }
	);
	std::fs::create_dir_all(&args.local_dir)
		.map_err(|e| format!("cannot create {}: {e}", args.local_dir.display()))?;
	let local_dir = args.local_dir.display().to_string();
	let log_file = format!("{local_dir}/ldk_node.log");
	println!("seed, log: {local_dir}/keys_seed, {log_file}");

	let mut builder = Builder::new();
	builder
		.set_network(Network::Regtest)
		.set_storage_dir_path(local_dir.clone())
		.set_entropy_seed_path(format!("{local_dir}/keys_seed"))
		.set_filesystem_logger(Some(log_file.clone()), Some(LogLevel::Debug))
		.set_chain_source_esplora(esplora_url.clone(), None);
	let node = builder
		.build_with_store(Arc::new(store.clone()))
		.map_err(|e| explain_build_error(e, &log_file))?;
	println!("node id:   {}", node.node_id());
	println!(
		"{} node: {} keys in the store after build",
		if before.is_empty() { "new" } else { "reloaded" },
		list_keys(&store).map_err(|e| format!("cannot list the store: {e}"))?.len()
	);

	node.start().map_err(|e| match e {
		NodeError::FeerateEstimationUpdateFailed | NodeError::FeerateEstimationUpdateTimeout => {
			format!(
				"starting the node: the Esplora server at {esplora_url} did not answer ({e}); start \
				 one, or leave out --esplora to use the built-in stub"
			)
		},
		other => format!("starting the node: {other} (see {log_file})"),
	})?;
	let result = exercise(&node);
	// Stop even if the exercise failed: stopping persists the manager, graph and scorer.
	node.stop().map_err(|e| format!("stopping the node: {e} (see {log_file})"))?;
	result?;

	let keys = list_keys(&store).map_err(|e| format!("cannot list the store: {e}"))?;
	println!("\nkeys in the store after stop ({}):", keys.len());
	for (primary, secondary, key) in &keys {
		let size = KVStoreSync::read(&store, primary, secondary, key)
			.map(|data| format!("{} bytes", data.len()))
			.unwrap_or_else(|e| format!("unreadable: {e}"));
		println!("  {:<60} {size}", display_key(primary, secondary, key));
	}
	println!("\nrun again with the same store URL to reload this node");
	Ok(())
}

/// Gives the node something of its own to persist: an invoice (a pending inbound payment) and an
/// on-chain address (the wallet's derivation index).
fn exercise(node: &Node) -> Result<(), String> {
	let description = ldk_node::lightning_invoice::Bolt11InvoiceDescription::Direct(
		ldk_node::lightning_invoice::Description::new("ldk-object-store example".into())
			.map_err(|e| format!("invoice description: {e}"))?,
	);
	let invoice = node
		.bolt11_payment()
		.receive(10_000, &description, 3600)
		.map_err(|e| format!("creating an invoice: {e}"))?;
	println!("invoice:   {invoice}");
	let address =
		node.onchain_payment().new_address().map_err(|e| format!("new on-chain address: {e}"))?;
	println!("address:   {address}");
	println!("payments:  {} known to the node", node.list_payments().len());
	Ok(())
}

fn list_keys(
	store: &ObjectKvStore,
) -> Result<Vec<(String, String, String)>, ldk_node::lightning::io::Error> {
	let mut keys = store.list_all_keys()?;
	keys.sort();
	Ok(keys)
}

fn display_key(primary: &str, secondary: &str, key: &str) -> String {
	[primary, secondary, key]
		.iter()
		.filter(|part| !part.is_empty())
		.copied()
		.collect::<Vec<_>>()
		.join("/")
}

fn explain_build_error(error: BuildError, log_file: &str) -> String {
	let why = match error {
		BuildError::ReadFailed => "reading the node's state from the store failed",
		BuildError::WalletSetupFailed => {
			"the on-chain wallet could not be set up; if the store holds a node, it was made with \
			 another seed than the one in --local-dir"
		},
		BuildError::NetworkMismatch => "the store holds a node of another network than regtest",
		BuildError::InvalidSeedFile => "the seed file cannot be read or created",
		_ => "see the log",
	};
	format!("building the node: {error}: {why} (details in {log_file})")
}
