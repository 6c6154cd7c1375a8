//! [`S3LikeStore`]: an `ObjectStore` around another (in-memory) that answers as S3 does under
//! load: request rates per partition, `503 SlowDown` past them, a latency with a tail, and a
//! bound on connections.
//!
//! # The model
//!
//! - **Connections.** At most [`S3Params::connections`] requests are at the server at once; a
//!   request beyond waits for a free connection (the wait is counted, and is not part of its
//!   latency). A connection is held from the request's arrival to the inner store's answer.
//! - **Rates.** Each partition has two token buckets: one for GET and HEAD, one for PUT, COPY,
//!   DELETE and LIST. A bucket refills at its rate per second and holds at most
//!   [`S3Params::burst`] worth of requests (it starts full). A request takes its tokens on
//!   arrival; if its bucket has too few, it is **throttled**: after one round trip it fails with
//!   the error object_store reports for S3's `503 Slow Down` (see [`slow_down`]), which
//!   ldk-object-store classifies as transient, so the client's own retry rules apply. A throttled
//!   request takes no token and does not reach the inner store.
//!   - LIST: S3's performance guide names no rate for LIST; it is counted with the writes, as
//!     S3's pricing groups it (PUT, COPY, POST, LIST), the lower of the two rates. Each page of
//!     1,000 entries is one request.
//!   - `DeleteObjects`: one request per 1,000 keys, taking one token per key from each key's
//!     partition (S3 "performs a delete operation" for each key); all or nothing.
//!   - A multipart upload: its start is one PUT; its parts are not modelled.
//!   - A rename: a copy and a delete (object_store's default, as on S3).
//! - **Partitions.** [`Partitioning`]: one partition for the whole bucket (a new bucket, before S3
//!   has split it) or one per distinct first N characters of the key. A listing belongs to the
//!   partition of its prefix.
//! - **Latency.** Every answer, served or throttled, takes a round trip drawn from a log-normal
//!   with [`S3Params::median`] and [`S3Params::p99`]. Served requests then get the inner store's
//!   answer (in-memory: microseconds).
//!
//! What it guarantees: no partition serves more than its burst plus its rate × the elapsed time
//! of each class; never more than `connections` requests at once; every served request's latency
//! is a draw from the distribution (to within the clock's resolution: the operating system's
//! timer slack on [`Clock::Thread`], tokio's millisecond on [`Clock::Tokio`]); a throttled
//! request changes nothing in the inner store. [`calibrate()`](crate::calibrate()) measures all of it.
//!
//! Not modelled: S3 raising a partition's rates or splitting it under sustained load, bandwidth
//! (object size), connection set-up, errors other than throttling.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
	CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
	PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::dist::{LogNormal, Rng};
use crate::latency::precise_sleep;

/// Entries per listing page and keys per `DeleteObjects` request, as on S3.
const PAGE: usize = 1000;

/// How keys map to S3's partitions, each with its own request rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
	/// One partition for the whole bucket: a new bucket, before S3 has split it in response to a
	/// sustained load (while it does, it answers `503 SlowDown`).
	Bucket,
	/// One partition per distinct first `n` characters of the key (the object path as this store
	/// sees it): a bucket S3 has already split at that depth.
	KeyPrefix(usize),
}

impl Partitioning {
	/// The partition of `key`.
	pub fn of<'a>(&self, key: &'a str) -> &'a str {
		match *self {
			Partitioning::Bucket => "",
			Partitioning::KeyPrefix(n) => match key.char_indices().nth(n) {
				Some((end, _)) => &key[..end],
				None => key,
			},
		}
	}
}

impl fmt::Display for Partitioning {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		match self {
			Partitioning::Bucket => f.write_str("one partition for the whole bucket"),
			Partitioning::KeyPrefix(n) => {
				write!(f, "one partition per key prefix of {n} characters")
			},
		}
	}
}

/// Which clock the model sleeps and measures on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
	/// Real time, timed by a thread of its own (see [`crate::latency`]): works from any executor,
	/// to within the operating system's timer slack. Paused tokio time does not apply.
	Thread,
	/// tokio's clock: needs a tokio runtime with time enabled; paused time applies, so sleeps
	/// are exact to tokio's millisecond. Create the model inside that runtime.
	Tokio,
}

