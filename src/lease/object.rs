//! The lease object on a backend with conditional writes: taking it, renewing it, releasing it,
//! reading it, breaking it.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::state::{Held, Kind, LeaseState};
use super::{
	expiry_text, lease_path, Clock, LeaseConfig, LeaseInfo, BROKEN_HOST_PREFIX, TOOL_REQUEST_LIMIT,
};
use crate::error::{ConfigError, FailureKind};
use crate::retry::{within, RetryPolicy};

impl LeaseState {
	/// Renews the lease until it is lost or the store closed. Runs on the store's runtime.
	pub(crate) async fn keep(self: Arc<Self>) {
		let Kind::Object { writer, reader, path, .. } = &self.kind else { return };
		let clock = &self.config.clock;
		let mut next_renewal = clock.trust_now() + self.config.renew_every();
		// The trust clock counts a suspend of the host, tokio's timers do not: the difference
		// between the two since the last turn is how long the host slept.
		let mut last_turn = (clock.trust_now(), tokio::time::Instant::now());
		let slept = |last: (Duration, tokio::time::Instant)| {
			clock.trust_now().saturating_sub(last.0).saturating_sub(last.1.elapsed())
		};
		loop {
			if !self.renewing() {
				if self.trust_ran_out.swap(false, std::sync::atomic::Ordering::SeqCst) {
					self.trust_ran_out(reader.as_ref(), path, slept(last_turn)).await;
				}
				return;
			}
			if self.is_frozen() {
				self.wake.notified().await;
				last_turn = (clock.trust_now(), tokio::time::Instant::now());
				continue;
			}
			let now = clock.trust_now();
			let suspended = slept(last_turn);
			last_turn = (now, tokio::time::Instant::now());
			let left = self.trust_left().unwrap_or_default();
			if left.is_zero() {
				self.trust_ran_out(reader.as_ref(), path, suspended).await;
				return;
			}
			if now < next_renewal {
				let nap = (next_renewal - now).min(left).min(Duration::from_secs(1));
				tokio::select! {
					// A fixed order: the takeover model replays a schedule from its seed.
					biased;
					_ = tokio::time::sleep(nap) => {},
					_ = self.wake.notified() => {},
				}
				continue;
			}
			let attempt = tokio::time::timeout(
				self.config.renewal_attempt_limit(),
				self.renew(writer.as_ref(), reader.as_ref(), path, now),
			);
			next_renewal = match attempt.await {
				Ok(Ok(())) => now + self.config.renew_every(),
				Ok(Err(Some(reason))) => {
					self.mark_lost(reason);
					return;
				},
				Ok(Err(None)) => {
					self.renewals.failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
					clock.trust_now() + self.config.renewal_retry_pause()
				},
				Err(_) => {
					self.renewals.unanswered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
					clock.trust_now() + self.config.renewal_retry_pause()
				},
			};
		}
	}

	/// Whether renewals go on: while held, and while closing (the requests being drained need
	/// the lease).
	fn renewing(&self) -> bool {
		use super::state::Status;
		matches!(*self.status.borrow(), Status::Held | Status::Closing)
	}

	/// Marks the lease lost because no renewal was confirmed in time, then finds out and records
	/// what happened: renewals that landed with their answers lost, a takeover, an outage, or a
	/// suspend of the host (`slept`).
	async fn trust_ran_out(&self, reader: &dyn ObjectStore, path: &Path, slept: Duration) {
		use std::sync::atomic::Ordering::SeqCst;
		let validity = self.config.validity();
		self.mark_lost(format!(
			"no renewal was confirmed within {validity:?} of the last one sent"
		));
		let unanswered = self.renewals.unanswered.load(SeqCst);
		let failed = self.renewals.failed.load(SeqCst);
		let last_error = self.renewals.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
		let mut reason = if slept > Duration::from_secs(1) {
			format!(
				"the host was suspended for about {:.0} s, and the lease's validity of \
				 {validity:?} ran out meanwhile",
				slept.as_secs_f64()
			)
		} else {
			format!(
				"no renewal was confirmed within {validity:?} of the last one sent: since then \
				 {unanswered} renewal request(s) got no answer within {:?} and {failed} failed{}",
				self.config.renewal_attempt_limit(),
				last_error.map(|e| format!(" (last: {e})")).unwrap_or_default()
			)
		};
		let mine = self.info();
		let limit = self.config.renewal_attempt_limit();
		reason.push_str(&match read(reader, path, limit).await {
			Ok(Some((current, _))) if current.same_lease(&mine) => {
				"; the lease object still names this instance, so renewals may have landed with \
				 their answers lost or late: writes stopped to be safe"
					.to_owned()
			},
			Ok(Some((current, _))) => format!("; it is now held by {current}"),
			Ok(None) => "; the lease object is gone".to_owned(),
			Err(err) => format!("; reading it failed too ({}: {err})", FailureKind::of(&err)),
		});
		self.explain_loss(reason);
	}

