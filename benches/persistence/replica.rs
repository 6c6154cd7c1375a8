//! A replica beside the primary (`ldk_object_store::replica`), side by side with the primary
//! alone: one update's latency when the replica is farther away than the primary, the next
//! startup (reads stay on the primary), the background fill of a new replica, and the requests
//! and dollars per payment. Each copy is its own in-memory store behind its own simulated round
//! trip, with its own request counters.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ldk_object_store::replica::{ReplicaHealth, SyncState};
use ldk_object_store::{ObjectKvStore, PersisterConfig};

use crate::backend::Backend;
use crate::env::{kv_pair, kv_reader, ours, Ldk};
use crate::fixtures::ChannelFixture;
use crate::report::{count, ratio, secs, Table};
use crate::updates::{self, Writer};
use crate::workload::{dollars, priced, Life, PRICES};
use crate::{Args, Profile};
use store_models::Counts;

/// The columns of both replica latency tables (simulated and on the servers).
const LATENCY_HEADER: [&str; 8] = [
	"store",
	"persister",
	"mean",
	"median",
	"slowest",
	"requests / update: primary",
	"replica",
	"÷ the slower copy alone",
];

/// The replica's round trip, in round trips of the primary: another region.
const FARTHER: u32 = 4;
/// Keys the fill compares at once (the fill's own bound, in `ldk_object_store::replica`).
pub(crate) const FILL_CONCURRENCY: u64 = 32;
/// Objects per listing page, as on S3 (and in the simulated store).
const PAGE: u64 = 1000;

/// The fill of a new replica.
pub(crate) struct Fill {
	pub(crate) keys: u64,
	pub(crate) elapsed: Duration,
	pub(crate) bound: Duration,
}

/// The next startup's load, by the primary alone and by the pair.
pub(crate) struct Startup {
	pub(crate) alone: Duration,
	pub(crate) paired: Duration,
	/// The replica's requests during the pair's load.
	pub(crate) replica_requests: u64,
}

/// What the target checks and the closing note need.
pub(crate) struct ReplicaFinding {
	/// (persister, mean latency with the replica ÷ the mean with the primary alone at the
	/// replica's round trip).
	pub(crate) latency: Vec<(Writer, f64)>,
	pub(crate) rtt: (Duration, Duration),
	pub(crate) startup: Startup,
	pub(crate) fill: Fill,
	/// Requests per payment, and dollars per million payments: (alone, with the replica).
	pub(crate) per_payment: (f64, f64),
	pub(crate) dollars_per_million: (f64, f64),
}

/// Measures everything above: returns the tables and the finding.
pub(crate) fn run(
	args: &Args, channels: &[ChannelFixture], workload: Option<&crate::workload::WorkloadFinding>,
	ldk: &'static Ldk, tables: &mut Vec<Table>,
) -> ReplicaFinding {
	let gen = args.profile.gen_params();
	let rtt = args.rtt;
	// Fewer updates and loads at the smoke size, which only checks that the section runs.
	let (n, rounds) = match args.profile {
		Profile::Smoke => (5, 1),
		Profile::Full => (gen.size_updates, 3),
	};
	let n = n.min(channels[0].updates.len());
	let (latency_table, latency) = latency(rtt, &channels[0], n, ldk);
	tables.push(latency_table);
	let (fill_table, startup_table, fill, startup) =
		fill_then_start(rtt, channels, gen.updates, rounds, ldk);
	tables.push(fill_table);
	tables.push(startup_table);
	let (cost_table, per_payment, dollars_per_million) = cost(channels, gen.updates, workload, ldk);
	tables.push(cost_table);
	ReplicaFinding {
		latency,
		rtt: (rtt, rtt * FARTHER),
		startup,
		fill,
		per_payment,
		dollars_per_million,
	}
}

/// Waits until the pair's replica is recorded in sync.
fn in_sync(store: &ObjectKvStore) -> ReplicaHealth {
	futures::executor::block_on(store.replica_in_sync(|_| {})).expect("the replica gets in sync")
}