/// The parameters of [`S3LikeStore`]. [`Default`] gives S3 Standard's published figures where
/// there are any; each field says where its default comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct S3Params {
	/// GET and HEAD requests per second per partition. Default 5,500: AWS, Amazon S3 User Guide,
	/// "Best practices design patterns: optimizing Amazon S3 performance": "your application can
	/// achieve at least 3,500 PUT/COPY/POST/DELETE or 5,500 GET/HEAD requests per second per
	/// partitioned Amazon S3 prefix".
	pub reads_per_sec: f64,
	/// PUT, COPY, DELETE and LIST requests per second per partition. Default 3,500 (same
	/// source); LIST counted here is our choice (see the module docs).
	pub writes_per_sec: f64,
	/// The most requests a partition answers at once above its rate, as time at that rate: a
	/// full bucket holds `burst × rate` tokens. Default 1 s. AWS publishes no burst figure: this
	/// is an assumption (a partition absorbs one second's worth before throttling).
	pub burst: Duration,
	/// Default [`Partitioning::Bucket`]: AWS's same guide and its knowledge-center article on
	/// request rates say S3 scales a prefix's rates in response to a sustained load and answers
	/// 503 until it has; a new bucket starts unsplit.
	pub partitioning: Partitioning,
	/// Median latency of one request. Default 30 ms: AWS's whitepaper "Best Practices Design
	/// Patterns: Optimizing Amazon S3 Performance", section "Timeouts and Retries for
	/// Latency-Sensitive Applications", says that for small requests (under 512 KB) "median
	/// latencies are often in the tens of milliseconds range"; 30 ms is our pick in that range.
	pub median: Duration,
	/// 99th percentile of one request's latency. Default 200 ms. AWS publishes no percentile:
	/// this is an assumption. The same section advises retrying such a GET or PUT after 2 s and,
	/// for fixed-size requests, retrying the slowest 1%, so the p99 sits well below 2 s.
	pub p99: Duration,
	/// Requests at the server at once. Default 50: the AWS SDK for Java's default connection
	/// pool (`ClientConfiguration.DEFAULT_MAX_CONNECTIONS`). object_store sets no bound of its
	/// own; ldk-object-store bounds requests in flight itself.
	pub connections: usize,
	/// Default [`Clock::Thread`].
	pub clock: Clock,
	/// Seed of the latency draws (the order in which concurrent requests draw is not fixed).
	pub seed: u64,
}

impl Default for S3Params {
	fn default() -> Self {
		S3Params {
			reads_per_sec: 5500.0,
			writes_per_sec: 3500.0,
			burst: Duration::from_secs(1),
			partitioning: Partitioning::Bucket,
			median: Duration::from_millis(30),
			p99: Duration::from_millis(200),
			connections: 50,
			clock: Clock::Thread,
			seed: 0x53_3c_1a_7e,
		}
	}
}

impl S3Params {
	/// The default parameters with those of `spec` instead: `KEY=VALUE` items separated by
	/// commas, any subset of `median-ms`, `p99-ms`, `connections`, `reads`, `writes`, `burst-s`
	/// and `prefix` (`prefix=N` gives one partition per key prefix of N characters, 0 one for
	/// the whole bucket), as the benchmarks' `--s3` option takes them.
	pub fn parse(spec: &str) -> Result<S3Params, String> {
		let mut params = S3Params::default();
		for item in spec.split(',').filter(|item| !item.is_empty()) {
			let (key, value) =
				item.split_once('=').ok_or_else(|| format!("--s3: {item:?} is not KEY=VALUE"))?;
			let x: f64 = value.parse().map_err(|_| format!("--s3: {item:?}: not a number"))?;
			if !(x >= 0.0 && x.is_finite()) {
				return Err(format!("--s3: {item:?}: not a non-negative number"));
			}
			let ms = Duration::from_secs_f64(x / 1000.0);
			match key {
				"median-ms" => params.median = ms,
				"p99-ms" => params.p99 = ms,
				"connections" => params.connections = (x as usize).max(1),
				"reads" => params.reads_per_sec = x,
				"writes" => params.writes_per_sec = x,
				"burst-s" => params.burst = Duration::from_secs_f64(x),
				"prefix" if x == 0.0 => params.partitioning = Partitioning::Bucket,
				"prefix" => params.partitioning = Partitioning::KeyPrefix(x as usize),
				other => return Err(format!("--s3: unknown parameter {other:?}")),
			}
		}
		Ok(params)
	}

