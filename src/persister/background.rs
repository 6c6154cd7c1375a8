//! The asynchronous write path: writes that finish after `Persist` has returned `InProgress`.
//!
//! Per channel the persister keeps the update ids it has answered `InProgress` for and not
//! reported yet (`pending`), and a queue of jobs that must run one after another: full-monitor
//! writes and the archive. Update objects are written at once, concurrently.
//!
//! - A write that fails (after the store's own retries) is tried again in the background with
//!   capped backoff, for as long as it takes, unless it is superseded: a full monitor of the
//!   channel at or above its id became durable, or (for a full monitor) a newer one is queued.
//!   Another writer's refusal ([`FailureKind::Fenced`](crate::FailureKind::Fenced)) ends the
//!   retries: repeating cannot help, and nothing is reported.
//! - A durable full monitor holds every update up to its id, so it reports every pending id of
//!   its channel up to there, whether or not that update's own object was written; then the
//!   update objects it makes stale are deleted.
//! - A full monitor queued behind a newer one of the same channel is dropped unsent: the newer
//!   one holds all it holds. So at most one full monitor per channel waits beside the one being
//!   written.
//! - A full monitor that fails while a newer one is queued gives up, and hands the pruning it
//!   would have done to the newer one: once that is durable, everything both would have deleted
//!   is stale.
//! - The archive runs after the full writes queued before it, so it archives the latest state
//!   and no full write can bring the monitor back after it.
//! - On a channel's first write in this process, an earlier run's update objects from the first
//!   new id on are cleared (see `leftovers`), retried as a failing write is; none of the
//!   channel's writes (nor its archive) starts before the clear has succeeded.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use lightning::io;
use lightning::ln::types::ChannelId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::completion::Completions;
use super::leftovers::clear_from;
use super::names::{MONITORS, MONITORS_SECONDARY, UPDATES};
use super::write::{prune_after, Prune};
use super::PersisterConfig;
use crate::error::Error;
use crate::{FailureKind, ObjectKvStore};

/// Archives one monitor (see `MonitorPersister::archive`), for the background.
pub(crate) type Archiver = Arc<
	dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<(), io::Error>> + Send>> + Send + Sync,
>;

/// How the asynchronous writes are doing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PersisterHealth {
	/// Writes (and archives) that failed and are being retried in the background. While it is
	/// above zero, some channel may be frozen waiting for its update to be stored.
	pub failing_writes: usize,
	/// The most recent failure: the object and the error (never its contents).
	pub last_error: Option<String>,
	/// Writes abandoned because another writer took the store over: the node must stop.
	pub abandoned_writes: usize,
}

impl PersisterHealth {
	/// Whether every write so far has succeeded or is still on its first attempt.
	pub fn is_healthy(&self) -> bool {
		self.failing_writes == 0 && self.abandoned_writes == 0
	}
}

/// What a bounded [`flush_within`](super::MonitorPersister::flush_within) or
/// [`consolidate_within`](super::MonitorPersister::consolidate_within) left unfinished when its
/// time was up. Nothing is given up: in async mode the writes named here go on being retried in
/// the background for as long as the persister lives (LDK replays the updates it has no
/// completion for from the `ChannelManager` on the next start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pending {
	/// The work not finished, sorted: objects being written or waiting to be
	/// (`monitor_updates/<key>/<id>`, `monitors/<key> at update id <id>`), archives
	/// (`archive of monitors/<key>`) and clears of an earlier run's update objects
	/// (`clearing monitor_updates/<key>/ from update id <id>`).
	pub objects: Vec<String>,
	/// Updates LDK was answered `InProgress` for and has not been told are durable.
	pub unreported_updates: usize,
	/// Of the work named, how much has failed and is being retried.
	pub failing_writes: usize,
	/// The most recent failure: the object and the error.
	pub last_error: Option<String>,
}

