//! Order under load: a randomized stress of writes, removes and reads on a few shared keys,
//! checked against a sequential model of the calls.
//!
//! The calls are made one after the other from one thread, so their order is known: the model
//! (per key, the value after every call so far) is updated at each call, and a read must return
//! the model's value at the time of the call — the store guarantees that a read sees every earlier
//! call on its key and nothing later, however the futures are awaited. The returned futures are
//! kept in a pool and awaited in random order and random batches (`join_all` over shuffled
//! subsets), while new calls keep coming; a few write and remove futures are dropped unpolled (the
//! store carries them out anyway, in order); a few reads go through `KVStoreSync` in the middle of
//! it all. At the end every key reads as the model says and each namespace lists exactly the
//! model's keys.
//!
//! In memory with random latency before every request: 100 000 operations (`LDK_OS_STRESS_OPS`
//! overrides); a local directory and LocalStack: a few thousand.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::backends::{self, Backend};
use common::wrappers::{Guard, Hook, Hooked, RandomLatency, Request};
use futures::executor::block_on;
use futures::future::join_all;
use ldk_object_store::ObjectKvStore;
use lightning::io::{self, ErrorKind};
use lightning::util::persist::{KVStore, KVStoreSync};
use object_store::path::Path;

/// The shared keys: several in one namespace, others beside it, one without a secondary
/// namespace and one at the top (no key is named like a namespace: a local directory could not
/// hold both).
const KEYS: [(&str, &str, &str); 8] = [
	("stress", "a", "k0"),
	("stress", "a", "k1"),
	("stress", "a", "k2"),
	("stress", "a", "k3"),
	("stress", "b", "k0"),
	("stress", "b", "k1"),
	("stress", "", "solo"),
	("", "", "stress_top"),
];

/// The namespaces the keys live in, to check listings against the model.
const NAMESPACES: [(&str, &str); 4] = [("stress", "a"), ("stress", "b"), ("stress", ""), ("", "")];

type Outcome = Result<Option<Vec<u8>>, io::Error>;

/// A call whose future is still to be awaited, with what it must return.
struct Pending {
	index: u64,
	key: usize,
	what: &'static str,
	/// For a read, the model's value at the call; `None` for writes and removes.
	expected: Option<Option<Vec<u8>>>,
	future: Pin<Box<dyn Future<Output = Outcome> + Send>>,
}

#[derive(Debug, Default)]
struct Counts {
	writes: u64,
	removes: u64,
	reads: u64,
	sync_reads: u64,
	dropped: u64,
	reads_found: u64,
	largest_pool: usize,
	batches: u64,
}

/// A value that names the call that wrote it, padded to a random length.
fn value(index: u64) -> Vec<u8> {
	let mut v = format!("v{index}:").into_bytes();
	v.extend(std::iter::repeat_n(b'x', fastrand::usize(0..48)));
	v
}

fn describe(v: &Option<Vec<u8>>) -> String {
	match v {
		None => "absent".to_owned(),
		Some(v) => {
			let text = String::from_utf8_lossy(v);
			let call = text.split(':').next().unwrap_or("?").trim_start_matches('v');
			format!("the value of call {call}")
		},
	}
}

fn check(label: &str, p: &Pending, outcome: Outcome, counts: &mut Counts) {
	let (p0, s0, k0) = KEYS[p.key];
	let at = format!("{label}: call {} ({} of {p0}/{s0}/{k0})", p.index, p.what);
	match (&p.expected, outcome) {
		(None, Ok(None)) => {},
		(None, other) => panic!("{at}: {other:?}"),
		(Some(expected), Ok(Some(got))) => {
			assert!(
				expected.as_ref() == Some(&got),
				"{at}: read {}, the model says {}",
				describe(&Some(got.clone())),
				describe(expected)
			);
			counts.reads_found += 1;
		},
		(Some(expected), Err(e)) if e.kind() == ErrorKind::NotFound => {
			assert!(
				expected.is_none(),
				"{at}: read nothing, the model says {}",
				describe(expected)
			);
		},
		(Some(_), other) => panic!("{at}: {other:?}"),
	}
}