	/// The latency distribution.
	pub fn latency(&self) -> LogNormal {
		LogNormal { median: self.median, p99: self.p99 }
	}

	/// One line naming every parameter.
	pub fn describe(&self) -> String {
		format!(
			"{:.0} GET/HEAD and {:.0} PUT/COPY/DELETE/LIST per second per partition (burst {} s), \
			 {}, latency log-normal with median {} ms and p99 {} ms (mean {:.1} ms), {} \
			 connections",
			self.reads_per_sec,
			self.writes_per_sec,
			self.burst.as_secs_f64(),
			self.partitioning,
			self.median.as_secs_f64() * 1e3,
			self.p99.as_secs_f64() * 1e3,
			self.latency().mean().as_secs_f64() * 1e3,
			self.connections,
		)
	}
}

/// The kinds of request the model counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
	/// GET (a read of the object or of ranges of it).
	Get,
	/// HEAD (`get_opts` with `head` set).
	Head,
	/// PUT, and the start of a multipart upload.
	Put,
	/// `DeleteObjects`: one per 1,000 keys.
	Delete,
	/// One listing page.
	List,
	/// COPY (a rename is a copy and a delete).
	Copy,
}

impl Kind {
	/// Every kind, in the order of [`S3Counts`]' arrays.
	pub const ALL: [Kind; 6] =
		[Kind::Get, Kind::Head, Kind::Put, Kind::Delete, Kind::List, Kind::Copy];

	/// Its place in [`S3Counts`]' arrays.
	pub fn index(self) -> usize {
		self as usize
	}

	/// Whether it takes from the GET/HEAD rate (else from the PUT/COPY/DELETE/LIST rate).
	pub fn is_read(self) -> bool {
		matches!(self, Kind::Get | Kind::Head)
	}

	/// S3's name for it.
	pub fn name(self) -> &'static str {
		match self {
			Kind::Get => "GET",
			Kind::Head => "HEAD",
			Kind::Put => "PUT",
			Kind::Delete => "DeleteObjects",
			Kind::List => "LIST",
			Kind::Copy => "COPY",
		}
	}
}

/// What the model has counted since it was made or reset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct S3Counts {
	/// Served requests by [`Kind::ALL`]'s order.
	pub served: [u64; 6],
	/// Throttled requests (answered `503 SlowDown`) by [`Kind::ALL`]'s order.
	pub throttled: [u64; 6],
	/// Keys named in served `DeleteObjects` requests.
	pub deleted_objects: u64,
	/// Requests that found every connection busy and waited for one.
	pub connection_waits: u64,
	/// Their waits added up (many waits overlap, so this is not a span of time; the
	/// [`summary`](Self::summary) gives the mean).
	pub connection_wait: Duration,
	/// The most requests at the server at once.
	pub max_in_flight: u64,
	/// The latency of every served request, in the order they were answered.
	pub latencies: Vec<Duration>,
}

impl S3Counts {
	/// Served requests of every kind.
	pub fn served_total(&self) -> u64 {
		self.served.iter().sum()
	}

	/// Throttled requests of every kind.
	pub fn throttled_total(&self) -> u64 {
		self.throttled.iter().sum()
	}

	/// The `q` quantile (0 ≤ q ≤ 1) of the served requests' latency (nearest rank), if any.
	pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
		quantile(&self.latencies, q)
	}

	/// One sentence of what the model saw, against its `params`, for a benchmark's notes.
	pub fn summary(&self, params: &S3Params) -> String {
		let ms = |d: Option<Duration>| {
			d.map_or("—".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
		};
		format!(
			"Seen by the model in this run (every load above, seeding excluded): {} requests \
			 served, {} throttled (503 SlowDown), {} waited for a connection (for {} ms on average); \
			 served latency median {} ms and p99 {} ms over {} requests (parameters: {} ms and \
			 {} ms).",
			self.served_total(),
			self.throttled_total(),
			self.connection_waits,
			ms((self.connection_waits > 0)
				.then(|| self.connection_wait.div_f64(self.connection_waits as f64))),
			ms(self.latency_quantile(0.5)),
			ms(self.latency_quantile(0.99)),
			self.latencies.len(),
			params.median.as_secs_f64() * 1e3,
			params.p99.as_secs_f64() * 1e3,
		)
	}
}

