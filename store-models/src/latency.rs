//! [`LatencyStore`]: an `ObjectStore` around another (in-memory) that makes every request take a
//! configurable round trip and counts requests, objects and bytes.
//!
//! One request costs one round trip whatever its size (no bandwidth term): the round trip is what
//! a cloud store's latency is made of for objects of a few KB, and it is what the persisters can
//! avoid waiting for. Batch deletes and listings cost one round trip per 1,000 objects, as on S3.
//! (`object_store`'s own `ThrottledStore` sleeps once per deleted object, which is not how S3's
//! `DeleteObjects` behaves, and counts nothing.)
//!
//! What it guarantees: every request is counted before it is made, and waits at least the round
//! trip set when it started (to within the operating system's timer slack, tens of
//! microseconds, as [`Counts::mean_rtt`] shows); nothing else is delayed, refused or reordered.
//! The round trip is timed by a thread of its own, not by tokio's timer (which works in whole
//! milliseconds and rounds up, and which exists only inside a tokio runtime): the store works
//! from any executor, and paused tokio time does not apply to it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
	CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
	PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// Objects per S3 `DeleteObjects` request and per listing page.
const PAGE: usize = 1000;

/// Request counts and bytes, readable while requests run.
#[derive(Debug, Default)]
pub struct Counters {
	gets: AtomicU64,
	puts: AtomicU64,
	delete_requests: AtomicU64,
	deleted_objects: AtomicU64,
	lists: AtomicU64,
	other: AtomicU64,
	bytes_put: AtomicU64,
	bytes_got: AtomicU64,
	in_flight: AtomicU64,
	max_in_flight: AtomicU64,
	slept_nanos: AtomicU64,
	sleeps: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
	/// Reads: `get_opts` (HEAD included) and `get_ranges` calls.
	pub gets: u64,
	/// Writes: `put_opts` and the start of a multipart upload.
	pub puts: u64,
	/// Batch deletes: one per 1,000 objects, as S3's `DeleteObjects`.
	pub delete_requests: u64,
	/// Objects named in batch deletes.
	pub deleted_objects: u64,
	/// Listing pages (1,000 entries each, at least one per listing).
	pub lists: u64,
	/// Copies and renames.
	pub other: u64,
	/// Bytes written by `put_opts`.
	pub bytes_put: u64,
	/// Bytes read.
	pub bytes_got: u64,
	/// The most requests in flight at once (from the start of the round trip to the inner
	/// store's answer).
	pub max_in_flight: u64,
	/// Mean length of the simulated round trips (timer granularity makes them a little longer).
	pub mean_rtt: Duration,
}

impl Counts {
	/// Requests of every kind (a batch delete or a listing page is one request).
	pub fn requests(&self) -> u64 {
		self.gets + self.puts + self.delete_requests + self.lists + self.other
	}
}

impl Counters {
	/// The counts so far.
	pub fn snapshot(&self) -> Counts {
		let sleeps = self.sleeps.load(Ordering::Relaxed);
		let slept = self.slept_nanos.load(Ordering::Relaxed);
		Counts {
			gets: self.gets.load(Ordering::Relaxed),
			puts: self.puts.load(Ordering::Relaxed),
			delete_requests: self.delete_requests.load(Ordering::Relaxed),
			deleted_objects: self.deleted_objects.load(Ordering::Relaxed),
			lists: self.lists.load(Ordering::Relaxed),
			other: self.other.load(Ordering::Relaxed),
			bytes_put: self.bytes_put.load(Ordering::Relaxed),
			bytes_got: self.bytes_got.load(Ordering::Relaxed),
			max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
			mean_rtt: Duration::from_nanos(slept.checked_div(sleeps).unwrap_or(0)),
		}
	}

	/// Zeroes every count (requests in flight stay counted as in flight).
	pub fn reset(&self) {
		for counter in [
			&self.gets,
			&self.puts,
			&self.delete_requests,
			&self.deleted_objects,
			&self.lists,
			&self.other,
			&self.bytes_put,
			&self.bytes_got,
			&self.max_in_flight,
			&self.slept_nanos,
			&self.sleeps,
		] {
			counter.store(0, Ordering::Relaxed);
		}
	}
}

/// Held while a request is in flight.
struct InFlight(Arc<Counters>);

impl Drop for InFlight {
	fn drop(&mut self) {
		self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
	}
}

/// Shared by a [`LatencyStore`] and its owner: the round trip can change between runs.
#[derive(Debug, Default)]
pub struct Control {
	rtt_nanos: AtomicU64,
	/// The requests counted so far.
	pub counters: Arc<Counters>,
}

