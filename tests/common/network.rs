//! A network between instances of a node and one real store, for the takeover model
//! (tests/takeover.rs): each instance reaches the store through its own [`Link`], an
//! `ObjectStore` wrapper that delays, holds, loses and duplicates requests and loses answers,
//! while the [`Network`] records every change that lands on the store, with its time and sender.
//!
//! A write or remove travels on a task of its own: it lands (or not) whatever its sender does
//! meanwhile. Its sender may stop waiting for it (a timeout, the end of the lease's trust, a
//! cancelled future): from then on it still lands within [`Network::bound`], or never: the
//! assumption the writer lease states (no request outlives its sender's wait by more than the
//! lease's safety margin). Reads and listings only wait.
//!
//! Times are tokio's, so that paused time drives everything.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use futures::FutureExt;
use object_store::path::Path;
use object_store::{
	CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
	PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use tokio::time::Instant;

/// One change that landed on the store.
#[derive(Debug, Clone)]
pub struct Landed {
	pub at: Instant,
	/// The link it came through.
	pub from: &'static str,
	pub path: Path,
	/// The bytes put, or `None` for a delete.
	pub put: Option<Bytes>,
}

/// The store and what landed on it.
#[derive(Debug)]
pub struct Network {
	inner: Arc<dyn ObjectStore>,
	landed: Mutex<Vec<Landed>>,
	/// How long after its sender stopped waiting a request may still land.
	pub bound: Duration,
}

impl Network {
	pub fn new(inner: Arc<dyn ObjectStore>, bound: Duration) -> Arc<Self> {
		Arc::new(Network { inner, landed: Mutex::default(), bound })
	}

	/// Every change that landed, in order.
	pub fn landed(&self) -> Vec<Landed> {
		self.landed.lock().unwrap().clone()
	}

	/// The store itself, for the operator's tools and the final check.
	pub fn store(&self) -> Arc<dyn ObjectStore> {
		Arc::clone(&self.inner)
	}

	fn record(&self, from: &'static str, path: &Path, put: Option<Bytes>) {
		let landed = Landed { at: Instant::now(), from, path: path.clone(), put };
		self.landed.lock().unwrap().push(landed);
	}
}

/// What one link does to requests, drawn per request.
#[derive(Debug, Clone)]
pub struct Faults {
	/// Each way.
	pub latency: Range<Duration>,
	/// A request is held this much longer on the way (a proxy, a congested path).
	pub hold: f64,
	pub hold_for: Range<Duration>,
	/// The request lands, its answer never comes.
	pub lose_answer: f64,
	/// The request never lands, and no answer comes.
	pub lose_request: f64,
	/// A second copy of the request lands later (before the answer comes back).
	pub duplicate: f64,
}

impl Faults {
	/// Latency only.
	pub fn clean(latency: Range<Duration>) -> Self {
		Faults {
			latency,
			hold: 0.0,
			hold_for: Duration::ZERO..Duration::from_millis(1),
			lose_answer: 0.0,
			lose_request: 0.0,
			duplicate: 0.0,
		}
	}
}

/// Where a request goes: the lease object, or data.
fn is_lease(path: &Path) -> bool {
	path.filename() == Some(ldk_object_store::lease::LEASE_OBJECT)
}

/// One instance's way to the store (cheap to clone: it is shared).
#[derive(Clone)]
pub struct Link(Arc<LinkState>);

/// What a link is.
pub struct LinkState {
	pub name: &'static str,
	net: Arc<Network>,
	rng: Mutex<fastrand::Rng>,
	faults: Mutex<Faults>,
	/// Nothing gets through either way: requests neither land nor are answered.
	partitioned: AtomicBool,
	/// Requests on the lease object are held (renewals stall).
	lease_held_for: Mutex<Option<Duration>>,
	/// Every request answered with this error, without reaching the store.
	failing: Mutex<Option<fn() -> object_store::Error>>,
	/// The next write or remove of data is held this much longer.
	hold_next_data: Mutex<Option<Duration>>,
	/// The answer of the next write or remove of data is lost.
	lose_next_data_answer: AtomicBool,
	/// The next request on the lease object is lost (it stalls its sender).
	lose_next_lease: AtomicBool,
	/// Requests on the lease object land, their answers are lost.
	lose_lease_answers: AtomicBool,
	/// Every request on the lease object is lost (a lease task that sends nothing more).
	lose_lease_requests: AtomicBool,
	/// The most a duplicate lands after its request (`None`: as long as a hold).
	duplicate_within: Mutex<Option<Duration>>,
}

impl std::ops::Deref for Link {
	type Target = LinkState;
	fn deref(&self) -> &LinkState {
		&self.0
	}
}

impl fmt::Debug for Link {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		write!(f, "Link({})", self.name)
	}
}