/// The `q` quantile of `values` by nearest rank.
pub(crate) fn quantile(values: &[Duration], q: f64) -> Option<Duration> {
	if values.is_empty() {
		return None;
	}
	let mut sorted = values.to_vec();
	sorted.sort_unstable();
	let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
	Some(sorted[rank - 1])
}

#[derive(Debug, Clone, Copy)]
struct TokenBucket {
	tokens: f64,
	at: Duration,
}

/// Where time starts for the model.
#[derive(Debug, Clone, Copy)]
enum Epoch {
	Thread(std::time::Instant),
	Tokio(tokio::time::Instant),
}

/// The state of one S3-like server, shared by the stores that wrap it and by its owner.
#[derive(Debug)]
pub struct S3Model {
	params: S3Params,
	epoch: Epoch,
	/// (is_read, partition) → bucket.
	buckets: Mutex<HashMap<(bool, String), TokenBucket>>,
	connections: Semaphore,
	counts: Mutex<S3Counts>,
	in_flight: Mutex<u64>,
	rng: Rng,
	enabled: AtomicBool,
}

/// Holds a connection while a request is at the server.
struct Connection<'a> {
	_permit: SemaphorePermit<'a>,
	model: &'a S3Model,
}

impl Drop for Connection<'_> {
	fn drop(&mut self) {
		*lock(&self.model.in_flight) -= 1;
	}
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
	// The guarded data stays consistent at every panic point: take it even if poisoned.
	mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The error object_store's S3 client returns for S3's `503 Slow Down` answer (its message, with
/// the XML body S3 sends, in an `object_store::Error::Generic`). ldk-object-store reads the
/// `SlowDown` code (and the 503 status) and classifies it as transient.
pub fn slow_down(kind: Kind, partition: &str) -> object_store::Error {
	let partition = if partition.is_empty() { "the bucket" } else { partition };
	object_store::Error::Generic {
		store: "S3",
		source: format!(
			"Server returned non-2xx status code: 503 Service Unavailable: <?xml version=\"1.0\" \
			 encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request \
			 rate.</Message></Error> (S3-like model: {} past the rate of {partition:?})",
			kind.name()
		)
		.into(),
	}
}

impl S3Model {
	/// A model with `params`, its time starting now (on [`Clock::Tokio`], call it inside the
	/// runtime).
	pub fn new(params: S3Params) -> Arc<S3Model> {
		let epoch = match params.clock {
			Clock::Thread => Epoch::Thread(std::time::Instant::now()),
			Clock::Tokio => Epoch::Tokio(tokio::time::Instant::now()),
		};
		Arc::new(S3Model {
			params,
			epoch,
			buckets: Mutex::default(),
			connections: Semaphore::new(params.connections.clamp(1, Semaphore::MAX_PERMITS)),
			counts: Mutex::default(),
			in_flight: Mutex::new(0),
			rng: Rng::new(params.seed),
			enabled: AtomicBool::new(true),
		})
	}

	/// Its parameters.
	pub fn params(&self) -> &S3Params {
		&self.params
	}

	/// What it counted so far.
	pub fn counts(&self) -> S3Counts {
		lock(&self.counts).clone()
	}

	/// Zeroes the counts (the token buckets keep their state).
	pub fn reset(&self) {
		let in_flight = *lock(&self.in_flight);
		*lock(&self.counts) = S3Counts { max_in_flight: in_flight, ..S3Counts::default() };
	}

	/// With `false`, requests go straight to the inner store: no latency, no rate, no
	/// connection, nothing counted (for seeding a benchmark's store).
	pub fn set_enabled(&self, enabled: bool) {
		self.enabled.store(enabled, Ordering::Relaxed);
	}

	fn enabled(&self) -> bool {
		self.enabled.load(Ordering::Relaxed)
	}

	/// Time since the model was made, on its clock.
	fn now(&self) -> Duration {
		match self.epoch {
			Epoch::Thread(start) => start.elapsed(),
			Epoch::Tokio(start) => start.elapsed(),
		}
	}

	async fn sleep(&self, duration: Duration) {
		if duration.is_zero() {
			return;
		}
		match self.params.clock {
			Clock::Thread => precise_sleep(std::time::Instant::now() + duration).await,
			Clock::Tokio => tokio::time::sleep(duration).await,
		}
	}

	/// Takes `tokens` (partition → tokens) from the buckets of `read`'s class, all or none.
	/// Returns the first partition short of tokens.
	fn take(&self, read: bool, tokens: &[(String, f64)]) -> Option<String> {
		let now = self.now();
		let rate = if read { self.params.reads_per_sec } else { self.params.writes_per_sec };
		let capacity = (rate * self.params.burst.as_secs_f64()).max(1.0);
		let mut buckets = lock(&self.buckets);
		let mut short = None;
		for (partition, n) in tokens {
			let bucket = buckets
				.entry((read, partition.clone()))
				.or_insert(TokenBucket { tokens: capacity, at: now });
			let elapsed = now.saturating_sub(bucket.at).as_secs_f64();
			bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
			bucket.at = now;
			if bucket.tokens < *n && short.is_none() {
				short = Some(partition.clone());
			}
		}
		if short.is_none() {
			for (partition, n) in tokens {
				if let Some(bucket) = buckets.get_mut(&(read, partition.clone())) {
					bucket.tokens -= n;
				}
			}
		}
		short
	}

	/// One request of `kind` taking `tokens` from its partitions: waits for a connection, then
	/// answers after one drawn round trip, throttled or not. A served request keeps its
	/// connection until the caller drops the returned guard.
	async fn request(&self, kind: Kind, tokens: &[(String, f64)]) -> Result<Connection<'_>> {
		let permit = match self.connections.try_acquire() {
			Ok(permit) => permit,
			Err(_) => {
				let started = self.now();
				let permit = self.connections.acquire().await.map_err(|e| {
					object_store::Error::Generic { store: "S3-like model", source: Box::new(e) }
				})?;
				let waited = self.now().saturating_sub(started);
				let mut counts = lock(&self.counts);
				counts.connection_waits += 1;
				counts.connection_wait += waited;
				permit
			},
		};
		let connection = {
			let mut in_flight = lock(&self.in_flight);
			*in_flight += 1;
			let mut counts = lock(&self.counts);
			counts.max_in_flight = counts.max_in_flight.max(*in_flight);
			Connection { _permit: permit, model: self }
		};
		let arrived = self.now();
		let short = self.take(kind.is_read(), tokens);
		let latency = self.params.latency().sample(&self.rng);
		self.sleep(latency).await;
		let mut counts = lock(&self.counts);
		match short {
			Some(partition) => {
				counts.throttled[kind.index()] += 1;
				drop(counts);
				drop(connection);
				Err(slow_down(kind, &partition))
			},
			None => {
				counts.served[kind.index()] += 1;
				counts.latencies.push(self.now().saturating_sub(arrived));
				Ok(connection)
			},
		}
	}

	/// One request for one key.
	async fn one(&self, kind: Kind, key: &str) -> Result<Option<Connection<'_>>> {
		if !self.enabled() {
			return Ok(None);
		}
		let partition = self.params.partitioning.of(key).to_owned();
		self.request(kind, &[(partition, 1.0)]).await.map(Some)
	}
}

