//! Store overhead: the same requests through this crate's `ObjectKvStore` and straight through
//! the `object_store` client it wraps, alternating in rounds so that drift of the server hits both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use lightning::util::persist::{KVStore, KVStoreSync};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::backend::Backend;
use crate::report::{secs, Table};

const NAMESPACE: &str = "overhead";

/// The raw calls' runtime: two workers, like the store's own.
fn raw_runtime() -> tokio::runtime::Runtime {
	tokio::runtime::Builder::new_multi_thread()
		.worker_threads(2)
		.enable_all()
		.build()
		.expect("runtime")
}

/// Measurements of one operation: seconds per operation in each round, raw and ours.
struct Op {
	name: String,
	raw: Vec<f64>,
	ours: Vec<f64>,
}

fn median(values: &[f64]) -> f64 {
	let mut v = values.to_vec();
	v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
	v[v.len() / 2]
}

impl Op {
	/// The median over rounds of this crate's time ÷ the raw time of the same round.
	fn overhead(&self) -> f64 {
		let ratios: Vec<f64> = self.ours.iter().zip(&self.raw).map(|(o, r)| o / r).collect();
		median(&ratios) - 1.0
	}
}

pub struct Overhead {
	pub table: Table,
	/// (operation, overhead as a fraction) of each operation.
	pub overheads: Vec<(String, f64)>,
}