	/// One renewal. `Err(Some(reason))`: the lease is someone else's; `Err(None)`: try again.
	/// `sent` is when it started, on the trust clock: the validity counts from there.
	async fn renew(
		&self, writer: &dyn ObjectStore, reader: &dyn ObjectStore, path: &Path, sent: Duration,
	) -> Result<(), Option<String>> {
		for _ in 0..2 {
			if self.is_frozen() || !self.renewing() {
				return Err(None);
			}
			let (mut info, version) = {
				let held = self.lock();
				(held.info.clone(), held.version.clone())
			};
			let Some(version) = version else { return Err(None) };
			info.expires_unix_ms = expiry_from(&self.config.clock, &self.config);
			match put(writer, path, &info, PutMode::Update(version)).await {
				Ok(version) => {
					let mut held = self.lock();
					held.wall_valid_until_ms = Some(
						info.expires_unix_ms
							.saturating_sub(self.config.safety_margin.as_millis() as u64),
					);
					held.info = info;
					held.version = Some(version);
					held.valid_until = Some(sent + self.config.validity());
					drop(held);
					self.renewals.unanswered.store(0, std::sync::atomic::Ordering::SeqCst);
					self.renewals.failed.store(0, std::sync::atomic::Ordering::SeqCst);
					return Ok(());
				},
				Err(err) if is_condition_failure(&err) => {
					// Our own renewal may have landed with its answer lost: then the object is
					// still ours, at a version we did not hear of.
					match read_unbounded(reader, path).await {
						Ok(Some((current, version))) if current.same_lease(&info) => {
							self.lock().version = Some(version);
							continue;
						},
						Ok(Some((current, _))) => {
							return Err(Some(format!("taken over by {current}")));
						},
						Ok(None) => return Err(Some("the lease object was deleted".to_owned())),
						Err(err) => {
							self.note_renewal_error(&err);
							return Err(None);
						},
					}
				},
				Err(err) => {
					self.note_renewal_error(&err);
					return Err(None);
				},
			}
		}
		Err(None)
	}

	fn note_renewal_error(&self, err: &object_store::Error) {
		tracing::warn!(error = %err, "renewing the writer lease failed; retrying");
		*self.renewals.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
			Some(format!("{}: {err}", FailureKind::of(err)));
	}

	/// Replaces the lease object by a released one, on the condition that it is still ours.
	/// Whether it was released.
	pub(super) async fn release_object(&self, writer: &Arc<dyn ObjectStore>, path: &Path) -> bool {
		let limit = self.config.renewal_attempt_limit();
		for _ in 0..3 {
			let (mut info, version) = {
				let held = self.lock();
				(held.info.clone(), held.version.clone())
			};
			let Some(version) = version else { return false };
			info.expires_unix_ms = 0;
			match within(limit, put(writer.as_ref(), path, &info, PutMode::Update(version))).await {
				Ok(_) => return true,
				// Someone else's now, or ours released by a request whose answer was lost: either
				// way there is nothing left to release.
				Err(err) if is_condition_failure(&err) => return false,
				Err(err) => {
					tracing::warn!(error = %err, "releasing the writer lease failed; retrying");
				},
			}
		}
		tracing::warn!("releasing the writer lease failed; it expires on its own");
		false
	}
}

/// The expiry a write of the lease object now sets: the time to live from now, on the wall clock.
fn expiry_from(clock: &Clock, config: &LeaseConfig) -> u64 {
	clock.wall_ms().saturating_add(config.ttl.as_millis() as u64)
}

/// Puts `info` at `path` with `mode`; the new version.
async fn put(
	store: &dyn ObjectStore, path: &Path, info: &LeaseInfo, mode: PutMode,
) -> Result<UpdateVersion, object_store::Error> {
	let options = PutOptions { mode, ..Default::default() };
	let result = store.put_opts(path, PutPayload::from(info.encode()), options).await?;
	Ok(UpdateVersion { e_tag: result.e_tag, version: result.version })
}