impl fmt::Display for Link {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		write!(f, "Link({})", self.name)
	}
}

/// Marks a request's sender as gone when dropped before the answer arrived.
struct Waiting(Arc<Mutex<Option<Instant>>>, bool);

impl Drop for Waiting {
	fn drop(&mut self) {
		if !self.1 {
			*self.0.lock().unwrap() = Some(Instant::now());
		}
	}
}

/// What happens to one request.
struct Plan {
	there: Duration,
	back: Duration,
	lost: bool,
	answer_lost: bool,
	duplicate_after: Option<Duration>,
}

impl Link {
	pub fn new(net: &Arc<Network>, name: &'static str, seed: u64, faults: Faults) -> Self {
		Link(Arc::new(LinkState {
			name,
			net: Arc::clone(net),
			rng: Mutex::new(fastrand::Rng::with_seed(seed)),
			faults: Mutex::new(faults),
			partitioned: AtomicBool::new(false),
			lease_held_for: Mutex::new(None),
			failing: Mutex::new(None),
			hold_next_data: Mutex::new(None),
			lose_next_data_answer: AtomicBool::new(false),
			lose_next_lease: AtomicBool::new(false),
			lose_lease_answers: AtomicBool::new(false),
			lose_lease_requests: AtomicBool::new(false),
			duplicate_within: Mutex::new(None),
		}))
	}
}

impl LinkState {
	pub fn set_faults(&self, faults: Faults) {
		*self.faults.lock().unwrap() = faults;
	}

	pub fn partition(&self, cut: bool) {
		self.partitioned.store(cut, Ordering::SeqCst);
	}

	/// Holds every request on the lease object for `hold` more (`None`: no more).
	pub fn hold_lease_requests(&self, hold: Option<Duration>) {
		*self.lease_held_for.lock().unwrap() = hold;
	}

	/// Holds the next write or remove of data for `hold` more.
	pub fn hold_next_data_request(&self, hold: Duration) {
		*self.hold_next_data.lock().unwrap() = Some(hold);
	}

	/// Loses the answer of the next write or remove of data (the request lands).
	pub fn lose_next_data_answer(&self) {
		self.lose_next_data_answer.store(true, Ordering::SeqCst);
	}

	/// Loses the next request on the lease object: it never lands and is never answered.
	pub fn lose_next_lease_request(&self) {
		self.lose_next_lease.store(true, Ordering::SeqCst);
	}

	/// Requests on the lease object land, and their answers are lost.
	pub fn lose_lease_answers(&self, lose: bool) {
		self.lose_lease_answers.store(lose, Ordering::SeqCst);
	}

	/// Loses every request on the lease object from now on (`false`: no more): as if the lease
	/// task that renews through this link were frozen, while data requests go on.
	pub fn lose_lease_requests(&self, lose: bool) {
		self.lose_lease_requests.store(lose, Ordering::SeqCst);
	}

	/// Lands every duplicate within `within` of its request (`None`: within a hold, the default).
	pub fn duplicate_within(&self, within: Option<Duration>) {
		*self.duplicate_within.lock().unwrap() = within;
	}

	/// Answers every request with `error` (`None`: normal again).
	pub fn fail_with(&self, error: Option<fn() -> object_store::Error>) {
		*self.failing.lock().unwrap() = error;
	}

