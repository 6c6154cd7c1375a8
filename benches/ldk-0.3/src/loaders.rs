//! The two loaders over the same stored objects, with the production LDK types a node loads with
//! (`KeysManager` of the harness's node 0, so monitors load as `ChannelMonitor<InMemorySigner>`):
//! this crate's `MonitorPersister` (built on LDK 0.2.7) and LDK 0.3.0-rc3's
//! `MonitorUpdatingPersisterAsync`.

use std::collections::HashMap;
use std::sync::Arc;

use bitcoin::Network;
use ldk_object_store::{MonitorPersister, ObjectKvStore, PersisterConfig, StoreBuilder};
use object_store::ObjectStore;

use crate::kv03::{ObjectKv03, TokioSpawner};

/// Seed of node 0 of LDK's functional-test harness, whose monitors the fixtures are.
const NODE0_SEED: [u8; 32] = [0; 32];

/// The harness's `KeysManager` start time: the testnet genesis block's (the main benchmark's
/// `env.rs` does the same). Monitors decode with any, but both versions get the same.
fn starting_time_secs() -> u64 {
	u64::from(bitcoin::blockdata::constants::genesis_block(Network::Testnet).header.time)
}

/// A loaded monitor, reduced to what the check needs: its key and latest update id.
pub type Summary = Vec<(String, u64)>;

/// Checks a load: every expected monitor came back, each at its expected update id.
pub fn check(who: &str, loaded: &Summary, expected: &HashMap<String, u64>) -> Result<(), String> {
	if loaded.len() != expected.len() {
		return Err(format!("{who}: {} monitors loaded, {} stored", loaded.len(), expected.len()));
	}
	for (key, id) in loaded {
		if expected.get(key) != Some(id) {
			return Err(format!(
				"{who}: monitor {key} came back at update id {id}, expected {:?}",
				expected.get(key)
			));
		}
	}
	Ok(())
}

/// LDK 0.2.7's side: the components this crate's persister borrows.
pub mod v02 {
	use bitcoin::Transaction;
	use lightning_02::chain::chaininterface::{
		BroadcasterInterface, ConfirmationTarget, FeeEstimator,
	};
	use lightning_02::sign::KeysManager;
	use lightning_02::util::logger::{Logger, Record};

	pub struct NullLogger;
	impl Logger for NullLogger {
		fn log(&self, _record: Record) {}
	}

	pub struct NullBroadcaster;
	impl BroadcasterInterface for NullBroadcaster {
		fn broadcast_transactions(&self, _txs: &[&Transaction]) {}
	}

	pub struct FixedFees;
	impl FeeEstimator for FixedFees {
		fn get_est_sat_per_1000_weight(&self, _target: ConfirmationTarget) -> u32 {
			253
		}
	}

	pub struct Env {
		pub keys: KeysManager,
		pub logger: NullLogger,
		pub broadcaster: NullBroadcaster,
		pub fees: FixedFees,
	}

	/// `'static`, as the persister borrows them for its lifetime.
	pub fn leak() -> &'static Env {
		let keys = KeysManager::new(&super::NODE0_SEED, super::starting_time_secs(), 0, true);
		Box::leak(Box::new(Env {
			keys,
			logger: NullLogger,
			broadcaster: NullBroadcaster,
			fees: FixedFees,
		}))
	}
}

/// LDK 0.3.0-rc3's side: the same components against 0.3's traits.
pub mod v03 {
	use bitcoin::Transaction;
	use lightning::chain::chaininterface::{
		BroadcasterInterface, ConfirmationTarget, FeeEstimator, TransactionType,
	};
	use lightning::sign::KeysManager;
	use lightning::util::logger::{Logger, Record};

	pub struct NullLogger;
	impl Logger for NullLogger {
		fn log(&self, _record: Record) {}
	}

	pub struct NullBroadcaster;
	impl BroadcasterInterface for NullBroadcaster {
		fn broadcast_transactions(&self, _txs: &[(&Transaction, TransactionType)]) {}
	}

	pub struct FixedFees;
	impl FeeEstimator for FixedFees {
		fn get_est_sat_per_1000_weight(&self, _target: ConfirmationTarget) -> u32 {
			253
		}
	}

	pub struct Env {
		pub keys: KeysManager,
		pub logger: NullLogger,
		pub broadcaster: NullBroadcaster,
		pub fees: FixedFees,
	}

	/// `'static`, as the async persister's spawned tasks hold them.
	pub fn leak() -> &'static Env {
		// 0.3's `KeysManager::new` takes the same arguments as 0.2.7's.
		let keys = KeysManager::new(&super::NODE0_SEED, super::starting_time_secs(), 0, true);
		Box::leak(Box::new(Env {
			keys,
			logger: NullLogger,
			broadcaster: NullBroadcaster,
			fees: FixedFees,
		}))
	}
}

/// This crate's store over `store` below `root`: no writer lease, as a read-only load needs none
/// (and the lease's own requests would be counted as the load's).
pub fn our_store(store: Arc<dyn ObjectStore>, root: &str, max_in_flight: usize) -> ObjectKvStore {
	StoreBuilder::from_store(store)
		.with_prefix(root)
		.with_max_in_flight(max_in_flight)
		.without_writer_lease()
		.build()
		.expect("building this crate's store")
}

pub type Ours = MonitorPersister<
	&'static v02::NullLogger,
	&'static lightning_02::sign::KeysManager,
	&'static lightning_02::sign::KeysManager,
	&'static v02::NullBroadcaster,
	&'static v02::FixedFees,
>;

pub fn ours(store: &ObjectKvStore, env: &'static v02::Env, config: PersisterConfig) -> Ours {
	MonitorPersister::new(
		store,
		config,
		&env.logger,
		&env.keys,
		&env.keys,
		&env.broadcaster,
		&env.fees,
	)
}

/// Loads with this crate's persister (the blocking entry point, which decodes on all cores).
pub fn load_ours(persister: &Ours) -> Result<Summary, String> {
	let loaded = persister
		.read_all_channel_monitors_with_updates_blocking()
		.map_err(|e| format!("this crate's load failed: {e}"))?;
	Ok(loaded
		.iter()
		.map(|(_, m)| (m.persistence_key().to_string(), m.get_latest_update_id()))
		.collect())
}

pub type Theirs = lightning::util::persist::MonitorUpdatingPersisterAsync<
	ObjectKv03,
	TokioSpawner,
	&'static v03::NullLogger,
	&'static lightning::sign::KeysManager,
	&'static lightning::sign::KeysManager,
	&'static v03::NullBroadcaster,
	&'static v03::FixedFees,
>;

/// LDK 0.3's async persister (its `maximum_pending_updates` plays no part in loading).
pub fn theirs(kv: ObjectKv03, rt: &tokio::runtime::Runtime, env: &'static v03::Env) -> Theirs {
	lightning::util::persist::MonitorUpdatingPersisterAsync::new(
		kv,
		TokioSpawner(rt.handle().clone()),
		&env.logger,
		100,
		&env.keys,
		&env.keys,
		&env.broadcaster,
		&env.fees,
	)
}

/// Loads with LDK 0.3's `read_all_channel_monitors_with_updates`, awaited on `rt`.
pub fn load_theirs(persister: &Theirs, rt: &tokio::runtime::Runtime) -> Result<Summary, String> {
	let loaded = rt
		.block_on(persister.read_all_channel_monitors_with_updates())
		.map_err(|e| format!("LDK 0.3's load failed: {e}"))?;
	Ok(loaded
		.iter()
		.map(|(_, m)| (m.persistence_key().to_string(), m.get_latest_update_id()))
		.collect())
}