impl fmt::Display for Pending {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		write!(f, "not finished in time: {} pending", self.objects.len())?;
		if !self.objects.is_empty() {
			write!(f, " ({})", self.objects.join(", "))?;
		}
		write!(
			f,
			"; {} updates not reported; {} failing",
			self.unreported_updates, self.failing_writes
		)?;
		if let Some(error) = &self.last_error {
			write!(f, "; last error: {error}")?;
		}
		Ok(())
	}
}

impl std::error::Error for Pending {}

impl From<Pending> for io::Error {
	/// An error of kind `TimedOut` that carries the [`Pending`]: get it back with
	/// `error.get_ref().and_then(|inner| inner.downcast_ref::<Pending>())`.
	fn from(pending: Pending) -> Self {
		io::Error::new(io::ErrorKind::TimedOut, pending)
	}
}

/// One job of a channel's queue.
enum Job {
	Full { bytes: Bytes, monitor_id: u64, prune: Option<Prune> },
	Archive,
}

impl Job {
	/// The job's name in logs, the health and [`Pending`].
	fn name(&self, monitor_key: &str) -> String {
		match self {
			Job::Full { monitor_id, .. } => {
				format!("{MONITORS}/{monitor_key} at update id {monitor_id}")
			},
			Job::Archive => format!("archive of {MONITORS}/{monitor_key}"),
		}
	}
}

/// Where a channel's clear of an earlier run's update objects stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clear {
	Running,
	Done,
	/// Another writer holds the store, or the persister is being dropped: the channel's writes
	/// must not start.
	Abandoned,
}

struct Channel {
	channel_id: ChannelId,
	/// Update ids answered `InProgress` and not reported yet.
	pending: BTreeSet<u64>,
	/// The id of the newest durable full monitor.
	durable: Option<u64>,
	jobs: VecDeque<Job>,
	/// Whether a task is working through `jobs`.
	running: bool,
	/// The channel's writes wait for this to be `Done`.
	clear: watch::Sender<Clear>,
}

/// Clears a channel's runner mark if its runner ends by a panic, so a later job starts a new
/// runner. (A runner that finds no job clears the mark itself, under the lock it checked with.)
struct Running<'a> {
	writes: &'a AsyncWrites,
	monitor_key: &'a str,
	armed: bool,
}

impl Drop for Running<'_> {
	fn drop(&mut self) {
		if self.armed {
			if let Some(channel) = self.writes.lock().get_mut(self.monitor_key) {
				channel.running = false;
			}
		}
	}
}

/// Work named in [`Pending`] while it runs: removes its name when dropped.
struct Active<'a> {
	writes: &'a AsyncWrites,
	id: u64,
}

impl Drop for Active<'_> {
	fn drop(&mut self) {
		self.writes.active_names().remove(&self.id);
	}
}

/// Why a background write stopped without succeeding.
enum GaveUp {
	/// A newer durable or queued write holds what this one would have stored.
	Superseded,
	/// Repeating cannot succeed (another writer), or the persister is being dropped.
	Stopped,
}

pub(crate) struct AsyncWrites {
	store: ObjectKvStore,
	completions: Completions,
	archiver: Archiver,
	channels: Mutex<HashMap<String, Channel>>,
	tasks: TaskTracker,
	/// How many flushes are waiting: the tracker reopens when the last one ends.
	flushes: Mutex<usize>,
	/// The names of the work running now (writes, archives, clears), by a serial number.
	active: Mutex<HashMap<u64, String>>,
	next_active: AtomicU64,
	stop: CancellationToken,
	health: watch::Sender<PersisterHealth>,
	max_backoff: Duration,
}

impl std::fmt::Debug for AsyncWrites {
	fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
		f.debug_struct("AsyncWrites")
			.field("completions", &self.completions)
			.field("tasks", &self.tasks.len())
			.field("health", &*self.health.borrow())
			.finish_non_exhaustive()
	}
}