/// See the module docs.
#[derive(Debug)]
pub struct S3LikeStore {
	inner: Arc<dyn ObjectStore>,
	model: Arc<S3Model>,
}

impl S3LikeStore {
	/// `inner` served through `model`.
	pub fn wrap(inner: Arc<dyn ObjectStore>, model: Arc<S3Model>) -> Arc<dyn ObjectStore> {
		Arc::new(S3LikeStore { inner, model })
	}
}

impl fmt::Display for S3LikeStore {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		write!(f, "S3LikeStore({})", self.inner)
	}
}

/// A listing through the model: the inner listing, then one LIST request per page, the entries
/// of each page given once its request is served; a throttled page ends the listing with the
/// error.
fn listed(
	model: Arc<S3Model>, prefix: String, all: Vec<Result<ObjectMeta>>,
) -> BoxStream<'static, Result<ObjectMeta>> {
	stream::once(async move {
		if !model.enabled() {
			return stream::iter(all).boxed();
		}
		let pages = all.len().div_ceil(PAGE).max(1);
		let mut entries = all.into_iter();
		let mut out = Vec::new();
		for _ in 0..pages {
			match model.one(Kind::List, &prefix).await {
				Ok(_connection) => out.extend(entries.by_ref().take(PAGE)),
				Err(e) => {
					out.push(Err(e));
					break;
				},
			}
		}
		stream::iter(out).boxed()
	})
	.flatten()
	.boxed()
}

