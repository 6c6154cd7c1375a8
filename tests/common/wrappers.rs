//! `ObjectStore` wrappers around a real store, for what no real server shows on demand: injected
//! faults, latency, and counting of requests in flight. One generic wrapper ([`Hooked`]) carries a
//! [`Hook`] that sees every request before it is made and every error after. The latency hooks
//! draw their delays from the shared store models (`store-models`, as the benchmarks do); the
//! fault hooks are the tests' own.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
	CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
	PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use store_models::Delay;

/// The kind of request a hook sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
	Put,
	Get,
	/// One call of `delete_stream`, however many objects it deletes.
	BulkDelete,
	List,
	Copy,
}

/// Dropped when the request it was returned for has finished.
pub type Guard = Box<dyn Send>;

#[async_trait]
pub trait Hook: Send + Sync + fmt::Debug + 'static {
	/// Before each request: an error is returned instead of making it.
	async fn enter(&self, _request: Request, _path: &Path) -> Result<Guard> {
		Ok(Box::new(()))
	}
	/// Before each `delete_stream` call, with every location it deletes.
	async fn enter_delete(&self, paths: &[Path]) -> Result<Guard> {
		self.enter(Request::BulkDelete, paths.first().unwrap_or(&Path::default())).await
	}
	/// After each successful request: an error to report instead (the request did happen).
	fn after_success(&self, _request: Request, _path: &Path) -> Option<object_store::Error> {
		None
	}
	/// After each failed request: may replace the error.
	fn map_err(
		&self, _request: Request, _path: &Path, err: object_store::Error,
	) -> object_store::Error {
		err
	}
}

/// A real store seen through a [`Hook`].
#[derive(Debug)]
#[deny(clippy::missing_trait_methods)]
pub struct Hooked<H> {
	inner: Arc<dyn ObjectStore>,
	hook: Arc<H>,
}

impl<H: Hook> Hooked<H> {
	pub fn wrap(inner: Arc<dyn ObjectStore>, hook: Arc<H>) -> Arc<dyn ObjectStore> {
		Arc::new(Hooked { inner, hook })
	}

	async fn call<T>(
		&self, request: Request, path: &Path, work: impl std::future::Future<Output = Result<T>>,
	) -> Result<T> {
		let _guard = self.hook.enter(request, path).await?;
		match work.await {
			Ok(value) => match self.hook.after_success(request, path) {
				Some(err) => Err(err),
				None => Ok(value),
			},
			Err(e) => Err(self.hook.map_err(request, path, e)),
		}
	}
}

