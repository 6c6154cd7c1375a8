//! The lease object on a backend with conditional writes: taking it, renewing it, reading it,
//! breaking it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::{
	is_condition_failure, lease_path, within, Held, Kind, LeaseConfig, LeaseInfo, LeaseState,
	TOOL_REQUEST_LIMIT,
};
use crate::error::{ConfigError, FailureKind};

impl LeaseState {
	/// Renews the lease until it is lost or released. Runs on the store's runtime.
	pub(crate) async fn keep(self: Arc<Self>) {
		let Kind::Object { backend, path } = &self.kind else { return };
		let mut next_renewal = Instant::now() + self.config.renew_every();
		loop {
			if self.stopped.load(Ordering::SeqCst) || self.lost.borrow().is_some() {
				return;
			}
			if self.frozen.load(Ordering::SeqCst) {
				self.wake.notified().await;
				continue;
			}
			let valid_until = self.lock().valid_until.unwrap_or_else(Instant::now);
			let now = Instant::now();
			if now >= valid_until {
				self.mark_lost("the renewals failed until the lease's validity ran out".to_owned());
				return;
			}
			if now < next_renewal {
				let wake_at = next_renewal.min(valid_until);
				tokio::select! {
					_ = tokio::time::sleep_until(wake_at.into()) => {},
					_ = self.wake.notified() => {},
				}
				continue;
			}
			let sent = Instant::now();
			let outcome = tokio::time::timeout(
				valid_until.saturating_duration_since(sent),
				self.renew(backend.as_ref(), path, sent),
			)
			.await;
			next_renewal = match outcome {
				Ok(Ok(())) => sent + self.config.renew_every(),
				Ok(Err(Some(reason))) => {
					self.mark_lost(reason);
					return;
				},
				Ok(Err(None)) | Err(_) => {
					Instant::now() + Duration::from_secs(1).min(self.config.renew_every())
				},
			};
		}
	}

