//! One writer per prefix: a lease that a second instance of a node cannot get past, and that
//! ends every request of an instance that lost it before a successor can start.
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
//! ttl_ms=<the holder's time to live>
//! ```
//!
//! It is created with a create-only put (`PutMode::Create`, `If-None-Match: *`) and every later
//! change is a put on the condition that it is still at the version this instance last wrote
//! (`PutMode::Update`, `If-Match` on its ETag), so of several instances starting or taking over at
//! once exactly one succeeds.
//!
//! # Taking it
//!
//! - **No lease object:** created. **Released** (by a clean shutdown, or by `ldk-object-store
//!   lease --break`): taken over at once, one generation up.
//! - **Held, and its expiry plus the clock skew allowance not past** by this instance's wall
//!   clock: refused with [`ConfigError::LeaseHeld`], which names the holder (instance, host,
//!   pid), its generation, and when a new instance may take it over.
//! - **Held, and its expiry past:** the holder looks dead, but a wall clock that runs fast
//!   would say the same of a live lease. So the lease is watched for its time to live plus the
//!   skew allowance (35 s by default) on this instance's own clock, and taken over only if it did
//!   not change meanwhile; if the holder renewed it, the start is refused. A live holder renews
//!   every third of its time to live, so it is always seen.
//!
//! # Holding it (defaults, see [`LeaseConfig`])
//!
//! - **Time to live: 30 s.** Each renewal writes an expiry 30 s after the holder's wall clock.
//! - **Renewal every 10 s.** One renewal request may take 2.5 s (a quarter of the time between a
//!   renewal's due time and the end of trust), and a failed one is retried after 0.5 s: one
//!   stalled request never costs the lease.
//! - **Trust: 20 s after a renewal was sent** (time to live minus the 10 s safety margin),
//!   measured on a clock that counts the time the host was suspended (`CLOCK_BOOTTIME` on Linux),
//!   and never past the written expiry minus the margin on the wall clock either. A host that
//!   resumes from a suspend, or a process that resumes from a pause, sees at once that its trust
//!   ran out.
//! - **Every write and remove request runs under the lease**: it is refused before it is sent
//!   unless the lease is trusted, and if it is still in flight when trust ends (or the lease is
//!   found in another instance's hands) it is abandoned there and then, whatever the attempt
//!   timeout, and fails as [`FailureKind::LeaseLost`]. Writes and removes go through a client
//!   that does not re-send requests by itself (for stores built from a URL; the store's
//!   [`RetryPolicy`](crate::RetryPolicy) repeats a failed attempt as a new one, under the lease
//!   too). So no request of an instance is outstanding past the end of its trust.
//! - **Once lost, lost for good**: every write and remove fails with [`FailureKind::LeaseLost`]
//!   (not retried), sync-mode persistence fails (LDK stops), async-mode persistence reports
//!   nothing complete, and [`WriterLease::lost`] resolves. [`WriterLease::lost_reason`] says
//!   what happened: a takeover (by whom), renewals that got no answer or failed (and whether the
//!   lease object still names this instance, i.e. the renewals landed with their answers lost), a
//!   suspend. A node that lost its lease must be restarted.
//!
//! # Letting go
//!
//! [`ObjectKvStore::close`] (also run when the last clone is dropped, on a thread of its own,
//! never on a store thread) refuses new writes and removes, waits for those in flight, and, if
//! one of them was abandoned without an answer, for the safety margin after it (it may still
//! land); then it releases the lease, and the next instance starts at once. If the requests
//! cannot be drained, the lease is not released but left to expire. A closed store is not a lost
//! one: [`WriterLease::lost_reason`] stays `None`, and nothing is logged as an error. After a
//! crash nobody releases the lease: the next instance starts once the expiry (plus the skew
//! allowance) has passed and it watched the lease unchanged (at most 30 + 5 + 35 s).
//!
//! # What it guarantees, and on what assumptions
//!
//! No request of an instance lands after a successor took the lease, provided that:
//!
//! 1. **A request is not applied later than the safety margin after its sender stopped waiting
//!    for it** (a timeout, the end of trust, a cancelled future): network and server queues are
//!    shorter than 10 s. Every request the holder waits for ends, at the latest, when its trust
//!    ends, which is at least the margin before a successor can take over; a release waits the
//!    margin after an abandoned request.
//! 2. **The clocks of two instances run at the same rate** within the skew allowance over a
//!    lease's life (5 s in 35 s; real clocks drift by parts per million). Their wall clocks may
//!    be far apart: a successor never takes a lease over on the word of a wall clock alone.
//! 3. **The backend honours conditional writes** atomically: S3 and S3-compatible servers that
//!    implement `If-None-Match` and `If-Match` (AWS, MinIO, LocalStack, SeaweedFS), Azure Blob
//!    Storage, Google Cloud Storage, memory. A backend that cannot replace an object
//!    conditionally fails [`StoreBuilder::build`] with advice, unless the lease is turned off by
//!    name ([`StoreBuilder::without_writer_lease`]); servers that silently ignore the
//!    conditional headers cannot be detected by the store: `ldk-object-store doctor` checks them.
//! 4. **A backend built in code** ([`StoreBuilder::from_store`]) does not re-send a request by
//!    itself after the store stopped waiting for it: build its client with retries off
//!    (`object_store::RetryConfig { max_retries: 0, .. }`), or the margin must cover its re-sends.
//!
//! Beyond assumption 1 (a request held by a proxy for minutes), per-key fencing, on by default
//! where the lease is an object ([`StoreBuilder::with_fencing`]), makes the server refuse a late
//! write of an object the successor has written since. A late write of an object the successor
//! only read, and a late remove (`object_store` 0.14 has no conditional delete), are not refused.
//!
//! # `file://`
//!
//! An exclusive OS lock (`flock`) on the store's directory (below its root prefix) gives the same
//! guarantee on one machine: held while the store (or a request of it) runs and released by the
//! OS when the process ends, crash included. It has no expiry and nothing to break. Nothing is
//! added to the directory, so LDK's own `FilesystemStore` still reads it. (Where a directory
//! cannot be locked, outside Unix, the lock is on a file `.ldk-object-store-lock#0` in it, a name
//! `object_store`'s local store leaves out of listings.) A second store on the same directory is
//! refused with [`ConfigError::DirectoryLocked`], which says whether it is a store of this
//! process or another process.
//!
//! [`StoreBuilder::build`]: crate::StoreBuilder::build
//! [`StoreBuilder::from_store`]: crate::StoreBuilder::from_store
//! [`StoreBuilder::with_fencing`]: crate::StoreBuilder::with_fencing
//! [`StoreBuilder::without_writer_lease`]: crate::StoreBuilder::without_writer_lease
//! [`ObjectKvStore::close`]: crate::ObjectKvStore::close
//! [`ConfigError::LeaseHeld`]: crate::ConfigError::LeaseHeld
//! [`ConfigError::DirectoryLocked`]: crate::ConfigError::DirectoryLocked
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
pub(crate) use guard::{close_all, Guard};
pub(crate) use object::acquire_object;
pub use object::{break_lease, read_lease, BreakOutcome};
pub(crate) use state::{Abandoned, LeaseState};