	fn draw(&self, path: &Path, mutation: bool) -> Plan {
		let faults = self.faults.lock().unwrap().clone();
		let mut rng = self.rng.lock().unwrap();
		let mut between = |range: &Range<Duration>| {
			let (low, high) = (range.start.as_micros() as u64, range.end.as_micros() as u64);
			Duration::from_micros(if high > low { rng.u64(low..high) } else { low })
		};
		let mut there = between(&faults.latency);
		let back = between(&faults.latency);
		let hold_for = between(&faults.hold_for);
		let mut duplicate_after = between(&faults.hold_for);
		if let Some(within) = *self.duplicate_within.lock().unwrap() {
			duplicate_after = duplicate_after.min(within);
		}
		let mut plan = Plan { there, back, lost: false, answer_lost: false, duplicate_after: None };
		if !mutation {
			return plan;
		}
		if rng.f64() < faults.hold {
			there += hold_for;
		}
		if let Some(hold) = *self.lease_held_for.lock().unwrap() {
			if is_lease(path) {
				there += hold;
			}
		}
		if !is_lease(path) {
			if let Some(hold) = self.hold_next_data.lock().unwrap().take() {
				there += hold;
			}
		}
		plan.there = there;
		plan.lost = rng.f64() < faults.lose_request
			|| (is_lease(path) && self.lose_next_lease.swap(false, Ordering::SeqCst))
			|| (is_lease(path) && self.lose_lease_requests.load(Ordering::SeqCst));
		plan.answer_lost = rng.f64() < faults.lose_answer
			|| (is_lease(path) && self.lose_lease_answers.load(Ordering::SeqCst))
			|| (!is_lease(path) && self.lose_next_data_answer.swap(false, Ordering::SeqCst));
		if rng.f64() < faults.duplicate {
			plan.duplicate_after = Some(duplicate_after);
		}
		plan
	}

	fn check_failing(&self) -> Result<()> {
		match *self.failing.lock().unwrap() {
			Some(error) => Err(error()),
			None => Ok(()),
		}
	}

	/// A read or listing: latency, or no answer at all across a partition.
	async fn read<T>(
		&self, path: &Path, request: impl std::future::Future<Output = Result<T>>,
	) -> Result<T> {
		let plan = self.draw(path, false);
		if self.partitioned.load(Ordering::SeqCst) {
			return futures::future::pending().await;
		}
		tokio::time::sleep(plan.there).await;
		self.check_failing()?;
		let outcome = request.await;
		tokio::time::sleep(plan.back).await;
		outcome
	}

