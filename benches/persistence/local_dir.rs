//! This crate's `file://` store against LDK's `FilesystemStore` on a local directory: the mean
//! time of one synchronous read, write, list and remove, same keys and sizes, side by side in one
//! run. Both fsync their writes (`file://` builds `LocalFileSystem::with_fsync(true)`;
//! `FilesystemStore` always does), so the write column is mostly the disk's.

use std::path::Path;
use std::time::{Duration, Instant};

use ldk_object_store::{ObjectKvStore, StoreBuilder};
use lightning::util::persist::{KVStore, KVStoreSync};
use lightning_persister::fs_store::FilesystemStore;

use crate::report::{Report, Table};
use crate::{Args, Profile};

const PRIMARY: &str = "bench_local";

/// One group of objects: its namespace, how many, and the size of each.
struct Group {
	secondary: &'static str,
	count: usize,
	size: usize,
	label: &'static str,
}

fn groups(profile: Profile) -> [Group; 2] {
	let (small, large) = match profile {
		Profile::Smoke => (300, 30),
		Profile::Full => (1000, 100),
	};
	[
		Group { secondary: "small", count: small, size: 500, label: "500 B" },
		Group { secondary: "large", count: large, size: 10_000, label: "10 KB" },
	]
}

fn key(i: usize) -> String {
	format!("{i:064x}")
}

/// The mean time per operation of each store, over `rounds` rounds that alternate which store
/// goes first (so neither always runs on a warmer cache or a quieter machine).
#[derive(Default, Clone, Copy)]
struct Pair {
	theirs: Duration,
	ours: Duration,
	theirs_ops: u32,
	ours_ops: u32,
}

impl Pair {
	fn add(&mut self, ours: bool, elapsed: Duration, ops: usize) {
		if ours {
			self.ours += elapsed;
			self.ours_ops += ops as u32;
		} else {
			self.theirs += elapsed;
			self.theirs_ops += ops as u32;
		}
	}

	/// (FilesystemStore's, ours) in µs per operation.
	fn micros(&self) -> (f64, f64) {
		let us = |t: Duration, n: u32| t.as_secs_f64() * 1e6 / n.max(1) as f64;
		(us(self.theirs, self.theirs_ops), us(self.ours, self.ours_ops))
	}

	fn row(&self, op: &str, label: &str) -> Vec<String> {
		let (t, o) = self.micros();
		vec![
			op.into(),
			label.into(),
			format!("{t:.1}"),
			format!("{o:.1}"),
			format!("{:.2}x", o / t),
		]
	}
}

fn timed(mut f: impl FnMut()) -> Duration {
	let started = Instant::now();
	f();
	started.elapsed()
}

fn load_average() -> String {
	std::fs::read_to_string("/proc/loadavg")
		.map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
		.unwrap_or_else(|_| "unknown".into())
}

fn ours_at(dir: &Path) -> ObjectKvStore {
	StoreBuilder::from_url(format!("file://{}", dir.display()))
		.create_if_missing(true)
		.build()
		.expect("building the file:// store")
}

/// Runs every operation of one group on both stores, `rounds` times, and adds the means.
fn measure(
	theirs: &FilesystemStore, ours: &ObjectKvStore, group: &Group, rounds: usize,
	reads_per_key: usize, sums: &mut [Pair; 5],
) {
	let payload = vec![0x5a_u8; group.size];
	let keys: Vec<String> = (0..group.count).map(key).collect();
	let sec = group.secondary;
	let (mut reads, mut lists) = (Passes::default(), Passes::default());
	let mut async_reads = Passes::default();
	for round in 0..rounds {
		let order = [first_is_ours(round), !first_is_ours(round)];
		let store = |is_ours: bool| -> &dyn KVStoreSync {
			if is_ours {
				ours
			} else {
				theirs
			}
		};
		for is_ours in order {
			let write = timed(|| {
				for k in &keys {
					store(is_ours).write(PRIMARY, sec, k, payload.clone()).expect("write");
				}
			});
			sums[0].add(is_ours, write, keys.len());
		}
		let passes = (&mut reads, &mut async_reads, &mut lists);
		read_and_list(theirs, ours, &keys, group, reads_per_key, passes);
		for is_ours in order {
			let remove = timed(|| {
				for k in &keys {
					store(is_ours).remove(PRIMARY, sec, k, false).expect("remove");
				}
			});
			sums[3].add(is_ours, remove, keys.len());
		}
	}
	sums[1] = reads.median();
	sums[2] = lists.median();
	sums[4] = async_reads.median();
}

fn first_is_ours(round: usize) -> bool {
	round % 2 == 1
}

