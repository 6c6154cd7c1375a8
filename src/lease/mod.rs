//! One writer per prefix: a lease that a second instance of a node cannot get past.
//!
//! Two instances of one Lightning node writing the same state lose money: each signs and stores
//! its own channel states, and the older one may broadcast a revoked commitment. No write can
//! stop a stale instance that broadcasts on its own; only making sure it has stopped before the
//! new one starts can. So a store takes a lease on its prefix when it is built
//! ([`StoreBuilder::build`]), keeps it while it runs, and from the moment it cannot be sure it
//! still holds it refuses every write and remove and says so ([`WriterLease::lost`]).
//!
//! # The lease object
//!
//! `<root>/.ldk-object-store-lease`: a name outside LDK's key alphabet `[A-Za-z0-9_-]`, so it can
//! never be an LDK key, and one that the store's listings leave out. It is a small text object:
//!
//! ```text
//! ldk-object-store writer lease v1
//! instance=<128 random bits in hex>
//! host=<host name>
//! pid=<process id>
//! generation=<n>
//! expires_unix_ms=<wall-clock expiry; 0 once released>
//! ```
//!
//! It is created with a create-only put (`PutMode::Create`, `If-None-Match: *`) and every later
//! change is a put on the condition that it is still at the version this instance last wrote
//! (`PutMode::Update`, `If-Match` on its ETag). Two instances that start at the same moment both
//! try to create it and exactly one succeeds; the other reads it and is refused with
//! [`ConfigError::LeaseHeld`], which names the holder (instance, host, pid), its generation and
//! its expiry. An instance may take over a lease whose expiry has passed (by more than the clock
//! skew allowance) or that was released: it replaces it on its ETag with the generation plus one,
//! so of several instances taking over at once exactly one succeeds.
//!
//! # Timing (defaults, see [`LeaseConfig`])
//!
//! - **Time to live: 30 s.** Each renewal writes an expiry 30 s after the holder's wall clock.
//! - **Renewal every 10 s** (a third of the time to live), retried every second after a failure.
//! - **Safety margin: 10 s.** The holder trusts its lease only until 30 − 10 = 20 s after it
//!   *sent* the last renewal that succeeded, measured on its monotonic clock, which neither wall
//!   clock steps nor skew affect. After that, or as soon as a renewal finds the lease in another
//!   instance's hands, the lease is lost for good: every write and remove fails with
//!   [`FailureKind::LeaseLost`] (not retried) before any request is sent, sync-mode persistence
//!   fails (LDK stops), async-mode persistence reports nothing complete, and
//!   [`WriterLease::lost`] resolves. A node that lost its lease must be restarted.
//! - **Clock skew allowance: 5 s.** A new instance takes over only once its wall clock is 5 s
//!   past the written expiry. With wall clocks within 5 s of each other, the takeover therefore
//!   happens no earlier than 30 s after the holder sent its last renewal, when the holder has
//!   already stopped writing for 10 s. Those 10 s are what covers a write request that was
//!   checked just before the holder's validity ended and then spent time in flight.
//! - **After a crash** (SIGKILL, power loss) nobody releases the lease: a restarted node is
//!   refused until it expires, at most 30 + 5 = 35 s after the crash. A clean shutdown (dropping
//!   the last clone of the store, or [`ObjectKvStore::close`]) releases it, and
//!   the next instance starts at once.
//!
//! A paused process (SIGSTOP, a VM migration, a long GC-like stall) is the case the monotonic
//! clock is for: when it resumes, its first write sees that its validity has passed and is
//! refused, and its renewal finds the lease taken over.
//!
//! # What covers the rest
//!
//! - **Deletes.** `object_store` 0.14 has no conditional delete, so a remove cannot carry the
//!   lease's condition to the server. The lease check right before each remove request is sent
//!   covers that (a stale instance refuses its own removes), and monitor update objects are
//!   create-only, so a late remove can only delete what this instance itself created or replaced.
//! - **Per-key fencing** ([`StoreBuilder::with_fencing`]) stays available as a second line: it
//!   makes each write conditional on the version this instance last saw.
//! - **A request that outlives the margin.** A write checked while the lease was valid and then
//!   delayed in the network by more than the safety margin could land after a takeover; per-key
//!   fencing refuses it where it is on.
//!
//! # Backends
//!
//! On by default for every backend that honours conditional writes: S3 and S3-compatible servers
//! that implement `If-None-Match`/`If-Match` (AWS, MinIO, LocalStack, SeaweedFS), Azure Blob
//! Storage, Google Cloud Storage and memory. A backend that cannot replace an object
//! conditionally fails [`StoreBuilder::build`] with advice, unless the lease is turned off by
//! name ([`StoreBuilder::without_writer_lease`]); servers that silently ignore the conditional
//! headers cannot be detected by the store: `ldk-object-store doctor` checks them. For `file://`
//! URLs an exclusive OS lock (`flock`) on the store's directory (below its root prefix) gives the
//! same guarantee on one machine; it is held while the store lives and released by the OS when
//! the process ends, crash included. Nothing is added to the directory, so LDK's own
//! `FilesystemStore` still reads it. (Where a directory cannot be locked, outside Unix, the lock
//! is on a file `.ldk-object-store-lock#0` in it, a name `object_store`'s local store leaves out
//! of listings.)
//!
//! [`StoreBuilder::build`]: crate::StoreBuilder::build
//! [`StoreBuilder::with_fencing`]: crate::StoreBuilder::with_fencing
//! [`StoreBuilder::without_writer_lease`]: crate::StoreBuilder::without_writer_lease
//! [`ObjectKvStore::close`]: crate::ObjectKvStore::close
//! [`ConfigError::LeaseHeld`]: crate::ConfigError::LeaseHeld
//! [`FailureKind::LeaseLost`]: crate::FailureKind::LeaseLost

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use object_store::path::{Path, PathPart};
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};
use tokio::sync::{watch, Notify};

