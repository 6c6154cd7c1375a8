//! An ldk-node 0.7 node whose whole state lives in an `ObjectKvStore`, handed to
//! `Builder::build_with_store`.
//!
//! ```sh
//! cd integrations/ldk-node
//! cargo run --example node                                 # store in ./ldk-node-data
//! cargo run --example node -- memory://                    # any store URL
//! cargo run --example node -- s3://bucket/node-1 --esplora http://127.0.0.1:3002
//! cargo run --example node -- --bitcoind-rpc user:pass@127.0.0.1:18443
//! cargo run --example node -- --bitcoind-rpc stub          # the bitcoind stand-in
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
//!   `http://127.0.0.1:3002`), or `--bitcoind-rpc USER:PASSWORD@HOST:PORT` for Bitcoin Core's
//!   RPC (`--bitcoind-rpc stub`: a stand-in on 127.0.0.1 serving a regtest chain of one block).
//!   Without either, a stub on 127.0.0.1 answers the fee-estimate request `Node::start` insists
//!   on; the node's chain sync then fails in the background and retries, which does not matter
//!   here.
//! - The node runs in a `NodeOnStore`, whose `stop` stops the node and closes the store: with a
//!   bitcoind chain source ldk-node 0.7.1 never drops its clones of the store, so only closing
//!   it releases the store's writer lease (and would let a new node start in this process).
//! - Replica: `--replica URL` keeps a second copy of the store there (`StoreBuilder::with_replica`;
//!   every write is acknowledged only once both copies hold it).
//! - Local files: `--local-dir DIR` (default `./ldk-node-local`) holds the wallet seed
//!   (`keys_seed`, created on the first run) and ldk-node's log (`ldk_node.log`). ldk-node never
//!   puts the seed in the store, and a seed other than the one the store was made with cannot
//!   open it. Keep this directory outside the store's directory: the store refuses to list files
//!   whose names are not LDK keys.

use std::path::PathBuf;
use std::process::ExitCode;

use ldk_node::bitcoin::Network;
use ldk_node::lightning::util::persist::{KVStoreSync, MigratableKVStore};
use ldk_node::logger::LogLevel;
use ldk_node::{BuildError, Builder, Node, NodeError};
use ldk_object_store::{ObjectKvStore, StoreBuilder};
use ldk_object_store_ldk_node::{NodeOnStore, StubBitcoind, StubEsplora};

const USAGE: &str =
	"usage: node [STORE_URL] [--esplora URL | --bitcoind-rpc USER:PASSWORD@HOST:PORT|stub] \
	 [--local-dir DIR] [--replica URL]\n  STORE_URL defaults to file://<current dir>/ldk-node-data";

struct Args {
	store_url: String,
	/// A second copy of the store (`--replica URL`).
	replica_url: Option<String>,
	chain: ChainArg,
	local_dir: PathBuf,
}

/// The chain source; `None`: a stub.
enum ChainArg {
	Esplora(Option<String>),
	Bitcoind(Option<BitcoindRpc>),
}

struct BitcoindRpc {
	host: String,
	port: u16,
	user: String,
	password: String,
}

/// A stub serving the node's chain source, kept alive as long as the node runs.
enum Stub {
	Esplora(StubEsplora),
	Bitcoind(StubBitcoind),
}

impl Stub {
	/// What the stub was asked.
	fn served(&self) -> String {
		match self {
			Stub::Esplora(stub) => format!(
				"{} fee-estimate requests, {} others (404)",
				stub.fee_estimate_requests(),
				stub.other_requests()
			),
			Stub::Bitcoind(stub) => {
				let calls = ["getblockchaininfo", "getblockheader", "estimatesmartfee"]
					.map(|method| format!("{} {method}", stub.calls(method)));
				format!("{}, unknown: {:?}", calls.join(", "), stub.unknown_calls())
			},
		}
	}
}

/// Sets `builder`'s chain source, starting a stub if asked for one. Returns the stub and what
/// the chain source is, in words.
fn set_chain_source(
	arg: &ChainArg, builder: &mut Builder,
) -> Result<(Option<Stub>, String), String> {
	let failed = |e| format!("cannot start the stub: {e}");
	Ok(match arg {
		ChainArg::Esplora(Some(url)) => {
			builder.set_chain_source_esplora(url.clone(), None);
			(None, format!("Esplora {url}"))
		},
		ChainArg::Esplora(None) => {
			let stub = StubEsplora::start().map_err(failed)?;
			stub.set_as_chain_source(builder);
			let what = format!("Esplora {} (stub: fee estimates only)", stub.url());
			(Some(Stub::Esplora(stub)), what)
		},
		ChainArg::Bitcoind(Some(BitcoindRpc { host, port, user, password })) => {
			builder.set_chain_source_bitcoind_rpc(
				host.clone(),
				*port,
				user.clone(),
				password.clone(),
			);
			(None, format!("bitcoind RPC {host}:{port}"))
		},
		ChainArg::Bitcoind(None) => {
			let stub = StubBitcoind::start().map_err(failed)?;
			stub.set_as_chain_source(builder);
			let what = format!(
				"bitcoind RPC 127.0.0.1:{} (stub: a regtest chain of one block)",
				stub.port()
			);
			(Some(Stub::Bitcoind(stub)), what)
		},
	})
}

