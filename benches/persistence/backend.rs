//! The stores the benchmarks run against: in-memory behind a simulated round trip, in-memory
//! behind the S3-like model (`store_models::S3LikeStore`), and LocalStack on loopback. All are
//! seen through a [`LatencyStore`], which counts every request (with a round trip of zero on
//! LocalStack and on the S3-like model, whose own latency is the one that counts).

use std::sync::Arc;
use std::time::Duration;

use ldk_object_store::ObjectKvStore;
use lightning::util::persist::{
	KVStore, CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
	CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE,
	MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL,
};
use object_store::memory::InMemory;
use object_store::ObjectStore;

use crate::env::{kv_store, kv_store_unfenced};
use crate::fixtures::ChannelFixture;
use store_models::{Control, Counts, LatencyStore, S3LikeStore, S3Model, S3Params};

/// A store to run against.
pub struct Backend {
	pub name: String,
	/// The store the benchmarks use: counted, and delayed by `rtt` per request.
	pub store: Arc<dyn ObjectStore>,
	pub control: Arc<Control>,
	/// The simulated round trip; `None` for a real server and for the S3-like model.
	pub rtt: Option<Duration>,
	/// The S3-like model behind the store, if it is that one.
	pub s3: Option<Arc<S3Model>>,
	/// Requests in flight while seeding fixtures.
	seed_parallelism: usize,
	run_id: String,
}

impl Backend {
	pub fn memory(rtt: Duration) -> Backend {
		let control = Arc::new(Control::default());
		control.set_rtt(rtt);
		Backend {
			name: format!("in-memory + {} ms round trip", rtt.as_secs_f64() * 1000.0),
			store: LatencyStore::wrap(Arc::new(InMemory::new()), Arc::clone(&control)),
			control,
			rtt: Some(rtt),
			s3: None,
			seed_parallelism: 1024,
			run_id: String::new(),
		}
	}

	/// In-memory behind the S3-like model with `params` (its own latency, rates and
	/// connections; no round trip of the [`LatencyStore`], which only counts).
	pub fn s3_like(params: S3Params) -> Backend {
		let control = Arc::new(Control::default());
		let model = S3Model::new(params);
		let inner = S3LikeStore::wrap(Arc::new(InMemory::new()), Arc::clone(&model));
		Backend {
			name: format!(
				"in-memory S3-like model (median {} ms, p99 {} ms, {} connections)",
				params.median.as_secs_f64() * 1000.0,
				params.p99.as_secs_f64() * 1000.0,
				params.connections
			),
			store: LatencyStore::wrap(inner, Arc::clone(&control)),
			control,
			rtt: None,
			s3: Some(model),
			seed_parallelism: 1024,
			run_id: String::new(),
		}
	}

	pub fn server(name: &str, inner: Arc<dyn ObjectStore>) -> Backend {
		let control = Arc::new(Control::default());
		Backend {
			name: name.to_owned(),
			store: LatencyStore::wrap(inner, Arc::clone(&control)),
			control,
			rtt: None,
			s3: None,
			seed_parallelism: 64,
			run_id: format!("bench-{:016x}", fastrand::u64(..)),
		}
	}

	/// A prefix of its own for one scenario (unique per process on a shared server).
	pub fn prefix(&self, scenario: &str) -> String {
		if self.run_id.is_empty() {
			scenario.to_owned()
		} else {
			format!("{}/{scenario}", self.run_id)
		}
	}

	/// A store below `prefix` with `max_in_flight` requests at once.
	pub fn kv(&self, prefix: &str, max_in_flight: usize) -> ObjectKvStore {
		kv_store(&self.store, prefix, max_in_flight)
	}

	/// [`Self::kv`] with fencing off (not the default).
	pub fn kv_unfenced(&self, prefix: &str, max_in_flight: usize) -> ObjectKvStore {
		kv_store_unfenced(&self.store, prefix, max_in_flight)
	}

	pub fn reset_counts(&self) {
		self.control.counters.reset();
	}

	pub fn counts(&self) -> Counts {
		self.control.counters.snapshot()
	}

	/// Runs `f` with the simulated round trip off, and the S3-like model passing requests
	/// straight through (for seeding).
	pub fn without_latency<T>(&self, f: impl FnOnce() -> T) -> T {
		let rtt = self.latency_off();
		let out = f();
		self.latency_on(rtt);
		out
	}

	/// Turns the simulated round trip and the S3-like model off; returns the round trip, for
	/// [`Self::latency_on`].
	pub fn latency_off(&self) -> Duration {
		let rtt = self.control.rtt();
		self.control.set_rtt(Duration::ZERO);
		if let Some(model) = &self.s3 {
			model.set_enabled(false);
		}
		rtt
	}

	/// Turns them on again, with the round trip `latency_off` returned.
	pub fn latency_on(&self, rtt: Duration) {
		self.control.set_rtt(rtt);
		if let Some(model) = &self.s3 {
			model.set_enabled(true);
		}
	}

	/// Writes what LDK's `MonitorUpdatingPersister` leaves behind for these channels: each
	/// monitor (with the sentinel) and its first `updates` update objects.
	pub fn seed(&self, prefix: &str, channels: &[&ChannelFixture], updates: usize) {
		let store = self.kv(prefix, self.seed_parallelism);
		let mut writes = Vec::new();
		for c in channels {
			assert!(c.updates.len() >= updates, "{}: only {} updates", c.label, c.updates.len());
			let mut monitor = MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL.to_vec();
			monitor.extend_from_slice(&c.monitor);
			writes.push(KVStore::write(
				&store,
				CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
				"",
				&c.key,
				monitor,
			));
			for (i, update) in c.updates[..updates].iter().enumerate() {
				writes.push(KVStore::write(
					&store,
					CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE,
					&c.key,
					&c.update_id_at(i).to_string(),
					update.clone(),
				));
			}
		}
		self.without_latency(|| {
			for result in futures::executor::block_on(futures::future::join_all(writes)) {
				result.expect("seeding the store");
			}
		});
	}
}
