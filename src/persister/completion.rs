//! Delivering completed asynchronous writes to the `ChainMonitor`, each exactly once.
//!
//! The `ChainMonitor` owns its persister, so the persister cannot hold the monitor when it is
//! built. Two ways out, and a completion takes exactly one of them:
//! - push: [`MonitorPersister::bind_chain_monitor`](super::MonitorPersister::bind_chain_monitor)
//!   hands the persister a weak reference once the `ChainMonitor` exists; each durable update is
//!   then reported at once with `ChainMonitor::channel_monitor_updated`, which also wakes the
//!   background processor;
//! - pull: until then, completions wait in a queue that the `ChainMonitor` drains itself whenever
//!   it releases monitor events (`Persist::get_and_clear_completed_updates`), and binding drains it.

use std::sync::{Mutex, MutexGuard, Weak};

use lightning::chain::chaininterface::{BroadcasterInterface, FeeEstimator};
use lightning::chain::chainmonitor::{ChainMonitor, Persist};
use lightning::chain::Filter;
use lightning::ln::types::ChannelId;
use lightning::sign::ecdsa::EcdsaChannelSigner;
use lightning::sign::EntropySource;
use lightning::util::logger::Logger;
use std::ops::Deref;

/// Something that takes reports of durable monitor updates: a `ChainMonitor`, or a test double.
pub trait MonitorUpdateSink {
	/// Reports that `update_id` of `channel_id` is durable.
	fn monitor_update_completed(&self, channel_id: ChannelId, update_id: u64);
}

impl<ChannelSigner, C, T, F, L, P, ES> MonitorUpdateSink
	for ChainMonitor<ChannelSigner, C, T, F, L, P, ES>
where
	ChannelSigner: EcdsaChannelSigner,
	C: Deref,
	T: Deref,
	F: Deref,
	L: Deref,
	P: Deref,
	ES: Deref,
	C::Target: Filter,
	T::Target: BroadcasterInterface,
	F::Target: FeeEstimator,
	L::Target: Logger,
	P::Target: Persist<ChannelSigner>,
	ES::Target: EntropySource,
{
	fn monitor_update_completed(&self, channel_id: ChannelId, update_id: u64) {
		if let Err(err) = self.channel_monitor_updated(channel_id, update_id) {
			// Only possible if the channel's monitor is gone (archived) by now.
			tracing::warn!(%channel_id, update_id, ?err, "ChainMonitor refused a completion");
		}
	}
}

/// A shareable weak reference to a sink.
pub type SinkRef = Weak<dyn MonitorUpdateSink + Send + Sync>;

#[derive(Default)]
pub(crate) struct Completions {
	state: Mutex<State>,
}

#[derive(Default)]
struct State {
	sink: Option<SinkRef>,
	queued: Vec<(ChannelId, u64)>,
}

impl std::fmt::Debug for Completions {
	fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
		let state = self.lock();
		f.debug_struct("Completions")
			.field("bound", &state.sink.is_some())
			.field("queued", &state.queued.len())
			.finish()
	}
}

impl Completions {
	fn lock(&self) -> MutexGuard<'_, State> {
		self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
	}

	/// Binds the sink and delivers what was queued.
	pub(crate) fn bind(&self, sink: SinkRef) {
		let queued = {
			let mut state = self.lock();
			state.sink = Some(sink);
			std::mem::take(&mut state.queued)
		};
		for (channel_id, update_id) in queued {
			self.complete(channel_id, update_id);
		}
	}

	/// Reports one durable update: to the sink if one is bound and alive, else into the queue.
	pub(crate) fn complete(&self, channel_id: ChannelId, update_id: u64) {
		let sink = {
			let mut state = self.lock();
			match state.sink.as_ref().and_then(Weak::upgrade) {
				Some(sink) => sink,
				None => {
					state.queued.push((channel_id, update_id));
					return;
				},
			}
		};
		// Called without our lock held: the ChainMonitor takes its own locks here.
		sink.monitor_update_completed(channel_id, update_id);
	}

	/// Hands the queued completions to the `ChainMonitor` that pulls them.
	pub(crate) fn take_queued(&self) -> Vec<(ChannelId, u64)> {
		std::mem::take(&mut self.lock().queued)
	}
}
