//! The lease as a running store holds it: whether this instance may write, the permits that each
//! write and remove request takes, and closing (draining those, then releasing).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, UpdateVersion};
use tokio::sync::{watch, Notify};
use tokio_util::task::{task_tracker::TaskTrackerToken, TaskTracker};

use super::file::LockedDir;
use super::{closed_error, lost_error, LeaseConfig, LeaseInfo, WriterLease};
use crate::error::FailureKind;

/// Where the lease lives.
pub(super) enum Kind {
	/// No lease (the store was built without one): only closing and draining apply.
	None,
	/// A lease object renewed on a backend with conditional writes. `writer` is the client that
	/// sends writes (its own re-sends off).
	Object { reader: Arc<dyn ObjectStore>, writer: Arc<dyn ObjectStore>, path: Path },
	/// An OS lock on a local directory, held while the `LockedDir` lives.
	File { dir: Mutex<Option<Arc<LockedDir>>> },
}

pub(super) struct Held {
	pub(super) info: LeaseInfo,
	pub(super) version: Option<UpdateVersion>,
	/// Until when this instance trusts the lease, on the trust clock (object leases).
	pub(super) valid_until: Option<Duration>,
	/// The same on the wall clock: the written expiry less the safety margin. Catches a suspend
	/// where no boot-time clock exists.
	pub(super) wall_valid_until_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Status {
	Held,
	/// `close` is draining the requests in flight; new ones are refused.
	Closing,
	/// Closed: released, or left to expire.
	Closed,
	Lost(String),
}

/// Counts of renewal attempts since the last confirmed one, for the message when trust ends.
#[derive(Debug, Default)]
pub(super) struct RenewalStats {
	pub(super) unanswered: AtomicU32,
	pub(super) failed: AtomicU32,
	pub(super) last_error: Mutex<Option<String>>,
}

/// The lease as the store holds it: checked before every write and remove.
pub(crate) struct LeaseState {
	pub(super) kind: Kind,
	pub(super) config: LeaseConfig,
	pub(super) held: Mutex<Held>,
	pub(super) status: watch::Sender<Status>,
	/// One token per write or remove request in flight.
	mutations: TaskTracker,
	/// When (trust clock) a request was last abandoned without an answer: it may still land
	/// within the safety margin, so a release waits that long after it.
	last_abandoned: Mutex<Option<Duration>>,
	pub(super) frozen: AtomicBool,
	pub(super) wake: Notify,
	pub(super) renewals: RenewalStats,
	/// Set when a write found the lease's trust run out before the renewal task did: that task
	/// then finds out why.
	pub(super) trust_ran_out: AtomicBool,
	/// Whether the instance before this one may have ended with requests in flight: it left an
	/// object lease unreleased, or the running mark of a `file://` lock (see `mark_running`). A
	/// replica is then compared in full at the start (a write cut off by the crash may be on one
	/// copy).
	pub(crate) predecessor_crashed: AtomicBool,
}

impl std::fmt::Debug for LeaseState {
	fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
		let kind = match &self.kind {
			Kind::None => "none".to_owned(),
			Kind::Object { path, .. } => format!("object {path}"),
			Kind::File { .. } => "file lock".to_owned(),
		};
		f.debug_struct("LeaseState")
			.field("kind", &kind)
			.field("status", &*self.status.borrow())
			.field("in_flight", &self.mutations.len())
			.finish_non_exhaustive()
	}
}

impl LeaseState {
	pub(super) fn new(kind: Kind, config: LeaseConfig, held: Held) -> Arc<Self> {
		Arc::new(LeaseState {
			kind,
			config,
			held: Mutex::new(held),
			status: watch::Sender::new(Status::Held),
			mutations: TaskTracker::new(),
			last_abandoned: Mutex::new(None),
			frozen: AtomicBool::new(false),
			wake: Notify::new(),
			renewals: RenewalStats::default(),
			trust_ran_out: AtomicBool::new(false),
			predecessor_crashed: AtomicBool::new(false),
		})
	}

	/// The state of a store without a lease: it only tracks requests, so that closing drains.
	pub(crate) fn unleased() -> Arc<Self> {
		let info = LeaseInfo {
			instance: String::new(),
			host: String::new(),
			pid: std::process::id(),
			generation: 0,
			expires_unix_ms: 0,
			ttl_ms: 0,
		};
		let held = Held { info, version: None, valid_until: None, wall_valid_until_ms: None };
		LeaseState::new(Kind::None, LeaseConfig::default(), held)
	}