impl Control {
	/// The round trip of requests that start from now on.
	pub fn set_rtt(&self, rtt: Duration) {
		self.rtt_nanos.store(rtt.as_nanos() as u64, Ordering::Relaxed);
	}

	/// The round trip requests get now.
	pub fn rtt(&self) -> Duration {
		Duration::from_nanos(self.rtt_nanos.load(Ordering::Relaxed))
	}

	/// One round trip: counts the request as in flight for its duration.
	async fn round_trip(&self, counter: &AtomicU64) -> InFlight {
		counter.fetch_add(1, Ordering::Relaxed);
		let counters = &self.counters;
		let now = counters.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
		counters.max_in_flight.fetch_max(now, Ordering::Relaxed);
		let guard = InFlight(Arc::clone(counters));
		let rtt = self.rtt();
		if !rtt.is_zero() {
			let started = Instant::now();
			precise_sleep(started + rtt).await;
			counters.slept_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
			counters.sleeps.fetch_add(1, Ordering::Relaxed);
		}
		guard
	}
}

/// A sleeper's slot: set when its deadline has passed.
#[derive(Default)]
struct Slot {
	fired: AtomicBool,
	waker: Mutex<Option<Waker>>,
}

struct Entry {
	deadline: Instant,
	seq: u64,
	slot: Arc<Slot>,
}

impl PartialEq for Entry {
	fn eq(&self, other: &Self) -> bool {
		(self.deadline, self.seq) == (other.deadline, other.seq)
	}
}

impl Eq for Entry {}

impl PartialOrd for Entry {
	fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
		Some(self.cmp(other))
	}
}

impl Ord for Entry {
	fn cmp(&self, other: &Self) -> std::cmp::Ordering {
		(self.deadline, self.seq).cmp(&(other.deadline, other.seq))
	}
}

/// Wakes sleepers at their deadlines from a thread of its own, to within the operating system's
/// timer slack (tens of microseconds). tokio's timer works in whole milliseconds and rounds up,
/// which would add about a millisecond to every simulated round trip.
#[derive(Default)]
struct Timer {
	queue: Mutex<(BinaryHeap<Reverse<Entry>>, u64)>,
	changed: Condvar,
}

fn timer() -> &'static Timer {
	static TIMER: OnceLock<&'static Timer> = OnceLock::new();
	TIMER.get_or_init(|| {
		let timer: &'static Timer = Box::leak(Box::default());
		std::thread::Builder::new()
			.name("bench-timer".into())
			.spawn(move || timer.run())
			.expect("timer thread");
		timer
	})
}

impl Timer {
	fn run(&self) {
		let mut queue = self.queue.lock().expect("timer lock");
		loop {
			let now = Instant::now();
			let mut due = Vec::new();
			while queue.0.peek().is_some_and(|Reverse(e)| e.deadline <= now) {
				if let Some(Reverse(entry)) = queue.0.pop() {
					due.push(entry.slot);
				}
			}
			if !due.is_empty() {
				drop(queue);
				for slot in due {
					slot.fired.store(true, Ordering::Release);
					if let Some(waker) = slot.waker.lock().expect("slot lock").take() {
						waker.wake();
					}
				}
				queue = self.queue.lock().expect("timer lock");
				continue;
			}
			queue = match queue.0.peek().map(|Reverse(e)| e.deadline) {
				Some(deadline) => {
					let wait = deadline.saturating_duration_since(now);
					self.changed.wait_timeout(queue, wait).expect("timer lock").0
				},
				None => self.changed.wait(queue).expect("timer lock"),
			};
		}
	}

	fn add(&self, deadline: Instant) -> Arc<Slot> {
		let slot = Arc::new(Slot::default());
		let mut queue = self.queue.lock().expect("timer lock");
		let seq = queue.1;
		queue.1 += 1;
		let earliest = queue.0.peek().is_none_or(|Reverse(e)| deadline < e.deadline);
		queue.0.push(Reverse(Entry { deadline, seq, slot: Arc::clone(&slot) }));
		drop(queue);
		if earliest {
			self.changed.notify_one();
		}
		slot
	}
}

/// Completes at `deadline` (see [`Timer`]).
pub(crate) fn precise_sleep(deadline: Instant) -> impl Future<Output = ()> {
	struct Sleep(Arc<Slot>);
	impl Future for Sleep {
		type Output = ();
		fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
			if self.0.fired.load(Ordering::Acquire) {
				return Poll::Ready(());
			}
			*self.0.waker.lock().expect("slot lock") = Some(cx.waker().clone());
			// The timer may have fired between the check and storing the waker.
			if self.0.fired.load(Ordering::Acquire) {
				return Poll::Ready(());
			}
			Poll::Pending
		}
	}
	Sleep(timer().add(deadline))
}