/// One channel's consecutive updates through this crate's persister (sync and async), with the
/// primary alone at its round trip and at the replica's, and with the replica.
fn latency(
	rtt: Duration, fixture: &ChannelFixture, n: usize, ldk: &'static Ldk,
) -> (Table, Vec<(Writer, f64)>) {
	let far = rtt * FARTHER;
	let ms = |d: Duration| d.as_secs_f64() * 1000.0;
	let (primary, replica) = (Backend::memory(rtt), Backend::memory(far));
	let mut table = Table::new(
		format!(
			"Replica: one update at a time, primary {} ms, replica {} ms round trip",
			ms(rtt),
			ms(far)
		),
		&LATENCY_HEADER,
	)
	.intro(format!(
		"{n} consecutive real updates of one channel ({}), each persisted and waited for (async: \
		 until the persister reports it durable) before the next, as in the single-copy latency \
		 table. With a replica, every write and remove is sent to both copies at once and \
		 completes when both hold it, so an update should take the slower copy's round trip, not \
		 the sum. The last column divides each mean by the same persister's mean with the \
		 primary alone at the replica's round trip ({} ms).",
		fixture.label,
		ms(far)
	));
	let mut results: Vec<(String, Writer, Vec<Duration>, Counts, Counts)> = Vec::new();
	for (store_name, primary_rtt, paired) in [
		(format!("primary alone, {} ms", ms(rtt)), rtt, false),
		(format!("primary alone, {} ms", ms(far)), far, false),
		(format!("primary {} ms + replica {} ms", ms(rtt), ms(far)), rtt, true),
	] {
		primary.control.set_rtt(primary_rtt);
		for writer in [Writer::OursSync, Writer::OursAsync] {
			let prefix =
				format!("replica-latency-{}-{paired}-{writer:?}", ms(primary_rtt)).to_lowercase();
			eprintln!("  replica: {} over {store_name} ...", writer.name());
			let store = if paired {
				let store = kv_pair(&primary.store, &replica.store, &prefix, 32);
				// The fill of the (empty) replica ends before the first update.
				in_sync(&store);
				store
			} else {
				primary.kv(&prefix, 32)
			};
			let reset = || {
				primary.reset_counts();
				replica.reset_counts();
			};
			let latencies = updates::timed_updates(&store, writer, fixture, n, ldk, reset);
			results.push((
				store_name.clone(),
				writer,
				latencies,
				primary.counts(),
				replica.counts(),
			));
			futures::executor::block_on(store.close());
		}
	}
	primary.control.set_rtt(rtt);
	let mean = |l: &[Duration]| l.iter().sum::<Duration>() / l.len().max(1) as u32;
	let quantile = |l: &[Duration], q: f64| {
		let mut sorted = l.to_vec();
		sorted.sort();
		sorted[((sorted.len() - 1) as f64 * q).round() as usize]
	};
	let slower_alone = |writer: Writer| {
		results
			.iter()
			.find(|r| r.1 == writer && r.0.ends_with(&format!("alone, {} ms", ms(far))))
			.map(|r| mean(&r.2))
			.expect("the slower copy alone was measured")
	};
	let mut ratios = Vec::new();
	for (store_name, writer, latencies, on_primary, on_replica) in &results {
		let vs = mean(latencies).as_secs_f64() / slower_alone(*writer).as_secs_f64();
		if store_name.contains("replica") {
			ratios.push((*writer, vs));
		}
		let paired = store_name.contains("replica");
		table.row(vec![
			store_name.clone(),
			writer.name().into(),
			secs(mean(latencies)),
			secs(quantile(latencies, 0.5)),
			secs(quantile(latencies, 1.0)),
			format!("{:.2}", on_primary.requests() as f64 / n as f64),
			if paired {
				format!("{:.2}", on_replica.requests() as f64 / n as f64)
			} else {
				"—".into()
			},
			ratio(vs),
		]);
	}
	table.notes.push(
		"Requests include the writer lease's renewals (one conditional PUT per copy every 10 s)."
			.into(),
	);
	(table, ratios)
}

/// One load: its wall time and the requests to the primary and to the replica.
type Load = (Duration, Counts, Counts);