fn is_condition_failure(err: &object_store::Error) -> bool {
	matches!(
		FailureKind::of(err),
		FailureKind::AlreadyExists | FailureKind::Precondition | FailureKind::NotFound
	)
}

/// Reads and parses the lease object; `None` if there is none.
pub(crate) async fn read(
	backend: &dyn ObjectStore, path: &Path, limit: Duration,
) -> Result<Option<(LeaseInfo, UpdateVersion)>, object_store::Error> {
	within(limit, read_unbounded(backend, path)).await
}

async fn read_unbounded(
	backend: &dyn ObjectStore, path: &Path,
) -> Result<Option<(LeaseInfo, UpdateVersion)>, object_store::Error> {
	let got = match backend.get(path).await {
		Ok(got) => got,
		Err(err) if FailureKind::of(&err) == FailureKind::NotFound => return Ok(None),
		Err(err) => return Err(err),
	};
	let version =
		UpdateVersion { e_tag: got.meta.e_tag.clone(), version: got.meta.version.clone() };
	let bytes = got.bytes().await?;
	let info = std::str::from_utf8(&bytes).ok().and_then(LeaseInfo::parse).ok_or_else(|| {
		object_store::Error::Generic {
			store: "ldk-object-store",
			source: format!("{path} is not a writer lease object this version understands").into(),
		}
	})?;
	Ok(Some((info, version)))
}

fn unsupported_advice(what: &str) -> ConfigError {
	ConfigError::Lease(format!(
		"the backend cannot hold a writer lease: {what}. The lease needs conditional writes \
		 (create-only and replace-if-unchanged puts), which S3, GCS, Azure and memory stores \
		 offer; for a local directory use a file:// URL (it takes an OS file lock). If you make \
		 sure yourself that only one instance runs, turn the lease off by name with \
		 StoreBuilder::without_writer_lease()"
	))
}

/// One request of taking the lease, under the store's retry policy: transient failures are
/// retried as for any other request; what remains is returned with how long it took.
async fn with_policy<T, F, Fut>(
	retry: &RetryPolicy, clock: &Clock, mut request: F,
) -> Result<T, Failed>
where
	F: FnMut() -> Fut,
	Fut: std::future::Future<Output = Result<T, object_store::Error>>,
{
	let started = clock.trust_now();
	let (result, attempts) = retry.run(|| retry.timed(request())).await;
	result.map_err(|error| Failed { error, attempts, elapsed: clock.trust_now() - started })
}

/// A request of taking the lease that failed for good.
struct Failed {
	error: object_store::Error,
	attempts: u32,
	elapsed: Duration,
}

impl Failed {
	fn into_config_error(self, what: &str) -> ConfigError {
		let kind = FailureKind::of(&self.error);
		if kind == FailureKind::Unsupported {
			return unsupported_advice(&self.error.to_string());
		}
		ConfigError::Lease(format!(
			"{what} failed after {} attempt(s) over {:.1} s ({kind}): {}; check that the \
			 backend is reachable and answers correctly (`ldk-object-store doctor URL`)",
			self.attempts,
			self.elapsed.as_secs_f64(),
			self.error
		))
	}
}

/// What a conditional put while taking the lease came to.
enum Taken {
	Version(UpdateVersion),
	/// The condition failed: another instance was faster, or our own put landed with its
	/// answer lost. Read again.
	Contended,
}

async fn put_to_take(
	writer: &dyn ObjectStore, path: &Path, info: &LeaseInfo, mode: PutMode, retry: &RetryPolicy,
	clock: &Clock, what: &str,
) -> Result<Taken, ConfigError> {
	match with_policy(retry, clock, || put(writer, path, info, mode.clone())).await {
		Ok(version) => Ok(Taken::Version(version)),
		Err(failed) if is_condition_failure(&failed.error) => Ok(Taken::Contended),
		Err(failed) => Err(failed.into_config_error(what)),
	}
}

/// How often the lease may change hands under a starting instance before it gives up.
const MAX_CONTENDED: u32 = 8;