/// `USER:PASSWORD@HOST:PORT`, or `stub`.
fn parse_bitcoind(value: &str) -> Result<ChainArg, String> {
	if value == "stub" {
		return Ok(ChainArg::Bitcoind(None));
	}
	let bad = || format!("--bitcoind-rpc takes USER:PASSWORD@HOST:PORT or stub\n{USAGE}");
	let (credentials, address) = value.rsplit_once('@').ok_or_else(bad)?;
	let (user, password) = credentials.split_once(':').ok_or_else(bad)?;
	let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
	let port = port.parse().map_err(|_| bad())?;
	Ok(ChainArg::Bitcoind(Some(BitcoindRpc {
		host: host.to_owned(),
		port,
		user: user.to_owned(),
		password: password.to_owned(),
	})))
}

fn parse_args() -> Result<Args, String> {
	let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current dir: {e}"))?;
	let mut store_url = None;
	let mut chain = ChainArg::Esplora(None);
	let mut local_dir = cwd.join("ldk-node-local");
	let mut replica_url = None;
	let mut args = std::env::args().skip(1);
	while let Some(arg) = args.next() {
		match arg.as_str() {
			"-h" | "--help" => return Err(USAGE.to_owned()),
			"--esplora" => {
				chain = ChainArg::Esplora(Some(
					args.next().ok_or(format!("--esplora needs a URL\n{USAGE}"))?,
				));
			},
			"--bitcoind-rpc" => {
				chain = parse_bitcoind(
					&args.next().ok_or(format!("--bitcoind-rpc needs an address\n{USAGE}"))?,
				)?;
			},
			"--local-dir" => {
				let dir = args.next().ok_or(format!("--local-dir needs a path\n{USAGE}"))?;
				local_dir = cwd.join(dir);
			},
			"--replica" => {
				replica_url = Some(args.next().ok_or(format!("--replica needs a URL\n{USAGE}"))?);
			},
			flag if flag.starts_with('-') => return Err(format!("unknown option {flag}\n{USAGE}")),
			url if store_url.is_none() => store_url = Some(url.to_owned()),
			extra => return Err(format!("unexpected argument {extra}\n{USAGE}")),
		}
	}
	let store_url =
		store_url.unwrap_or_else(|| format!("file://{}", cwd.join("ldk-node-data").display()));
	Ok(Args { store_url, replica_url, chain, local_dir })
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
	// The example may set up a new node: its directory is created if missing.
	let mut store = StoreBuilder::from_url(&args.store_url).create_if_missing(true);
	if let Some(replica) = &args.replica_url {
		store = store.with_replica(StoreBuilder::from_url(replica).create_if_missing(true));
	}
	let store =
		store.build().map_err(|e| format!("cannot open the store {}: {e}", args.store_url))?;
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
		.set_filesystem_logger(Some(log_file.clone()), Some(LogLevel::Debug));
	// Keep the stub, if any, alive as long as the node runs.
	let (stub, chain) = set_chain_source(&args.chain, &mut builder)?;
	println!("chain:     {chain}");
	// Stopping it stops the node and closes the store (which releases its lease).
	let node =
		NodeOnStore::build(&builder, &store).map_err(|e| explain_build_error(e, &log_file))?;
	println!("node id:   {}", node.node_id());
	println!(
		"{} node: {} keys in the store after build",
		if before.is_empty() { "new" } else { "reloaded" },
		list_keys(&store).map_err(|e| format!("cannot list the store: {e}"))?.len()
	);

	node.start().map_err(|e| match e {
		NodeError::FeerateEstimationUpdateFailed | NodeError::FeerateEstimationUpdateTimeout => {
			format!(
				"starting the node: the chain source ({}) did not answer ({e}); start one, or leave \
				 out --esplora and --bitcoind-rpc to use the built-in stub",
				chain
			)
		},
		other => format!("starting the node: {other} (see {log_file})"),
	})?;
	let result = exercise(&node);
	// Stop even if the exercise failed: stopping persists the manager, graph and scorer, then
	// closes the store (reads still work; writes are refused from here on).
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
	if let Some(stub) = &stub {
		println!("\nthe stub answered: {}", stub.served());
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