/// Awaits `take` of the pending calls, picked at random, together, and checks each.
fn settle(label: &str, pool: &mut Vec<Pending>, take: usize, counts: &mut Counts) {
	fastrand::shuffle(pool);
	let batch: Vec<Pending> = pool.drain(pool.len() - take..).collect();
	let (meta, futures): (Vec<_>, Vec<_>) = batch
		.into_iter()
		.map(|mut p| {
			let future = std::mem::replace(&mut p.future, Box::pin(async { Ok(None) }));
			(p, future)
		})
		.unzip();
	let outcomes = block_on(join_all(futures));
	for (p, outcome) in meta.iter().zip(outcomes) {
		check(label, p, outcome, counts);
	}
	counts.batches += 1;
}

/// Runs `ops` random calls on `store` and checks them against the model. Returns the rate.
fn stress(label: &str, store: &ObjectKvStore, ops: u64) -> f64 {
	stress_through(label, std::slice::from_ref(store), ops)
}

/// [`stress`], each call made through one of `stores` at random (the first for the final checks).
fn stress_through(label: &str, stores: &[ObjectKvStore], ops: u64) -> f64 {
	let store = &stores[0];
	let mut model: Vec<Option<Vec<u8>>> = vec![None; KEYS.len()];
	// Start from a known state: nothing under the keys.
	for (p, s, k) in KEYS {
		KVStoreSync::remove(store, p, s, k, false).expect("clearing a key");
	}
	let mut counts = Counts::default();
	let mut pool: Vec<Pending> = Vec::new();
	let started = Instant::now();
	let mut index = 0;
	while index < ops {
		// A burst of calls…
		for _ in 0..fastrand::u64(1..=64).min(ops - index) {
			let key = fastrand::usize(..KEYS.len());
			let (p, s, k) = KEYS[key];
			let store = &stores[fastrand::usize(..stores.len())];
			let roll = fastrand::u32(0..1000);
			let pending = if roll < 450 {
				let v = value(index);
				model[key] = Some(v.clone());
				counts.writes += 1;
				let write = KVStore::write(store, p, s, k, v);
				Pending {
					index,
					key,
					what: "write",
					expected: None,
					future: Box::pin(async move { write.await.map(|()| None) }),
				}
			} else if roll < 600 {
				model[key] = None;
				counts.removes += 1;
				let remove = KVStore::remove(store, p, s, k, fastrand::bool());
				Pending {
					index,
					key,
					what: "remove",
					expected: None,
					future: Box::pin(async move { remove.await.map(|()| None) }),
				}
			} else if roll < 995 {
				counts.reads += 1;
				let read = KVStore::read(store, p, s, k);
				Pending {
					index,
					key,
					what: "read",
					expected: Some(model[key].clone()),
					future: Box::pin(async move { read.await.map(Some) }),
				}
			} else {
				// A blocking read in the middle of the async traffic sees every call before it.
				counts.sync_reads += 1;
				let got = KVStoreSync::read(store, p, s, k).map(Some);
				let read = Pending {
					index,
					key,
					what: "sync read",
					expected: Some(model[key].clone()),
					future: Box::pin(async { Ok(None) }),
				};
				check(label, &read, got, &mut counts);
				index += 1;
				continue;
			};
			index += 1;
			if pending.expected.is_none() && fastrand::u32(0..100) == 0 {
				// Dropped unpolled: still carried out, in its place.
				counts.dropped += 1;
				drop(pending);
				continue;
			}
			pool.push(pending);
		}
		counts.largest_pool = counts.largest_pool.max(pool.len());
		// …then a random part of everything still pending, in random order.
		let take =
			if pool.len() > 512 { pool.len() - 256 } else { fastrand::usize(0..=pool.len()) };
		if take > 0 {
			settle(label, &mut pool, take, &mut counts);
		}
	}
	let remaining = pool.len();
	if remaining > 0 {
		settle(label, &mut pool, remaining, &mut counts);
	}
	let elapsed = started.elapsed();

	// The end state is the model's: each key reads as the model says through either trait, and
	// each namespace lists exactly the model's keys.
	let absent_as_none = |read: Result<Vec<u8>, io::Error>, p: &str, s: &str, k: &str| match read {
		Ok(v) => Some(v),
		Err(e) if e.kind() == ErrorKind::NotFound => None,
		Err(e) => panic!("{label}: final read of {p}/{s}/{k}: {e}"),
	};
	for (key, (p, s, k)) in KEYS.iter().enumerate() {
		let got = absent_as_none(block_on(KVStore::read(store, p, s, k)), p, s, k);
		let got_sync = absent_as_none(KVStoreSync::read(store, p, s, k), p, s, k);
		for got in [got, got_sync] {
			assert!(
				got == model[key],
				"{label}: {p}/{s}/{k} ends as {}, the model as {}",
				describe(&got),
				describe(&model[key])
			);
		}
	}
	for (p, s) in NAMESPACES {
		let listed: BTreeSet<String> =
			KVStoreSync::list(store, p, s).expect("listing").into_iter().collect();
		let expected: BTreeSet<String> = KEYS
			.iter()
			.zip(&model)
			.filter(|((kp, ks, _), v)| *kp == p && *ks == s && v.is_some())
			.map(|((_, _, k), _)| k.to_string())
			.collect();
		assert_eq!(listed, expected, "{label}: listing {p}/{s}");
	}

	let rate = ops as f64 / elapsed.as_secs_f64();
	println!(
		"{label}: {ops} operations in {elapsed:.2?}, {rate:.0} ops/s ({} writes, {} removes, {} \
		 reads of which {} found a value, {} blocking reads, {} futures dropped unpolled; {} \
		 batches awaited, up to {} futures pending)",
		counts.writes,
		counts.removes,
		counts.reads,
		counts.reads_found,
		counts.sync_reads,
		counts.dropped,
		counts.batches,
		counts.largest_pool
	);
	rate
}

