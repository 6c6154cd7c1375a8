//! [`LatencyStore`]: an `ObjectStore` around another (in-memory) that makes every request take a
//! fixed round trip and counts requests.
//!
//! One request costs one round trip whatever its size: for objects of a few KB a cloud store's
//! latency is the round trip, and it is what a loader can avoid waiting for by overlapping
//! requests. A listing costs one round trip per 1,000 entries, as a page does on S3.
//!
//! The round trip is timed by a thread of its own rather than by tokio's timer, which works in
//! whole milliseconds and rounds up (adding about 1 ms to every 20 ms request), and which exists
//! only inside a tokio runtime, while the two loaders run on different runtimes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
	CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
	PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// Entries per listing page (S3's `ListObjectsV2` maximum).
const PAGE: usize = 1000;

/// Request counts, readable while requests run.
#[derive(Debug, Default)]
pub struct Counters {
	gets: AtomicU64,
	lists: AtomicU64,
	other: AtomicU64,
	bytes_got: AtomicU64,
	in_flight: AtomicU64,
	max_in_flight: AtomicU64,
	slept_nanos: AtomicU64,
	sleeps: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
	pub gets: u64,
	/// Listing pages.
	pub lists: u64,
	/// Writes, deletes, copies: a load should make none.
	pub other: u64,
	pub bytes_got: u64,
	/// The most requests that were in flight at once.
	pub max_in_flight: u64,
	/// Mean length of the simulated round trips as slept (a little over the target).
	pub mean_rtt: Duration,
}

impl Counts {
	pub fn requests(&self) -> u64 {
		self.gets + self.lists + self.other
	}
}

/// Shared by a [`LatencyStore`] and its owner, so the round trip can be switched off for seeding.
#[derive(Debug, Default)]
pub struct Control {
	rtt_nanos: AtomicU64,
	counters: Counters,
}

/// Decrements the in-flight count when the request ends.
struct InFlight<'a>(&'a Counters);

impl Drop for InFlight<'_> {
	fn drop(&mut self) {
		self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
	}
}

impl Control {
	pub fn set_rtt(&self, rtt: Duration) {
		self.rtt_nanos.store(rtt.as_nanos() as u64, Ordering::Relaxed);
	}

	pub fn rtt(&self) -> Duration {
		Duration::from_nanos(self.rtt_nanos.load(Ordering::Relaxed))
	}

	pub fn reset(&self) {
		let c = &self.counters;
		for counter in
			[&c.gets, &c.lists, &c.other, &c.bytes_got, &c.max_in_flight, &c.slept_nanos, &c.sleeps]
		{
			counter.store(0, Ordering::Relaxed);
		}
	}

	pub fn snapshot(&self) -> Counts {
		let c = &self.counters;
		let sleeps = c.sleeps.load(Ordering::Relaxed);
		let slept = c.slept_nanos.load(Ordering::Relaxed);
		Counts {
			gets: c.gets.load(Ordering::Relaxed),
			lists: c.lists.load(Ordering::Relaxed),
			other: c.other.load(Ordering::Relaxed),
			bytes_got: c.bytes_got.load(Ordering::Relaxed),
			max_in_flight: c.max_in_flight.load(Ordering::Relaxed),
			mean_rtt: Duration::from_nanos(slept.checked_div(sleeps).unwrap_or(0)),
		}
	}

	/// One round trip, counted on `counter` and as in flight while it lasts.
	async fn round_trip(&self, counter: &AtomicU64) {
		counter.fetch_add(1, Ordering::Relaxed);
		let c = &self.counters;
		let now = c.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
		c.max_in_flight.fetch_max(now, Ordering::Relaxed);
		let _in_flight = InFlight(c);
		let rtt = self.rtt();
		if !rtt.is_zero() {
			let started = Instant::now();
			sleep_until(started + rtt).await;
			c.slept_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
			c.sleeps.fetch_add(1, Ordering::Relaxed);
		}
	}
}

/// A sleeper: set when its deadline has passed.
#[derive(Default)]
struct Slot {
	fired: AtomicBool,
	waker: Mutex<Option<Waker>>,
}

