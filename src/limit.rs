//! Adaptive concurrency: a bound on requests in flight that finds the server's rate instead of
//! holding a fixed number.
//!
//! [`Limiter`] hands out places for requests, at most its current limit at once. Fixed, the
//! limit is the cap for good (a plain semaphore). Adaptive, an [`Aimd`] controller moves it
//! between a floor and the cap from what the answers say:
//!
//! - **Growth.** Answers are gathered in windows of about one limit's worth (at least
//!   [`MIN_WINDOW`]). A window whose median latency stays within [`TOLERANCE`] × the base
//!   latency (the lowest window median, see [`BASE_WINDOWS`]) and in which the limit was used
//!   (at least half of it in flight at once) raises the limit: doubling per window until the
//!   first decrease (slow start, so that a startup reaches a fast server's rate in a few round
//!   trips), then by √limit per window (additive increase).
//! - **Throttling.** An answer that says the server is overloaded (`503 SlowDown`, another 5xx, a
//!   timeout, a dropped connection: see [`Signal::of`]) cuts the limit at once, by half, or to
//!   the share of the window's answers that were served where that is less (a storm). Only a
//!   request sent after the latest decrease can cause another one, so a burst of throttled
//!   answers to requests that were all sent at the old limit counts once (TCP's rule of one
//!   decrease per window).
//! - **Latency growth.** A window whose median exceeds [`TOLERANCE`] × the base cuts the limit by
//!   the gradient (`TOLERANCE × base ÷ median`, at most half): requests queue somewhere (a
//!   connection pool, the server), and more of them in flight only adds to the queue. Only
//!   requests sent after the latest decrease count, so one queue is not counted twice.
//!
//! A request's latency is how long it waited on the server (see [`answer_time`]): up to the
//! wake-up that ended the wait, not to when this process got round to it. A process busy with
//! other work (serializing updates, decoding monitors) delays its tasks, and taking that delay
//! for the server's would cut the limit while the server waits, again and again, since fewer
//! requests do not make the process less busy.
//!
//! Why hand-written: the crates that do this (`congestion-limiter`, `tower-acc`,
//! `rate_limiter_aimd`) are each one author's 0.1 release, and each wraps a request in its own
//! way (a `tower` service, `reqwest` middleware, `async-trait` futures behind an async mutex);
//! here a place must be taken inside the store's retry loop, beside the store's own bound, and
//! each attempt's outcome classified by this crate's failure kinds. The controller is plain
//! logic below, tested without a clock.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::FailureKind;

/// The lowest limit an adaptive limiter goes down to (or the cap, if lower): a few requests in
/// flight always, so a limit cut by a spell of throttling still sees answers to grow from.
pub(crate) const FLOOR: usize = 8;
/// Where an adaptive limit starts (or the cap, if lower), in slow start.
pub(crate) const INITIAL: usize = 32;
/// Latency up to this multiple of the base counts as flat.
pub(crate) const TOLERANCE: f64 = 2.0;
/// The fewest answers a window gathers before it is judged.
pub(crate) const MIN_WINDOW: usize = 16;
/// A window median within this multiple of the base confirms it.
pub(crate) const CONFIRM: f64 = 1.25;
/// Windows after which an unconfirmed base is measured afresh, with one window at the floor (as
/// TCP BBR probes its minimum round trip): a queue that never drains would otherwise hide the
/// base for good, and a slower network path would hold the limit at the floor.
pub(crate) const BASE_WINDOWS: usize = 64;

/// What one request's answer says about the server's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
	/// The server answered (the object, or a fact about it such as "not found") after this
	/// long.
	Answered(Duration),
	/// The server is overloaded, or the path to it: throttled (`503 SlowDown`), another server
	/// error, a timeout, a dropped or refused connection.
	Overloaded,
	/// Nothing about the load (no request sent, or an answer about the credentials).
	Nothing,
}

impl Signal {
	/// The signal of one attempt's outcome, `elapsed` after it was sent.
	pub(crate) fn of<T>(outcome: &Result<T, object_store::Error>, elapsed: Duration) -> Signal {
		let Err(error) = outcome else { return Signal::Answered(elapsed) };
		match FailureKind::of(error) {
			FailureKind::NotFound
			| FailureKind::AlreadyExists
			| FailureKind::Precondition
			| FailureKind::Fenced => Signal::Answered(elapsed),
			FailureKind::Backend | FailureKind::TimedOut | FailureKind::ConnectFailed => {
				Signal::Overloaded
			},
			_ => Signal::Nothing,
		}
	}
}