use crate::error::{ConfigError, FailureKind};
// Every lease request is bounded: none may hang a start, a renewal or a release.
use crate::retry::within;
use crate::runtime::StoreRuntime;

mod file;
mod object;

pub(crate) use file::acquire_file;
pub use file::directory_is_locked;
pub(crate) use object::acquire_object;
pub use object::{break_lease, read_lease};

/// The name of the lease object below the root prefix.
pub const LEASE_OBJECT: &str = ".ldk-object-store-lease";
/// The name of the lock file of a `file://` store on systems where a directory cannot be locked
/// (on Unix the directory itself is locked), below its root prefix.
pub const LOCK_FILE: &str = ".ldk-object-store-lock#0";

const HEADER: &str = "ldk-object-store writer lease v1";

/// Whether `path` is the lease object or lock file of a store rooted at `root`; listings skip
/// exactly these.
pub(crate) fn is_lease_path(root: &Path, path: &Path) -> bool {
	let mut parts = match path.prefix_match(root) {
		Some(parts) => parts,
		None => return false,
	};
	match (parts.next(), parts.next()) {
		(Some(name), None) => {
			name == PathPart::from(LEASE_OBJECT) || name == PathPart::from(LOCK_FILE)
		},
		_ => false,
	}
}

/// The lease object's path for a store rooted at `root`.
pub fn lease_path(root: &Path) -> Path {
	root.clone().join(LEASE_OBJECT)
}

/// How long a lease lives and how much the holder and a successor allow for. See the module
/// docs for what the numbers guarantee.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseConfig {
	/// How far ahead each renewal sets the expiry (default 30 s). Renewals go out every third of
	/// it.
	pub ttl: Duration,
	/// How long before the written expiry the holder stops trusting its lease, measured from the
	/// moment it sent the renewal (default 10 s). Must be less than two thirds of `ttl`.
	pub safety_margin: Duration,
	/// How far apart the wall clocks of two instances may be (default 5 s): a successor waits
	/// this long past the written expiry.
	pub clock_skew: Duration,
	/// Test hook: added to this instance's wall clock, to simulate a skewed clock.
	#[doc(hidden)]
	pub wall_clock_offset_ms: i64,
}