impl<H> fmt::Display for Hooked<H> {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		write!(f, "Hooked({})", self.inner)
	}
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<H: Hook> ObjectStore for Hooked<H> {
	async fn put_opts(
		&self, location: &Path, payload: PutPayload, opts: PutOptions,
	) -> Result<PutResult> {
		self.call(Request::Put, location, self.inner.put_opts(location, payload, opts)).await
	}

	async fn put_multipart_opts(
		&self, location: &Path, opts: PutMultipartOptions,
	) -> Result<Box<dyn MultipartUpload>> {
		self.call(Request::Put, location, self.inner.put_multipart_opts(location, opts)).await
	}

	async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
		self.call(Request::Get, location, self.inner.get_opts(location, options)).await
	}

	async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
		self.call(Request::Get, location, self.inner.get_ranges(location, ranges)).await
	}

	fn delete_stream(
		&self, locations: BoxStream<'static, Result<Path>>,
	) -> BoxStream<'static, Result<Path>> {
		// One hook call for the whole batch, then the inner store's own (batched) deletion.
		let (inner, hook) = (Arc::clone(&self.inner), Arc::clone(&self.hook));
		stream::once(async move {
			let locations: Vec<Result<Path>> = locations.collect().await;
			let paths: Vec<Path> =
				locations.iter().filter_map(|l| l.as_ref().ok().cloned()).collect();
			match hook.enter_delete(&paths).await {
				Ok(guard) => inner
					.delete_stream(stream::iter(locations).boxed())
					.map(move |outcome| {
						let _in_flight = &guard;
						outcome.map_err(|e| hook.map_err(Request::BulkDelete, &Path::default(), e))
					})
					.boxed(),
				Err(e) => stream::once(async { Err(e) }).boxed(),
			}
		})
		.flatten()
		.boxed()
	}

	fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
		let (inner, hook) = (Arc::clone(&self.inner), Arc::clone(&self.hook));
		let prefix = prefix.cloned();
		stream::once(async move {
			let path = prefix.clone().unwrap_or_default();
			match hook.enter(Request::List, &path).await {
				Ok(_guard) => inner.list(prefix.as_ref()),
				Err(e) => stream::once(async { Err(e) }).boxed(),
			}
		})
		.flatten()
		.boxed()
	}

	fn list_with_offset(
		&self, prefix: Option<&Path>, offset: &Path,
	) -> BoxStream<'static, Result<ObjectMeta>> {
		// Not used by the crate; listed so a new use cannot slip past the hook unnoticed.
		self.inner.list_with_offset(prefix, offset)
	}

	async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
		let path = prefix.cloned().unwrap_or_default();
		self.call(Request::List, &path, self.inner.list_with_delimiter(prefix)).await
	}

	async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
		self.call(Request::Copy, to, self.inner.copy_opts(from, to, options)).await
	}

	async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
		self.call(Request::Copy, to, self.inner.rename_opts(from, to, options)).await
	}
}

/// Adds a random delay of up to `max` before every request, so that requests overtake each other:
/// the shared model's uniform delay (`store_models::Delay::Uniform`), slept on tokio's timer so
/// that paused time applies.
#[derive(Debug)]
pub struct RandomLatency {
	pub max: Duration,
}

#[async_trait]
impl Hook for RandomLatency {
	async fn enter(&self, _request: Request, _path: &Path) -> Result<Guard> {
		Delay::Uniform { max: self.max }.tokio_sleep().await;
		Ok(Box::new(()))
	}
}

/// Delays every request by the same `delay`: a cloud round trip, on every request alike (the
/// shared model's `store_models::Delay::Fixed`, on tokio's timer).
#[derive(Debug)]
pub struct FixedLatency(pub Duration);

#[async_trait]
impl Hook for FixedLatency {
	async fn enter(&self, _request: Request, _path: &Path) -> Result<Guard> {
		Delay::Fixed(self.0).tokio_sleep().await;
		Ok(Box::new(()))
	}
}

/// Answers a read of a missing object as a server would without `s3:ListBucket` (403), or as a
/// failing server would (500), instead of "not found".
#[derive(Debug)]
pub enum MissingAnswers {
	Forbidden,
	ServerError,
}

impl Hook for MissingAnswers {
	fn map_err(
		&self, _request: Request, path: &Path, err: object_store::Error,
	) -> object_store::Error {
		match err {
			object_store::Error::NotFound { .. } => match self {
				MissingAnswers::Forbidden => object_store::Error::PermissionDenied {
					path: path.to_string(),
					source: "injected: 403 Forbidden (AccessDenied)".into(),
				},
				MissingAnswers::ServerError => object_store::Error::Generic {
					store: "S3",
					source: "injected: 500 Internal Server Error".into(),
				},
			},
			other => other,
		}
	}
}

/// Fails the first `failures` requests with a transient 503 SlowDown, then lets requests through.
#[derive(Debug)]
pub struct FailFirst {
	pub failures: AtomicUsize,
	pub requests: AtomicUsize,
}

impl FailFirst {
	pub fn new(failures: usize) -> Arc<Self> {
		Arc::new(FailFirst { failures: AtomicUsize::new(failures), requests: AtomicUsize::new(0) })
	}
}