/// The fill of an empty replica beside a primary holding `channels` monitors with `updates`
/// update objects each, then the next start of the pair against the primary alone.
fn fill_then_start(
	rtt: Duration, channels: &[ChannelFixture], updates: usize, rounds: usize, ldk: &'static Ldk,
) -> (Table, Table, Fill, Startup) {
	let (primary, replica) = (Backend::memory(rtt), Backend::memory(rtt));
	let prefix = "replica-fill";
	let refs: Vec<&ChannelFixture> = channels.iter().collect();
	primary.seed(prefix, &refs, updates);
	let keys = (channels.len() * (updates + 1)) as u64;
	eprintln!("  replica: filling a replica with {keys} objects ...");

	// The start reads the records, takes both leases and marks the replica as filling; the fill
	// runs from the moment the pair is built.
	let store = kv_pair(&primary.store, &replica.store, prefix, 256);
	primary.reset_counts();
	replica.reset_counts();
	let started = Instant::now();
	let health = in_sync(&store);
	let elapsed = started.elapsed();
	let (on_primary, on_replica) = (primary.counts(), replica.counts());
	futures::executor::block_on(store.close());
	drop(store);
	// Per pass, one listing of each copy at once; per key, both reads at once then the write in
	// the copying pass, and both reads at once in the verifying pass; then the two records.
	let pages = keys.div_ceil(PAGE).max(1);
	let bound_rtts = u64::from(health.pass) * pages + 3 * keys.div_ceil(FILL_CONCURRENCY) + 2;
	let bound = rtt * bound_rtts as u32;
	let mut fill = Table::new(
		format!(
			"Replica: filling a new replica, both copies {} ms round trip",
			rtt.as_secs_f64() * 1000.0
		),
		&[
			"objects",
			"passes",
			"copied",
			"wall time",
			"requests: primary",
			"replica",
			"objects / s",
			"round-trip bound",
			"÷ bound",
		],
	)
	.intro(format!(
		"A node's store ({} monitors with {updates} update objects each, the startup fixtures) \
		 gets an empty replica: the pair's start records it as filling, and the fill compares \
		 every key of either copy inside the key's turn, {FILL_CONCURRENCY} at once (both reads \
		 at once, then the write where they differ), passes again until a pass finds no \
		 difference (the verifying pass), then records the replica in sync on both copies. Wall \
		 time: from the pair's start until the replica is recorded in sync. Round-trip bound: \
		 per pass one listing page per {PAGE} objects, then 2 round trips per object in the \
		 copying pass and 1 in the verifying pass, {FILL_CONCURRENCY} objects at once, then the \
		 two records.",
		channels.len()
	));
	fill.row(vec![
		count(keys),
		health.pass.to_string(),
		count(health.copied),
		secs(elapsed),
		count(on_primary.requests()),
		count(on_replica.requests()),
		format!("{:.0}", keys as f64 / elapsed.as_secs_f64()),
		format!("{} ({} RTT)", secs(bound), count(bound_rtts)),
		ratio(elapsed.as_secs_f64() / bound.as_secs_f64()),
	]);
	assert_eq!(health.copied, keys, "the fill copied every object");

	// The next start: the replica farther away, so that any read it served would show.
	replica.control.set_rtt(rtt * FARTHER);
	let expected: HashMap<String, u64> =
		channels.iter().map(|c| (c.key.clone(), c.update_id + updates as u64)).collect();
	let load = |store: &ObjectKvStore| -> Load {
		primary.reset_counts();
		replica.reset_counts();
		let persister = ours(store, ldk, PersisterConfig::default());
		let started = Instant::now();
		let loaded = persister.read_all_channel_monitors_with_updates_blocking();
		let elapsed = started.elapsed();
		let loaded = loaded.expect("the monitors load");
		assert_eq!(loaded.len(), expected.len(), "monitors loaded");
		for (_, monitor) in &loaded {
			let key = monitor.persistence_key().to_string();
			assert_eq!(Some(&monitor.get_latest_update_id()), expected.get(&key), "{key}");
		}
		(elapsed, primary.counts(), replica.counts())
	};
	eprintln!("  replica: the next startup, alone and with the replica ...");
	// Alternately, keeping each one's fastest: the machine is shared.
	let (mut alone, mut paired) = (None::<Load>, None::<Load>);
	let faster = |best: Option<Load>, run: Load| match best {
		Some(best) if best.0 <= run.0 => Some(best),
		_ => Some(run),
	};
	for _ in 0..rounds {
		alone = faster(alone, load(&kv_reader(&primary.store, prefix, 256)));
		let pair = kv_pair(&primary.store, &replica.store, prefix, 256);
		let synced = pair.replica_health().map(|h| h.sync);
		assert_eq!(synced, Some(SyncState::InSync), "the pair starts in sync, without a fill");
		paired = faster(paired, load(&pair));
		futures::executor::block_on(pair.close());
	}
	let (alone, paired) = (alone.expect("a round"), paired.expect("a round"));
	let mut startup = Table::new(
		format!(
			"Replica: the next startup of {} monitors × {updates} updates, primary {} ms, replica {} ms",
			channels.len(),
			rtt.as_secs_f64() * 1000.0,
			(rtt * FARTHER).as_secs_f64() * 1000.0
		),
		&[
			"store",
			"wall time",
			"GETs + listings: primary",
			"requests: replica",
			"÷ the primary alone",
		],
	)
	.intro(format!(
		"The store the fill left, loaded as a node starts (this crate's loader with \
		 `PersisterConfig::default()`, every monitor checked at its update id), by the primary \
		 alone and by the pair recorded in sync (its start reads both records and takes both \
		 leases before the load; not counted), alternately, the fastest of {rounds} loads each. \
		 Reads come from the primary only."
	));
	for (name, (elapsed, p, r)) in [("primary alone", alone), ("primary + replica", paired)] {
		startup.row(vec![
			name.into(),
			secs(elapsed),
			count(p.gets + p.lists),
			count(r.requests()),
			ratio(elapsed.as_secs_f64() / alone.0.as_secs_f64()),
		]);
	}
	let startup_finding =
		Startup { alone: alone.0, paired: paired.0, replica_requests: paired.2.requests() };
	(fill, startup, Fill { keys, elapsed, bound }, startup_finding)
}

