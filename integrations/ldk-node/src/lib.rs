//! Shared by `examples/node.rs` and `tests/build_with_store.rs`: a stand-in Esplora server, so an
//! ldk-node [`Node`](ldk_node::Node) can be started where no Bitcoin backend is reachable.
//!
//! `Node::start` asks its chain source for fee estimates once and fails if it gets no answer
//! (`FeerateEstimationUpdateFailed`). [`StubEsplora`] answers `GET /fee-estimates` with an empty
//! map, which ldk-node accepts on regtest (it falls back to 1 sat/vB), and every other request with
//! `404`: the node's background chain sync then fails, logs it and retries later, which changes
//! nothing in what the node persists at start and stop.

#![warn(missing_docs)]

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A minimal Esplora HTTP server on `127.0.0.1` (see the crate docs). Stops when dropped.
#[derive(Debug)]
pub struct StubEsplora {
	addr: SocketAddr,
	shared: Arc<Shared>,
	thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
	stop: AtomicBool,
	fee_estimate_requests: AtomicUsize,
	other_requests: AtomicUsize,
}

impl StubEsplora {
	/// Binds a free port on `127.0.0.1` and serves from a thread of its own.
	pub fn start() -> io::Result<Self> {
		let listener = TcpListener::bind("127.0.0.1:0")?;
		let addr = listener.local_addr()?;
		let shared = Arc::new(Shared::default());
		let served = Arc::clone(&shared);
		let thread = thread::Builder::new().name("stub-esplora".into()).spawn(move || {
			for stream in listener.incoming() {
				if served.stop.load(Ordering::SeqCst) {
					break;
				}
				if let Ok(stream) = stream {
					// One request per connection; errors only end that connection.
					let _ = serve(stream, &served);
				}
			}
		})?;
		Ok(StubEsplora { addr, shared, thread: Some(thread) })
	}

	/// The base URL to hand to `Builder::set_chain_source_esplora`.
	pub fn url(&self) -> String {
		format!("http://{}", self.addr)
	}

	/// How many `GET /fee-estimates` requests were answered.
	pub fn fee_estimate_requests(&self) -> usize {
		self.shared.fee_estimate_requests.load(Ordering::SeqCst)
	}

	/// How many other requests were answered (with `404`).
	pub fn other_requests(&self) -> usize {
		self.shared.other_requests.load(Ordering::SeqCst)
	}
}

impl Drop for StubEsplora {
	fn drop(&mut self) {
		self.shared.stop.store(true, Ordering::SeqCst);
		// Wake the accept loop so it sees the flag.
		let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
		if let Some(thread) = self.thread.take() {
			let _ = thread.join();
		}
	}
}

fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
	stream.set_read_timeout(Some(Duration::from_secs(5)))?;
	let mut reader = BufReader::new(stream.try_clone()?);
	let mut request_line = String::new();
	reader.read_line(&mut request_line)?;
	// Skip the headers; the stub needs none of them, and GETs carry no body.
	let mut header = String::new();
	while reader.read_line(&mut header)? > 2 {
		header.clear();
	}
	let mut parts = request_line.split_whitespace();
	let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
	let (status, content_type, body) =
		if method == "GET" && path.trim_end_matches('/').ends_with("/fee-estimates") {
			shared.fee_estimate_requests.fetch_add(1, Ordering::SeqCst);
			("200 OK", "application/json", "{}")
		} else {
			shared.other_requests.fetch_add(1, Ordering::SeqCst);
			("404 Not Found", "text/plain", "stub esplora: only /fee-estimates is served")
		};
	let mut stream = stream;
	write!(
		stream,
		"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
		body.len()
	)?;
	stream.flush()
}