/// Sleepers by deadline (the sequence number breaks ties, as `Arc<Slot>` has no order).
type Queue = BinaryHeap<Reverse<(Instant, u64, SlotRef)>>;

struct SlotRef(Arc<Slot>);

impl PartialEq for SlotRef {
	fn eq(&self, _: &Self) -> bool {
		true
	}
}
impl Eq for SlotRef {}
impl PartialOrd for SlotRef {
	fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
		Some(self.cmp(other))
	}
}
impl Ord for SlotRef {
	fn cmp(&self, _: &Self) -> std::cmp::Ordering {
		std::cmp::Ordering::Equal
	}
}

#[derive(Default)]
struct Timer {
	queue: Mutex<(Queue, u64)>,
	changed: Condvar,
}

fn timer() -> &'static Timer {
	static TIMER: OnceLock<&'static Timer> = OnceLock::new();
	TIMER.get_or_init(|| {
		// Lives for the whole process, as its thread does.
		let timer: &'static Timer = Box::leak(Box::default());
		std::thread::Builder::new()
			.name("rtt-timer".into())
			.spawn(move || timer.run())
			.expect("starting the timer thread");
		timer
	})
}

impl Timer {
	fn run(&self) {
		let mut queue = self.queue.lock().expect("timer lock");
		loop {
			let now = Instant::now();
			let mut due = Vec::new();
			while queue.0.peek().is_some_and(|Reverse((deadline, _, _))| *deadline <= now) {
				if let Some(Reverse((_, _, slot))) = queue.0.pop() {
					due.push(slot.0);
				}
			}
			if !due.is_empty() {
				// Wake outside the lock: wakers may take a while, and sleepers queue meanwhile.
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
			queue = match queue.0.peek().map(|Reverse((deadline, _, _))| *deadline) {
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
		let earliest = queue.0.peek().is_none_or(|Reverse((d, _, _))| deadline < *d);
		queue.0.push(Reverse((deadline, seq, SlotRef(Arc::clone(&slot)))));
		drop(queue);
		if earliest {
			self.changed.notify_one();
		}
		slot
	}
}

fn sleep_until(deadline: Instant) -> impl Future<Output = ()> {
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
impl ObjectStore for LatencyStore {
	async fn put_opts(
		&self, location: &Path, payload: PutPayload, opts: PutOptions,
	) -> Result<PutResult> {
		self.control.round_trip(&self.control.counters.other).await;
		self.inner.put_opts(location, payload, opts).await
	}

	async fn put_multipart_opts(
		&self, location: &Path, opts: PutMultipartOptions,
	) -> Result<Box<dyn MultipartUpload>> {
		self.control.round_trip(&self.control.counters.other).await;
		self.inner.put_multipart_opts(location, opts).await
	}

	async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
		let counters = &self.control.counters;
		self.control.round_trip(&counters.gets).await;
		let result = self.inner.get_opts(location, options).await?;
		counters.bytes_got.fetch_add(result.range.end - result.range.start, Ordering::Relaxed);
		Ok(result)
	}

	fn delete_stream(
		&self, locations: BoxStream<'static, Result<Path>>,
	) -> BoxStream<'static, Result<Path>> {
		// A load deletes nothing; deletes are counted, not delayed.
		self.control.counters.other.fetch_add(1, Ordering::Relaxed);
		self.inner.delete_stream(locations)
	}

	fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
		let (inner, control) = (Arc::clone(&self.inner), Arc::clone(&self.control));
		let prefix = prefix.cloned();
		stream::once(async move {
			let all: Vec<Result<ObjectMeta>> = inner.list(prefix.as_ref()).collect().await;
			for _ in 0..pages(all.len()) {
				control.round_trip(&control.counters.lists).await;
			}
			stream::iter(all)
		})
		.flatten()
		.boxed()
	}

	async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
		let result = self.inner.list_with_delimiter(prefix).await?;
		for _ in 0..pages(result.objects.len() + result.common_prefixes.len()) {
			self.control.round_trip(&self.control.counters.lists).await;
		}
		Ok(result)
	}

	async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
		self.control.round_trip(&self.control.counters.other).await;
		self.inner.copy_opts(from, to, options).await
	}
}