/// Takes the lease object at `path`, or fails with [`ConfigError::LeaseHeld`]. Reads go to
/// `reader`, puts to `writer`; transient failures are retried under `retry`.
///
/// A lease that its expiry says is abandoned is watched for its time to live plus the skew
/// allowance on this instance's own clock, and taken over only if it did not change meanwhile:
/// a wall clock that runs fast cannot make a live lease look abandoned for that long.
pub(crate) async fn acquire_object(
	reader: Arc<dyn ObjectStore>, writer: Arc<dyn ObjectStore>, path: Path, config: LeaseConfig,
	retry: RetryPolicy,
) -> Result<Arc<LeaseState>, ConfigError> {
	config.validate()?;
	let clock = config.clock.clone();
	let mut me = LeaseInfo::new_for_this_process(config.ttl)?;
	let read_lease = || with_policy(&retry, &clock, || read_unbounded(reader.as_ref(), &path));
	let mut contended = 0;
	// Whether the lease this instance takes was left unreleased by its last holder.
	let mut crashed = false;
	// When the first put was sent: one whose answer was lost may have landed any time after.
	let mut first_put: Option<std::time::Duration> = None;
	let (version, sent) = loop {
		if contended >= MAX_CONTENDED {
			return Err(ConfigError::Lease(format!(
				"the writer lease changed hands {contended} times while this instance tried to \
				 take it: several instances are starting on this prefix at once; start one"
			)));
		}
		// Read first: on a missing bucket this fails (some servers would create the bucket on a
		// put, and the node would then start from nothing in the wrong place).
		let current =
			read_lease().await.map_err(|f| f.into_config_error("reading the writer lease"))?;
		let mode = match current {
			None => PutMode::Create,
			// Our own create or takeover landed, its answer lost.
			Some((holder, version)) if holder.same_lease(&me) => {
				break (version, first_put.unwrap_or_else(|| clock.trust_now()));
			},
			Some((holder, version)) => {
				if !holder.is_released() {
					refuse_if_live(&holder, &clock, &config)?;
					let wait = config.takeover_wait(&holder);
					tracing::info!(
						holder = %holder.holder(), ?wait,
						"the writer lease looks abandoned; watching it before taking it over"
					);
					tokio::time::sleep(wait).await;
					let again = read_lease()
						.await
						.map_err(|f| f.into_config_error("reading the writer lease"))?;
					match again {
						Some((_, current)) if current == version => {},
						Some((renewed, _)) if renewed.same_lease(&holder) => {
							return Err(ConfigError::LeaseHeld {
								holder: holder.holder(),
								generation: holder.generation,
								expires: format!(
									"it was renewed while this instance watched it for \
									 {wait:?}, so its holder is alive (its expiry looked past \
									 by this machine's wall clock, which may run ahead)"
								),
							});
						},
						// Released or taken meanwhile: look again.
						_ => {
							contended += 1;
							continue;
						},
					}
				}
				me.generation = holder.generation + 1;
				// Not released: its holder ended without closing (a crash, a kill, a partition).
				crashed = !holder.is_released();
				PutMode::Update(version)
			},
		};
		let what = match mode {
			PutMode::Create => "creating the writer lease",
			_ => "taking over the writer lease",
		};
		let sent = clock.trust_now();
		first_put.get_or_insert(sent);
		me.expires_unix_ms = expiry_from(&clock, &config);
		match put_to_take(writer.as_ref(), &path, &me, mode, &retry, &clock, what).await? {
			Taken::Version(version) => break (version, sent),
			// Another instance was faster, or our own put landed with its answer lost.
			Taken::Contended => contended += 1,
		}
	};
	if version.e_tag.is_none() && version.version.is_none() {
		return Err(unsupported_advice("its puts return no ETag or version"));
	}
	let state = LeaseState::new(
		Kind::Object {
			reader: Arc::clone(&reader),
			writer: Arc::clone(&writer),
			path: path.clone(),
		},
		config.clone(),
		Held {
			wall_valid_until_ms: Some(
				me.expires_unix_ms.saturating_sub(config.safety_margin.as_millis() as u64),
			),
			info: me.clone(),
			version: Some(version),
			// Validity counts from the put that won: one of ours whose answer was lost may have
			// landed at any time after it was sent.
			valid_until: Some(sent + config.validity()),
		},
	);
	state.predecessor_crashed.store(crashed, std::sync::atomic::Ordering::SeqCst);
	// Renew once at once: it proves that the backend replaces conditionally, before the node
	// relies on it (a local directory creates conditionally but cannot replace). A failed
	// request may have landed (its answer lost): the next try recognizes its own object.
	let mut renewed = Err(None);
	for _ in 0..3 {
		let sent = clock.trust_now();
		let renewal = state.renew(writer.as_ref(), reader.as_ref(), &path, sent);
		renewed = within(config.renewal_attempt_limit(), async { Ok(renewal.await) })
			.await
			.unwrap_or(Err(None));
		if !matches!(renewed, Err(None)) {
			break;
		}
		tokio::time::sleep(config.renewal_retry_pause()).await;
	}
	match renewed {
		Ok(()) => Ok(state),
		Err(Some(reason)) => {
			Err(ConfigError::Lease(format!("the writer lease was lost at once: {reason}")))
		},
		Err(None) => Err(probe_replacement(&state, writer.as_ref(), &path, &me, &config).await),
	}
}