#[async_trait]
impl Hook for FailFirst {
	async fn enter(&self, _request: Request, _path: &Path) -> Result<Guard> {
		self.requests.fetch_add(1, Ordering::SeqCst);
		let fail =
			self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
		match fail {
			Ok(_) => Err(object_store::Error::Generic {
				store: "S3",
				source: "injected: 503 Service Unavailable (SlowDown)".into(),
			}),
			Err(_) => Ok(Box::new(())),
		}
	}
}

/// Counts requests in flight, overall and per object, and remembers the highest counts seen.
#[derive(Debug, Default)]
pub struct InFlight {
	state: Mutex<InFlightState>,
}

#[derive(Debug, Default)]
struct InFlightState {
	total: usize,
	per_path: HashMap<Path, usize>,
	max_total: usize,
	max_per_path: usize,
	requests: usize,
}

impl InFlight {
	/// The most requests seen in flight at once, overall and for one object.
	pub fn maxima(&self) -> (usize, usize) {
		let state = self.state.lock().unwrap();
		(state.max_total, state.max_per_path)
	}

	pub fn requests(&self) -> usize {
		self.state.lock().unwrap().requests
	}
}

struct InFlightGuard {
	counter: Arc<InFlight>,
	paths: Vec<Path>,
}

impl Drop for InFlightGuard {
	fn drop(&mut self) {
		let mut state = self.counter.state.lock().unwrap();
		state.total -= 1;
		for path in &self.paths {
			if let Some(n) = state.per_path.get_mut(path) {
				*n -= 1;
			}
		}
	}
}

/// Counts through an `Arc` so each guard can reach the counter.
#[derive(Debug, Default)]
pub struct CountInFlight(pub Arc<InFlight>);

impl CountInFlight {
	/// Counts one request that touches `paths`.
	async fn count(&self, paths: &[Path]) -> Result<Guard> {
		{
			let mut state = self.0.state.lock().unwrap();
			state.requests += 1;
			state.total += 1;
			state.max_total = state.max_total.max(state.total);
			for path in paths {
				let n = state.per_path.entry(path.clone()).or_default();
				*n += 1;
				let n = *n;
				state.max_per_path = state.max_per_path.max(n);
			}
		}
		// Hold the request open a little so that overlaps, if any were allowed, show up.
		tokio::time::sleep(Duration::from_millis(fastrand::u64(0..3))).await;
		Ok(Box::new(InFlightGuard { counter: Arc::clone(&self.0), paths: paths.to_vec() }))
	}
}

#[async_trait]
impl Hook for CountInFlight {
	async fn enter(&self, _request: Request, path: &Path) -> Result<Guard> {
		self.count(std::slice::from_ref(path)).await
	}

	async fn enter_delete(&self, paths: &[Path]) -> Result<Guard> {
		self.count(paths).await
	}
}

/// Counts requests by kind.
#[derive(Debug, Default)]
pub struct CountRequests {
	counts: Mutex<HashMap<&'static str, usize>>,
}

impl CountRequests {
	pub fn count(&self, request: Request) -> usize {
		self.counts.lock().unwrap().get(Self::name(request)).copied().unwrap_or(0)
	}

	pub fn reset(&self) {
		self.counts.lock().unwrap().clear();
	}

	fn name(request: Request) -> &'static str {
		match request {
			Request::Put => "put",
			Request::Get => "get",
			Request::BulkDelete => "bulk delete",
			Request::List => "list",
			Request::Copy => "copy",
		}
	}
}

#[async_trait]
impl Hook for CountRequests {
	async fn enter(&self, request: Request, _path: &Path) -> Result<Guard> {
		*self.counts.lock().unwrap().entry(Self::name(request)).or_default() += 1;
		Ok(Box::new(()))
	}
}