/// Runs `request`, sent at `sent`, and times how long it waited on the server: its longest
/// wait at a stretch, from the moment it was left waiting (pending) to the wake-up that ended
/// the wait (an answer arrived), not to when this task was polled again, which a busy runtime
/// delays. The longest wait rather than their sum, because one attempt can be several
/// requests one after another (a fenced write of an object not seen yet is a HEAD and a PUT):
/// each is a round trip, and their sum would read as latency growth. A wait for a place in a
/// client's connection pool counts, as the queue it is. A request ready without waiting is
/// timed to its end.
pub(crate) async fn answer_time<F: Future>(sent: Instant, request: F) -> (F::Output, Duration) {
	#[derive(Default)]
	struct Waits {
		/// Since when the request has been waiting, if it is.
		since: Option<Instant>,
		longest: Option<Duration>,
	}
	/// Ends a wait when woken, then wakes the task.
	#[derive(Default)]
	struct Stamp {
		waits: Mutex<Waits>,
		task: Mutex<Option<Waker>>,
	}
	impl Stamp {
		fn waits(&self) -> MutexGuard<'_, Waits> {
			self.waits.lock().unwrap_or_else(|p| p.into_inner())
		}
	}
	impl Wake for Stamp {
		fn wake(self: Arc<Self>) {
			self.wake_by_ref();
		}
		fn wake_by_ref(self: &Arc<Self>) {
			{
				let mut waits = self.waits();
				if let Some(since) = waits.since.take() {
					let waited = since.elapsed();
					waits.longest = Some(waits.longest.map_or(waited, |l| l.max(waited)));
				}
			}
			if let Some(task) = &*self.task.lock().unwrap_or_else(|p| p.into_inner()) {
				task.wake_by_ref();
			}
		}
	}
	let stamp = Arc::new(Stamp::default());
	let waker = Waker::from(Arc::clone(&stamp));
	let mut request = pin!(request);
	let output = std::future::poll_fn(|cx| {
		{
			let mut task = stamp.task.lock().unwrap_or_else(|p| p.into_inner());
			if !task.as_ref().is_some_and(|task| task.will_wake(cx.waker())) {
				*task = Some(cx.waker().clone());
			}
		}
		let polled = request.as_mut().poll(&mut Context::from_waker(&waker));
		if polled.is_pending() {
			// A wake-up during the poll itself ended no wait: the next one will.
			stamp.waits().since = Some(Instant::now());
		}
		polled
	})
	.await;
	let longest = stamp.waits().longest;
	(output, longest.unwrap_or_else(|| sent.elapsed()))
}

/// The answers of the current window.
#[derive(Debug, Clone, Default)]
struct Window {
	/// Latencies of answers to requests sent since the latest decrease.
	latencies: Vec<Duration>,
	/// Answers served, and answers that said "overloaded", whenever their request was sent.
	served: usize,
	overloaded: usize,
	/// The most requests in flight at once while the window was open.
	busiest: usize,
}

/// The controller: additive increase (after a slow start), multiplicative decrease on
/// throttling and on latency growth (see the module docs). Plain logic, no clock.
#[derive(Debug, Clone)]
pub(crate) struct Aimd {
	floor: usize,
	cap: usize,
	limit: f64,
	slow_start: bool,
	/// Bumped at each decrease; each request carries the epoch it was sent in.
	epoch: u64,
	window: Window,
	/// The base latency: the lowest window median seen, and the windows since a median
	/// within [`CONFIRM`] × it last confirmed it.
	base: Option<Duration>,
	base_age: usize,
	/// While the base is being measured afresh: the limit to go back to.
	probing: Option<f64>,
}

impl Aimd {
	/// A controller between [`FLOOR`] and `cap`, starting at [`INITIAL`] (both at most `cap`).
	pub(crate) fn new(cap: usize) -> Aimd {
		let cap = cap.max(1);
		Aimd {
			floor: FLOOR.min(cap),
			cap,
			limit: INITIAL.min(cap) as f64,
			slow_start: true,
			epoch: 0,
			window: Window::default(),
			base: None,
			base_age: 0,
			probing: None,
		}
	}

