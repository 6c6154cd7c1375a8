//! The read path: loading monitors with their pending updates, in parallel, without writing.

use std::collections::VecDeque;
use std::ops::Deref;

use bitcoin::BlockHash;
use futures::future::Either;
use futures::stream::{self, Stream, StreamExt, TryStreamExt};
use lightning::chain::chaininterface::{BroadcasterInterface, FeeEstimator};
use lightning::chain::channelmonitor::{ChannelMonitor, ChannelMonitorUpdate};
use lightning::io;
use lightning::sign::{EntropySource, SignerProvider};
use lightning::util::logger::Logger;
use lightning::util::persist::MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL;
use lightning::util::ser::{Readable, ReadableArgs};

use super::names::{parse_monitor_key, parse_update_key, MONITORS, MONITORS_SECONDARY, UPDATES};
use super::MonitorPersister;
use crate::runtime::block_on;

/// How pending updates are found when a monitor is loaded. All modes return the same monitors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
	/// Read `update_id + 1`, `+ 2`, … one at a time until one is absent, as LDK does. One
	/// request per update plus one, each on the critical path.
	Probe,
	/// Keep `window` reads of the next update ids in flight and apply them in order; stop at the
	/// first absent one. Up to `window - 1` reads past the end are wasted; the critical path
	/// shrinks by about `window`.
	Pipelined {
		/// Reads in flight ahead of the next update to apply.
		window: usize,
	},
	/// List the monitor's update namespace once, then read the consecutive ids after the
	/// monitor's in parallel. Relies on listing being complete (it is on S3 and the local stores).
	List,
}

/// The pending updates of one monitor, in id order.
trait UpdateStream: Stream<Item = Result<(u64, ChannelMonitorUpdate), io::Error>> {}
impl<S: Stream<Item = Result<(u64, ChannelMonitorUpdate), io::Error>>> UpdateStream for S {}

/// A loaded monitor: the best block it had seen, and the monitor with its updates applied (what
/// LDK's `read_channel_monitors` and `MonitorUpdatingPersister` return).
pub type LoadedMonitor<SP> =
	(BlockHash, ChannelMonitor<<<SP as Deref>::Target as SignerProvider>::EcdsaSigner>);

type Loaded<SP> = LoadedMonitor<SP>;

fn invalid(message: String) -> io::Error {
	crate::error::io_error(io::ErrorKind::InvalidData, message)
}

/// Keeps the error's kind and names the object in its message.
fn context(error: io::Error, what: &str) -> io::Error {
	crate::error::io_error(error.kind(), format!("{what}: {}", crate::error::io_text(&error)))
}