/// The faults [`FaultInjector`] can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
	/// HTTP 500.
	ServerError,
	/// HTTP 503 SlowDown.
	SlowDown,
	/// The request timed out.
	Timeout,
	/// The connection was reset.
	Reset,
	/// HTTP 403, a permanent failure.
	Forbidden,
	/// The request is slow (50 ms) but succeeds.
	Slow,
	/// The request never answers (the store's attempt timeout must end it).
	Stall,
	/// A PUT that lands on the server but reports a failure.
	LandedButFailed,
}

/// Injects a fault into a fraction of requests, chosen at random among `kinds`, and counts them.
#[derive(Debug)]
pub struct FaultInjector {
	pub rate: f64,
	pub kinds: Vec<Fault>,
	pub requests: AtomicUsize,
	injected: Mutex<HashMap<Fault, usize>>,
	/// Set by `enter` for a PUT that must fail after it lands; read by `map_err`'s caller.
	landed: Mutex<Vec<Path>>,
}

impl FaultInjector {
	pub fn new(rate: f64, kinds: &[Fault]) -> Arc<Self> {
		Arc::new(FaultInjector {
			rate,
			kinds: kinds.to_vec(),
			requests: AtomicUsize::new(0),
			injected: Mutex::default(),
			landed: Mutex::default(),
		})
	}

	/// Faults injected so far, by kind.
	pub fn injected(&self) -> HashMap<Fault, usize> {
		self.injected.lock().unwrap().clone()
	}

	pub fn total_injected(&self) -> usize {
		self.injected.lock().unwrap().values().sum()
	}

	fn error(fault: Fault, path: &Path) -> object_store::Error {
		let io = |kind, text: &str| object_store::Error::Generic {
			store: "S3",
			source: Box::new(std::io::Error::new(kind, format!("injected: {text}"))),
		};
		match fault {
			Fault::ServerError | Fault::LandedButFailed => object_store::Error::Generic {
				store: "S3",
				source: "injected: Server returned non-2xx status code: 500 Internal Server Error"
					.into(),
			},
			Fault::SlowDown => object_store::Error::Generic {
				store: "S3",
				source: "injected: Server returned non-2xx status code: 503 Slow Down: SlowDown"
					.into(),
			},
			Fault::Timeout => io(std::io::ErrorKind::TimedOut, "timed out"),
			Fault::Reset => io(std::io::ErrorKind::ConnectionReset, "connection reset by peer"),
			Fault::Forbidden => object_store::Error::PermissionDenied {
				path: path.to_string(),
				source: "injected: 403 Forbidden".into(),
			},
			Fault::Slow | Fault::Stall => unreachable!("not an error"),
		}
	}
}

#[async_trait]
impl Hook for FaultInjector {
	async fn enter(&self, request: Request, path: &Path) -> Result<Guard> {
		self.requests.fetch_add(1, Ordering::SeqCst);
		if self.kinds.is_empty() || fastrand::f64() >= self.rate {
			return Ok(Box::new(()));
		}
		let fault = self.kinds[fastrand::usize(..self.kinds.len())];
		if fault == Fault::LandedButFailed && request != Request::Put {
			return Ok(Box::new(()));
		}
		*self.injected.lock().unwrap().entry(fault).or_default() += 1;
		match fault {
			Fault::Slow => {
				tokio::time::sleep(Duration::from_millis(50)).await;
				Ok(Box::new(()))
			},
			Fault::Stall => {
				std::future::pending::<()>().await;
				unreachable!()
			},
			Fault::LandedButFailed => {
				self.landed.lock().unwrap().push(path.clone());
				Ok(Box::new(()))
			},
			other => Err(Self::error(other, path)),
		}
	}

	fn after_success(&self, request: Request, path: &Path) -> Option<object_store::Error> {
		let mut landed = self.landed.lock().unwrap();
		let position = landed.iter().position(|p| p == path).filter(|_| request == Request::Put)?;
		landed.swap_remove(position);
		Some(Self::error(Fault::LandedButFailed, path))
	}
}