/// `ops` sequential writes and reads of 1 KiB objects, `concurrent` writes and reads with
/// `in_flight` at once, and listings of `concurrent` keys, over `rounds` alternating rounds.
pub fn run(
	backend: &Backend, label: &str, ops: usize, concurrent: usize, in_flight: usize, rounds: usize,
) -> Overhead {
	let prefix = backend.prefix(&format!("overhead-{label}"));
	let store = backend.kv(&prefix, in_flight);
	let raw: Arc<dyn ObjectStore> = Arc::clone(&backend.store);
	let runtime = raw_runtime();
	let value = vec![0xa5u8; 1024];
	let path = |round: usize, who: &str, i: usize| -> (String, Path) {
		let key = format!("{who}{round}k{i}");
		(key.clone(), Path::from(format!("{prefix}/{NAMESPACE}/{who}{round}/{key}")))
	};
	let mut results = [
		Op {
			name: format!("write 1 KiB, one at a time ({ops} per round)"),
			raw: vec![],
			ours: vec![],
		},
		Op {
			name: format!("read 1 KiB, one at a time ({ops} per round)"),
			raw: vec![],
			ours: vec![],
		},
		Op {
			name: format!("write 1 KiB, {in_flight} in flight ({concurrent} per round)"),
			raw: vec![],
			ours: vec![],
		},
		Op {
			name: format!("read 1 KiB, {in_flight} in flight ({concurrent} per round)"),
			raw: vec![],
			ours: vec![],
		},
		Op { name: format!("list a namespace of {concurrent} keys"), raw: vec![], ours: vec![] },
	];
	for round in 0..rounds {
		// Alternate which goes first, so that neither always meets a warmer server.
		for ours_turn in [round % 2 == 0, round % 2 == 1] {
			let who = if ours_turn { "ours" } else { "raw" };
			let ns = format!("{who}{round}");
			// Sequential writes and reads.
			let started = Instant::now();
			for i in 0..ops {
				let (key, p) = path(round, who, i);
				if ours_turn {
					KVStoreSync::write(&store, NAMESPACE, &ns, &key, value.clone()).expect("write");
				} else {
					runtime
						.block_on(raw.put(&p, PutPayload::from(value.clone())))
						.expect("raw put");
				}
			}
			let write_seq = started.elapsed().as_secs_f64() / ops as f64;
			let started = Instant::now();
			for i in 0..ops {
				let (key, p) = path(round, who, i);
				let got = if ours_turn {
					KVStoreSync::read(&store, NAMESPACE, &ns, &key).expect("read")
				} else {
					runtime
						.block_on(async { raw.get(&p).await?.bytes().await })
						.expect("raw get")
						.to_vec()
				};
				assert_eq!(got.len(), value.len());
			}
			let read_seq = started.elapsed().as_secs_f64() / ops as f64;
			// Concurrent writes and reads (the first `ops` keys exist already).
			let started = Instant::now();
			if ours_turn {
				let writes: Vec<_> = (ops..ops + concurrent)
					.map(|i| {
						KVStore::write(
							&store,
							NAMESPACE,
							&ns,
							&path(round, who, i).0,
							value.clone(),
						)
					})
					.collect();
				for result in futures::executor::block_on(futures::future::join_all(writes)) {
					result.expect("write");
				}
			} else {
				runtime.block_on(async {
					let puts = stream::iter(ops..ops + concurrent)
						.map(|i| {
							let (raw, p, v) =
								(Arc::clone(&raw), path(round, who, i).1, value.clone());
							async move { raw.put(&p, PutPayload::from(v)).await }
						})
						.buffer_unordered(in_flight)
						.collect::<Vec<_>>()
						.await;
					for put in puts {
						put.expect("raw put");
					}
				});
			}
			let write_conc = started.elapsed().as_secs_f64() / concurrent as f64;
			let started = Instant::now();
			if ours_turn {
				let reads: Vec<_> = (ops..ops + concurrent)
					.map(|i| KVStore::read(&store, NAMESPACE, &ns, &path(round, who, i).0))
					.collect();
				for result in futures::executor::block_on(futures::future::join_all(reads)) {
					assert_eq!(result.expect("read").len(), value.len());
				}
			} else {
				runtime.block_on(async {
					let gets = stream::iter(ops..ops + concurrent)
						.map(|i| {
							let (raw, p) = (Arc::clone(&raw), path(round, who, i).1);
							async move { raw.get(&p).await?.bytes().await }
						})
						.buffer_unordered(in_flight)
						.collect::<Vec<_>>()
						.await;
					for get in gets {
						assert_eq!(get.expect("raw get").len(), value.len());
					}
				});
			}
			let read_conc = started.elapsed().as_secs_f64() / concurrent as f64;
			let started = Instant::now();
			let listed = if ours_turn {
				KVStoreSync::list(&store, NAMESPACE, &ns).expect("list").len()
			} else {
				let dir = Path::from(format!("{prefix}/{NAMESPACE}/{ns}"));
				runtime
					.block_on(raw.list_with_delimiter(Some(&dir)))
					.expect("raw list")
					.objects
					.len()
			};
			let list = started.elapsed().as_secs_f64();
			assert_eq!(listed, ops + concurrent);
			for (op, t) in
				results.iter_mut().zip([write_seq, read_seq, write_conc, read_conc, list])
			{
				if ours_turn {
					op.ours.push(t);
				} else {
					op.raw.push(t);
				}
			}
		}
	}
	let mut table = Table::new(
		format!(
			"Store overhead: this crate's store against raw `object_store` calls, {}",
			backend.name
		),
		&["operation", "raw `object_store`", "this crate's store", "difference", "overhead"],
	)
	.intro(format!(
		"The same requests, alternating between the two in {rounds} rounds (which goes first \
		 alternates too). Times: the median over rounds of the time per operation (for the \
		 concurrent rows: wall time ÷ operations); overhead: the median over rounds of this \
		 crate's time ÷ the raw time of the same round, less one. The raw calls run on a \
		 2-thread tokio runtime like the store's own; sequential calls use the store's \
		 `KVStoreSync`, concurrent ones its `KVStore` futures under its own bound of {in_flight}."
	));
	let mut overheads = Vec::new();
	for op in &results {
		let per_op = |v: &[f64]| secs(Duration::from_secs_f64(median(v)));
		let overhead = op.overhead();
		let diff = median(&op.ours) - median(&op.raw);
		let diff = if diff >= 0.0 {
			format!("+{}", secs(Duration::from_secs_f64(diff)))
		} else {
			format!("−{}", secs(Duration::from_secs_f64(-diff)))
		};
		table.row(vec![
			op.name.clone(),
			per_op(&op.raw),
			per_op(&op.ours),
			diff,
			format!("{:+.1}%", overhead * 100.0),
		]);
		overheads.push((op.name.clone(), overhead));
	}
	Overhead { table, overheads }
}

