//! Delivering completed asynchronous writes to the `ChainMonitor`, each exactly once, from a
//! thread of the persister's own.
//!
//! `ChainMonitor::channel_monitor_updated` takes the `ChainMonitor`'s monitors lock, which LDK
//! holds for writing while it archives a channel, and so while it calls into the persister. A
//! report made on a store worker could therefore block the very worker that the archive (or any
//! other I/O) waits for. Reports are instead handed to a delivery thread over a channel; store
//! workers never call into LDK or into a user's [`MonitorUpdateSink`], and the delivery thread
//! may block on LDK's locks without holding up any I/O.
//!
//! The `ChainMonitor` owns its persister, so the persister cannot hold the monitor when it is
//! built. Two ways out, and a completion takes exactly one of them:
//! - push: [`MonitorPersister::bind_chain_monitor`](super::MonitorPersister::bind_chain_monitor)
//!   hands the persister a weak reference once the `ChainMonitor` exists; each durable update is
//!   then reported with `ChainMonitor::channel_monitor_updated`, which also wakes the background
//!   processor;
//! - pull: until then, completions wait in a queue that the `ChainMonitor` drains itself whenever
//!   it releases monitor events (`Persist::get_and_clear_completed_updates`), binding drains it,
//!   and [`get_update_future`](super::MonitorPersister::get_update_future) is woken for each.

use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use lightning::chain::chaininterface::{BroadcasterInterface, FeeEstimator};
use lightning::chain::chainmonitor::{ChainMonitor, Persist};
use lightning::chain::Filter;
use lightning::ln::types::ChannelId;
use lightning::sign::ecdsa::EcdsaChannelSigner;
use lightning::sign::EntropySource;
use lightning::util::logger::Logger;
use lightning::util::wakers::Notifier;

/// Something that takes reports of durable monitor updates: a `ChainMonitor`, or a forwarder.
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

impl<S: MonitorUpdateSink + ?Sized> MonitorUpdateSink for &S {
	fn monitor_update_completed(&self, channel_id: ChannelId, update_id: u64) {
		(**self).monitor_update_completed(channel_id, update_id)
	}
}

impl<S: MonitorUpdateSink + ?Sized> MonitorUpdateSink for Arc<S> {
	fn monitor_update_completed(&self, channel_id: ChannelId, update_id: u64) {
		(**self).monitor_update_completed(channel_id, update_id)
	}
}

/// A bound sink: weakly for the `ChainMonitor` that owns the persister, strongly otherwise.
pub(crate) enum Sink {
	Weak(Weak<dyn MonitorUpdateSink + Send + Sync>),
	Strong(Arc<dyn MonitorUpdateSink + Send + Sync>),
}

impl Sink {
	fn get(&self) -> Option<Arc<dyn MonitorUpdateSink + Send + Sync>> {
		match self {
			Sink::Weak(weak) => weak.upgrade(),
			Sink::Strong(strong) => Some(Arc::clone(strong)),
		}
	}
}

/// What the delivery thread is told.
enum Message {
	Completed(ChannelId, u64),
	/// A sink was bound: deliver what was queued.
	Bound,
	/// Answer once every message before this one is delivered.
	Drained(tokio::sync::oneshot::Sender<()>),
}

/// The persister's side of the delivery thread.
pub(crate) struct Completions {
	sender: Mutex<mpsc::Sender<Message>>,
	state: Arc<Shared>,
}

/// What the delivery thread and the persister share.
struct Shared {
	state: Mutex<State>,
	notifier: Notifier,
}

#[derive(Default)]
struct State {
	sink: Option<Sink>,
	queued: Vec<(ChannelId, u64)>,
}

impl std::fmt::Debug for Completions {
	fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
		let state = self.state.lock();
		f.debug_struct("Completions")
			.field("bound", &state.sink.is_some())
			.field("queued", &state.queued.len())
			.finish()
	}
}

impl Shared {
	fn lock(&self) -> MutexGuard<'_, State> {
		self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
	}

	/// Runs on the delivery thread until the persister is gone.
	fn deliver(&self, messages: mpsc::Receiver<Message>) {
		for message in messages {
			let reports = match message {
				Message::Completed(channel_id, update_id) => vec![(channel_id, update_id)],
				Message::Bound => std::mem::take(&mut self.lock().queued),
				Message::Drained(answer) => {
					let _ = answer.send(());
					continue;
				},
			};
			for (channel_id, update_id) in reports {
				self.report(channel_id, update_id);
			}
		}
	}

	/// To the sink if one is bound and alive, else into the queue the `ChainMonitor` pulls.
	fn report(&self, channel_id: ChannelId, update_id: u64) {
		let sink = {
			let mut state = self.lock();
			match state.sink.as_ref().and_then(Sink::get) {
				Some(sink) => sink,
				None => {
					state.queued.push((channel_id, update_id));
					drop(state);
					self.notifier.notify();
					return;
				},
			}
		};
		// Without our lock held: the ChainMonitor takes its own locks here. A sink that panics
		// must not end the deliveries of every other channel.
		let delivered =
			catch_unwind(AssertUnwindSafe(|| sink.monitor_update_completed(channel_id, update_id)));
		if delivered.is_err() {
			tracing::error!(%channel_id, update_id, "the monitor update sink panicked");
		}
	}
}

impl Completions {
	/// Starts the delivery thread.
	pub(crate) fn new() -> std::io::Result<Self> {
		let (sender, receiver) = mpsc::channel();
		let state = Arc::new(Shared { state: Mutex::default(), notifier: Notifier::new() });
		let shared = Arc::clone(&state);
		std::thread::Builder::new()
			.name("ldk-object-store-completions".into())
			.spawn(move || shared.deliver(receiver))?;
		Ok(Completions { sender: Mutex::new(sender), state })
	}

	fn send(&self, message: Message) {
		let sender = self.sender.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
		// The thread only ends once every sender is gone, so this cannot fail while we exist.
		if sender.send(message).is_err() {
			tracing::error!("the completion delivery thread is gone");
		}
	}

	/// Binds the sink and delivers what was queued.
	pub(crate) fn bind(&self, sink: Sink) {
		self.state.lock().sink = Some(sink);
		self.send(Message::Bound);
	}

	/// Reports one durable update, from the delivery thread. Never blocks.
	pub(crate) fn complete(&self, channel_id: ChannelId, update_id: u64) {
		self.send(Message::Completed(channel_id, update_id));
	}

	/// Completes once every completion reported before this call has been delivered (to the
	/// sink, or into the queue the `ChainMonitor` pulls).
	pub(crate) async fn drained(&self) {
		let (answer, delivered) = tokio::sync::oneshot::channel();
		self.send(Message::Drained(answer));
		let _ = delivered.await;
	}

	/// Hands the queued completions to the `ChainMonitor` that pulls them.
	pub(crate) fn take_queued(&self) -> Vec<(ChannelId, u64)> {
		std::mem::take(&mut self.state.lock().queued)
	}

	/// Completes when a completion is queued for pulling.
	pub(crate) fn get_update_future(&self) -> lightning::util::wakers::Future {
		self.state.notifier.get_future()
	}
}
