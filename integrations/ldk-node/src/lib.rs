//! Running an ldk-node 0.7 [`Node`] on an [`ObjectKvStore`], and stand-in chain sources for
//! running one where no Bitcoin backend is reachable.
//!
//! # Stopping a node really ends its hold on the store: [`NodeOnStore`]
//!
//! An `ObjectKvStore` holds a writer lease on its location from the moment it is built (an OS
//! lock on a `file://` directory, a renewed lease object on object storage), and a second store
//! on the same location is refused
//! ([`ConfigError::LeaseHeld`](ldk_object_store::ConfigError::LeaseHeld), or
//! [`ConfigError::DirectoryLocked`](ldk_object_store::ConfigError::DirectoryLocked) for
//! `file://`) until the first one
//! ends. Ending it by dropping it only works if *every* clone is dropped, and ldk-node 0.7.1 does
//! not drop its clones: with a bitcoind chain source (RPC or REST), its gossip verifier and the
//! gossip sync hold each other (`P2PGossipSync` → `GossipVerifier` → `P2PGossipSync`), and what
//! they reach through the peer manager, four clones of the store among it, stays alive after
//! `Node::stop()` and the drop of the `Node`. On object storage that leaked store even keeps
//! renewing its lease. So a node stopped that way cannot be started again in the same process,
//! however long one waits.
//!
//! [`NodeOnStore`] owns the node and a clone of its store; its [`stop`](NodeOnStore::stop) stops
//! the node and then calls [`ObjectKvStore::close`], which ends writing in every clone of the
//! store, the leaked ones included, and releases the lease. A new store and node on the same
//! location can then start at once, in the same process, whatever the chain source.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ldk_node::bitcoin::Network;
//! use ldk_object_store::StoreBuilder;
//! use ldk_object_store_ldk_node::NodeOnStore;
//!
//! let mut builder = ldk_node::Builder::new();
//! builder
//!     .set_network(Network::Regtest)
//!     .set_entropy_seed_path("/secure/keys_seed".into())
//!     .set_chain_source_bitcoind_rpc("127.0.0.1".into(), 18443, "user".into(), "pass".into());
//! let store = StoreBuilder::from_url("s3://my-bucket/node-1").build()?;
//! let node = NodeOnStore::build(&builder, &store)?;
//! node.start()?;
//! // ... the node runs; `node` derefs to the `ldk_node::Node` ...
//! node.stop()?; // the node is stopped and the store closed: its lease is free
//!
//! // Same process, same location: a new store takes the lease, the node reloads its state.
//! let store = StoreBuilder::from_url("s3://my-bucket/node-1").build()?;
//! let node = NodeOnStore::build(&builder, &store)?;
//! node.start()?;
//! # Ok(()) }
//! ```
//!
//! # Stand-in chain sources
//!
//! `Node::start` asks its chain source for fee estimates once. An Esplora source that does not
//! answer fails it (`FeerateEstimationUpdateFailed`); a bitcoind source on regtest survives a
//! refused connection (ldk-node falls back to 1 sat/vB) but not a timeout, and its chain sync
//! never runs. [`StubEsplora`] answers only the fee estimates; [`StubBitcoind`] serves a regtest
//! chain of one block (the genesis) and an empty mempool, so that a bitcoind-RPC node's chain
//! sync runs for real. Both listen on `127.0.0.1`; see each for what it serves.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ldk_node::bitcoin::consensus::encode::serialize_hex;
use ldk_node::bitcoin::constants::genesis_block;
use ldk_node::bitcoin::hex::DisplayHex;
use ldk_node::bitcoin::{Block, Network};
use ldk_node::{BuildError, Builder, Node, NodeError};
use ldk_object_store::ObjectKvStore;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// The node and its store

/// An ldk-node [`Node`] together with the [`ObjectKvStore`] it was built on, whose
/// [`stop`](Self::stop) (or drop) stops the node and then closes the store.
///
/// Guarantee: once `stop` returns, or the handle is dropped, the store's writer lease is
/// released and no clone of the store writes or removes anything any more, including clones
/// that ldk-node keeps alive after the node is gone (see the crate docs). Another store on the
/// same location, in this process or another, can then be built and a node started on it.
///
/// It derefs to the [`Node`], so everything else is called as on the node itself. Call
/// [`NodeOnStore::stop`], not `Node::stop` through the deref: the node's own `stop` leaves the
/// store held (the handle still closes it when it is dropped). A stopped node is not restarted
/// through this handle: its store is closed; build a new one on a new store instance.
pub struct NodeOnStore {
	node: Node,
	store: ObjectKvStore,
	/// Set by the first stop, so that `Drop` knows it is done.
	stopped: bool,
}

