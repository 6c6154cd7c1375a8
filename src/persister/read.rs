//! The read path: loading monitors with their pending updates, in parallel, without writing.

use std::collections::{HashMap, VecDeque};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use bitcoin::BlockHash;
use futures::future::Either;
use futures::stream::{self, Stream, StreamExt, TryStreamExt};
use futures::TryFutureExt;
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
	/// List every update object once (`monitor_updates/`, one request per 1,000 objects) beside
	/// the listing of `monitors/`, then read the consecutive ids after each monitor's in
	/// parallel (up to the monitor's share of the bound on requests in flight at once, see
	/// [`PersisterConfig::max_monitors_loading`](super::PersisterConfig)): the fewest requests.
	/// Relies on listing being complete (it is on S3, GCS, Azure and the local stores).
	List,
	/// List each monitor's update namespace while its monitor is read, then read the consecutive
	/// ids after the monitor's in parallel: two round trips per monitor whatever its updates,
	/// one listing per monitor (LDK 0.3's way). Relies on listing being complete, as `List`.
	ListEach,
}

/// One pending update: its id, its object's size, and the update.
type Pending = (u64, usize, ChannelMonitorUpdate);

/// The pending updates of one monitor, in id order.
trait UpdateStream: Stream<Item = Result<Pending, io::Error>> {}
impl<S: Stream<Item = Result<Pending, io::Error>>> UpdateStream for S {}

/// A loaded monitor: the best block it had seen, and the monitor with its updates applied (what
/// LDK's `read_channel_monitors` and `MonitorUpdatingPersister` return).
pub type LoadedMonitor<SP> =
	(BlockHash, ChannelMonitor<<<SP as Deref>::Target as SignerProvider>::EcdsaSigner>);

type Loaded<SP> = LoadedMonitor<SP>;

/// What a load reads: the monitor keys, sorted, and in [`LoadMode::List`] every channel's
/// update ids from one listing of `monitor_updates/`.
struct LoadPlan {
	keys: Vec<String>,
	listed: Option<HashMap<String, Vec<u64>>>,
	/// The most update reads of one monitor in flight at once in the list modes (see
	/// [`update_window`]).
	window: usize,
}

/// The fewest update reads of a loading monitor in flight at once in the list modes: a few, so
/// that the bound stays full while monitors start and end at different times.
const MIN_UPDATE_WINDOW: usize = 4;

/// How many of a monitor's listed updates it reads at once when `monitors` load together: its
/// share of the bound on requests in flight (at least [`MIN_UPDATE_WINDOW`]). Reads beyond the
/// bound would only wait for a place, each holding its task's memory meanwhile: 1,000 monitors
/// of 50 updates each, all read at once, held 51,000 tasks and 460 MB at the peak.
fn update_window(max_requests_in_flight: usize, monitors: usize) -> usize {
	(max_requests_in_flight / monitors.max(1)).max(MIN_UPDATE_WINDOW)
}