impl Default for LeaseConfig {
	fn default() -> Self {
		LeaseConfig {
			ttl: Duration::from_secs(30),
			safety_margin: Duration::from_secs(10),
			clock_skew: Duration::from_secs(5),
			wall_clock_offset_ms: 0,
		}
	}
}

impl LeaseConfig {
	/// Sets the time to live (see [`LeaseConfig::ttl`]).
	pub fn with_ttl(mut self, ttl: Duration) -> Self {
		self.ttl = ttl;
		self
	}

	/// Sets the safety margin (see [`LeaseConfig::safety_margin`]).
	pub fn with_safety_margin(mut self, margin: Duration) -> Self {
		self.safety_margin = margin;
		self
	}

	/// Sets the clock skew allowance (see [`LeaseConfig::clock_skew`]).
	pub fn with_clock_skew(mut self, skew: Duration) -> Self {
		self.clock_skew = skew;
		self
	}

	/// Test hook: offsets this instance's wall clock by `offset_ms` milliseconds.
	#[doc(hidden)]
	pub fn with_wall_clock_offset_ms(mut self, offset_ms: i64) -> Self {
		self.wall_clock_offset_ms = offset_ms;
		self
	}

	pub(crate) fn validate(&self) -> Result<(), ConfigError> {
		let renewal = self.ttl / 3;
		if renewal.is_zero() || self.safety_margin >= self.ttl.saturating_sub(renewal) {
			return Err(ConfigError::Lease(format!(
				"lease timing: the safety margin ({:?}) must be less than two thirds of the time \
				 to live ({:?}), so that a renewal is due before the holder stops trusting its \
				 lease",
				self.safety_margin, self.ttl
			)));
		}
		Ok(())
	}

	fn renew_every(&self) -> Duration {
		self.ttl / 3
	}

	fn wall_now_ms(&self) -> u64 {
		let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
		(now as i64).saturating_add(self.wall_clock_offset_ms).max(0) as u64
	}
}

/// What a lease object says: who holds it, which generation, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseInfo {
	/// The holder's random instance id (32 hex digits), new at every start.
	pub instance: String,
	/// The holder's host name, for operators.
	pub host: String,
	/// The holder's process id, for operators.
	pub pid: u32,
	/// Increases by one at every takeover.
	pub generation: u64,
	/// The expiry on the holder's wall clock, in milliseconds since the Unix epoch; 0 once
	/// released.
	pub expires_unix_ms: u64,
}

impl LeaseInfo {
	/// Whether the holder released it (a successor may take it at once).
	pub fn is_released(&self) -> bool {
		self.expires_unix_ms == 0
	}

	/// "instance … on host … (pid …)".
	pub fn holder(&self) -> String {
		format!("instance {} on host {} (pid {})", self.instance, self.host, self.pid)
	}

	/// The expiry in words, relative to this machine's clock.
	pub fn expiry_text(&self) -> String {
		if self.is_released() {
			return "released".to_owned();
		}
		let now = LeaseConfig::default().wall_now_ms();
		let at = format!(
			"unix time {}.{:03} s",
			self.expires_unix_ms / 1000,
			self.expires_unix_ms % 1000
		);
		if self.expires_unix_ms >= now {
			format!("{at} (in {:.1} s)", (self.expires_unix_ms - now) as f64 / 1000.0)
		} else {
			format!("{at} ({:.1} s ago)", (now - self.expires_unix_ms) as f64 / 1000.0)
		}
	}