impl NodeOnStore {
	/// Builds the node with `builder` on a clone of `store` (`Builder::build_with_store`); any
	/// chain source. On failure nothing is closed: `store` may be used for another attempt.
	pub fn build(builder: &Builder, store: &ObjectKvStore) -> Result<Self, BuildError> {
		let node = builder.build_with_store(Arc::new(store.clone()))?;
		Ok(Self::new(node, store.clone()))
	}

	/// Takes over a node that was built on `store`, or on a wrapper around it (say, one that
	/// counts calls): [`stop`](Self::stop) will close `store`.
	pub fn new(node: Node, store: ObjectKvStore) -> Self {
		NodeOnStore { node, store, stopped: false }
	}

	/// The node.
	pub fn node(&self) -> &Node {
		&self.node
	}

	/// The store the node was built on (for reading, or to watch its writer lease). Writes and
	/// removes through it, and through every other clone, fail once the handle is stopped.
	pub fn store(&self) -> &ObjectKvStore {
		&self.store
	}

	/// Stops the node (`Node::stop`: it waits for ldk-node's background tasks and for the
	/// background processor's final persistence of the channel manager, graph and scorer), then
	/// closes the store ([`ObjectKvStore::close`]), so that its lease is released at once. The
	/// store is closed whatever the node's stop returned. A node that was not running (never
	/// started, or stopped through the deref) is not an error.
	pub fn stop(mut self) -> Result<(), NodeError> {
		self.stop_and_close()
	}

	fn stop_and_close(&mut self) -> Result<(), NodeError> {
		if std::mem::replace(&mut self.stopped, true) {
			return Ok(());
		}
		let stopped = match self.node.stop() {
			Err(NodeError::NotRunning) => Ok(()),
			other => other,
		};
		// Not dropping the store: ldk-node may keep clones of it alive forever (see the crate
		// docs). Closing ends those as well.
		self.store.close_blocking();
		stopped
	}
}

impl std::fmt::Debug for NodeOnStore {
	fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
		f.debug_struct("NodeOnStore")
			.field("node_id", &self.node.node_id())
			.field("store", &self.store)
			.field("stopped", &self.stopped)
			.finish()
	}
}

impl Deref for NodeOnStore {
	type Target = Node;

	fn deref(&self) -> &Node {
		&self.node
	}
}

impl Drop for NodeOnStore {
	/// Stops the node and closes the store, as [`NodeOnStore::stop`] does.
	fn drop(&mut self) {
		let _ = self.stop_and_close();
	}
}

// ---------------------------------------------------------------------------------------------
// The HTTP server under both stubs

/// A request as the stubs see it.
struct Request {
	method: String,
	path: String,
	body: Vec<u8>,
}