	/// The current limit, between the floor and the cap.
	pub(crate) fn limit(&self) -> usize {
		(self.limit as usize).clamp(self.floor, self.cap)
	}

	/// A request is sent with `in_flight` requests in flight (itself included); returns the
	/// epoch to hand back with its answer.
	pub(crate) fn sent(&mut self, in_flight: usize) -> u64 {
		self.window.busiest = self.window.busiest.max(in_flight);
		self.epoch
	}

	/// The answer to a request sent in `epoch`.
	pub(crate) fn answered(&mut self, epoch: u64, signal: Signal) {
		match signal {
			Signal::Nothing => {},
			Signal::Overloaded => {
				self.window.overloaded += 1;
				if epoch == self.epoch {
					// The served share of the window's answers, once there are enough of them
					// to tell; half until then.
					let answers = self.window.served + self.window.overloaded;
					let served = if answers >= MIN_WINDOW {
						self.window.served as f64 / answers as f64
					} else {
						0.5
					};
					self.decrease(served.min(0.5));
				}
			},
			Signal::Answered(latency) => {
				self.window.served += 1;
				if epoch == self.epoch {
					self.window.latencies.push(latency);
					if self.window.latencies.len() >= self.limit().max(MIN_WINDOW) {
						self.judge_window();
					}
				}
			},
		}
	}

	fn judge_window(&mut self) {
		let mut latencies = std::mem::take(&mut self.window.latencies);
		latencies.sort_unstable();
		let median = latencies[latencies.len() / 2];
		// The next window starts empty (keeping the allocation).
		latencies.clear();
		let busiest = self.window.busiest;
		self.window = Window { latencies, ..Window::default() };
		if let Some(limit) = self.probing.take() {
			// A window at the floor: its median is the base now, whatever it was.
			(self.base, self.base_age, self.limit) = (Some(median), 0, limit);
			return;
		}
		let base = *self.base.get_or_insert(median);
		if median <= base.mul_f64(CONFIRM) {
			self.base = Some(base.min(median));
			self.base_age = 0;
		} else {
			self.base_age += 1;
			if self.base_age >= BASE_WINDOWS {
				// Unconfirmed for long: either requests have queued all along, hiding the
				// base, or the path got slower. One window at the floor tells which.
				// Only requests sent at the floor count (a new epoch).
				self.probing = Some(self.limit);
				self.limit = self.floor as f64;
				self.epoch += 1;
				return;
			}
		}
		let growth = median.as_secs_f64() / base.max(Duration::from_micros(1)).as_secs_f64();
		if growth > TOLERANCE {
			self.decrease((TOLERANCE / growth).max(0.5));
			return;
		}
		let used = busiest * 2 >= self.limit();
		if used {
			let step = if self.slow_start { self.limit } else { self.limit.sqrt().max(1.0) };
			self.limit = (self.limit + step).min(self.cap as f64);
		}
	}

	fn decrease(&mut self, factor: f64) {
		if let Some(limit) = self.probing.take() {
			// Throttled while measuring the base: go back from the limit before the probe.
			self.limit = limit;
		}
		self.limit = (self.limit * factor).max(self.floor as f64);
		self.slow_start = false;
		self.epoch += 1;
		self.window = Window::default();
	}
}

/// What the places stand for, under the limiter's lock.
#[derive(Debug)]
struct State {
	/// `None`: a fixed limit.
	control: Option<Aimd>,
	/// The limit the semaphore's permits stand for now (held, free, and owed).
	limit: usize,
	/// Permits to forget as they come back, where the limit fell below the permits held.
	debt: usize,
	in_flight: usize,
}

/// A bound on requests in flight, fixed or adaptive (see the module docs).
#[derive(Debug)]
pub(crate) struct Limiter {
	permits: Semaphore,
	adaptive: bool,
	state: Mutex<State>,
}

impl Limiter {
	/// At most `cap` requests at once; with `adaptive`, at most the controller's limit.
	pub(crate) fn new(cap: usize, adaptive: bool) -> Limiter {
		let cap = cap.clamp(1, Semaphore::MAX_PERMITS);
		let control = adaptive.then(|| Aimd::new(cap));
		let limit = control.as_ref().map_or(cap, Aimd::limit);
		Limiter {
			permits: Semaphore::new(limit),
			adaptive,
			state: Mutex::new(State { control, limit, debt: 0, in_flight: 0 }),
		}
	}