/// The name of the lease object below the root prefix.
pub const LEASE_OBJECT: &str = ".ldk-object-store-lease";
/// The name of the lock file of a `file://` store on systems where a directory cannot be locked
/// (on Unix the directory itself is locked), below its root prefix.
pub const LOCK_FILE: &str = ".ldk-object-store-lock#0";
/// The file a `file://` store with a replica keeps in its directory while it runs, below its
/// root prefix: found at a start, it says the store before ended without draining (a crash).
pub const RUNNING_MARK: &str = ".ldk-object-store-running";

const HEADER: &str = "ldk-object-store writer lease v1";

/// Whether `path` is the lease object, lock file, replica record or a replica journal entry of a
/// store rooted at `root`; listings skip exactly these.
pub(crate) fn is_lease_path(root: &Path, path: &Path) -> bool {
	let mut parts = match path.prefix_match(root) {
		Some(parts) => parts,
		None => return false,
	};
	match (parts.next(), parts.next()) {
		(Some(name), None) => {
			name == PathPart::from(LEASE_OBJECT)
				|| name == PathPart::from(LOCK_FILE)
				|| name == PathPart::from(RUNNING_MARK)
				|| name == PathPart::from(crate::replica::REPLICA_RECORD)
		},
		(Some(folder), Some(_)) => folder == PathPart::from(crate::replica::JOURNAL_FOLDER),
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
	fn only_the_stores_own_files_are_skipped() {
		let root = Path::from("node");
		assert!(is_lease_path(&root, &lease_path(&root)));
		assert!(is_lease_path(&root, &root.clone().join(LOCK_FILE)));
		assert!(is_lease_path(&root, &root.clone().join(RUNNING_MARK)));
		assert!(is_lease_path(&root, &root.clone().join(crate::replica::REPLICA_RECORD)));
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