/// A response: status line text, content type, body.
struct Response {
	status: &'static str,
	content_type: &'static str,
	body: String,
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// The open connections, each with the thread serving it.
type Connections = Mutex<Vec<(TcpStream, JoinHandle<()>)>>;

/// An HTTP/1.1 server on `127.0.0.1` with keep-alive (the bitcoind RPC client keeps one
/// connection for all its calls), one thread per connection. Dropping it ends every thread.
#[derive(Debug)]
struct HttpStub {
	addr: SocketAddr,
	stop: Arc<AtomicBool>,
	accept: Option<JoinHandle<()>>,
	connections: Arc<Connections>,
}

impl HttpStub {
	fn start(name: &str, handler: Arc<Handler>) -> io::Result<Self> {
		let listener = TcpListener::bind("127.0.0.1:0")?;
		let addr = listener.local_addr()?;
		let stop = Arc::new(AtomicBool::new(false));
		let connections: Arc<Connections> = Arc::default();
		let (stopping, accepted) = (Arc::clone(&stop), Arc::clone(&connections));
		let thread_name = name.to_owned();
		let accept = thread::Builder::new().name(name.to_owned()).spawn(move || {
			for stream in listener.incoming() {
				if stopping.load(Ordering::SeqCst) {
					break;
				}
				let Ok(stream) = stream else { continue };
				let Ok(kept) = stream.try_clone() else { continue };
				let handler = Arc::clone(&handler);
				let serving = thread::Builder::new()
					.name(thread_name.clone())
					// An error only ends that connection; the client reconnects.
					.spawn(move || drop(serve_connection(stream, &*handler)));
				if let Ok(serving) = serving {
					let mut connections = accepted.lock().unwrap_or_else(|p| p.into_inner());
					connections.retain(|(_, thread)| !thread.is_finished());
					connections.push((kept, serving));
				}
			}
		})?;
		Ok(HttpStub { addr, stop, accept: Some(accept), connections })
	}
}

impl Drop for HttpStub {
	fn drop(&mut self) {
		self.stop.store(true, Ordering::SeqCst);
		// Wake the accept loop so that it sees the flag.
		let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
		if let Some(accept) = self.accept.take() {
			let _ = accept.join();
		}
		let connections =
			std::mem::take(&mut *self.connections.lock().unwrap_or_else(|p| p.into_inner()));
		for (stream, thread) in connections {
			// Clients that keep their connection (a leaked node's RPC client does, forever)
			// would otherwise keep the thread reading.
			let _ = stream.shutdown(Shutdown::Both);
			let _ = thread.join();
		}
	}
}

fn serve_connection(stream: TcpStream, handler: &Handler) -> io::Result<()> {
	// Only a safety net: the server's drop shuts connections down.
	stream.set_read_timeout(Some(Duration::from_secs(60)))?;
	let mut reader = BufReader::new(stream.try_clone()?);
	let mut writer = stream;
	loop {
		let mut request_line = String::new();
		if reader.read_line(&mut request_line)? == 0 {
			return Ok(());
		}
		let mut content_length = 0;
		let mut close = false;
		loop {
			let mut header = String::new();
			if reader.read_line(&mut header)? == 0 {
				return Ok(());
			}
			let header = header.trim_end();
			if header.is_empty() {
				break;
			}
			if let Some((name, value)) = header.split_once(':') {
				let (name, value) = (name.trim(), value.trim());
				if name.eq_ignore_ascii_case("content-length") {
					content_length = value.parse().map_err(|_| {
						io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length")
					})?;
				} else if name.eq_ignore_ascii_case("connection") {
					close = value.eq_ignore_ascii_case("close");
				}
			}
		}
		let mut body = vec![0; content_length];
		reader.read_exact(&mut body)?;
		let mut parts = request_line.split_whitespace();
		let request = Request {
			method: parts.next().unwrap_or_default().to_owned(),
			path: parts.next().unwrap_or_default().to_owned(),
			body,
		};
		let response = handler(&request);
		write!(
			writer,
			"HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{}",
			response.status,
			response.content_type,
			response.body.len(),
			if close { "close" } else { "keep-alive" },
			response.body
		)?;
		writer.flush()?;
		if close {
			return Ok(());
		}
	}
}

// ---------------------------------------------------------------------------------------------
// Esplora

/// A minimal Esplora HTTP server on `127.0.0.1`. Stops when dropped.
///
/// It answers `GET /fee-estimates` with an empty map, which ldk-node accepts on regtest (it
/// falls back to 1 sat/vB), and every other request with `404`: the node's background chain sync
/// then fails, logs it and retries later, which changes nothing in what the node persists at
/// start and stop.
#[derive(Debug)]
pub struct StubEsplora {
	server: HttpStub,
	counts: Arc<Counts>,
}

/// What a stub was asked, by path or RPC method: what it serves, and what it does not know.
#[derive(Debug, Default)]
struct Counts(Mutex<CountMaps>);

#[derive(Debug, Default, Clone)]
struct CountMaps {
	known: BTreeMap<String, usize>,
	unknown: BTreeMap<String, usize>,
}

impl Counts {
	fn record(&self, what: &str, known: bool) {
		let mut maps = self.0.lock().unwrap_or_else(|p| p.into_inner());
		let map = if known { &mut maps.known } else { &mut maps.unknown };
		*map.entry(what.to_owned()).or_default() += 1;
	}

	fn get(&self) -> CountMaps {
		self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
	}
}

impl StubEsplora {
	/// Binds a free port on `127.0.0.1` and serves from threads of its own.
	pub fn start() -> io::Result<Self> {
		let counts: Arc<Counts> = Arc::default();
		let counted = Arc::clone(&counts);
		let server = HttpStub::start(
			"stub-esplora",
			Arc::new(move |request: &Request| {
				let fees = request.method == "GET"
					&& request.path.trim_end_matches('/').ends_with("/fee-estimates");
				counted.record(&request.path, fees);
				if fees {
					Response {
						status: "200 OK",
						content_type: "application/json",
						body: "{}".into(),
					}
				} else {
					Response {
						status: "404 Not Found",
						content_type: "text/plain",
						body: "stub esplora: only /fee-estimates is served".into(),
					}
				}
			}),
		)?;
		Ok(StubEsplora { server, counts })
	}

	/// The base URL to hand to `Builder::set_chain_source_esplora`.
	pub fn url(&self) -> String {
		format!("http://{}", self.server.addr)
	}