	fn state(&self) -> MutexGuard<'_, State> {
		// Every update leaves the state consistent: take it even if a holder panicked.
		self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
	}

	/// The current limit.
	#[cfg(test)]
	pub(crate) fn limit(&self) -> usize {
		self.state().limit
	}

	/// A place, once one is free (in turn: the semaphore is fair).
	pub(crate) async fn acquire(&self) -> Option<Slot<'_>> {
		// The semaphore is never closed.
		let permit = self.permits.acquire().await.ok()?;
		Some(self.slot(permit))
	}

	/// A place, if one is free now.
	pub(crate) fn try_acquire(&self) -> Option<Slot<'_>> {
		let permit = self.permits.try_acquire().ok()?;
		Some(self.slot(permit))
	}

	fn slot<'a>(&'a self, permit: SemaphorePermit<'a>) -> Slot<'a> {
		let mut state = self.state();
		state.in_flight += 1;
		let in_flight = state.in_flight;
		let epoch = state.control.as_mut().map_or(0, |control| control.sent(in_flight));
		Slot { limiter: self, permit: Some(permit), epoch, signal: Signal::Nothing }
	}

	/// Gives a place back, with what its request's answer said.
	fn release(&self, permit: SemaphorePermit<'_>, epoch: u64, signal: Signal) {
		let mut state = self.state();
		state.in_flight = state.in_flight.saturating_sub(1);
		let Some(control) = state.control.as_mut() else {
			drop(permit);
			return;
		};
		control.answered(epoch, signal);
		let target = control.limit();
		if state.debt > 0 {
			permit.forget();
			state.debt -= 1;
		} else {
			drop(permit);
		}
		self.move_to(&mut state, target);
	}

	/// Makes the permits stand for `target`: new ones added (or debt forgiven) to grow, free
	/// ones taken away and held ones owed to shrink.
	fn move_to(&self, state: &mut State, target: usize) {
		if target > state.limit {
			let up = target - state.limit;
			let forgiven = up.min(state.debt);
			state.debt -= forgiven;
			self.permits.add_permits(up - forgiven);
		} else if target < state.limit {
			let down = state.limit - target;
			let free = self.permits.available_permits().min(down);
			let taken = match u32::try_from(free).ok().map(|n| self.permits.try_acquire_many(n)) {
				Some(Ok(permits)) => {
					permits.forget();
					free
				},
				_ => 0,
			};
			state.debt += down - taken;
		}
		if target != state.limit {
			tracing::trace!(limit = target, in_flight = state.in_flight, "adaptive concurrency");
		}
		state.limit = target;
	}
}

/// A place for one request; hand back what its answer said with [`Slot::finish`] (dropped
/// without it, it says nothing).
#[derive(Debug)]
pub(crate) struct Slot<'a> {
	limiter: &'a Limiter,
	permit: Option<SemaphorePermit<'a>>,
	epoch: u64,
	signal: Signal,
}

impl Slot<'_> {
	/// Whether the answer is used (the limit is adaptive): if not, timing it is wasted work.
	pub(crate) fn is_adaptive(&self) -> bool {
		self.limiter.adaptive
	}

	/// Gives the place back with its request's answer.
	pub(crate) fn finish(mut self, signal: Signal) {
		self.signal = signal;
	}
}

impl Drop for Slot<'_> {
	fn drop(&mut self) {
		if let Some(permit) = self.permit.take() {
			self.limiter.release(permit, self.epoch, self.signal);
		}
	}
}

#[cfg(test)]
mod tests {
	use super::*;

	const RTT: Duration = Duration::from_millis(20);

	/// Runs `rounds` round trips of `control` with every place used, each answer being
	/// `signal(in_flight)`; returns the limit after each round.
	fn rounds(control: &mut Aimd, rounds: usize, signal: impl Fn(usize) -> Signal) -> Vec<usize> {
		let mut limits = Vec::new();
		for _ in 0..rounds {
			let n = control.limit();
			let epochs: Vec<u64> = (1..=n).map(|i| control.sent(i)).collect();
			for epoch in epochs {
				control.answered(epoch, signal(n));
			}
			limits.push(control.limit());
		}
		limits
	}

