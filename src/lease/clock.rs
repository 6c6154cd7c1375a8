//! The two clocks the lease reads: one for how long this instance may trust its lease, one for
//! the expiry it writes for others to read.
//!
//! Trust is measured on a clock that keeps counting while the host is suspended
//! (`CLOCK_BOOTTIME` on Linux). `Instant` does not: after a suspend of a minute it would still
//! trust a lease that a successor took over meanwhile. Elsewhere the monotonic clock is the best
//! there is, and the written expiry, checked on the wall clock as well, covers a suspend (a wall
//! clock does move on while the host sleeps).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(feature = "_test_hooks")]
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
#[cfg(feature = "_test_hooks")]
use std::sync::Arc;

/// Where the lease reads the time.
#[derive(Debug, Clone, Default)]
pub(crate) enum Clock {
	/// The host's boot-time clock and wall clock.
	#[default]
	System,
	/// A test's clock: tokio's (so paused time moves it), skewed and suspended at will.
	#[cfg(feature = "_test_hooks")]
	Test(Arc<TestClock>),
}

impl Clock {
	/// Time on the clock that trust is measured on; only differences mean anything.
	pub(crate) fn trust_now(&self) -> Duration {
		match self {
			Clock::System => boot_time(),
			#[cfg(feature = "_test_hooks")]
			Clock::Test(clock) => clock.trust_now(),
		}
	}

	/// The wall clock, in milliseconds since the Unix epoch.
	pub(crate) fn wall_ms(&self) -> u64 {
		match self {
			Clock::System => system_wall_ms(),
			#[cfg(feature = "_test_hooks")]
			Clock::Test(clock) => clock.wall_ms(),
		}
	}
}

impl PartialEq for Clock {
	fn eq(&self, other: &Self) -> bool {
		match (self, other) {
			(Clock::System, Clock::System) => true,
			#[cfg(feature = "_test_hooks")]
			(Clock::Test(a), Clock::Test(b)) => Arc::ptr_eq(a, b),
			#[cfg(feature = "_test_hooks")]
			_ => false,
		}
	}
}

impl Eq for Clock {}

fn system_wall_ms() -> u64 {
	SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// `CLOCK_BOOTTIME`: monotonic, and it counts the time the host spent suspended.
#[cfg(target_os = "linux")]
fn boot_time() -> Duration {
	let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
	Duration::new(now.tv_sec.max(0) as u64, now.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// The monotonic clock where no boot-time clock is at hand; the wall-clock check of the written
/// expiry covers a suspend there.
#[cfg(not(target_os = "linux"))]
fn boot_time() -> Duration {
	use std::sync::OnceLock;
	use std::time::Instant;
	static START: OnceLock<Instant> = OnceLock::new();
	START.get_or_init(Instant::now).elapsed()
}

/// Test hook: a clock on tokio's time (so paused time drives it), with a wall-clock offset and
/// suspends (the boot-time and wall clocks jump, tokio's timers do not).
#[cfg(feature = "_test_hooks")]
#[derive(Debug)]
pub struct TestClock {
	start: tokio::time::Instant,
	wall_offset_ms: AtomicI64,
	suspended_ms: AtomicU64,
}

#[cfg(feature = "_test_hooks")]
impl TestClock {
	/// A clock whose wall time runs `wall_offset_ms` ahead of the host's (behind, if negative),
	/// where the host's advances with tokio's time: clocks made at different moments of one
	/// paused runtime agree. Make it inside the runtime whose time it should follow.
	pub fn new(wall_offset_ms: i64) -> Arc<Self> {
		Arc::new(TestClock {
			start: tokio::time::Instant::now(),
			wall_offset_ms: AtomicI64::new(wall_offset_ms),
			suspended_ms: AtomicU64::new(0),
		})
	}

	/// As if the host slept for `duration`: the boot-time and wall clocks move on, timers do not.
	pub fn suspend(&self, duration: Duration) {
		self.suspended_ms.fetch_add(duration.as_millis() as u64, Ordering::SeqCst);
	}

	fn trust_now(&self) -> Duration {
		self.start.elapsed() + Duration::from_millis(self.suspended_ms.load(Ordering::SeqCst))
	}

	fn wall_ms(&self) -> u64 {
		use std::sync::OnceLock;
		// One origin for the process: the host's wall clock at a moment of std's clock, which
		// tokio's (paused or not) is measured against.
		static ORIGIN: OnceLock<(std::time::Instant, u64)> = OnceLock::new();
		let (origin, origin_wall) =
			*ORIGIN.get_or_init(|| (std::time::Instant::now(), system_wall_ms()));
		let now = tokio::time::Instant::now().into_std();
		let host = origin_wall as i64 + now.saturating_duration_since(origin).as_millis() as i64
			- origin.saturating_duration_since(now).as_millis() as i64;
		let suspended = self.suspended_ms.load(Ordering::SeqCst) as i64;
		let offset = self.wall_offset_ms.load(Ordering::SeqCst);
		host.saturating_add(suspended).saturating_add(offset).max(0) as u64
	}
}