/// The workload's updates (the same channels, bursts and order) through this crate's persister
/// over the pair, requests counted on each copy, beside the primary alone.
fn cost(
	channels: &[ChannelFixture], updates: usize,
	workload: Option<&crate::workload::WorkloadFinding>, ldk: &'static Ldk,
) -> (Table, (f64, f64), (f64, f64)) {
	let life = Life::of(channels, updates);
	eprintln!("  replica: the workload's {} updates over the pair ...", life.total);
	let (primary, replica) = (Backend::memory(Duration::ZERO), Backend::memory(Duration::ZERO));
	let reset = || {
		primary.reset_counts();
		replica.reset_counts();
	};
	let alone = match workload {
		Some(finding) => finding.ours_counts,
		None => {
			let store = primary
				.kv("replica-workload-alone", ldk_object_store::config::DEFAULT_MAX_IN_FLIGHT);
			life.live(&store, channels, ldk, reset);
			primary.counts()
		},
	};
	let store = kv_pair(
		&primary.store,
		&replica.store,
		"replica-workload",
		ldk_object_store::config::DEFAULT_MAX_IN_FLIGHT,
	);
	in_sync(&store);
	life.live(&store, channels, ldk, reset);
	let (on_primary, on_replica) = (primary.counts(), replica.counts());
	futures::executor::block_on(store.close());
	let per_payment = |x: u64| x as f64 / life.total as f64 * life.per_payment;
	let per_million = |c: &Counts| dollars(c, true) / life.total as f64 * life.per_payment * 1e6;
	let mut table = Table::new(
		"Replica: requests and what they cost, per million payments",
		&[
			"store",
			"copy",
			"PUT-class requests / payment",
			"GET-class / payment",
			"requests / payment",
			"$ / million payments",
			"÷ the primary alone",
		],
	)
	.intro(format!(
		"The workload's {} updates ({} channels, the same bursts and order; ×{:.2} updates per \
		 payment) through this crate's persister with no configuration, on the primary alone \
		 (the workload table's row) and on the pair, requests counted on each copy. {PRICES}; a \
		 batch delete is a POST (priced as PUT-class). A startup's reads are the primary's alone \
		 (see the startup table above), so its cost does not change.",
		count(life.total),
		channels.len(),
		life.per_payment
	));
	let both = Counts {
		gets: on_primary.gets + on_replica.gets,
		puts: on_primary.puts + on_replica.puts,
		delete_requests: on_primary.delete_requests + on_replica.delete_requests,
		deleted_objects: on_primary.deleted_objects + on_replica.deleted_objects,
		lists: on_primary.lists + on_replica.lists,
		other: on_primary.other + on_replica.other,
		..Counts::default()
	};
	let alone_dollars = per_million(&alone);
	for (store_name, copy, counts) in [
		("primary alone", "primary", &alone),
		("primary + replica", "primary", &on_primary),
		("primary + replica", "replica", &on_replica),
		("primary + replica", "both", &both),
	] {
		let (put_class, get_class) = priced(counts, true);
		table.row(vec![
			store_name.into(),
			copy.into(),
			format!("{:.3}", per_payment(put_class)),
			format!("{:.3}", per_payment(get_class)),
			format!("{:.3}", per_payment(counts.requests())),
			format!("${:.2}", per_million(counts)),
			ratio(per_million(counts) / alone_dollars),
		]);
	}
	let per_payment = (per_payment(alone.requests()), per_payment(both.requests()));
	(table, per_payment, (alone_dollars, per_million(&both)))
}