/// The time per operation of each pass over the keys, per store. The median pass is reported:
/// the machine is shared, and a pass that another process interrupted says nothing of either
/// store.
#[derive(Default)]
struct Passes {
	theirs: Vec<Duration>,
	ours: Vec<Duration>,
}

impl Passes {
	fn add(&mut self, ours: bool, elapsed: Duration, ops: usize) {
		let per_op = elapsed / ops.max(1) as u32;
		if ours {
			self.ours.push(per_op);
		} else {
			self.theirs.push(per_op);
		}
	}

	fn median(mut self) -> Pair {
		let mid = |v: &mut Vec<Duration>| {
			v.sort();
			v.get(v.len() / 2).copied().unwrap_or_default()
		};
		Pair {
			theirs: mid(&mut self.theirs),
			ours: mid(&mut self.ours),
			theirs_ops: 1,
			ours_ops: 1,
		}
	}
}

/// `passes` passes of reads over every key and as many lists of the namespace, alternating the
/// stores pass by pass (and which goes first).
fn read_and_list(
	theirs: &FilesystemStore, ours: &ObjectKvStore, keys: &[String], group: &Group, passes: usize,
	(reads, async_reads, lists): (&mut Passes, &mut Passes, &mut Passes),
) {
	let sec = group.secondary;
	for pass in 0..passes {
		for is_ours in [pass % 2 == 0, pass % 2 == 1] {
			let store: &dyn KVStoreSync = if is_ours { ours } else { theirs };
			let read = timed(|| {
				for k in keys {
					let got = store.read(PRIMARY, sec, k).expect("read");
					assert_eq!(got.len(), group.size);
				}
			});
			reads.add(is_ours, read, keys.len());
			if is_ours {
				// The async trait, each read awaited before the next: what a startup load does
				// through the store's futures, against the same sync reads of FilesystemStore.
				let read = timed(|| {
					for k in keys {
						let got = futures::executor::block_on(KVStore::read(ours, PRIMARY, sec, k));
						assert_eq!(got.expect("async read").len(), group.size);
					}
				});
				async_reads.add(true, read, keys.len());
			} else {
				async_reads.add(false, read, keys.len());
			}
			let list = timed(|| {
				let listed = store.list(PRIMARY, sec).expect("list");
				assert_eq!(listed.len(), keys.len());
			});
			lists.add(is_ours, list, 1);
		}
	}
}

/// Returns this crate's synchronous read time over FilesystemStore's, per object size.
pub(crate) fn local_dir_section(args: &Args, report: &mut Report) -> Vec<(String, f64)> {
	let rounds = match args.profile {
		Profile::Smoke => 2,
		Profile::Full => 4,
	};
	let reads_per_key = 21;
	let base = tempfile::tempdir().expect("tempdir");
	let (their_dir, our_dir) = (base.path().join("fs_store"), base.path().join("file_url"));
	std::fs::create_dir_all(&our_dir).expect("creating the directory");
	let theirs = FilesystemStore::new(their_dir);
	let ours = ours_at(&our_dir);
	let load_before = load_average();
	let mut table = Table::new(
		"Local directory: this crate's file:// store against LDK's FilesystemStore",
		&["Operation", "Object size", "FilesystemStore (µs/op)", "file:// (µs/op)", "Ratio"],
	)
	.intro(
		"Synchronous calls (`KVStoreSync`) on one thread, same keys and sizes, in a temporary \
		 directory; both stores fsync their writes. Each round writes every key with one store \
		 then the other (alternating which goes first); once both hold the keys, passes of one \
		 read of every key and one list of the namespace alternate between the stores; then \
		 every key is removed. Writes and removes: the mean over all rounds; reads and lists: \
		 the median pass (the machine is shared). \"read, async\": this crate's `KVStore::read`, \
		 each awaited before the next, against FilesystemStore's synchronous read. A ratio is \
		 this crate's time over FilesystemStore's.",
	);
	let mut read_ratios = Vec::new();
	for group in groups(args.profile) {
		eprintln!("  local dir: {} x {}", group.count, group.label);
		let mut sums = [Pair::default(); 5];
		measure(&theirs, &ours, &group, rounds, reads_per_key, &mut sums);
		for (pair, op) in sums.iter().zip(["write", "read", "list", "remove", "read, async"]) {
			let label = match op {
				"list" => format!("{} keys of {}", group.count, group.label),
				_ => group.label.to_owned(),
			};
			table.row(pair.row(op, &label));
			if op == "read" {
				let (theirs, ours) = pair.micros();
				read_ratios.push((group.label.to_owned(), ours / theirs));
			}
		}
	}
	table.notes.push(format!(
		"Load average (1, 5, 15 min): {load_before} before, {} after.",
		load_average()
	));
	report.add(table);
	read_ratios
}