	/// The object's text.
	pub fn encode(&self) -> String {
		format!(
			"{HEADER}\ninstance={}\nhost={}\npid={}\ngeneration={}\nexpires_unix_ms={}\n",
			self.instance, self.host, self.pid, self.generation, self.expires_unix_ms
		)
	}

	/// Parses a lease object; `None` if it is not one.
	pub fn parse(text: &str) -> Option<LeaseInfo> {
		let mut lines = text.lines();
		if lines.next()? != HEADER {
			return None;
		}
		let mut info = LeaseInfo {
			instance: String::new(),
			host: String::new(),
			pid: 0,
			generation: 0,
			expires_unix_ms: 0,
		};
		let mut seen = 0;
		for line in lines {
			let Some((key, value)) = line.split_once('=') else { continue };
			match key {
				"instance" => info.instance = value.to_owned(),
				"host" => info.host = value.to_owned(),
				"pid" => info.pid = value.parse().ok()?,
				"generation" => info.generation = value.parse().ok()?,
				"expires_unix_ms" => info.expires_unix_ms = value.parse().ok()?,
				// Fields of later versions.
				_ => continue,
			}
			seen += 1;
		}
		(seen >= 5 && !info.instance.is_empty()).then_some(info)
	}

	fn new_for_this_process() -> Result<LeaseInfo, ConfigError> {
		use chacha20poly1305::aead::Generate;
		let bytes = <[u8; 16]>::try_generate().map_err(|_| {
			ConfigError::Lease("the operating system's random generator failed".to_owned())
		})?;
		let instance = bytes.iter().map(|b| format!("{b:02x}")).collect();
		Ok(LeaseInfo {
			instance,
			host: host_name(),
			pid: std::process::id(),
			generation: 1,
			expires_unix_ms: 0,
		})
	}
}

impl fmt::Display for LeaseInfo {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		write!(
			f,
			"{}, generation {}, expires {}",
			self.holder(),
			self.generation,
			self.expiry_text()
		)
	}
}

fn host_name() -> String {
	let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
		.ok()
		.or_else(|| std::env::var("HOSTNAME").ok())
		.or_else(|| std::env::var("COMPUTERNAME").ok())
		.unwrap_or_default();
	let clean: String =
		name.trim().chars().filter(|c| c.is_ascii_graphic() && *c != '=').take(64).collect();
	if clean.is_empty() {
		"unknown".to_owned()
	} else {
		clean
	}
}

/// Why writes and removes are refused: the lease is lost. Classified as
/// [`FailureKind::LeaseLost`].
#[derive(Debug, thiserror::Error)]
#[error("this instance no longer holds the writer lease on the prefix ({reason}); refusing to write or remove anything: stop this node (another instance may be running)")]
pub struct LeaseLostError {
	/// Why the lease was lost.
	pub reason: String,
}

/// The application's view of the store's writer lease ([`ObjectKvStore::writer_lease`]).
///
/// [`ObjectKvStore::writer_lease`]: crate::ObjectKvStore::writer_lease
#[derive(Debug, Clone)]
pub struct WriterLease {
	state: Arc<LeaseState>,
}

impl WriterLease {
	/// Whether this instance still holds the lease: not lost, and (for an object lease) still
	/// within its validity on the monotonic clock.
	pub fn is_held(&self) -> bool {
		self.state.check().is_ok()
	}

	/// What the lease object says as this instance last wrote it.
	pub fn info(&self) -> LeaseInfo {
		self.state.lock().info.clone()
	}

	/// Why the lease was lost, once it was.
	pub fn lost_reason(&self) -> Option<String> {
		self.state.lost.borrow().clone()
	}

	/// Resolves once the lease is lost (or released). Works on any executor. Shut the node down
	/// when it does: every write and remove fails from then on.
	pub async fn lost(&self) {
		let mut receiver = self.state.lost.subscribe();
		// The sender lives as long as `self`, so waiting cannot fail.
		let _ = receiver.wait_for(|lost| lost.is_some()).await;
	}