fn ops_from_env(default: u64) -> u64 {
	std::env::var("LDK_OS_STRESS_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// [`RandomLatency`] before one request in four and a few yields before the others, so requests
/// of different keys overtake each other at both scales without a timer tick (tokio's timer has a
/// resolution of 1 ms) on every request.
#[derive(Debug)]
struct Jitter(RandomLatency);

#[async_trait]
impl Hook for Jitter {
	async fn enter(&self, request: Request, path: &Path) -> object_store::Result<Guard> {
		if fastrand::u8(0..4) == 0 {
			return self.0.enter(request, path).await;
		}
		for _ in 0..fastrand::u8(0..4) {
			tokio::task::yield_now().await;
		}
		Ok(Box::new(()))
	}
}

fn with_latency(backend: &Backend, max: Duration) -> Backend {
	backend.wrapped(|s| Hooked::wrap(s, Arc::new(Jitter(RandomLatency { max }))))
}

fn seeded(label: &str) {
	let seed = std::env::var("LDK_OS_STRESS_SEED")
		.ok()
		.and_then(|v| v.parse().ok())
		.unwrap_or_else(|| fastrand::u64(..));
	fastrand::seed(seed);
	println!("{label}: seed {seed} (LDK_OS_STRESS_SEED={seed} repeats the calls)");
}

#[test]
fn order_under_load_in_memory() {
	seeded("memory");
	let memory = backends::memory("stress");
	let backend = with_latency(&memory, Duration::from_micros(300));
	stress("memory", &backend.store(), ops_from_env(100_000));
}

/// The check has teeth: two store instances over the same objects do not order calls between
/// them (each has its own queues), and the model catches the disorder.
#[test]
fn two_instances_without_a_shared_order_fail_the_check() {
	seeded("two instances");
	let memory = backends::memory("stress-control");
	let backend = with_latency(&memory, Duration::from_micros(300));
	// Without the writer lease, which would refuse the second instance at start (tests/lease.rs).
	let unleased = || backend.builder().without_writer_lease().build().unwrap();
	let stores = [unleased(), unleased()];
	println!("two instances: a failed check is expected below");
	let run = std::panic::AssertUnwindSafe(|| stress_through("two instances", &stores, 20_000));
	let outcome = std::panic::catch_unwind(run);
	let Err(panic) = outcome else { panic!("20 000 calls through two unordered instances passed") };
	let message = panic
		.downcast_ref::<String>()
		.cloned()
		.or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
		.unwrap_or_default();
	println!("two instances: caught as expected: {message}");
	assert!(message.contains("the model says"), "failed otherwise: {message}");
}

#[test]
fn order_under_load_in_a_local_directory() {
	seeded("local directory");
	// `dir` owns the directory; the wrapped view does not.
	let dir = backends::local_dir("stress");
	let backend = with_latency(&dir, Duration::from_micros(300));
	stress("local directory", &backend.store(), ops_from_env(100_000) / 20);
}

#[test]
fn order_under_load_on_localstack() {
	let Some(backend) = backends::s3("LOCALSTACK", "stress") else { return };
	seeded("localstack");
	stress("localstack", &backend.store(), ops_from_env(100_000) / 40);
}