/// See the module docs.
#[derive(Debug)]
pub struct LatencyStore {
	inner: Arc<dyn ObjectStore>,
	control: Arc<Control>,
}

impl LatencyStore {
	/// `inner` seen through the round trip and counters of `control`.
	pub fn wrap(inner: Arc<dyn ObjectStore>, control: Arc<Control>) -> Arc<dyn ObjectStore> {
		Arc::new(LatencyStore { inner, control })
	}
}

impl fmt::Display for LatencyStore {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		write!(f, "LatencyStore({:?}, {})", self.control.rtt(), self.inner)
	}
}

fn pages(entries: usize) -> usize {
	entries.div_ceil(PAGE).max(1)
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for LatencyStore {
	async fn put_opts(
		&self, location: &Path, payload: PutPayload, opts: PutOptions,
	) -> Result<PutResult> {
		let counters = &self.control.counters;
		counters.bytes_put.fetch_add(payload.content_length() as u64, Ordering::Relaxed);
		let _in_flight = self.control.round_trip(&counters.puts).await;
		self.inner.put_opts(location, payload, opts).await
	}

	async fn put_multipart_opts(
		&self, location: &Path, opts: PutMultipartOptions,
	) -> Result<Box<dyn MultipartUpload>> {
		let _in_flight = self.control.round_trip(&self.control.counters.puts).await;
		self.inner.put_multipart_opts(location, opts).await
	}

	async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
		let counters = &self.control.counters;
		let _in_flight = self.control.round_trip(&counters.gets).await;
		let result = self.inner.get_opts(location, options).await?;
		counters.bytes_got.fetch_add(result.range.end - result.range.start, Ordering::Relaxed);
		Ok(result)
	}

	async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
		let counters = &self.control.counters;
		let _in_flight = self.control.round_trip(&counters.gets).await;
		let result = self.inner.get_ranges(location, ranges).await?;
		let bytes: usize = result.iter().map(Bytes::len).sum();
		counters.bytes_got.fetch_add(bytes as u64, Ordering::Relaxed);
		Ok(result)
	}

	fn delete_stream(
		&self, locations: BoxStream<'static, Result<Path>>,
	) -> BoxStream<'static, Result<Path>> {
		// One round trip per 1,000 objects, as S3's DeleteObjects.
		let (inner, control) = (Arc::clone(&self.inner), Arc::clone(&self.control));
		stream::once(async move {
			let mut results = Vec::new();
			let mut chunks = locations.chunks(PAGE);
			while let Some(chunk) = chunks.next().await {
				let counters = &control.counters;
				counters.deleted_objects.fetch_add(chunk.len() as u64, Ordering::Relaxed);
				let _in_flight = control.round_trip(&counters.delete_requests).await;
				// The inner store's own batch delete: one DeleteObjects on S3.
				let deleted: Vec<Result<Path>> =
					inner.delete_stream(stream::iter(chunk).boxed()).collect().await;
				results.extend(deleted);
			}
			stream::iter(results)
		})
		.flatten()
		.boxed()
	}

	fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
		let (inner, control) = (Arc::clone(&self.inner), Arc::clone(&self.control));
		let prefix = prefix.cloned();
		stream::once(async move {
			let all: Vec<Result<ObjectMeta>> = inner.list(prefix.as_ref()).collect().await;
			for _ in 0..pages(all.len()) {
				drop(control.round_trip(&control.counters.lists).await);
			}
			stream::iter(all)
		})
		.flatten()
		.boxed()
	}

	fn list_with_offset(
		&self, prefix: Option<&Path>, offset: &Path,
	) -> BoxStream<'static, Result<ObjectMeta>> {
		let (inner, control) = (Arc::clone(&self.inner), Arc::clone(&self.control));
		let (prefix, offset) = (prefix.cloned(), offset.clone());
		stream::once(async move {
			let all: Vec<Result<ObjectMeta>> =
				inner.list_with_offset(prefix.as_ref(), &offset).collect().await;
			for _ in 0..pages(all.len()) {
				drop(control.round_trip(&control.counters.lists).await);
			}
			stream::iter(all)
		})
		.flatten()
		.boxed()
	}

	async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
		let result = self.inner.list_with_delimiter(prefix).await?;
		for _ in 0..pages(result.objects.len() + result.common_prefixes.len()) {
			drop(self.control.round_trip(&self.control.counters.lists).await);
		}
		Ok(result)
	}

	async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
		let _in_flight = self.control.round_trip(&self.control.counters.other).await;
		self.inner.copy_opts(from, to, options).await
	}

	async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
		let _in_flight = self.control.round_trip(&self.control.counters.other).await;
		self.inner.rename_opts(from, to, options).await
	}
}