	/// Test hook: freezes the lease's own task (renewals and the deadline watch), as if the
	/// process were stopped; `false` resumes it.
	#[doc(hidden)]
	pub fn freeze_for_testing(&self, frozen: bool) {
		self.state.frozen.store(frozen, Ordering::SeqCst);
		self.state.wake.notify_one();
	}
}

enum Kind {
	/// A lease object renewed on a backend with conditional writes.
	Object { backend: Arc<dyn ObjectStore>, path: Path },
	/// An OS lock on a file, held while the file is open.
	File { file: Mutex<Option<std::fs::File>> },
}

struct Held {
	info: LeaseInfo,
	version: Option<UpdateVersion>,
	/// Until when this instance trusts the lease (monotonic).
	valid_until: Option<Instant>,
}

/// The lease as the store holds it: checked before every write and remove.
pub(crate) struct LeaseState {
	kind: Kind,
	config: LeaseConfig,
	held: Mutex<Held>,
	lost: watch::Sender<Option<String>>,
	frozen: AtomicBool,
	stopped: AtomicBool,
	wake: Notify,
}

impl fmt::Debug for LeaseState {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		let kind = match &self.kind {
			Kind::Object { path, .. } => format!("object {path}"),
			Kind::File { .. } => "file lock".to_owned(),
		};
		f.debug_struct("LeaseState")
			.field("kind", &kind)
			.field("lost", &*self.lost.borrow())
			.finish_non_exhaustive()
	}
}

impl LeaseState {
	fn new(kind: Kind, config: LeaseConfig, held: Held) -> Arc<Self> {
		Arc::new(LeaseState {
			kind,
			config,
			held: Mutex::new(held),
			lost: watch::Sender::new(None),
			frozen: AtomicBool::new(false),
			stopped: AtomicBool::new(false),
			wake: Notify::new(),
		})
	}

	fn lock(&self) -> MutexGuard<'_, Held> {
		self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
	}

	pub(crate) fn handle(self: &Arc<Self>) -> WriterLease {
		WriterLease { state: Arc::clone(self) }
	}

	/// Ok while the lease is held; called right before each write or remove request is sent.
	pub(crate) fn check(&self) -> Result<(), object_store::Error> {
		if let Some(reason) = self.lost.borrow().clone() {
			return Err(lost_error(reason));
		}
		let valid_until = self.lock().valid_until;
		if let Some(valid_until) = valid_until {
			if Instant::now() >= valid_until {
				let reason = format!(
					"not renewed within {:?} of the last renewal sent",
					self.config.ttl.saturating_sub(self.config.safety_margin)
				);
				self.mark_lost(reason.clone());
				return Err(lost_error(self.lost.borrow().clone().unwrap_or(reason)));
			}
		}
		Ok(())
	}

	fn mark_lost(&self, reason: String) {
		let first = self.lost.send_if_modified(|lost| {
			if lost.is_none() {
				*lost = Some(reason.clone());
				true
			} else {
				false
			}
		});
		if first {
			tracing::error!(%reason, "writer lease lost: every write and remove is refused from now on");
		}
	}

	/// Stops renewing and releases the lease so that a successor may take it at once.
	pub(crate) async fn release(self: Arc<Self>) {
		self.stopped.store(true, Ordering::SeqCst);
		self.wake.notify_one();
		let held = self.lost.borrow().is_none();
		self.mark_lost("released".to_owned());
		match &self.kind {
			Kind::File { file } => {
				// Closing the file releases the OS lock.
				file.lock().unwrap_or_else(|p| p.into_inner()).take();
			},
			Kind::Object { backend, path } => {
				if !held {
					return;
				}
				let (mut info, version) = {
					let held = self.lock();
					(held.info.clone(), held.version.clone())
				};
				let Some(version) = version else { return };
				info.expires_unix_ms = 0;
				let options = PutOptions { mode: PutMode::Update(version), ..Default::default() };
				if let Err(err) = within(
					Duration::from_secs(5),
					backend.put_opts(path, PutPayload::from(info.encode()), options),
				)
				.await
				{
					tracing::warn!(error = %err, "releasing the writer lease failed; it expires on its own");
				}
			},
		}
	}
}