	pub(super) fn lock(&self) -> MutexGuard<'_, Held> {
		self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
	}

	/// The application's handle; `None` for a store without a lease.
	pub(crate) fn handle(self: &Arc<Self>) -> Option<WriterLease> {
		(!matches!(self.kind, Kind::None)).then(|| WriterLease { state: Arc::clone(self) })
	}

	pub(super) fn info(&self) -> LeaseInfo {
		self.lock().info.clone()
	}

	pub(super) fn lost_reason(&self) -> Option<String> {
		match &*self.status.borrow() {
			Status::Lost(reason) => Some(reason.clone()),
			_ => None,
		}
	}

	pub(super) fn is_closed(&self) -> bool {
		*self.status.borrow() == Status::Closed
	}

	pub(super) async fn ended(&self) {
		let mut status = self.status.subscribe();
		// The sender lives as long as `self`, so waiting cannot fail.
		let _ = status.wait_for(|s| matches!(s, Status::Closed | Status::Lost(_))).await;
	}

	#[cfg(feature = "_test_hooks")]
	pub(super) fn freeze(&self, frozen: bool) {
		self.frozen.store(frozen, Ordering::SeqCst);
		self.wake.notify_one();
	}

	/// Whether the lease's own task is frozen (test hook; never in a node).
	pub(super) fn is_frozen(&self) -> bool {
		self.frozen.load(Ordering::SeqCst)
	}

	/// Ok while this instance may write: held (or closing, for the requests already in flight),
	/// and for an object lease still within its validity on both clocks.
	pub(crate) fn check(&self) -> Result<(), object_store::Error> {
		match &*self.status.borrow() {
			Status::Held => {},
			Status::Closing | Status::Closed => return Err(closed_error("closed")),
			Status::Lost(reason) => return Err(lost_error(reason.clone())),
		}
		self.check_trust()
	}

	/// Ok while an object lease is within its validity; marks it lost once it is not.
	fn check_trust(&self) -> Result<(), object_store::Error> {
		match self.trust_left() {
			Some(left) if left.is_zero() => {
				self.lose_trust();
				Err(lost_error(self.lost_reason().unwrap_or_default()))
			},
			_ => Ok(()),
		}
	}

	/// How much longer an object lease is trusted (zero once it is not); `None` when trust does
	/// not run out (no lease, or an OS lock).
	pub(super) fn trust_left(&self) -> Option<Duration> {
		let (valid_until, wall_valid_until_ms) = {
			let held = self.lock();
			(held.valid_until?, held.wall_valid_until_ms)
		};
		let left = valid_until.saturating_sub(self.config.clock.trust_now());
		let wall_left = wall_valid_until_ms.map_or(left, |until| {
			Duration::from_millis(until.saturating_sub(self.config.clock.wall_ms()))
		});
		Some(left.min(wall_left))
	}

	/// Marks the lease lost because its validity ran out; the renewal task explains it.
	pub(super) fn lose_trust(&self) {
		let reason = format!(
			"no renewal was confirmed within {:?} of the last one sent",
			self.config.validity()
		);
		if self.mark_lost(reason) {
			self.trust_ran_out.store(true, Ordering::SeqCst);
		}
	}

	pub(super) fn mark_lost(&self, reason: String) -> bool {
		let first = self.status.send_if_modified(|status| match status {
			Status::Held | Status::Closing => {
				*status = Status::Lost(reason.clone());
				true
			},
			_ => false,
		});
		if first {
			tracing::error!(%reason, "writer lease lost: every write and remove is refused from now on");
		}
		self.wake.notify_one();
		first
	}

	/// Loses each of a store's two leases (its primary's, its replica's) when the other is lost:
	/// an instance that can no longer renew on one copy, where a promoted successor may now
	/// write, must not write to the other either.
	pub(crate) async fn lose_together(primary: Arc<Self>, replica: Arc<Self>) {
		tokio::select! {
			_ = primary.ended() => {},
			_ = replica.ended() => {},
		}
		if let Some(reason) = replica.lost_reason() {
			primary.mark_lost(format!("the replica's writer lease was lost: {reason}"));
		}
		if let Some(reason) = primary.lost_reason() {
			replica.mark_lost(format!("the primary's writer lease was lost: {reason}"));
		}
	}

	/// Replaces the reason of a loss with a fuller one found out afterwards.
	pub(super) fn explain_loss(&self, reason: String) {
		self.status.send_if_modified(|status| match status {
			Status::Lost(_) => {
				tracing::error!(%reason, "why the writer lease was lost");
				*status = Status::Lost(reason);
				true
			},
			_ => false,
		});
	}

	/// Takes the permit a write or remove request needs: refused unless this instance holds the
	/// lease. The permit's token is taken before the check, so a `close` that starts after the
	/// check waits for this request.
	pub(crate) fn enter(self: &Arc<Self>) -> Result<Mutation, object_store::Error> {
		let token = self.mutations.token();
		self.check()?;
		let dir = match &self.kind {
			Kind::File { dir } => dir.lock().unwrap_or_else(|p| p.into_inner()).clone(),
			_ => None,
		};
		Ok(Mutation { state: Arc::clone(self), _token: token, _dir: dir, answered: false })
	}

	fn note_abandoned(&self) {
		let now = self.config.clock.trust_now();
		*self.last_abandoned.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
	}

	/// Resolves when this instance must stop waiting for a request it sent: when its trust in
	/// the lease ends, or the lease is lost. Never, where trust does not run out.
	async fn trust_ends(&self) {
		let mut status = self.status.subscribe();
		loop {
			if matches!(&*status.borrow_and_update(), Status::Lost(_)) {
				return;
			}
			let Some(left) = self.trust_left() else {
				// No deadline: wait for a loss only.
				let _ = status.changed().await;
				continue;
			};
			if left.is_zero() {
				return;
			}
			// Woken at least every second: a suspended host's clocks jump, its timers do not.
			tokio::select! {
				// A fixed order: the takeover model replays a schedule from its seed.
				biased;
				_ = tokio::time::sleep(left.min(Duration::from_secs(1))) => {},
				_ = status.changed() => {},
			}
		}
	}

	/// Ends writing: refuses new requests at once, waits up to `drain_limit` for those in
	/// flight, and up to the safety margin after the last one abandoned without an answer
	/// (it may still land), then releases the lease so that a successor may start at once. If
	/// the requests cannot be drained in time, the lease is not released but left to expire
	/// (an OS lock stays held until they end), so that none of them can land after a successor
	/// started. Repeated calls wait for the first.
	pub(crate) async fn close(self: Arc<Self>, drain_limit: Duration) {
		let first = self.status.send_if_modified(|status| {
			if *status == Status::Held {
				*status = Status::Closing;
				true
			} else {
				false
			}
		});
		if !first {
			let mut status = self.status.subscribe();
			let _ = status.wait_for(|s| *s != Status::Closing).await;
			return;
		}
		self.wake.notify_one();
		self.mutations.close();
		let drained = tokio::time::timeout(drain_limit, self.mutations.wait()).await.is_ok();
		if drained {
			self.wait_out_abandoned().await;
		} else {
			tracing::warn!(
				in_flight = self.mutations.len(),
				"writes or removes still in flight when the store closed: the writer lease is \
				 left to expire instead of being released, so that none of them can land after \
				 a successor started"
			);
		}
		let released = match &self.kind {
			Kind::None => true,
			Kind::Object { writer, path, .. } => {
				drained && self.check_trust().is_ok() && self.release_object(writer, path).await
			},
			Kind::File { dir } => {
				// Undrained, the lock stays until the store is dropped (see `Guard`): a request
				// may still be renaming a file into place.
				if drained {
					drop(dir.lock().unwrap_or_else(|p| p.into_inner()).take());
				}
				drained
			},
		};
		let closed = self.status.send_if_modified(|status| {
			if *status == Status::Closing {
				*status = Status::Closed;
				true
			} else {
				false
			}
		});
		self.wake.notify_one();
		if closed && !matches!(self.kind, Kind::None) {
			if released {
				tracing::info!("writer lease released");
			} else {
				tracing::info!("writer lease left to expire");
			}
		}
	}

	/// Waits until the safety margin has passed since the last request abandoned without an
	/// answer, while the lease is still trusted (renewals go on meanwhile).
	async fn wait_out_abandoned(&self) {
		let Some(abandoned) = *self.last_abandoned.lock().unwrap_or_else(|p| p.into_inner()) else {
			return;
		};
		self.wait_out(abandoned).await;
	}

	/// Waits until the safety margin has passed since `abandoned` (on the trust clock), the
	/// longest a request abandoned then may still take to land, while the lease is trusted.
	/// Once trust has ended nothing of this instance may be acknowledged anyway.
	pub(crate) async fn wait_out(&self, abandoned: Duration) {
		let until = abandoned + self.config.safety_margin;
		loop {
			let now = self.config.clock.trust_now();
			if now >= until || self.check_trust().is_err() {
				return;
			}
			tokio::time::sleep((until - now).min(Duration::from_secs(1))).await;
		}
	}

	/// How many requests are in flight.
	pub(super) fn in_flight(&self) -> usize {
		self.mutations.len()
	}

	/// For a `file://` lock, whose release by the OS does not tell a crash from a clean stop:
	/// places the directory's running mark and records whether one was left by the store before
	/// (`predecessor_crashed`). Blocks on the disk; does nothing for other kinds of lease.
	pub(crate) fn mark_running(&self) -> std::io::Result<()> {
		let Kind::File { dir } = &self.kind else { return Ok(()) };
		let Some(locked) = dir.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
			return Ok(());
		};
		if locked.mark_running()? {
			self.predecessor_crashed.store(true, std::sync::atomic::Ordering::SeqCst);
		}
		Ok(())
	}

	/// Keeps a `file://` store's directory locked until the process ends: a request that could
	/// not be drained may still be running on a blocking thread.
	pub(super) fn keep_directory_locked(&self) {
		if let Kind::File { dir } = &self.kind {
			if let Some(dir) = dir.lock().unwrap_or_else(|p| p.into_inner()).take() {
				std::mem::forget(dir);
			}
		}
	}
}