/// What one read costs this process with no round trip: CPU time (user + system, every thread)
/// and allocations per read of a 1 KiB object, `in_flight` at once, raw `object_store` GETs
/// against this crate's store with its defaults (`KVStore::read`, polled from a plain thread as
/// the blocking loader does); alternating over `rounds` rounds of `reads` reads, medians. Returns
/// the table and the store's CPU time per read ÷ the raw one's.
pub fn read_cost(backend: &Backend, reads: usize, in_flight: usize, rounds: usize) -> (Table, f64) {
	let prefix = backend.prefix("read-cost");
	let store = backend.kv(&prefix, in_flight);
	let raw: Arc<dyn ObjectStore> = Arc::clone(&backend.store);
	let runtime = raw_runtime();
	let keys: Vec<String> = (0..reads).map(|i| format!("k{i}")).collect();
	let paths: Vec<Path> =
		keys.iter().map(|k| Path::from(format!("{prefix}/{NAMESPACE}/cost/{k}"))).collect();
	runtime.block_on(async {
		let value = PutPayload::from(vec![0x5au8; 1024]);
		let puts = stream::iter(&paths)
			.map(|p| raw.put(p, value.clone()))
			.buffer_unordered(in_flight)
			.collect::<Vec<_>>()
			.await;
		for put in puts {
			put.expect("seeding");
		}
	});
	// (CPU per read, allocations per read) of each round, raw and ours.
	let (mut raw_cost, mut ours_cost) = (Vec::new(), Vec::new());
	for round in 0..rounds {
		for ours_turn in [round % 2 == 0, round % 2 == 1] {
			let (cpu, allocations) = (crate::cpu::process_time(), crate::alloc::allocations());
			let read = if ours_turn {
				let reads = stream::iter(&keys)
					.map(|k| KVStore::read(&store, NAMESPACE, "cost", k))
					.buffer_unordered(in_flight)
					.map(|got| got.expect("read").len())
					.collect::<Vec<_>>();
				futures::executor::block_on(reads)
			} else {
				let gets = stream::iter(&paths)
					.map(|p| async { raw.get(p).await?.bytes().await.map(|b| b.len()) })
					.buffer_unordered(in_flight)
					.map(|got| got.expect("raw get"))
					.collect::<Vec<_>>();
				runtime.block_on(gets)
			};
			assert!(read.iter().all(|len| *len == 1024), "every read returned its object");
			let cost = (
				(crate::cpu::process_time() - cpu).as_secs_f64() / reads as f64,
				(crate::alloc::allocations() - allocations) as f64 / reads as f64,
			);
			if ours_turn { &mut ours_cost } else { &mut raw_cost }.push(cost);
		}
	}
	let cpu = |v: &[(f64, f64)]| median(&v.iter().map(|c| c.0).collect::<Vec<_>>());
	let allocations = |v: &[(f64, f64)]| median(&v.iter().map(|c| c.1).collect::<Vec<_>>());
	let ratio = cpu(&ours_cost) / cpu(&raw_cost);
	let mut table = Table::new(
		format!(
			"CPU per read: this crate's store against raw `object_store` GETs, {}",
			backend.name
		),
		&["reads", "CPU time per read", "allocations per read", "÷ raw"],
	)
	.intro(format!(
		"{reads} reads of 1 KiB objects, {in_flight} at once, in {rounds} rounds alternating \
		 between the two (which goes first alternates too); medians over rounds. CPU time: user \
		 + system time of the whole process (every thread: the store's runtime, the raw calls' \
		 2-thread runtime, the calling thread) ÷ reads. The raw GETs run on a tokio runtime; \
		 this crate's reads are `KVStore::read` futures with the store's defaults (adaptive \
		 bound up to {in_flight}, fencing on), awaited from a plain thread as the blocking \
		 loader awaits them."
	));
	for (name, cost) in [("raw `object_store` GET", &raw_cost), ("this crate's store", &ours_cost)]
	{
		table.row(vec![
			name.into(),
			secs(Duration::from_secs_f64(cpu(cost))),
			format!("{:.1}", allocations(cost)),
			crate::report::ratio(cpu(cost) / cpu(&raw_cost)),
		]);
	}
	(table, ratio)
}