	#[test]
	fn grows_on_flat_latency_up_to_the_cap() {
		let mut control = Aimd::new(1024);
		assert_eq!(control.limit(), INITIAL);
		let limits = rounds(&mut control, 12, |_| Signal::Answered(RTT));
		// Slow start doubles per round trip, never past the cap.
		assert_eq!(&limits[..6], &[64, 128, 256, 512, 1024, 1024]);
		assert!(limits.iter().all(|l| *l <= 1024));
	}

	#[test]
	fn halves_on_a_throttle_once_per_window() {
		let mut control = Aimd::new(1024);
		rounds(&mut control, 3, |_| Signal::Answered(RTT));
		assert_eq!(control.limit(), 256);
		// Many requests in flight, sent at the same limit; the first throttled answer halves
		// the limit, the others (sent before the decrease) do not cut it again.
		let epochs: Vec<u64> = (1..=256).map(|i| control.sent(i)).collect();
		for epoch in &epochs[..100] {
			control.answered(*epoch, Signal::Answered(RTT));
		}
		control.answered(epochs[100], Signal::Overloaded);
		assert_eq!(control.limit(), 128);
		for epoch in &epochs[101..] {
			control.answered(*epoch, Signal::Overloaded);
		}
		assert_eq!(control.limit(), 128);
		// After the decrease, growth is additive: √limit per window.
		rounds(&mut control, 1, |_| Signal::Answered(RTT));
		assert_eq!(control.limit(), 139);
	}

	#[test]
	fn a_storm_cuts_to_the_served_share() {
		let mut control = Aimd::new(1024);
		rounds(&mut control, 5, |_| Signal::Answered(RTT));
		assert_eq!(control.limit(), 1024);
		// The server serves about 100 of 1,000: the decrease after the storm's answers follows
		// the served share, not only halving.
		let first: Vec<u64> = (1..=1024).map(|i| control.sent(i)).collect();
		control.answered(first[0], Signal::Overloaded);
		assert_eq!(control.limit(), 512);
		for (i, epoch) in first[1..].iter().enumerate() {
			let signal = if i % 10 == 0 { Signal::Answered(RTT) } else { Signal::Overloaded };
			control.answered(*epoch, signal);
		}
		let next = control.sent(1);
		control.answered(next, Signal::Overloaded);
		assert!(control.limit() <= 60, "{}", control.limit());
	}

	#[test]
	fn never_below_the_floor_nor_above_the_cap() {
		let mut control = Aimd::new(100);
		for _ in 0..50 {
			let epoch = control.sent(1);
			control.answered(epoch, Signal::Overloaded);
			assert!(control.limit() >= FLOOR);
		}
		assert_eq!(control.limit(), FLOOR);
		let limits = rounds(&mut control, 200, |_| Signal::Answered(RTT));
		assert!(limits.iter().all(|l| (FLOOR..=100).contains(l)), "{limits:?}");
		assert_eq!(control.limit(), 100);
		// A cap below the floor and the start is the limit itself.
		let mut small = Aimd::new(3);
		assert_eq!(small.limit(), 3);
		rounds(&mut small, 10, |_| Signal::Answered(RTT));
		assert_eq!(small.limit(), 3);
	}

	#[test]
	fn backs_off_when_latency_grows() {
		// A server with 50 connections: past them, requests queue and latency grows with the
		// requests in flight.
		let mut control = Aimd::new(1024);
		let queued = |n: usize| Signal::Answered(RTT.mul_f64((n as f64 / 50.0).max(1.0)));
		let limits = rounds(&mut control, 300, queued);
		// It settles around where latency is TOLERANCE × the base: 100 in flight, not the cap,
		// and now and then measures the base afresh at the floor.
		let mut last = limits[50..].to_vec();
		assert!(last.iter().all(|l| *l <= 160), "{limits:?}");
		assert!(last.iter().filter(|l| **l == FLOOR).count() * 20 <= last.len(), "{limits:?}");
		last.sort_unstable();
		assert!((80..=130).contains(&last[last.len() / 2]), "{limits:?}");
	}

	#[test]
	fn unused_room_does_not_grow() {
		let mut control = Aimd::new(1024);
		for _ in 0..1000 {
			let epoch = control.sent(1);
			control.answered(epoch, Signal::Answered(RTT));
		}
		assert_eq!(control.limit(), INITIAL);
	}