impl<L: Deref, ES: Deref, SP: Deref, BI: Deref, FE: Deref> MonitorPersister<L, ES, SP, BI, FE>
where
	L::Target: Logger,
	ES::Target: EntropySource + Sized,
	SP::Target: SignerProvider + Sized,
	BI::Target: BroadcasterInterface,
	FE::Target: FeeEstimator,
{
	/// Loads every stored monitor with its pending updates applied, in parallel (see the module
	/// docs). The result is sorted by monitor key. Writes nothing.
	pub async fn read_all_channel_monitors_with_updates(
		&self,
	) -> Result<Vec<LoadedMonitor<SP>>, io::Error> {
		let mut keys = self.store.start_list(MONITORS, MONITORS_SECONDARY).await?;
		keys.sort();
		let loaded: Vec<Option<Loaded<SP>>> = stream::iter(keys)
			.map(|key| async move { self.maybe_read_channel_monitor_with_updates(&key).await })
			.buffered(self.config.max_monitors_loading.max(1))
			.try_collect()
			.await?;
		Ok(loaded.into_iter().flatten().collect())
	}

	/// [`Self::read_all_channel_monitors_with_updates`] for synchronous callers.
	pub fn read_all_channel_monitors_with_updates_blocking(
		&self,
	) -> Result<Vec<LoadedMonitor<SP>>, io::Error> {
		block_on(self.read_all_channel_monitors_with_updates())
	}

	/// Loads one monitor with its pending updates applied.
	pub async fn read_channel_monitor_with_updates(
		&self, monitor_key: &str,
	) -> Result<LoadedMonitor<SP>, io::Error> {
		self.maybe_read_channel_monitor_with_updates(monitor_key).await?.ok_or_else(|| {
			invalid(format!(
				"monitor {monitor_key} is a stale pre-0.0.118 monitor that LDK can no longer read; \
				 it holds no funds: delete it by hand"
			))
		})
	}

	async fn maybe_read_channel_monitor_with_updates(
		&self, monitor_key: &str,
	) -> Result<Option<Loaded<SP>>, io::Error> {
		let Some((block_hash, monitor)) = self.maybe_read_monitor(monitor_key).await? else {
			return Ok(None);
		};
		let first = match monitor.get_latest_update_id().checked_add(1) {
			Some(first) => first,
			None => return Ok(Some((block_hash, monitor))),
		};
		let mut updates = std::pin::pin!(self.pending_updates(monitor_key, first));
		while let Some(update) = updates.next().await {
			let (update_id, update) = update?;
			monitor
				.update_monitor(&update, &self.broadcaster, &self.fee_estimator, &self.logger)
				.map_err(|()| {
				crate::error::io_error(
					io::ErrorKind::Other,
					format!(
						"update monitor_updates/{monitor_key}/{update_id} does not apply to \
							 its monitor"
					),
				)
			})?;
		}
		Ok(Some((block_hash, monitor)))
	}

	/// The stored monitor alone, without its updates (for maintenance).
	pub(crate) async fn read_monitor_without_updates(
		&self, monitor_key: &str,
	) -> Result<LoadedMonitor<SP>, io::Error> {
		self.maybe_read_monitor(monitor_key)
			.await?
			.ok_or_else(|| invalid(format!("monitor {monitor_key} is a stale pre-0.0.118 monitor")))
	}

	async fn maybe_read_monitor(&self, monitor_key: &str) -> Result<Option<Loaded<SP>>, io::Error> {
		let monitor_name = parse_monitor_key(monitor_key)?;
		let bytes = self.store.start_read(MONITORS, MONITORS_SECONDARY, monitor_key).await?;
		let body =
			bytes.strip_prefix(MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL).unwrap_or(&bytes);
		let args = (&*self.entropy_source, &*self.signer_provider);
		match <Option<Loaded<SP>>>::read(&mut io::Cursor::new(body), args) {
			Ok(None) => Ok(None),
			Ok(Some((block_hash, monitor))) => {
				if monitor.persistence_key() != monitor_name {
					return Err(invalid(format!(
						"monitor stored under monitors/{monitor_key} belongs to {}",
						monitor.persistence_key()
					)));
				}
				Ok(Some((block_hash, monitor)))
			},
			Err(error) => Err(invalid(format!(
				"monitors/{monitor_key} ({} bytes) does not decode as a ChannelMonitor: {error:?}",
				bytes.len()
			))),
		}
	}

	/// The pending updates from `first` on, in id order, ending before the first absent id.
	fn pending_updates<'a>(&'a self, monitor_key: &'a str, first: u64) -> impl UpdateStream + 'a {
		let window = match self.config.load_mode {
			LoadMode::Probe => 1,
			LoadMode::Pipelined { window } => window,
			LoadMode::List => return Either::Right(self.listed_updates(monitor_key, first)),
		};
		Either::Left(self.read_updates(monitor_key, first..=u64::MAX, window))
	}

	/// Lists the monitor's update ids once, then reads the run right after `first` in parallel.
	fn listed_updates<'a>(&'a self, monitor_key: &'a str, first: u64) -> impl UpdateStream + 'a {
		stream::once(async move {
			let mut ids = Vec::new();
			for key in self.store.start_list(UPDATES, monitor_key).await? {
				let id = parse_update_key(monitor_key, &key)?;
				if id >= first {
					ids.push(id);
				}
			}
			ids.sort_unstable();
			// Only the run of consecutive ids right after the monitor's: never past a gap.
			let run: Vec<u64> = ids
				.into_iter()
				.zip(first..)
				.take_while(|(id, next)| id == next)
				.map(|(id, _)| id)
				.collect();
			let window = run.len();
			Ok::<_, io::Error>(self.read_updates(monitor_key, run.into_iter(), window))
		})
		.try_flatten()
	}

	/// Reads the updates `ids` in order with up to `window` reads in flight, and ends at the first
	/// absent one or after the first error.
	fn read_updates<'a>(
		&'a self, monitor_key: &'a str, ids: impl Iterator<Item = u64> + 'a, window: usize,
	) -> impl UpdateStream + 'a {
		let state = (ids, VecDeque::new(), false);
		stream::unfold(state, move |(mut ids, mut in_flight, failed)| async move {
			if failed {
				return None;
			}
			while in_flight.len() < window.max(1) {
				let Some(id) = ids.next() else { break };
				// Each read starts on the store's runtime as soon as it is made.
				in_flight
					.push_back((id, self.store.start_read(UPDATES, monitor_key, &id.to_string())));
			}
			let (id, read) = in_flight.pop_front()?;
			let item = match read.await.map_err(io::Error::from) {
				Ok(bytes) => decode_update(monitor_key, id, &bytes).map(|update| (id, update)),
				Err(error) if error.kind() == io::ErrorKind::NotFound => return None,
				Err(error) => Err(context(error, &format!("monitor {monitor_key}"))),
			};
			let failed = item.is_err();
			Some((item, (ids, in_flight, failed)))
		})
	}
}

fn decode_update(
	monitor_key: &str, update_id: u64, bytes: &[u8],
) -> Result<ChannelMonitorUpdate, io::Error> {
	let update = ChannelMonitorUpdate::read(&mut &bytes[..]).map_err(|error| {
		invalid(format!(
			"monitor_updates/{monitor_key}/{update_id} ({} bytes) does not decode as a \
			 ChannelMonitorUpdate: {error:?}",
			bytes.len()
		))
	})?;
	if update.update_id != update_id {
		return Err(invalid(format!(
			"monitor_updates/{monitor_key}/{update_id} holds update {}",
			update.update_id
		)));
	}
	Ok(update)
}