	/// A write or remove: sent on a task of its own (see the module docs).
	async fn mutate<T: Send + 'static>(
		&self, path: &Path, paths: Vec<Path>, put: Option<Bytes>,
		apply: impl Fn(Arc<dyn ObjectStore>) -> futures::future::BoxFuture<'static, Result<T>>
			+ Send
			+ Sync
			+ 'static,
	) -> Result<T> {
		if self.partitioned.load(Ordering::SeqCst) {
			return futures::future::pending().await;
		}
		self.check_failing()?;
		let plan = self.draw(path, true);
		let gone = Arc::new(Mutex::new(None::<Instant>));
		let mut waiting = Waiting(Arc::clone(&gone), false);
		let (answer, answered) = tokio::sync::oneshot::channel();
		let (net, from, bound) = (Arc::clone(&self.net), self.name, self.net.bound);
		let apply = Arc::new(apply);
		let land = {
			let (net, gone, paths, put, apply) = (
				Arc::clone(&net),
				Arc::clone(&gone),
				paths.clone(),
				put.clone(),
				Arc::clone(&apply),
			);
			move || async move {
				// Past the bound after its sender stopped waiting, a request never lands.
				if gone.lock().unwrap().is_some_and(|gone| Instant::now() > gone + bound) {
					return None;
				}
				let outcome = apply(net.store()).await;
				if outcome.is_ok() {
					for path in &paths {
						net.record(from, path, put.clone());
					}
				}
				Some(outcome)
			}
		};
		let duplicate = plan.duplicate_after.map(|after| (after, land.clone()));
		tokio::spawn(async move {
			tokio::time::sleep(plan.there).await;
			if plan.lost {
				return;
			}
			let Some(outcome) = land().await else { return };
			// A copy made on the way lands before the answer comes back: only the sender's own
			// re-sends could land after it, and the store's client of writes makes none.
			if let Some((after, land)) = duplicate {
				tokio::time::sleep(after).await;
				land().await;
			}
			if plan.answer_lost {
				return;
			}
			tokio::time::sleep(plan.back).await;
			let _ = answer.send(outcome);
		});
		match answered.await {
			Ok(outcome) => {
				waiting.1 = true;
				outcome
			},
			// Lost on the way: the sender waits until it gives up.
			Err(_) => futures::future::pending().await,
		}
	}
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for Link {
	async fn put_opts(
		&self, location: &Path, payload: PutPayload, opts: PutOptions,
	) -> Result<PutResult> {
		let bytes: Bytes = payload.clone().into();
		let (path, paths) = (location.clone(), vec![location.clone()]);
		self.mutate(location, paths, Some(bytes), move |store| {
			let (path, payload, opts) = (path.clone(), payload.clone(), opts.clone());
			Box::pin(async move { store.put_opts(&path, payload, opts).await })
		})
		.await
	}

	async fn put_multipart_opts(
		&self, _location: &Path, _opts: PutMultipartOptions,
	) -> Result<Box<dyn MultipartUpload>> {
		Err(object_store::Error::NotImplemented {
			operation: "multipart uploads".into(),
			implementer: "the takeover model's network".into(),
		})
	}

	async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
		let got = self.read(location, self.net.inner.get_opts(location, options)).await?;
		// Read whole here, so that the body does not arrive later than the answer.
		let meta = got.meta.clone();
		let range = got.range.clone();
		let attributes = got.attributes.clone();
		let bytes = got.bytes().await?;
		Ok(GetResult {
			payload: object_store::GetResultPayload::Stream(
				stream::once(async move { Ok(bytes) }).boxed(),
			),
			meta,
			range,
			attributes,
			extensions: Default::default(),
		})
	}

	async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
		self.read(location, self.net.inner.get_ranges(location, ranges)).await
	}

	fn delete_stream(
		&self, locations: BoxStream<'static, Result<Path>>,
	) -> BoxStream<'static, Result<Path>> {
		let link = self.clone();
		stream::once(async move {
			let locations: Vec<Path> =
				locations.filter_map(|l| async move { l.ok() }).collect().await;
			let first = locations.first().cloned().unwrap_or_default();
			let paths = locations.clone();
			let outcome = link
				.mutate(&first, locations.clone(), None, move |store| {
					let paths = paths.clone();
					Box::pin(async move {
						let deleted: Vec<Result<Path>> = store
							.delete_stream(stream::iter(paths.into_iter().map(Ok)).boxed())
							.collect()
							.await;
						deleted.into_iter().collect::<Result<Vec<Path>>>()
					})
				})
				.await;
			match outcome {
				Ok(paths) => stream::iter(paths.into_iter().map(Ok)).boxed(),
				Err(e) => stream::once(async { Err(e) }).boxed(),
			}
		})
		.flatten()
		.boxed()
	}

	fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
		let link = self.clone();
		let prefix = prefix.cloned();
		stream::once(async move {
			let path = prefix.clone().unwrap_or_default();
			let listed = link
				.read(&path, link.net.inner.list(prefix.as_ref()).collect::<Vec<_>>().map(Ok))
				.await;
			match listed {
				Ok(items) => stream::iter(items).boxed(),
				Err(e) => stream::once(async { Err(e) }).boxed(),
			}
		})
		.flatten()
		.boxed()
	}

	fn list_with_offset(
		&self, prefix: Option<&Path>, offset: &Path,
	) -> BoxStream<'static, Result<ObjectMeta>> {
		self.net.inner.list_with_offset(prefix, offset)
	}

	async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
		let path = prefix.cloned().unwrap_or_default();
		self.read(&path, self.net.inner.list_with_delimiter(prefix)).await
	}

	async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
		self.read(to, self.net.inner.copy_opts(from, to, options)).await
	}

	async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
		self.read(to, self.net.inner.rename_opts(from, to, options)).await
	}
}