impl LoadPlan {
	/// The listed update ids of `monitor_key`, in list mode.
	fn listed(&self, monitor_key: &str) -> Option<&[u64]> {
		self.listed.as_ref().map(|listed| listed.get(monitor_key).map_or(&[][..], Vec::as_slice))
	}
}

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
	/// docs). The result is sorted by monitor key. Writes nothing. Decoding and applying updates
	/// run on the task that awaits this; the blocking variant spreads them over every core.
	pub async fn read_all_channel_monitors_with_updates(
		&self,
	) -> Result<Vec<LoadedMonitor<SP>>, io::Error> {
		let plan = self.plan_load().await?;
		let loaded: Vec<Option<Loaded<SP>>> = stream::iter(&plan.keys)
			.map(|key| {
				self.maybe_read_channel_monitor_with_updates(key, plan.listed(key), plan.window)
			})
			.buffered(self.config.max_monitors_loading.max(1))
			.try_collect()
			.await?;
		Ok(loaded.into_iter().flatten().collect())
	}

	/// [`Self::read_all_channel_monitors_with_updates`] for synchronous callers, decoding monitors
	/// and applying their updates on [`PersisterConfig::load_threads`](super::PersisterConfig)
	/// threads at once (every core by default): the calling thread and scoped helpers, which
	/// share [`PersisterConfig::max_monitors_loading`](super::PersisterConfig) between them. The
	/// result is the same as the async loader's.
	pub fn read_all_channel_monitors_with_updates_blocking(
		&self,
	) -> Result<Vec<LoadedMonitor<SP>>, io::Error>
	where
		Self: Sync,
		Loaded<SP>: Send,
	{
		let plan = block_on(self.plan_load())?;
		let loading = self.config.max_monitors_loading.max(1);
		let threads = self.config.decode_threads().min(loading).min(plan.keys.len()).max(1);
		let per_thread = loading / threads;
		let (next, failed) = (AtomicUsize::new(0), AtomicBool::new(false));
		// Each thread claims the next monitor when it has room, so a slow one holds up no other.
		let work = || {
			let claims = std::iter::from_fn(|| {
				let index = next.fetch_add(1, Ordering::Relaxed);
				(index < plan.keys.len() && !failed.load(Ordering::Relaxed)).then_some(index)
			});
			let loads = stream::iter(claims)
				.map(|index| {
					let key = &plan.keys[index];
					let load = self.maybe_read_channel_monitor_with_updates(
						key,
						plan.listed(key),
						plan.window,
					);
					load.map_ok(move |loaded| (index, loaded))
				})
				.buffer_unordered(per_thread)
				.try_collect::<Vec<_>>();
			let outcome = block_on(loads);
			if outcome.is_err() {
				failed.store(true, Ordering::Relaxed);
			}
			outcome
		};
		let outcomes = thread::scope(|scope| {
			// A helper that cannot be started leaves its share to the others.
			let helpers: Vec<_> = (1..threads)
				.filter_map(|_| {
					thread::Builder::new()
						.name("ldk-object-store-load".into())
						.spawn_scoped(scope, work)
						.ok()
				})
				.collect();
			let mut outcomes = vec![work()];
			for helper in helpers {
				outcomes
					.push(helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
			}
			outcomes
		});
		let mut loaded = Vec::with_capacity(plan.keys.len());
		for outcome in outcomes {
			loaded.extend(outcome?);
		}
		loaded.sort_unstable_by_key(|(index, _)| *index);
		Ok(loaded.into_iter().filter_map(|(_, loaded)| loaded).collect())
	}

	/// Lists the monitors and, in list mode, every update object, both at once.
	async fn plan_load(&self) -> Result<LoadPlan, io::Error> {
		// Both listings start when they are made.
		let monitors = self.store.start_list(MONITORS, MONITORS_SECONDARY);
		let updates = match self.config.load_mode {
			LoadMode::List => Some(self.store.start_list_below(UPDATES)),
			_ => None,
		};
		let mut keys = monitors.await?;
		keys.sort();
		let loading = self.config.max_monitors_loading.max(1).min(keys.len());
		let window = update_window(self.config.max_requests_in_flight, loading);
		let listed = match updates {
			Some(updates) => {
				let mut listed: HashMap<String, Vec<u64>> = HashMap::new();
				for key in updates.await? {
					let id = parse_update_key(&key.secondary_namespace, &key.key)?;
					listed.entry(key.secondary_namespace).or_default().push(id);
				}
				Some(listed)
			},
			None => None,
		};
		Ok(LoadPlan { keys, listed, window })
	}

	/// Loads one monitor with its pending updates applied.
	pub async fn read_channel_monitor_with_updates(
		&self, monitor_key: &str,
	) -> Result<LoadedMonitor<SP>, io::Error> {
		let window = self.config.max_requests_in_flight;
		let read = self.maybe_read_channel_monitor_with_updates(monitor_key, None, window);
		read.await?.ok_or_else(|| {
			invalid(format!(
				"monitor {monitor_key} is a stale pre-0.0.118 monitor that LDK can no longer read; \
				 it holds no funds: delete it by hand"
			))
		})
	}

	/// Loads a monitor and applies its pending updates; `listed` are its update ids from a
	/// listing of all of them, in list mode, read up to `window` at once. Notes what it found in
	/// the ledger, so that consolidation counts the update objects already stored.
	async fn maybe_read_channel_monitor_with_updates(
		&self, monitor_key: &str, listed: Option<&[u64]>, window: usize,
	) -> Result<Option<Loaded<SP>>, io::Error> {
		// Listing the updates needs nothing from the monitor: started with its read, it costs no
		// round trip of its own.
		let early_listing = match (self.config.load_mode, listed) {
			(LoadMode::ListEach, _) | (LoadMode::List, None) => {
				Some(self.store.start_list(UPDATES, monitor_key))
			},
			_ => None,
		};
		let Some(((block_hash, monitor), monitor_len)) =
			self.maybe_read_monitor(monitor_key).await?
		else {
			return Ok(None);
		};
		let own_listing = match early_listing {
			Some(listing) => {
				let mut ids = Vec::new();
				for key in listing.await? {
					ids.push(parse_update_key(monitor_key, &key)?);
				}
				Some(ids)
			},
			None => None,
		};
		let listed = own_listing.as_deref().or(listed);
		let (mut count, mut bytes) = (0, 0);
		if let Some(first) = monitor.get_latest_update_id().checked_add(1) {
			let updates = self.pending_updates(monitor_key, first, listed, window);
			let mut updates = std::pin::pin!(updates);
			while let Some(update) = updates.next().await {
				let (update_id, len, update) = update?;
				monitor
					.update_monitor(&update, &self.broadcaster, &self.fee_estimator, &self.logger)
					.map_err(|()| {
						crate::error::io_error(
							io::ErrorKind::Other,
							format!(
								"update monitor_updates/{monitor_key}/{update_id} does not apply \
								 to its monitor"
							),
						)
					})?;
				(count, bytes) = (count + 1, bytes + len);
			}
		}
		self.ledger.note_loaded(monitor_key, monitor_len, count, bytes);
		Ok(Some((block_hash, monitor)))
	}

	/// The stored monitor and its object's size; `None` for a monitor LDK no longer reads (last
	/// updated before 0.0.118 and resolved), which every reader skips.
	pub(crate) async fn maybe_read_monitor(
		&self, monitor_key: &str,
	) -> Result<Option<(Loaded<SP>, usize)>, io::Error> {
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
				Ok(Some(((block_hash, monitor), bytes.len())))
			},
			Err(error) => Err(invalid(format!(
				"monitors/{monitor_key} ({} bytes) does not decode as a ChannelMonitor: {error:?}",
				bytes.len()
			))),
		}
	}

	/// The pending updates from `first` on, in id order, ending before the first absent id;
	/// `listed` are the monitor's update ids in the list modes, read up to `list_window` at once.
	fn pending_updates<'a>(
		&'a self, monitor_key: &'a str, first: u64, listed: Option<&[u64]>, list_window: usize,
	) -> impl UpdateStream + 'a {
		let window = match (self.config.load_mode, listed) {
			(LoadMode::Probe, _) => 1,
			(LoadMode::Pipelined { window }, _) => window,
			(LoadMode::List | LoadMode::ListEach, ids) => {
				let ids = ids.map(<[u64]>::to_vec).unwrap_or_default();
				return Either::Right(self.read_run(monitor_key, first, ids, list_window));
			},
		};
		Either::Left(self.read_updates(monitor_key, first..=u64::MAX, window))
	}

	/// Reads, up to `window` at once, the run of consecutive `ids` that starts at `first`: never
	/// past a gap.
	fn read_run<'a>(
		&'a self, monitor_key: &'a str, first: u64, mut ids: Vec<u64>, window: usize,
	) -> impl UpdateStream + 'a {
		ids.retain(|id| *id >= first);
		ids.sort_unstable();
		let run: Vec<u64> = ids
			.into_iter()
			.zip(first..)
			.take_while(|(id, next)| id == next)
			.map(|(id, _)| id)
			.collect();
		let window = run.len().min(window);
		self.read_updates(monitor_key, run.into_iter(), window)
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
				Ok(bytes) => {
					decode_update(monitor_key, id, &bytes).map(|update| (id, bytes.len(), update))
				},
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

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn a_loading_monitor_reads_its_share_of_the_bound_at_once() {
		// 1,000 monitors loading under a bound of 1,024: a few each, not all 50 of each.
		assert_eq!(update_window(1024, 1000), MIN_UPDATE_WINDOW);
		// Ten monitors share the bound: 99 updates each go out 102 at once, all together.
		assert_eq!(update_window(1024, 10), 102);
		assert_eq!(update_window(128, 1), 128);
		assert_eq!(update_window(8, 0), 8);
	}
}