/// The permit of one write or remove request: held while it is in flight. Dropped without an
/// answer from the backend (timed out, cut at the end of trust, cancelled), it records the
/// abandonment, since such a request may still land.
pub(crate) struct Mutation {
	state: Arc<LeaseState>,
	_token: TaskTrackerToken,
	/// A file lease's lock, held as long as this request runs.
	_dir: Option<Arc<LockedDir>>,
	answered: bool,
}

impl std::fmt::Debug for Mutation {
	fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
		f.debug_struct("Mutation").field("answered", &self.answered).finish_non_exhaustive()
	}
}

/// When the last attempt of one operation was abandoned without an answer (on the trust clock),
/// if one was: that request may still land, up to the safety margin later.
#[derive(Debug, Default)]
pub(crate) struct Abandoned(Mutex<Option<Duration>>);

impl Abandoned {
	/// The time of the last abandoned attempt, if any.
	pub(crate) fn at(&self) -> Option<Duration> {
		*self.0.lock().unwrap_or_else(|p| p.into_inner())
	}
}

impl Mutation {
	/// Runs `request` under this permit: it is dropped unanswered when the lease's trust ends
	/// (or the lease is lost) before it finishes, and then fails as
	/// [`FailureKind::LeaseLost`]. A request that ends without an answer (timed out, cut, or its
	/// answer lost) is noted in `abandoned`.
	pub(crate) async fn run<T>(
		mut self, request: impl std::future::Future<Output = Result<T, object_store::Error>>,
		abandoned: &Abandoned,
	) -> Result<T, object_store::Error> {
		let (outcome, answered) = tokio::select! {
			// A fixed order: the takeover model replays a schedule from its seed.
			biased;
			outcome = request => {
				let answered = is_answer(&outcome);
				(outcome, answered)
			},
			_ = self.state.trust_ends() => {
				if self.state.lost_reason().is_none() {
					self.state.lose_trust();
				}
				let reason = self.state.lost_reason().unwrap_or_default();
				(Err(lost_error(format!("{reason}; a request in flight was abandoned"))), false)
			},
		};
		self.answered = answered;
		if !answered {
			*abandoned.0.lock().unwrap_or_else(|p| p.into_inner()) =
				Some(self.state.config.clock.trust_now());
		}
		outcome
	}
}

impl Drop for Mutation {
	fn drop(&mut self) {
		if !self.answered {
			self.state.note_abandoned();
		}
	}
}

/// Whether a request's outcome means it can no longer land: an answer of the backend (success,
/// a refusal or a server error), or a connection never made.
fn is_answer<T>(outcome: &Result<T, object_store::Error>) -> bool {
	outcome.as_ref().map_or_else(
		|err| FailureKind::of(err).ends_the_request() || crate::error::is_backend_answer(err),
		|_| true,
	)
}