/// After the first renewal of a new lease failed: whether the backend can replace conditionally
/// at all, as the error to return.
async fn probe_replacement(
	state: &LeaseState, writer: &dyn ObjectStore, path: &Path, me: &LeaseInfo, config: &LeaseConfig,
) -> ConfigError {
	let version =
		state.lock().version.clone().unwrap_or(UpdateVersion { e_tag: None, version: None });
	let mut released = me.clone();
	released.expires_unix_ms = 0;
	let limit = config.renewal_attempt_limit();
	match within(limit, put(writer, path, &released, PutMode::Update(version))).await {
		Err(err) if FailureKind::of(&err) == FailureKind::Unsupported => {
			// Leave nothing behind that would block the next attempt.
			let _ = within(limit, writer.delete(path)).await;
			unsupported_advice(&err.to_string())
		},
		Err(err) => ConfigError::Lease(format!(
			"renewing the new writer lease failed ({}): {err}",
			FailureKind::of(&err)
		)),
		Ok(_) => ConfigError::Lease(
			"renewing the new writer lease failed; it was released, try again".into(),
		),
	}
}

/// Refuses to start while `holder`'s expiry, with the skew allowance, has not passed on this
/// instance's wall clock.
fn refuse_if_live(
	holder: &LeaseInfo, clock: &Clock, config: &LeaseConfig,
) -> Result<(), ConfigError> {
	let now = clock.wall_ms();
	let skew = config.clock_skew.as_millis() as u64;
	let free_at = holder.expires_unix_ms.saturating_add(skew);
	if now >= free_at {
		return Ok(());
	}
	let when = if now < holder.expires_unix_ms {
		format!("it expires at {}", expiry_text(holder.expires_unix_ms, now))
	} else {
		format!(
			"it expired at {}, within the {:?} allowed for clock skew, so it may still be live",
			expiry_text(holder.expires_unix_ms, now),
			config.clock_skew
		)
	};
	let wait = config.takeover_wait(holder);
	Err(ConfigError::LeaseHeld {
		holder: holder.holder(),
		generation: holder.generation,
		expires: format!(
			"{when}; an instance started {:.1} s from now or later watches it for {:?} and \
			 takes it over if nobody renewed it",
			(free_at - now) as f64 / 1000.0,
			wait
		),
	})
}

/// What the lease object of `store`'s prefix says, if there is one (for operators and tools;
/// `store` may be built without a lease of its own).
///
/// Runs on the store's runtime, so it may be awaited on any executor.
pub async fn read_lease(
	store: &crate::ObjectKvStore,
) -> Result<Option<LeaseInfo>, object_store::Error> {
	let path = lease_path(store.key_mapper().root());
	let backend = Arc::clone(store.raw_backend());
	let reading =
		store.spawn(async move { read(backend.as_ref(), &path, TOOL_REQUEST_LIMIT).await });
	match reading.await {
		Some(read) => Ok(read?.map(|(info, _)| info)),
		None => Err(object_store::Error::Generic {
			store: "ldk-object-store",
			source: "the store's runtime stopped".into(),
		}),
	}
}

/// What [`break_lease`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakOutcome {
	/// The holder had not renewed for its time to live plus the skew allowance, so it no longer
	/// trusted the lease: it was released, and the next instance starts at once.
	Released {
		/// The lease as it was.
		broken: LeaseInfo,
	},
	/// Forced while the holder may be alive: the lease now belongs to nobody until
	/// `free_after_unix_ms` (wall clock), long enough for the old holder to have stopped
	/// trusting it (it finds it taken over at its next renewal at the latest). A successor
	/// starting after that watches it for the time to live plus the skew allowance, then takes
	/// it over.
	Forced {
		/// The lease as it was.
		broken: LeaseInfo,
		/// When a successor may start watching it.
		free_after_unix_ms: u64,
	},
}