#[async_trait]
impl ObjectStore for S3LikeStore {
	async fn put_opts(
		&self, location: &Path, payload: PutPayload, opts: PutOptions,
	) -> Result<PutResult> {
		let _connection = self.model.one(Kind::Put, location.as_ref()).await?;
		self.inner.put_opts(location, payload, opts).await
	}

	async fn put_multipart_opts(
		&self, location: &Path, opts: PutMultipartOptions,
	) -> Result<Box<dyn MultipartUpload>> {
		let _connection = self.model.one(Kind::Put, location.as_ref()).await?;
		self.inner.put_multipart_opts(location, opts).await
	}

	async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
		let kind = if options.head { Kind::Head } else { Kind::Get };
		let _connection = self.model.one(kind, location.as_ref()).await?;
		self.inner.get_opts(location, options).await
	}

	fn delete_stream(
		&self, locations: BoxStream<'static, Result<Path>>,
	) -> BoxStream<'static, Result<Path>> {
		let (inner, model) = (Arc::clone(&self.inner), Arc::clone(&self.model));
		stream::once(async move {
			let mut results = Vec::new();
			let mut chunks = locations.chunks(PAGE);
			while let Some(chunk) = chunks.next().await {
				if !model.enabled() {
					results.extend(
						inner.delete_stream(stream::iter(chunk).boxed()).collect::<Vec<_>>().await,
					);
					continue;
				}
				let mut tokens: Vec<(String, f64)> = Vec::new();
				for path in chunk.iter().flatten() {
					let partition = model.params.partitioning.of(path.as_ref());
					match tokens.iter_mut().find(|(p, _)| p == partition) {
						Some((_, n)) => *n += 1.0,
						None => tokens.push((partition.to_owned(), 1.0)),
					}
				}
				match model.request(Kind::Delete, &tokens).await {
					Ok(_connection) => {
						lock(&model.counts).deleted_objects += chunk.len() as u64;
						let deleted: Vec<Result<Path>> =
							inner.delete_stream(stream::iter(chunk).boxed()).collect().await;
						results.extend(deleted);
					},
					Err(_) => {
						// The whole request was refused: every key in it failed.
						for location in chunk {
							let partition = match &location {
								Ok(path) => model.params.partitioning.of(path.as_ref()).to_owned(),
								Err(_) => String::new(),
							};
							results.push(Err(slow_down(Kind::Delete, &partition)));
						}
					},
				}
			}
			stream::iter(results)
		})
		.flatten()
		.boxed()
	}

	fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
		let (inner, model) = (Arc::clone(&self.inner), Arc::clone(&self.model));
		let prefix = prefix.cloned();
		stream::once(async move {
			let all: Vec<Result<ObjectMeta>> = inner.list(prefix.as_ref()).collect().await;
			let prefix = prefix.map(|p| p.to_string()).unwrap_or_default();
			listed(model, prefix, all)
		})
		.flatten()
		.boxed()
	}

	async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
		let result = self.inner.list_with_delimiter(prefix).await?;
		let key = prefix.map(|p| p.to_string()).unwrap_or_default();
		let entries = result.objects.len() + result.common_prefixes.len();
		for _ in 0..entries.div_ceil(PAGE).max(1) {
			let _connection = self.model.one(Kind::List, &key).await?;
		}
		Ok(result)
	}

	async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
		let _connection = self.model.one(Kind::Copy, to.as_ref()).await?;
		self.inner.copy_opts(from, to, options).await
	}
}