	/// Makes this stub `builder`'s chain source.
	pub fn set_as_chain_source(&self, builder: &mut Builder) {
		builder.set_chain_source_esplora(self.url(), None);
	}

	/// How many `GET /fee-estimates` requests were answered.
	pub fn fee_estimate_requests(&self) -> usize {
		self.counts.get().known.values().sum()
	}

	/// How many other requests were answered (with `404`).
	pub fn other_requests(&self) -> usize {
		self.counts.get().unknown.values().sum()
	}
}

// ---------------------------------------------------------------------------------------------
// bitcoind

/// A minimal Bitcoin Core JSON-RPC server on `127.0.0.1`, for
/// `Builder::set_chain_source_bitcoind_rpc`. Stops when dropped.
///
/// It serves a regtest chain that is only its genesis block, with an empty mempool, answering
/// what ldk-node 0.7.1 asks of bitcoind, in Bitcoin Core's format (JSON-RPC 1.0 over HTTP;
/// errors with HTTP 500, unknown methods with 404 and code -32601):
///
/// - at build, for the chain tip: `getblockchaininfo` (`bestblockhash`, `blocks`), then
///   `getblockheader <hash>` (the verbose header: version, merkle root, time, bits, nonce,
///   height, chainwork; genesis has no `previousblockhash`);
/// - at start, for the fee-rate cache (no answer within 5 s fails `Node::start`; on regtest an
///   error answer falls back to 1 sat/vB): `estimatesmartfee <target> <mode>` for each
///   confirmation target but one, and `getmempoolinfo` (`mempoolminfee`) for that one, all
///   1 sat/vB (0.00001 BTC/kvB);
/// - in the background chain sync: `getblockchaininfo` and `getblockheader` again (every
///   listener is at genesis, so no block is connected), then every 2 s `getblockchaininfo` and
///   `getrawmempool false` (`[]`);
/// - also, should they be asked: `getblock <hash> 0` (the genesis block's hex),
///   `getblockhash 0`, `getblockcount`, `gettxout` (`null`: no such output), and
///   `getmempoolentry` and `getrawtransaction` (error -5, not found).
///
/// Anything else (say `sendrawtransaction`) is refused as an unknown method and counted in
/// [`unknown_calls`](Self::unknown_calls). The RPC user and password are not checked.
#[derive(Debug)]
pub struct StubBitcoind {
	server: HttpStub,
	counts: Arc<Counts>,
}

/// 1 sat/vB in Bitcoin Core's unit, BTC per 1000 vbytes.
const ONE_SAT_PER_VB: f64 = 0.000_010_00;

/// Bitcoin Core's codes for the errors the stub answers with.
const RPC_INVALID_ADDRESS_OR_KEY: i64 = -5;
const RPC_INVALID_PARAMETER: i64 = -8;
const RPC_METHOD_NOT_FOUND: i64 = -32601;

impl StubBitcoind {
	/// The RPC user to configure (the stub accepts any).
	pub const RPC_USER: &'static str = "stub";
	/// The RPC password to configure (the stub accepts any).
	pub const RPC_PASSWORD: &'static str = "stub";

	/// Binds a free port on `127.0.0.1` and serves from threads of its own.
	pub fn start() -> io::Result<Self> {
		let chain = Arc::new(Chain::regtest_genesis());
		let counts: Arc<Counts> = Arc::default();
		let counted = Arc::clone(&counts);
		let server = HttpStub::start(
			"stub-bitcoind",
			Arc::new(move |request: &Request| {
				let call: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
				let method = call["method"].as_str().unwrap_or_default();
				let params = call["params"].as_array().cloned().unwrap_or_default();
				let answer = chain.answer(method, &params);
				let known = !matches!(&answer, Err((code, _)) if *code == RPC_METHOD_NOT_FOUND);
				counted.record(method, known);
				rpc_response(&call["id"], answer)
			}),
		)?;
		Ok(StubBitcoind { server, counts })
	}

	/// The port to hand to `Builder::set_chain_source_bitcoind_rpc` (the host is `127.0.0.1`).
	pub fn port(&self) -> u16 {
		self.server.addr.port()
	}

	/// Makes this stub `builder`'s chain source.
	pub fn set_as_chain_source(&self, builder: &mut Builder) {
		builder.set_chain_source_bitcoind_rpc(
			self.server.addr.ip().to_string(),
			self.port(),
			Self::RPC_USER.into(),
			Self::RPC_PASSWORD.into(),
		);
	}

	/// How many calls of `method` were answered.
	pub fn calls(&self, method: &str) -> usize {
		self.counts.get().known.get(method).copied().unwrap_or_default()
	}