	#[test]
	fn answers_that_say_nothing_change_nothing() {
		let mut control = Aimd::new(1024);
		for _ in 0..100 {
			let epoch = control.sent(INITIAL);
			control.answered(epoch, Signal::Nothing);
		}
		assert_eq!(control.limit(), INITIAL);
	}

	/// The answer arrives after 10 ms while the runtime's only thread is busy for 300 ms: the
	/// request is timed to its answer, not to when the busy thread got back to it (which would
	/// read as latency growth and cut the limit).
	#[tokio::test(flavor = "current_thread")]
	async fn a_request_is_timed_to_its_answer_not_to_a_busy_runtime() {
		let (answer, answered) = tokio::sync::oneshot::channel::<()>();
		let sent = Instant::now();
		let timed = tokio::spawn(answer_time(sent, answered));
		// The request waits for its answer.
		tokio::task::yield_now().await;
		std::thread::spawn(move || {
			std::thread::sleep(Duration::from_millis(10));
			let _ = answer.send(());
		});
		// Busy: the runtime cannot poll the request until this returns.
		std::thread::sleep(Duration::from_millis(300));
		let (outcome, latency) = timed.await.expect("task");
		assert!(outcome.is_ok());
		assert!(sent.elapsed() >= Duration::from_millis(300));
		assert!(
			latency >= Duration::from_millis(10) && latency < Duration::from_millis(200),
			"{latency:?}"
		);
		// Ready at once: timed to its end.
		let (_, latency) = answer_time(Instant::now(), async { 1 }).await;
		assert!(latency < Duration::from_millis(200), "{latency:?}");
	}

	/// Two 100 ms requests one after another (a HEAD, then a PUT) are one round trip's latency,
	/// not two.
	#[tokio::test(flavor = "current_thread")]
	async fn requests_one_after_another_are_each_a_round_trip() {
		let sent = Instant::now();
		let ((), latency) = answer_time(sent, async {
			tokio::time::sleep(Duration::from_millis(100)).await;
			tokio::time::sleep(Duration::from_millis(100)).await;
		})
		.await;
		assert!(sent.elapsed() >= Duration::from_millis(200));
		assert!(
			latency >= Duration::from_millis(99) && latency < Duration::from_millis(170),
			"{latency:?}"
		);
	}

	#[test]
	fn classifies_outcomes() {
		let ok: Result<(), object_store::Error> = Ok(());
		assert_eq!(Signal::of(&ok, RTT), Signal::Answered(RTT));
		let absent: Result<(), _> =
			Err(object_store::Error::NotFound { path: "k".into(), source: "404".into() });
		assert_eq!(Signal::of(&absent, RTT), Signal::Answered(RTT));
		let slow_down: Result<(), _> = Err(object_store::Error::Generic {
			store: "S3",
			source: "Server returned non-2xx status code: 503 Service Unavailable: \
			         <Error><Code>SlowDown</Code></Error>"
				.into(),
		});
		assert_eq!(Signal::of(&slow_down, RTT), Signal::Overloaded);
		let denied: Result<(), _> =
			Err(object_store::Error::PermissionDenied { path: "k".into(), source: "403".into() });
		assert_eq!(Signal::of(&denied, RTT), Signal::Nothing);
	}

	#[tokio::test]
	async fn the_limiter_holds_its_limit_as_it_moves() {
		let limiter = Limiter::new(1024, true);
		assert_eq!(limiter.limit(), INITIAL);
		// All places taken: no more until one comes back.
		let mut slots: Vec<Slot<'_>> = Vec::new();
		while let Some(slot) = limiter.try_acquire() {
			slots.push(slot);
		}
		assert_eq!(slots.len(), INITIAL);
		// A throttled answer halves the limit; the places held above it are not handed out
		// again as they come back.
		slots.pop().expect("held").finish(Signal::Overloaded);
		assert_eq!(limiter.limit(), INITIAL / 2);
		for _ in 0..INITIAL / 2 - 1 {
			slots.pop().expect("held").finish(Signal::Nothing);
		}
		assert_eq!(slots.len(), INITIAL / 2);
		assert!(limiter.try_acquire().is_none());
		slots.pop().expect("held").finish(Signal::Nothing);
		let again = limiter.try_acquire();
		assert!(again.is_some());
		drop(again);
		drop(slots);
		let mut held = Vec::new();
		while let Some(slot) = limiter.try_acquire() {
			held.push(slot);
		}
		assert_eq!(held.len(), INITIAL / 2);

		let fixed = Limiter::new(5, false);
		let held: Vec<_> = std::iter::from_fn(|| fixed.try_acquire()).collect();
		assert_eq!(held.len(), 5);
		drop(held);
		fixed.try_acquire().expect("free").finish(Signal::Overloaded);
		assert_eq!(fixed.limit(), 5);
	}