/// The latency and fill tables on real servers: a LocalStack primary and a SeaweedFS replica,
/// both on loopback (real HTTP, no network latency: the tables show the servers' own time).
pub(crate) fn on_servers(
	args: &Args, channels: &[ChannelFixture], primary: &Backend, replica: &Backend,
	ldk: &'static Ldk, tables: &mut Vec<Table>,
) {
	// The smoke size only checks that the tables are made.
	let (n, monitors, updates) = match args.profile {
		Profile::Smoke => (5, 4, 5),
		Profile::Full => (100, 100, 50),
	};
	let n = n.min(channels[0].updates.len());
	let updates = updates.min(channels.iter().map(|c| c.updates.len()).min().unwrap_or(0));
	tables.push(latency_on_servers(primary, replica, &channels[0], n, ldk));
	let monitors = &channels[..monitors.min(channels.len())];
	tables.push(fill_on_servers(primary, replica, monitors, updates));
}

/// A note on what loopback servers measure.
const LOOPBACK: &str = "Both servers run on this machine (loopback, no network latency), \
	 beside the benchmark on the same cores: the times are the servers' own handling of each \
	 request over HTTP, not a region's round trip, and the ratios say what a replica costs when \
	 neither copy is far away.";

fn latency_on_servers(
	primary: &Backend, replica: &Backend, fixture: &ChannelFixture, n: usize, ldk: &'static Ldk,
) -> Table {
	let mut table = Table::new(
		format!(
			"Replica: one update at a time, {} primary, {} replica",
			primary.name, replica.name
		),
		&LATENCY_HEADER,
	)
	.intro(format!(
		"{n} consecutive real updates of one channel ({}), each persisted and waited for (async: \
		 until the persister reports it durable) before the next, as in the in-memory replica \
		 table, on each server alone and on the pair (every write and remove sent to both \
		 at once, complete when both hold it). The last column divides each mean by the larger \
		 of the two servers' means alone for the same persister. {LOOPBACK}",
		fixture.label
	));
	let mut results: Vec<(String, Writer, Vec<Duration>, Counts, Counts, bool)> = Vec::new();
	let short = |backend: &Backend| backend.name.trim_end_matches(" on loopback").to_owned();
	for (store_name, on_replica_alone, paired) in [
		(format!("{} alone", short(primary)), false, false),
		(format!("{} alone", short(replica)), true, false),
		(format!("{} + {} replica", short(primary), short(replica)), false, true),
	] {
		for writer in [Writer::OursSync, Writer::OursAsync] {
			let scenario =
				format!("replica-servers-latency-{on_replica_alone}-{paired}-{writer:?}");
			let prefix = primary.prefix(&scenario.to_lowercase());
			eprintln!("  replica: {} over {store_name} ...", writer.name());
			let store = if paired {
				let store = kv_pair(&primary.store, &replica.store, &prefix, 32);
				in_sync(&store);
				store
			} else if on_replica_alone {
				replica.kv(&prefix, 32)
			} else {
				primary.kv(&prefix, 32)
			};
			let reset = || {
				primary.reset_counts();
				replica.reset_counts();
			};
			let latencies = updates::timed_updates(&store, writer, fixture, n, ldk, reset);
			let (on_primary, on_replica) = (primary.counts(), replica.counts());
			results.push((store_name.clone(), writer, latencies, on_primary, on_replica, paired));
			futures::executor::block_on(store.close());
		}
	}
	let mean = |l: &[Duration]| l.iter().sum::<Duration>() / l.len().max(1) as u32;
	let quantile = |l: &[Duration], q: f64| {
		let mut sorted = l.to_vec();
		sorted.sort();
		sorted[((sorted.len() - 1) as f64 * q).round() as usize]
	};
	let slower_alone = |writer: Writer| {
		results
			.iter()
			.filter(|r| r.1 == writer && !r.5)
			.map(|r| mean(&r.2))
			.max()
			.expect("both servers alone were measured")
	};
	for (store_name, writer, latencies, on_primary, on_replica, paired) in &results {
		let vs = mean(latencies).as_secs_f64() / slower_alone(*writer).as_secs_f64();
		let alone_on_replica = !paired && store_name.starts_with(&short(replica));
		let (first, second) = if alone_on_replica {
			("—".to_owned(), format!("{:.2}", on_replica.requests() as f64 / n as f64))
		} else if *paired {
			(
				format!("{:.2}", on_primary.requests() as f64 / n as f64),
				format!("{:.2}", on_replica.requests() as f64 / n as f64),
			)
		} else {
			(format!("{:.2}", on_primary.requests() as f64 / n as f64), "—".to_owned())
		};
		table.row(vec![
			store_name.clone(),
			writer.name().into(),
			secs(mean(latencies)),
			secs(quantile(latencies, 0.5)),
			secs(quantile(latencies, 1.0)),
			first,
			second,
			ratio(vs),
		]);
	}
	table.notes.push(
		"Requests include the writer lease's renewals (one conditional PUT per copy every 10 s)."
			.into(),
	);
	table
}