/// Breaks the lease of `store`'s prefix, held by `instance`, for an operator who knows its
/// holder is dead. Never lets a live holder and a successor write at the same time:
///
/// - Without `force`, a lease whose expiry has not passed is refused (its holder renewed
///   recently, so it looks alive). Otherwise the lease is watched for the holder's time to live
///   plus `config`'s skew allowance (`on_wait` is told how long, then called about once a second
///   with the time left); if nobody renewed it meanwhile, its holder no longer trusts it, and it
///   is replaced, on the condition that it did not change, by a released lease of the next
///   generation: the next instance starts at once.
/// - With `force`, it is replaced at once, on the same condition, by a lease of the next
///   generation that nobody renews and that expires only after the old holder's trust has
///   ended for sure (time to live plus skew allowance from now); the old holder finds it taken
///   over at its next renewal.
///
/// Await it inside a tokio runtime (it waits with tokio's timers).
pub async fn break_lease(
	store: &crate::ObjectKvStore, instance: &str, force: bool, config: &LeaseConfig,
	mut on_wait: impl FnMut(Duration),
) -> Result<BreakOutcome, String> {
	let path = lease_path(store.key_mapper().root());
	let reader = store.raw_backend();
	let writer = store.raw_writer();
	let read_now = || async {
		read(reader.as_ref(), &path, TOOL_REQUEST_LIMIT)
			.await
			.map_err(|e| format!("reading the lease: {e}"))
	};
	let (held, version) =
		read_now().await?.ok_or_else(|| "there is no lease to break".to_owned())?;
	if held.instance != instance {
		return Err(format!("the lease is held by {}, not by instance {instance}", held.holder()));
	}
	if held.is_released() {
		return Err("the lease is already released: the next instance starts at once".to_owned());
	}
	let clock = config.clock.clone();
	let wait = config.takeover_wait(&held);
	let mut broken =
		LeaseInfo::new_for_this_process(Duration::from_millis(held.ttl_ms).max(config.ttl))
			.map_err(|e| e.to_string())?;
	broken.host = format!("{BROKEN_HOST_PREFIX}{}", broken.host);
	broken.generation = held.generation + 1;
	if force {
		// The live holder may renew between the read and the put: read again and retry while
		// the lease is still that instance's.
		let mut version = version;
		for _ in 0..MAX_CONTENDED {
			let free_after = clock.wall_ms().saturating_add(wait.as_millis() as u64);
			broken.expires_unix_ms = free_after;
			match put(writer.as_ref(), &path, &broken, PutMode::Update(version.clone())).await {
				Ok(_) => {
					return Ok(BreakOutcome::Forced {
						broken: held.clone(),
						free_after_unix_ms: free_after,
					})
				},
				Err(err) if is_condition_failure(&err) => match read_now().await? {
					Some((current, renewed)) if current.same_lease(&held) => version = renewed,
					_ => return Err("the lease changed hands meanwhile; nothing was broken".into()),
				},
				Err(err) => return Err(format!("the lease cannot be replaced: {err}")),
			}
		}
		return Err("the lease kept changing; nothing was broken".into());
	}
	let outcome = {
		let now = clock.wall_ms();
		if now < held.expires_unix_ms {
			return Err(format!(
				"{} renewed it recently (it expires at {}): it looks alive. Stop that instance \
				 rather than break its lease; or wait until it expired; or pass --force to break \
				 it anyway (the holder then stops at its next renewal, and the next instance may \
				 start only after {wait:?})",
				held.holder(),
				expiry_text(held.expires_unix_ms, now),
			));
		}
		on_wait(wait);
		let until = clock.trust_now() + wait;
		loop {
			let now = clock.trust_now();
			if now >= until {
				break;
			}
			tokio::time::sleep((until - now).min(Duration::from_secs(1))).await;
			on_wait(until.saturating_sub(clock.trust_now()));
			match read_now().await? {
				Some((_, current)) if current == version => {},
				_ => {
					return Err(format!(
						"the lease changed while it was watched: {} (or another instance) is \
						 alive; nothing was broken",
						held.holder()
					))
				},
			}
		}
		broken.expires_unix_ms = 0;
		BreakOutcome::Released { broken: held.clone() }
	};
	put(writer.as_ref(), &path, &broken, PutMode::Update(version)).await.map_err(|e| {
		format!("the lease changed meanwhile or cannot be replaced; nothing was broken: {e}")
	})?;
	Ok(outcome)
}
