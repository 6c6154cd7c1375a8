//! What the benchmarks run with: the production LDK types a node uses (`KeysManager`, so monitors
//! load as `ChannelMonitor<InMemorySigner>`), the stores, and the two persisters side by side.

use std::sync::Arc;
use std::time::Duration;

use bitcoin::{Network, Transaction};
use ldk_object_store::{ObjectKvStore, RetryPolicy, StoreBuilder};
use lightning::chain::chaininterface::{BroadcasterInterface, ConfirmationTarget, FeeEstimator};
use lightning::sign::KeysManager;
use lightning::util::logger::{Logger, Record};
use lightning::util::persist::MonitorUpdatingPersister;
use object_store::ObjectStore;

/// Seed of node 0 of LDK's harness, whose monitors the fixtures are.
pub const NODE0_SEED: [u8; 32] = [0; 32];

/// Discards log records (LDK's test logger prints every line).
#[derive(Debug, Default)]
pub struct NullLogger;

impl Logger for NullLogger {
	fn log(&self, _record: Record) {}
}

#[derive(Debug, Default)]
pub struct NullBroadcaster;

impl BroadcasterInterface for NullBroadcaster {
	fn broadcast_transactions(&self, _txs: &[&Transaction]) {}
}

#[derive(Debug, Default)]
pub struct FixedFees;

impl FeeEstimator for FixedFees {
	fn get_est_sat_per_1000_weight(&self, _target: ConfirmationTarget) -> u32 {
		253
	}
}

/// The components a persister borrows; `'static` so async persisters can hold them.
pub struct Ldk {
	pub keys: KeysManager,
	pub logger: NullLogger,
	pub broadcaster: NullBroadcaster,
	pub fees: FixedFees,
}

impl Ldk {
	pub fn leak() -> &'static Ldk {
		// Same seed as the harness's node 0 (`TestKeysInterface::new(&[0; 32], Testnet)` wraps a
		// `KeysManager` of that seed): it derives the same channel signers.
		let genesis = bitcoin::blockdata::constants::genesis_block(Network::Testnet);
		let keys = KeysManager::new(&NODE0_SEED, u64::from(genesis.header.time), 0, true);
		Box::leak(Box::new(Ldk {
			keys,
			logger: NullLogger,
			broadcaster: NullBroadcaster,
			fees: FixedFees,
		}))
	}
}

pub type Ours = ldk_object_store::MonitorPersister<
	&'static NullLogger,
	&'static KeysManager,
	&'static KeysManager,
	&'static NullBroadcaster,
	&'static FixedFees,
>;

/// A loaded monitor, as both persisters return it.
pub type LoadedMonitor = (
	bitcoin::BlockHash,
	lightning::chain::channelmonitor::ChannelMonitor<lightning::sign::InMemorySigner>,
);

pub type Theirs<'s> = MonitorUpdatingPersister<
	&'s ObjectKvStore,
	&'static NullLogger,
	&'static KeysManager,
	&'static KeysManager,
	&'static NullBroadcaster,
	&'static FixedFees,
>;

pub fn ours(
	store: &ObjectKvStore, ldk: &'static Ldk, config: ldk_object_store::PersisterConfig,
) -> Ours {
	ldk_object_store::MonitorPersister::new(
		store,
		config,
		&ldk.logger,
		&ldk.keys,
		&ldk.keys,
		&ldk.broadcaster,
		&ldk.fees,
	)
}

pub fn ours_async(
	store: &ObjectKvStore, ldk: &'static Ldk, config: ldk_object_store::PersisterConfig,
) -> Ours {
	ldk_object_store::MonitorPersister::new_async(
		store,
		config,
		&ldk.logger,
		&ldk.keys,
		&ldk.keys,
		&ldk.broadcaster,
		&ldk.fees,
	)
	.expect("starting the completion thread")
}

pub fn theirs<'s>(store: &'s ObjectKvStore, ldk: &'static Ldk, max_pending: u64) -> Theirs<'s> {
	MonitorUpdatingPersister::new(
		store,
		&ldk.logger,
		max_pending,
		&ldk.keys,
		&ldk.keys,
		&ldk.broadcaster,
		&ldk.fees,
	)
}

/// An `ObjectKvStore` over `backend` below `prefix`, allowing `max_in_flight` requests at once.
pub fn kv_store(
	backend: &Arc<dyn ObjectStore>, prefix: &str, max_in_flight: usize,
) -> ObjectKvStore {
	builder(backend, prefix, max_in_flight).build().expect("store builds")
}

/// [`kv_store`] with fencing off (it is on by default where the writer lease is an object lease):
/// what fencing costs, side by side.
pub fn kv_store_unfenced(
	backend: &Arc<dyn ObjectStore>, prefix: &str, max_in_flight: usize,
) -> ObjectKvStore {
	builder(backend, prefix, max_in_flight).with_fencing(false).build().expect("store builds")
}

/// [`kv_store`] without the writer lease: a second look at a prefix whose writer is still open.
pub fn kv_reader(
	backend: &Arc<dyn ObjectStore>, prefix: &str, max_in_flight: usize,
) -> ObjectKvStore {
	builder(backend, prefix, max_in_flight).without_writer_lease().build().expect("store builds")
}

/// [`kv_store`] over `primary` with a replica at the same prefix of `replica` (every write and
/// remove sent to both; see `ldk_object_store::replica`). Its start reads both copies' records,
/// and fills the replica in the background unless it is recorded in sync.
pub fn kv_pair(
	primary: &Arc<dyn ObjectStore>, replica: &Arc<dyn ObjectStore>, prefix: &str,
	max_in_flight: usize,
) -> ObjectKvStore {
	let replica = StoreBuilder::from_store(Arc::clone(replica)).with_prefix(prefix);
	let pair = builder(primary, prefix, max_in_flight).with_replica(replica);
	pair.build().expect("the pair builds")
}

fn builder(backend: &Arc<dyn ObjectStore>, prefix: &str, max_in_flight: usize) -> StoreBuilder {
	StoreBuilder::from_store(Arc::clone(backend))
		.with_prefix(prefix)
		.with_max_in_flight(max_in_flight)
		.with_retry(RetryPolicy { max_elapsed: Duration::from_secs(600), ..RetryPolicy::default() })
}