/// How long one request of a caller without a lease configuration may take.
const TOOL_REQUEST_LIMIT: Duration = Duration::from_secs(30);

fn lost_error(reason: String) -> object_store::Error {
	object_store::Error::Generic {
		store: "ldk-object-store",
		source: Box::new(LeaseLostError { reason }),
	}
}

fn is_condition_failure(err: &object_store::Error) -> bool {
	matches!(
		FailureKind::of(err),
		FailureKind::AlreadyExists | FailureKind::Precondition | FailureKind::NotFound
	)
}

/// Releases the lease when the last clone of the store is dropped.
#[derive(Debug)]
pub(crate) struct Guard {
	state: Arc<LeaseState>,
	runtime: Arc<StoreRuntime>,
}

impl Guard {
	pub(crate) fn new(state: Arc<LeaseState>, runtime: Arc<StoreRuntime>) -> Self {
		Guard { state, runtime }
	}
}

impl Drop for Guard {
	fn drop(&mut self) {
		// Bounded, so that dropping a store never wedges on an unreachable backend. Both run on
		// the store's runtime; this thread only waits, so it works inside any executor.
		let done = Box::pin(self.runtime.spawn(Arc::clone(&self.state).release()));
		// The timer is made inside the task: only the runtime has a clock to make it with.
		let limit = Box::pin(self.runtime.spawn(async {
			tokio::time::sleep(Duration::from_secs(5)).await;
		}));
		crate::runtime::block_on(futures::future::select(done, limit));
	}
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn lease_objects_round_trip_and_refuse_garbage() {
		let info = LeaseInfo::new_for_this_process().unwrap();
		assert_eq!(info.instance.len(), 32);
		assert!(info.instance.bytes().all(|b| b.is_ascii_hexdigit()));
		let mut info = info;
		info.generation = 7;
		info.expires_unix_ms = 1_700_000_000_123;
		assert_eq!(LeaseInfo::parse(&info.encode()), Some(info.clone()));
		// Fields of a later version are ignored; missing or malformed ones refuse the object.
		assert_eq!(LeaseInfo::parse(&format!("{}future=1\n", info.encode())), Some(info.clone()));
		assert_eq!(LeaseInfo::parse(&info.encode().replace("generation=7\n", "")), None);
		assert_eq!(LeaseInfo::parse(&info.encode().replace("=7", "=x")), None);
		assert_eq!(LeaseInfo::parse("manager bytes"), None);
		assert!(!info.is_released());
		assert!(info.to_string().contains("generation 7"));
	}

	#[test]
	fn only_the_lease_object_and_lock_file_are_skipped() {
		let root = Path::from("node");
		assert!(is_lease_path(&root, &lease_path(&root)));
		assert!(is_lease_path(&root, &root.clone().join(LOCK_FILE)));
		assert!(!is_lease_path(&root, &Path::from("node/manager")));
		assert!(!is_lease_path(&root, &Path::from("node/x/.ldk-object-store-lease")));
		assert!(!is_lease_path(&root, &Path::from("other/.ldk-object-store-lease")));
		assert!(is_lease_path(&Path::default(), &Path::from(LEASE_OBJECT)));
	}

	#[test]
	fn timings_that_cannot_work_are_refused() {
		assert!(LeaseConfig::default().validate().is_ok());
		let bad = LeaseConfig::default().with_safety_margin(Duration::from_secs(20));
		assert!(bad.validate().unwrap_err().to_string().contains("two thirds"));
		assert!(LeaseConfig::default().with_ttl(Duration::ZERO).validate().is_err());
	}
}