	/// The methods called that the stub does not know, with how many times each.
	pub fn unknown_calls(&self) -> BTreeMap<String, usize> {
		self.counts.get().unknown
	}
}

/// The stub's chain: regtest's genesis block alone.
struct Chain {
	genesis: Block,
	/// Its hash, as Bitcoin Core prints it.
	hash: String,
}

type RpcAnswer = Result<Value, (i64, &'static str)>;

impl Chain {
	fn regtest_genesis() -> Self {
		let genesis = genesis_block(Network::Regtest);
		let hash = genesis.block_hash().to_string();
		Chain { genesis, hash }
	}

	fn answer(&self, method: &str, params: &[Value]) -> RpcAnswer {
		let is_genesis = |param: Option<&Value>| param.and_then(Value::as_str) == Some(&self.hash);
		const NO_BLOCK: (i64, &str) = (RPC_INVALID_ADDRESS_OR_KEY, "Block not found");
		let header = &self.genesis.header;
		Ok(match method {
			"getblockchaininfo" => json!({
				"chain": "regtest",
				"blocks": 0,
				"headers": 0,
				"bestblockhash": self.hash,
				"time": header.time,
				"mediantime": header.time,
				"verificationprogress": 1,
				"initialblockdownload": true,
				"chainwork": self.chainwork(),
				"pruned": false,
				"warnings": [],
			}),
			"getblockheader" if !is_genesis(params.first()) => return Err(NO_BLOCK),
			"getblockheader" if params.get(1).and_then(Value::as_bool) == Some(false) => {
				json!(serialize_hex(header))
			},
			"getblockheader" => json!({
				"hash": self.hash,
				"confirmations": 1,
				"height": 0,
				"version": header.version.to_consensus(),
				"versionHex": format!("{:08x}", header.version.to_consensus()),
				"merkleroot": header.merkle_root.to_string(),
				"time": header.time,
				"mediantime": header.time,
				"nonce": header.nonce,
				"bits": format!("{:08x}", header.bits.to_consensus()),
				"chainwork": self.chainwork(),
				"nTx": self.genesis.txdata.len(),
			}),
			"getblock" if !is_genesis(params.first()) => return Err(NO_BLOCK),
			"getblock" if params.get(1).and_then(Value::as_u64) == Some(0) => {
				json!(serialize_hex(&self.genesis))
			},
			"getblock" => return Err((RPC_INVALID_PARAMETER, "stub: only verbosity 0 is served")),
			"getblockhash" if params.first().and_then(Value::as_u64) == Some(0) => json!(self.hash),
			"getblockhash" => return Err((RPC_INVALID_PARAMETER, "Block height out of range")),
			"getblockcount" => json!(0),
			"estimatesmartfee" => json!({
				"feerate": ONE_SAT_PER_VB,
				"blocks": params.first().and_then(Value::as_u64).unwrap_or(1).max(1),
			}),
			"getmempoolinfo" => json!({
				"loaded": true,
				"size": 0,
				"bytes": 0,
				"usage": 0,
				"total_fee": 0,
				"maxmempool": 300_000_000,
				"mempoolminfee": ONE_SAT_PER_VB,
				"minrelaytxfee": ONE_SAT_PER_VB,
				"incrementalrelayfee": ONE_SAT_PER_VB,
				"unbroadcastcount": 0,
				"fullrbf": true,
			}),
			"getrawmempool" => json!([]),
			"getmempoolentry" => {
				return Err((RPC_INVALID_ADDRESS_OR_KEY, "Transaction not in mempool"))
			},
			"getrawtransaction" => {
				return Err((
					RPC_INVALID_ADDRESS_OR_KEY,
					"No such mempool or blockchain transaction",
				))
			},
			// No such unspent output: the genesis coinbase is not spendable.
			"gettxout" => Value::Null,
			_ => return Err((RPC_METHOD_NOT_FOUND, "Method not found")),
		})
	}

	/// The genesis block's work as Bitcoin Core prints `chainwork`: 64 hex digits.
	fn chainwork(&self) -> String {
		self.genesis.header.work().to_be_bytes().to_lower_hex_string()
	}
}

fn rpc_response(id: &Value, answer: RpcAnswer) -> Response {
	let (status, body) = match answer {
		Ok(result) => ("200 OK", json!({ "result": result, "error": null, "id": id })),
		Err((code, message)) => (
			if code == RPC_METHOD_NOT_FOUND {
				"404 Not Found"
			} else {
				"500 Internal Server Error"
			},
			json!({ "result": null, "error": { "code": code, "message": message }, "id": id }),
		),
	};
	Response { status, content_type: "application/json", body: body.to_string() }
}