impl AsyncWrites {
	pub(crate) fn new(
		store: ObjectKvStore, config: &PersisterConfig, archiver: Archiver,
	) -> std::io::Result<Arc<Self>> {
		Ok(Arc::new(AsyncWrites {
			store,
			completions: Completions::new()?,
			archiver,
			channels: Mutex::default(),
			tasks: TaskTracker::new(),
			flushes: Mutex::default(),
			active: Mutex::default(),
			next_active: AtomicU64::new(0),
			stop: CancellationToken::new(),
			health: watch::channel(PersisterHealth::default()).0,
			// A zero pause would spin on a failure that answers at once (a 403, say).
			max_backoff: config.max_retry_backoff.max(Duration::from_millis(100)),
		}))
	}

	pub(crate) fn completions(&self) -> &Completions {
		&self.completions
	}

	pub(crate) fn health(&self) -> PersisterHealth {
		self.health.borrow().clone()
	}

	pub(crate) fn subscribe_health(&self) -> watch::Receiver<PersisterHealth> {
		self.health.subscribe()
	}

	/// Waits until every task has finished (those started while it waits too), then until their
	/// completions are delivered.
	pub(crate) async fn flush(&self) {
		/// Reopens the tracker when the last waiting flush ends, also one dropped unfinished.
		struct Waiting<'a>(&'a AsyncWrites);
		impl Drop for Waiting<'_> {
			fn drop(&mut self) {
				let mut flushes = self.0.flushes.lock().unwrap_or_else(|p| p.into_inner());
				*flushes -= 1;
				if *flushes == 0 {
					self.0.tasks.reopen();
				}
			}
		}
		let waiting = {
			let mut flushes = self.flushes.lock().unwrap_or_else(|p| p.into_inner());
			*flushes += 1;
			self.tasks.close();
			Waiting(self)
		};
		self.tasks.wait().await;
		drop(waiting);
		self.completions.drained().await;
	}

	/// [`Self::flush`], for at most `limit`; then what is still pending.
	pub(crate) async fn flush_within(&self, limit: Duration) -> Result<(), Pending> {
		// On the store's runtime, so that any executor may await this.
		// (The sleep is made there too: it needs the runtime's timer.)
		let timer = self.store.spawn(async move { tokio::time::sleep(limit).await });
		match futures::future::select(pin!(self.flush()), pin!(timer)).await {
			futures::future::Either::Left(((), _)) => Ok(()),
			futures::future::Either::Right(_) => Err(self.pending()),
		}
	}

	/// The work not finished now.
	pub(crate) fn pending(&self) -> Pending {
		let mut objects: Vec<String> = self.active_names().values().cloned().collect();
		let mut unreported_updates = 0;
		for (monitor_key, channel) in self.lock().iter() {
			// Queued, not started yet.
			objects.extend(channel.jobs.iter().map(|job| job.name(monitor_key)));
			unreported_updates += channel.pending.len();
		}
		objects.sort_unstable();
		objects.dedup();
		let health = self.health();
		Pending {
			objects,
			unreported_updates,
			failing_writes: health.failing_writes,
			last_error: health.last_error,
		}
	}

	fn active_names(&self) -> MutexGuard<'_, HashMap<u64, String>> {
		self.active.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
	}

	/// Names `name` in [`Pending`] until the returned guard is dropped.
	fn active(&self, name: String) -> Active<'_> {
		let id = self.next_active.fetch_add(1, Ordering::Relaxed);
		self.active_names().insert(id, name);
		Active { writes: self, id }
	}

	/// Ends every retry: the persister is being dropped.
	pub(crate) fn stop(&self) {
		self.stop.cancel();
	}

	fn lock(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
		self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
	}

	/// Runs `work` on the store's runtime, tracked for `flush`: its token is released when the
	/// task ends, also if it panics.
	fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
		drop(self.store.spawn(self.tasks.track_future(work)));
	}

	/// Registers `update_id` as pending on `monitor_key`'s channel. The first call for a channel
	/// in this process with a `first_new_id` starts the clear of an earlier run's update objects
	/// from that id on (see `leftovers`), which every write of the channel then waits for.
	fn pend(
		self: &Arc<Self>, monitor_key: &str, channel_id: ChannelId, update_id: Option<u64>,
		first_new_id: Option<u64>,
	) {
		let mut channels = self.lock();
		let channel = channels.entry(monitor_key.to_owned()).or_insert_with(|| {
			let clear = match first_new_id {
				Some(first) => {
					self.clear_leftovers(monitor_key, first);
					Clear::Running
				},
				// An archive reads the updates it finds and then deletes them all.
				None => Clear::Done,
			};
			Channel {
				channel_id,
				pending: BTreeSet::new(),
				durable: None,
				jobs: VecDeque::new(),
				running: false,
				clear: watch::channel(clear).0,
			}
		});
		channel.pending.extend(update_id);
	}

	/// Clears a channel's update objects from `first` on, in the background, retried until it
	/// succeeds; then lets the channel's writes start.
	fn clear_leftovers(self: &Arc<Self>, monitor_key: &str, first: u64) {
		let this = Arc::clone(self);
		let monitor_key = monitor_key.to_owned();
		self.spawn(async move {
			let name = format!("clearing {UPDATES}/{monitor_key}/ from update id {first}");
			let _active = this.active(name.clone());
			let cleared = this
				.until_written(
					&name,
					|| false,
					|| clear_from(this.store.clone(), monitor_key.clone(), first),
				)
				.await;
			let outcome = if cleared.is_ok() { Clear::Done } else { Clear::Abandoned };
			if let Some(channel) = this.lock().get(&monitor_key) {
				channel.clear.send_replace(outcome);
			}
		});
	}

	/// Waits until the channel's clear is done: `false` if the channel's writes must not start
	/// (the clear was abandoned, the channel is gone, or the persister is being dropped).
	async fn cleared(&self, monitor_key: &str) -> bool {
		let Some(mut clear) = self.lock().get(monitor_key).map(|channel| channel.clear.subscribe())
		else {
			return false;
		};
		tokio::select! {
			outcome = clear.wait_for(|clear| *clear != Clear::Running) => {
				outcome.is_ok_and(|clear| *clear == Clear::Done)
			},
			_ = self.stop.cancelled() => false,
		}
	}

	/// Writes an update object in the background and reports it once durable.
	pub(crate) fn write_update(
		self: &Arc<Self>, monitor_key: String, channel_id: ChannelId, update_id: u64, bytes: Bytes,
	) {
		self.pend(&monitor_key, channel_id, Some(update_id), Some(update_id));
		let this = Arc::clone(self);
		self.spawn(async move {
			let name = format!("{UPDATES}/{monitor_key}/{update_id}");
			let _active = this.active(name.clone());
			if !this.cleared(&monitor_key).await {
				return;
			}
			let written = this
				.until_written(
					&name,
					|| this.update_superseded(&monitor_key, update_id),
					|| {
						this.store.start_write(
							UPDATES,
							&monitor_key,
							&update_id.to_string(),
							bytes.clone(),
						)
					},
				)
				.await;
			if written.is_ok() {
				this.report(&monitor_key, update_id, false);
			}
		});
	}

	/// Queues a full-monitor write; `report` is the update id it completes, if any.
	pub(crate) fn write_full(
		self: &Arc<Self>, monitor_key: String, channel_id: ChannelId, report: Option<u64>,
		bytes: Bytes, monitor_id: u64, prune: Option<Prune>,
	) {
		self.pend(&monitor_key, channel_id, report, Some(monitor_id.saturating_add(1)));
		let mut prune = prune;
		// The persister never queues an older full monitor after a newer one (see `persist`).
		self.queue(monitor_key, |channel| {
			// A full monitor not started yet holds nothing the newer one does not: drop it, and
			// keep its pruning.
			if let Some(Job::Full { prune: older, .. }) = channel.jobs.back() {
				prune = Prune::merge(older.clone(), prune.take());
				channel.jobs.pop_back();
			}
			channel.jobs.push_back(Job::Full { bytes, monitor_id, prune });
		});
	}

	/// Queues the archive of a monitor behind its pending full writes.
	pub(crate) fn archive(self: &Arc<Self>, monitor_key: String, channel_id: ChannelId) {
		// Nothing to clear: the archive reads the updates it finds.
		self.pend(&monitor_key, channel_id, None, None);
		self.queue(monitor_key, |channel| channel.jobs.push_back(Job::Archive));
	}

	fn queue(self: &Arc<Self>, monitor_key: String, add: impl FnOnce(&mut Channel)) {
		let start = {
			let mut channels = self.lock();
			let Some(channel) = channels.get_mut(&monitor_key) else { return };
			add(channel);
			!channel.jobs.is_empty() && !std::mem::replace(&mut channel.running, true)
		};
		if start {
			let this = Arc::clone(self);
			self.spawn(async move { this.run_jobs(monitor_key).await });
		}
	}

	/// Works through a channel's jobs, one at a time, until none is left.
	async fn run_jobs(self: Arc<Self>, monitor_key: String) {
		// Should this task end by a panic, the channel's later jobs must still find no runner.
		let mut running = Running { writes: &self, monitor_key: &monitor_key, armed: true };
		if !self.cleared(&monitor_key).await {
			// Nothing of this channel may be written; the guard lets a later job try again.
			return;
		}
		loop {
			let job = {
				let mut channels = self.lock();
				let Some(channel) = channels.get_mut(&monitor_key) else { return };
				match channel.jobs.pop_front() {
					Some(job) => job,
					None => {
						// Under the same lock as the check: a job queued after it starts a runner.
						channel.running = false;
						running.armed = false;
						return;
					},
				}
			};
			let name = job.name(&monitor_key);
			let _active = self.active(name.clone());
			match job {
				Job::Full { bytes, monitor_id, prune } => {
					let written = self
						.until_written(
							&name,
							|| self.full_superseded(&monitor_key),
							|| {
								self.store.start_write(
									MONITORS,
									MONITORS_SECONDARY,
									&monitor_key,
									bytes.clone(),
								)
							},
						)
						.await;
					match written {
						Ok(()) => {
							self.report(&monitor_key, monitor_id, true);
							if let Some(prune) = prune {
								// Only once the full monitor is durable may the updates it holds
								// go.
								prune_after(self.store.clone(), monitor_key.clone(), prune).await;
							}
						},
						Err(GaveUp::Superseded) => self.hand_on_prune(&monitor_key, prune),
						Err(GaveUp::Stopped) => {},
					}
				},
				Job::Archive => {
					let archived = self
						.until_written(&name, || false, || self.archive_on_a_thread(&monitor_key))
						.await;
					if archived.is_ok() {
						let channel = self.lock().remove(&monitor_key);
						if let Some(left) =
							channel.filter(|c| !c.jobs.is_empty() || !c.pending.is_empty())
						{
							// LDK does not persist an archived channel; say so if it ever did.
							tracing::warn!(
								monitor = %monitor_key, jobs = left.jobs.len(), pending = left.pending.len(),
								"writes of an archived monitor dropped"
							);
						}
						return;
					}
				},
			}
		}
	}

	/// Runs the archive of one monitor on a thread of its own, not on a store worker: applying
	/// the monitor's updates calls the node's logger, broadcaster and fee estimator, user code
	/// that may take locks. The archive's requests still run on the store's runtime.
	fn archive_on_a_thread(
		&self, monitor_key: &str,
	) -> impl Future<Output = Result<(), io::Error>> + Send + 'static {
		let (done, outcome) = tokio::sync::oneshot::channel();
		let archive = (self.archiver)(monitor_key.to_owned());
		let started = std::thread::Builder::new()
			.name("ldk-object-store-archive".into())
			.spawn(move || drop(done.send(crate::runtime::block_on(archive))));
		async move {
			started?;
			outcome.await.unwrap_or_else(|_| {
				Err(crate::error::io_error(io::ErrorKind::Other, "the archive thread panicked"))
			})
		}
	}

	/// Hands the pruning of a full write that gave up to the newer full write queued behind it
	/// (what made it give up): every update object either would delete is stale once the newer
	/// one is durable.
	fn hand_on_prune(&self, monitor_key: &str, prune: Option<Prune>) {
		if prune.is_none() {
			return;
		}
		let mut channels = self.lock();
		match channels.get_mut(monitor_key).and_then(|channel| channel.jobs.front_mut()) {
			Some(Job::Full { prune: newer, .. }) => *newer = Prune::merge(prune, newer.take()),
			// Not superseded after all; `cleanup_stale_updates` removes what is left.
			_ => tracing::warn!(monitor = %monitor_key, "no newer full write to hand a pruning to"),
		}
	}

	/// Whether an update no longer needs its own object: a durable full monitor holds it.
	fn update_superseded(&self, monitor_key: &str, update_id: u64) -> bool {
		self.lock()
			.get(monitor_key)
			.is_none_or(|channel| channel.durable.is_some_and(|durable| durable >= update_id))
	}

	/// Whether a newer full monitor is queued behind the one being written.
	fn full_superseded(&self, monitor_key: &str) -> bool {
		self.lock().get(monitor_key).is_none_or(|channel| {
			channel.jobs.front().is_some_and(|job| matches!(job, Job::Full { .. }))
		})
	}

	/// Reports `update_id` (with `up_to`: every pending id up to it) of the channel as durable.
	fn report(&self, monitor_key: &str, update_id: u64, up_to: bool) {
		let (channel_id, ids) = {
			let mut channels = self.lock();
			let Some(channel) = channels.get_mut(monitor_key) else { return };
			let ids: Vec<u64> = if up_to {
				channel.durable = channel.durable.max(Some(update_id));
				let later = match update_id.checked_add(1) {
					Some(next) => channel.pending.split_off(&next),
					None => BTreeSet::new(),
				};
				std::mem::replace(&mut channel.pending, later).into_iter().collect()
			} else {
				channel.pending.take(&update_id).into_iter().collect()
			};
			(channel.channel_id, ids)
		};
		for id in ids {
			self.completions.complete(channel_id, id);
		}
	}

	/// Runs `write` until it succeeds, retrying with capped backoff; gives up when `superseded`
	/// says so, when another writer refuses us, or when the persister is dropped.
	async fn until_written<F, Fut, E>(
		&self, name: &str, superseded: impl Fn() -> bool, mut write: F,
	) -> Result<(), GaveUp>
	where
		F: FnMut() -> Fut,
		Fut: Future<Output = Result<(), E>>,
		E: Into<io::Error>,
	{
		let mut backoff = Duration::from_secs(1).min(self.max_backoff);
		let mut failing = false;
		let outcome = loop {
			if self.stop.is_cancelled() {
				break Err(GaveUp::Stopped);
			}
			let error: io::Error = match write().await {
				Ok(()) => break Ok(()),
				Err(error) => error.into(),
			};
			if fenced(&error) {
				tracing::error!(object = name, %error, "another writer holds this store; giving up the write");
				self.health.send_modify(|health| {
					health.abandoned_writes += 1;
					health.last_error = Some(format!("{name}: {error}"));
				});
				break Err(GaveUp::Stopped);
			}
			if superseded() {
				break Err(GaveUp::Superseded);
			}
			tracing::error!(
				object = name, %error, retry_in = ?backoff,
				"monitor write failed after retries; retrying in the background"
			);
			self.health.send_modify(|health| {
				health.failing_writes += usize::from(!failing);
				health.last_error = Some(format!("{name}: {error}"));
			});
			failing = true;
			tokio::select! {
				_ = tokio::time::sleep(backoff) => {},
				_ = self.stop.cancelled() => break Err(GaveUp::Stopped),
			}
			if superseded() {
				break Err(GaveUp::Superseded);
			}
			backoff = (backoff * 2).min(self.max_backoff);
		};
		if failing {
			self.health.send_modify(|health| health.failing_writes -= 1);
		}
		outcome
	}
}

/// Whether an error says another writer holds the store (another writer changed the object, or
/// the writer lease is lost), so no retry can succeed.
fn fenced(error: &io::Error) -> bool {
	error
		.get_ref()
		.and_then(|inner| inner.downcast_ref::<Error>())
		.and_then(Error::failure_kind)
		.is_some_and(|kind| matches!(kind, FailureKind::Fenced | FailureKind::LeaseLost))
}