	/// Reads, and then writes, of many keys at once through the persister's default bound over
	/// the S3-like model (`store_models`), at a rate far below what 1,024 requests in flight ask
	/// for: the adaptive limit holds the served rate with few throttled requests, where the same
	/// cap as a fixed bound is answered with a storm of `503 SlowDown`. Counts, not times.
	#[test]
	fn a_throttling_store_sees_no_storm_from_the_default_bound() {
		use crate::persister::PersisterConfig;
		use crate::retry::RetryPolicy;
		use crate::StoreBuilder;
		use lightning::util::persist::KVStoreSync;
		use std::sync::Arc;
		use store_models::{Clock, S3LikeStore, S3Model, S3Params};

		const KEYS: usize = 1500;
		let run = |adaptive: bool, writes: bool| {
			// 5,000 GETs or PUTs a second with room for 50 at once, 2 ms requests, connections
			// for all.
			let model = S3Model::new(S3Params {
				reads_per_sec: 5000.0,
				writes_per_sec: 5000.0,
				burst: Duration::from_millis(10),
				median: Duration::from_millis(2),
				p99: Duration::from_millis(4),
				connections: 4096,
				clock: Clock::Thread,
				..S3Params::default()
			});
			let inner = Arc::new(object_store::memory::InMemory::new());
			let backend = S3LikeStore::wrap(inner, Arc::clone(&model));
			// Quick retries, so that a storm shows in the counts rather than in backoff.
			let retry = RetryPolicy {
				max_attempts: 1000,
				initial_backoff: Duration::from_millis(1),
				max_backoff: Duration::from_millis(5),
				max_elapsed: Duration::from_secs(120),
				attempt_timeout: Duration::from_secs(10),
			};
			let store = StoreBuilder::from_store(backend)
				.with_retry(retry)
				.without_writer_lease()
				.build()
				.expect("store");
			model.set_enabled(false);
			for i in 0..KEYS {
				KVStoreSync::write(&store, "p", "", &format!("k{i}"), vec![1; 100]).expect("seed");
			}
			model.set_enabled(true);
			model.reset();
			let config = PersisterConfig::default().with_adaptive_concurrency(adaptive);
			let view = store.limited_to(config.max_requests_in_flight, config.adaptive_concurrency);
			if writes {
				let puts: Vec<_> = (0..KEYS)
					.map(|i| view.start_write("p", "", &format!("w{i}"), vec![2; 100]))
					.collect();
				for put in crate::runtime::block_on(futures::future::join_all(puts)) {
					put.expect("write");
				}
			} else {
				let reads: Vec<_> =
					(0..KEYS).map(|i| view.start_read("p", "", &format!("k{i}"))).collect();
				for read in crate::runtime::block_on(futures::future::join_all(reads)) {
					assert_eq!(read.expect("read"), vec![1; 100]);
				}
			}
			model.counts()
		};
		for writes in [false, true] {
			let adaptive = run(true, writes);
			let fixed = run(false, writes);
			let what = if writes { "writes" } else { "reads" };
			eprintln!(
				"{what}: served / throttled: adaptive {} / {}, fixed {} / {}",
				adaptive.served_total(),
				adaptive.throttled_total(),
				fixed.served_total(),
				fixed.throttled_total()
			);
			assert_eq!(adaptive.served_total(), KEYS as u64, "{what}: {adaptive:?}");
			assert!(
				adaptive.throttled_total() * 4 <= adaptive.served_total(),
				"{what}: adaptive: {} throttled for {} served",
				adaptive.throttled_total(),
				adaptive.served_total()
			);
			assert!(
				fixed.throttled_total() >= 4 * adaptive.throttled_total().max(1),
				"{what}: fixed: {} throttled, adaptive: {}",
				fixed.throttled_total(),
				adaptive.throttled_total()
			);
		}
	}
}
