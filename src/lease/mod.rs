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
use std::sync::Arc;
use std::time::Duration;

use object_store::path::{Path, PathPart};

use crate::error::ConfigError;

mod clock;
mod file;
mod guard;
mod object;
mod state;

pub(crate) use clock::Clock;
#[cfg(feature = "_test_hooks")]
pub use clock::TestClock;
pub(crate) use file::acquire_file;
pub use file::directory_is_locked;
pub(crate) use guard::Guard;
pub(crate) use object::acquire_object;
pub use object::{break_lease, read_lease, BreakOutcome};
pub(crate) use state::LeaseState;

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
	/// moment it sent the renewal (default 10 s). It is also the longest a request may stay in
	/// the network after this instance stopped waiting for it (see the module docs). Must be
	/// less than two thirds of `ttl`.
	pub safety_margin: Duration,
	/// How far apart the wall clocks of two instances may be (default 5 s): a successor waits
	/// this long past the written expiry, and watches an abandoned lease this much longer than
	/// its time to live.
	pub clock_skew: Duration,
	pub(crate) clock: Clock,
}

impl Default for LeaseConfig {
	fn default() -> Self {
		LeaseConfig {
			ttl: Duration::from_secs(30),
			safety_margin: Duration::from_secs(10),
			clock_skew: Duration::from_secs(5),
			clock: Clock::System,
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

	/// Test hook: reads the time from `clock` (tokio's time, skewed and suspended at will).
	#[cfg(feature = "_test_hooks")]
	pub fn with_test_clock(mut self, clock: Arc<TestClock>) -> Self {
		self.clock = Clock::Test(clock);
		self
	}

	pub(crate) fn validate(&self) -> Result<(), ConfigError> {
		if self.renew_every().is_zero() || self.validity() <= self.renew_every() {
			return Err(ConfigError::Lease(format!(
				"lease timing: the safety margin ({:?}) must be less than two thirds of the time \
				 to live ({:?}), so that a renewal is due, and can be retried, before the holder \
				 stops trusting its lease",
				self.safety_margin, self.ttl
			)));
		}
		Ok(())
	}

	/// How long the holder trusts its lease after sending a renewal that succeeded.
	pub(crate) fn validity(&self) -> Duration {
		self.ttl.saturating_sub(self.safety_margin)
	}

	fn renew_every(&self) -> Duration {
		self.ttl / 3
	}

	/// The limit of one renewal request: a quarter of the time between a renewal's due time and
	/// the end of the holder's trust, so that a stalled request is abandoned with time for three
	/// more (default 2.5 s).
	pub(crate) fn renewal_attempt_limit(&self) -> Duration {
		self.validity().saturating_sub(self.renew_every()) / 4
	}

	/// The pause before the next renewal attempt after one failed.
	fn renewal_retry_pause(&self) -> Duration {
		self.renewal_attempt_limit() / 5
	}

	/// How long a successor watches a lease that looks abandoned before it takes it over: the
	/// lease's time to live (the longest its holder can go on trusting it without renewing) plus
	/// the skew allowance. Measured on the successor's own clock, so no wall clock decides it.
	fn takeover_wait(&self, holder: &LeaseInfo) -> Duration {
		Duration::from_millis(holder.ttl_ms).max(self.ttl) + self.clock_skew
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
	/// released; `u64::MAX` for a `file://` store's OS lock, which has none.
	pub expires_unix_ms: u64,
	/// The holder's time to live in milliseconds (0 in objects written before it was recorded):
	/// a successor watches an abandoned lease at least this long.
	pub ttl_ms: u64,
}

impl LeaseInfo {
	/// Whether the holder released it (a successor may take it at once).
	pub fn is_released(&self) -> bool {
		self.expires_unix_ms == 0
	}

	/// Whether an operator broke it (`ldk-object-store lease --break --force`): no instance
	/// renews it; a successor takes it over once it expired.
	pub fn is_broken(&self) -> bool {
		self.host.starts_with(BROKEN_HOST_PREFIX)
	}

	/// "instance … on host … (pid …)".
	pub fn holder(&self) -> String {
		if self.is_broken() {
			return format!("a lease broken by an operator ({})", self.host);
		}
		format!("instance {} on host {} (pid {})", self.instance, self.host, self.pid)
	}

	/// The expiry in words, relative to this machine's wall clock.
	pub fn expiry_text(&self) -> String {
		expiry_text(self.expires_unix_ms, Clock::System.wall_ms())
	}

	/// The object's text.
	pub fn encode(&self) -> String {
		format!(
			"{HEADER}\ninstance={}\nhost={}\npid={}\ngeneration={}\nexpires_unix_ms={}\nttl_ms={}\n",
			self.instance,
			self.host,
			self.pid,
			self.generation,
			self.expires_unix_ms,
			self.ttl_ms
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
			ttl_ms: 0,
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
				// Optional: objects written before it was recorded lack it.
				"ttl_ms" => {
					info.ttl_ms = value.parse().ok()?;
					continue;
				},
				// Fields of later versions.
				_ => continue,
			}
			seen += 1;
		}
		(seen >= 5 && !info.instance.is_empty()).then_some(info)
	}

	pub(crate) fn new_for_this_process(ttl: Duration) -> Result<LeaseInfo, ConfigError> {
		Ok(LeaseInfo {
			instance: random_instance_id()?,
			host: host_name(),
			pid: std::process::id(),
			generation: 1,
			expires_unix_ms: 0,
			ttl_ms: ttl.as_millis() as u64,
		})
	}

	/// Whether `other` is this very lease (same instance and generation), at any version.
	fn same_lease(&self, other: &LeaseInfo) -> bool {
		self.instance == other.instance && self.generation == other.generation
	}
}

/// The expiry of a `file://` store's lock, which has none.
pub(crate) const NEVER: u64 = u64::MAX;

/// How a broken lease's host field starts.
const BROKEN_HOST_PREFIX: &str = "broken-by-operator-on-";

fn random_instance_id() -> Result<String, ConfigError> {
	use chacha20poly1305::aead::Generate;
	let bytes = <[u8; 16]>::try_generate().map_err(|_| {
		ConfigError::Lease("the operating system's random generator failed".to_owned())
	})?;
	Ok(hex_conservative::DisplayHex::to_lower_hex_string(&bytes[..]))
}

/// An expiry in words against the wall clock `now_ms`.
fn expiry_text(expires_unix_ms: u64, now_ms: u64) -> String {
	match expires_unix_ms {
		0 => return "released".to_owned(),
		NEVER => return "never: an OS lock, held while the store is open".to_owned(),
		_ => {},
	}
	let at = format!("unix time {}.{:03} s", expires_unix_ms / 1000, expires_unix_ms % 1000);
	if expires_unix_ms >= now_ms {
		format!(
			"{at} (in {:.1} s by this machine's clock)",
			(expires_unix_ms - now_ms) as f64 / 1000.0
		)
	} else {
		format!(
			"{at} ({:.1} s ago by this machine's clock)",
			(now_ms - expires_unix_ms) as f64 / 1000.0
		)
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

/// Why writes and removes are refused: this instance does not hold the lease (it lost it, or its
/// store was closed). Classified as [`FailureKind::LeaseLost`](crate::FailureKind::LeaseLost).
#[derive(Debug, thiserror::Error)]
#[error("{}", self.text())]
pub struct LeaseLostError {
	/// Why the lease was lost, or that the store was closed.
	pub reason: String,
	/// True when the store was closed (released its lease) rather than lost it.
	pub closed: bool,
}

impl LeaseLostError {
	fn text(&self) -> String {
		if self.closed {
			format!("this store was closed ({}); it writes and removes nothing more", self.reason)
		} else {
			format!(
				"this instance no longer holds the writer lease on the prefix ({}); refusing to \
				 write or remove anything: stop this node (another instance may be running)",
				self.reason
			)
		}
	}
}

/// The application's view of the store's writer lease ([`ObjectKvStore::writer_lease`]).
///
/// [`ObjectKvStore::writer_lease`]: crate::ObjectKvStore::writer_lease
#[derive(Debug, Clone)]
pub struct WriterLease {
	state: Arc<LeaseState>,
}

impl WriterLease {
	/// Whether this instance still holds the lease: not lost nor released, and (for an object
	/// lease) still within its validity.
	pub fn is_held(&self) -> bool {
		self.state.check().is_ok()
	}

	/// What the lease object says as this instance last wrote it.
	pub fn info(&self) -> LeaseInfo {
		self.state.info()
	}

	/// Why the lease was lost, once it was. `None` while it is held, and after the store was
	/// closed normally (a release is not a loss).
	pub fn lost_reason(&self) -> Option<String> {
		self.state.lost_reason()
	}

	/// Whether the store was closed and the lease released (or left to expire).
	pub fn is_closed(&self) -> bool {
		self.state.is_closed()
	}

	/// Resolves once this instance no longer holds the lease: lost ([`Self::lost_reason`] then
	/// says why: shut the node down, every write and remove fails from then on), or released
	/// because the store was closed. Works on any executor.
	pub async fn lost(&self) {
		self.state.ended().await
	}

	/// Test hook: freezes the lease's own task (renewals and the deadline watch), as if the
	/// process were stopped; `false` resumes it.
	#[cfg(feature = "_test_hooks")]
	pub fn freeze_for_testing(&self, frozen: bool) {
		self.state.freeze(frozen);
	}
}

/// How long one request of a caller without a lease configuration may take.
const TOOL_REQUEST_LIMIT: Duration = Duration::from_secs(30);

fn lost_error(reason: String) -> object_store::Error {
	object_store::Error::Generic {
		store: "ldk-object-store",
		source: Box::new(LeaseLostError { reason, closed: false }),
	}
}

fn closed_error(reason: &str) -> object_store::Error {
	object_store::Error::Generic {
		store: "ldk-object-store",
		source: Box::new(LeaseLostError { reason: reason.to_owned(), closed: true }),
	}
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn lease_objects_round_trip_and_refuse_garbage() {
		let info = LeaseInfo::new_for_this_process(Duration::from_secs(30)).unwrap();
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
		// Objects written before the time to live was recorded still parse.
		let old = info.encode().replace("ttl_ms=30000\n", "");
		assert_eq!(LeaseInfo::parse(&old).map(|old| old.ttl_ms), Some(0));
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