	/// One renewal. `Err(Some(reason))`: the lease is someone else's; `Err(None)`: try again.
	async fn renew(
		&self, backend: &dyn ObjectStore, path: &Path, sent: Instant,
	) -> Result<(), Option<String>> {
		for _ in 0..2 {
			if self.frozen.load(Ordering::SeqCst) || self.stopped.load(Ordering::SeqCst) {
				return Err(None);
			}
			let (mut info, version) = {
				let held = self.lock();
				(held.info.clone(), held.version.clone())
			};
			let Some(version) = version else { return Err(None) };
			info.expires_unix_ms = self.config.wall_now_ms() + self.config.ttl.as_millis() as u64;
			let options = PutOptions { mode: PutMode::Update(version), ..Default::default() };
			let limit = self.config.renew_every();
			let put = backend.put_opts(path, PutPayload::from(info.encode()), options);
			match within(limit, put).await {
				Ok(result) => {
					let mut held = self.lock();
					held.info = info;
					held.version =
						Some(UpdateVersion { e_tag: result.e_tag, version: result.version });
					held.valid_until =
						Some(sent + self.config.ttl.saturating_sub(self.config.safety_margin));
					return Ok(());
				},
				Err(err) if is_condition_failure(&err) => {
					// Our own renewal may have landed with its answer lost: then the object is
					// still ours, at a version we did not hear of.
					match read(backend, path, self.config.renew_every()).await {
						Ok(Some((current, version)))
							if current.instance == info.instance
								&& current.generation == info.generation =>
						{
							self.lock().version = Some(version);
							continue;
						},
						Ok(Some((current, _))) => {
							return Err(Some(format!("taken over by {current}")));
						},
						Ok(None) => return Err(Some("the lease object was deleted".to_owned())),
						Err(err) => {
							tracing::warn!(error = %err, "reading the writer lease failed");
							return Err(None);
						},
					}
				},
				Err(err) => {
					tracing::warn!(error = %err, "renewing the writer lease failed; retrying");
					return Err(None);
				},
			}
		}
		Err(None)
	}
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

fn backend_error(what: &str, err: object_store::Error) -> ConfigError {
	ConfigError::Lease(format!("{what}: {}: {err}", FailureKind::of(&err)))
}

/// What a conditional put of the lease object while taking it means: its new version, `None` to
/// read the object again (another instance won the condition, or a transient failure after a
/// short pause), or a failure that ends the attempt to start.
async fn put_outcome(
	put: Result<object_store::PutResult, object_store::Error>, what: &str,
) -> Result<Option<UpdateVersion>, ConfigError> {
	match put {
		Ok(result) => Ok(Some(UpdateVersion { e_tag: result.e_tag, version: result.version })),
		Err(err) if is_condition_failure(&err) => Ok(None),
		Err(err) if FailureKind::of(&err) == FailureKind::Unsupported => {
			Err(unsupported_advice(&err.to_string()))
		},
		Err(err) if FailureKind::of(&err).is_transient() => {
			tokio::time::sleep(RETRY_SOON).await;
			Ok(None)
		},
		Err(err) => Err(backend_error(what, err)),
	}
}

/// The pause before reading the lease again after a transient failure.
const RETRY_SOON: Duration = Duration::from_millis(100);

/// Takes the lease object at `path`, or fails with [`ConfigError::LeaseHeld`].
pub(crate) async fn acquire_object(
	backend: Arc<dyn ObjectStore>, path: Path, config: LeaseConfig,
) -> Result<Arc<LeaseState>, ConfigError> {
	config.validate()?;
	let mut me = LeaseInfo::new_for_this_process()?;
	let validity = config.ttl.saturating_sub(config.safety_margin);
	// Validity counts from the first request: one of ours whose answer was lost may have landed.
	let first_sent = Instant::now();
	let retry_soon = || tokio::time::sleep(RETRY_SOON);
	for _ in 0..8 {
		// Read first: on a missing bucket this fails (some servers would create the bucket on a
		// put, and the node would then start from nothing in the wrong place).
		let limit = config.renew_every();
		let current = match read(backend.as_ref(), &path, limit).await {
			Ok(current) => current,
			Err(err) if FailureKind::of(&err).is_transient() => {
				retry_soon().await;
				continue;
			},
			Err(err) => return Err(backend_error("reading the writer lease failed", err)),
		};
		me.expires_unix_ms = config.wall_now_ms() + config.ttl.as_millis() as u64;
		let version = match current {
			None => {
				// Another instance may create it first (or our own create land): then read it.
				let create = PutOptions { mode: PutMode::Create, ..Default::default() };
				let put = backend.put_opts(&path, PutPayload::from(me.encode()), create);
				match put_outcome(within(limit, put).await, "creating the writer lease failed")
					.await?
				{
					Some(version) => version,
					None => continue,
				}
			},
			Some((holder, version))
				if holder.instance == me.instance && holder.generation == me.generation =>
			{
				// Our own create or takeover landed, its answer lost.
				version
			},
			Some((holder, version)) => {
				let now = config.wall_now_ms();
				let free_at =
					holder.expires_unix_ms.saturating_add(config.clock_skew.as_millis() as u64);
				if !holder.is_released() && now < free_at {
					return Err(ConfigError::LeaseHeld {
						holder: holder.holder(),
						generation: holder.generation,
						expires: holder.expiry_text(),
					});
				}
				me.generation = holder.generation + 1;
				// Another instance may take it over first: then read who.
				let update = PutOptions { mode: PutMode::Update(version), ..Default::default() };
				let put = backend.put_opts(&path, PutPayload::from(me.encode()), update);
				match put_outcome(within(limit, put).await, "taking over the writer lease failed")
					.await?
				{
					Some(version) => version,
					None => continue,
				}
			},
		};
		if version.e_tag.is_none() && version.version.is_none() {
			return Err(unsupported_advice("its puts return no ETag or version"));
		}
		let state = LeaseState::new(
			Kind::Object { backend: Arc::clone(&backend), path: path.clone() },
			config.clone(),
			Held {
				info: me.clone(),
				version: Some(version),
				valid_until: Some(first_sent + validity),
			},
		);
		// Renew once at once: it proves that the backend replaces conditionally, before the node
		// relies on it (a local directory creates conditionally but cannot replace).
		// A failed request may have landed (its answer lost): the next try recognizes its own
		// object and goes on from its version.
		let mut renewed = Err(None);
		for _ in 0..3 {
			renewed = state.renew(backend.as_ref(), &path, Instant::now()).await;
			if !matches!(renewed, Err(None)) {
				break;
			}
			retry_soon().await;
		}
		match renewed {
			Ok(()) => return Ok(state),
			Err(Some(reason)) => {
				return Err(ConfigError::Lease(format!(
					"the writer lease was lost at once: {reason}"
				)))
			},
			Err(None) => {
				// Find out whether the backend can replace at all.
				let probe = PutOptions {
					mode: PutMode::Update(
						state
							.lock()
							.version
							.clone()
							.unwrap_or(UpdateVersion { e_tag: None, version: None }),
					),
					..Default::default()
				};
				let mut released = me.clone();
				released.expires_unix_ms = 0;
				let put = backend.put_opts(&path, PutPayload::from(released.encode()), probe);
				return match within(config.renew_every(), put).await {
					Err(err) if FailureKind::of(&err) == FailureKind::Unsupported => {
						// Leave nothing behind that would block the next attempt.
						let _ = within(config.renew_every(), backend.delete(&path)).await;
						Err(unsupported_advice(&err.to_string()))
					},
					Err(err) => Err(backend_error("renewing the new writer lease failed", err)),
					Ok(_) => Err(ConfigError::Lease(
						"renewing the new writer lease failed; it was released, try again".into(),
					)),
				};
			},
		}
	}
	Err(ConfigError::Lease(
		"the writer lease changed hands repeatedly while this instance tried to take it".into(),
	))
}

/// What the lease object of `store`'s prefix says, if there is one (for operators and tools;
/// `store` may be built without a lease of its own).
pub async fn read_lease(
	store: &crate::ObjectKvStore,
) -> Result<Option<LeaseInfo>, object_store::Error> {
	let path = lease_path(store.key_mapper().root());
	Ok(read(store.raw_backend().as_ref(), &path, TOOL_REQUEST_LIMIT).await?.map(|(info, _)| info))
}

/// Breaks the lease of `store`'s prefix, for an operator who knows its holder is dead: replaces
/// it, on the condition that it is still held by `instance` at the version just read, by a
/// released lease of the next generation under a new instance id, so that the next instance
/// starts at once and a holder that is alive after all finds it lost at its next renewal.
/// Returns what was broken.
pub async fn break_lease(
	store: &crate::ObjectKvStore, instance: &str,
) -> Result<LeaseInfo, String> {
	let path = lease_path(store.key_mapper().root());
	let backend = store.raw_backend();
	let (held, version) = read(backend.as_ref(), &path, TOOL_REQUEST_LIMIT)
		.await
		.map_err(|e| format!("reading the lease: {e}"))?
		.ok_or_else(|| "there is no lease to break".to_owned())?;
	if held.instance != instance {
		return Err(format!("the lease is held by {}, not by instance {instance}", held.holder()));
	}
	let mut broken = LeaseInfo::new_for_this_process().map_err(|e| e.to_string())?;
	broken.generation = held.generation + 1;
	broken.expires_unix_ms = 0;
	let options = PutOptions { mode: PutMode::Update(version), ..Default::default() };
	within(TOOL_REQUEST_LIMIT, backend.put_opts(&path, PutPayload::from(broken.encode()), options))
		.await
		.map_err(|e| format!("the lease changed meanwhile or cannot be replaced: {e}"))?;
	Ok(held)
}