fn fill_on_servers(
	primary: &Backend, replica: &Backend, channels: &[ChannelFixture], updates: usize,
) -> Table {
	let prefix = primary.prefix("replica-servers-fill");
	let refs: Vec<&ChannelFixture> = channels.iter().collect();
	eprintln!(
		"  replica: seeding {} with {} monitors × {updates} updates ...",
		primary.name,
		refs.len()
	);
	let seeding = Instant::now();
	primary.seed(&prefix, &refs, updates);
	let seeded = seeding.elapsed();
	let keys = (channels.len() * (updates + 1)) as u64;
	eprintln!("  replica: filling a {} replica with {keys} objects ...", replica.name);
	let store = kv_pair(&primary.store, &replica.store, &prefix, 256);
	primary.reset_counts();
	replica.reset_counts();
	let started = Instant::now();
	let health = in_sync(&store);
	let elapsed = started.elapsed();
	let (on_primary, on_replica) = (primary.counts(), replica.counts());
	futures::executor::block_on(store.close());
	assert_eq!(health.copied, keys, "the fill copied every object");
	let mut fill = Table::new(
		format!(
			"Replica: filling a new replica, {} primary, {} replica",
			primary.name, replica.name
		),
		&[
			"objects",
			"passes",
			"copied",
			"wall time",
			"requests: primary",
			"replica",
			"objects / s",
			"seeding the primary",
		],
	)
	.intro(format!(
		"The fill of the in-memory table, on the servers: {} monitors with {updates} \
		 update objects each (the startup fixtures) on the primary, an empty replica; wall time \
		 from the pair's start until the replica is recorded in sync (the copying pass, then a \
		 verifying pass, {FILL_CONCURRENCY} keys at once). No round-trip bound: loopback servers \
		 have no fixed round trip. The last column is the time this benchmark took to write the \
		 same objects to the primary alone ({} at once), for scale. {LOOPBACK}",
		channels.len(),
		64
	));
	fill.row(vec![
		count(keys),
		health.pass.to_string(),
		count(health.copied),
		secs(elapsed),
		count(on_primary.requests()),
		count(on_replica.requests()),
		format!("{:.0}", keys as f64 / elapsed.as_secs_f64()),
		secs(seeded),
	]);
	fill
}
