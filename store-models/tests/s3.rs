//! The S3-like model: its self-check within 10% for the defaults and for other parameters, and
//! each rule of the model on its own, all under paused tokio time (exact sleeps, whatever the
//! machine's load).

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use store_models::{
	calibrate, Calibration, CalibrationLoad, Clock, Kind, Partitioning, S3Counts, S3LikeStore,
	S3Model, S3Params,
};

async fn put(store: &Arc<dyn ObjectStore>, key: String) -> object_store::Result<()> {
	store.put(&Path::from(key), PutPayload::from(vec![1])).await.map(drop)
}

async fn get(store: &Arc<dyn ObjectStore>, key: &'static str) -> object_store::Result<()> {
	store.get(&Path::from(key)).await.map(drop)
}

fn assert_calibrated(calibration: &Calibration) {
	println!("{calibration}");
	assert!(calibration.ok(), "{calibration}");
	assert_eq!(calibration.checks.len(), 9, "{calibration}");
}

#[test]
fn the_defaults_calibrate_within_ten_percent() {
	let calibration = calibrate(&S3Params::default(), CalibrationLoad::default()).unwrap();
	assert_calibrated(&calibration);
}

#[test]
fn other_parameters_calibrate_within_ten_percent() {
	let params = S3Params {
		reads_per_sec: 800.0,
		writes_per_sec: 300.0,
		burst: Duration::from_millis(500),
		partitioning: Partitioning::KeyPrefix(4),
		median: Duration::from_millis(12),
		p99: Duration::from_millis(90),
		connections: 8,
		clock: Clock::Thread,
		seed: 42,
	};
	assert_calibrated(&calibrate(&params, CalibrationLoad::default()).unwrap());
	// Rates far below what the connections could carry (the benchmark's `--s3` demonstration):
	// the latency phase still gets its full sample.
	let slow = S3Params {
		reads_per_sec: 100.0,
		writes_per_sec: 50.0,
		burst: Duration::from_millis(200),
		connections: 20,
		..S3Params::default()
	};
	let load = CalibrationLoad { latency_requests: 10_000, rate_window: Duration::from_secs(1) };
	assert_calibrated(&calibrate(&slow, load).unwrap());
}

#[test]
fn many_connections_calibrate_within_ten_percent() {
	// The benchmarks' `--s3 connections=1000` (S3's request rates, not the connections, are
	// then the bound): 20,000 GETs are only 20 round trips of 1,000 connections, so the load's
	// last answers, with nothing sent after them, must not count as a slower served rate.
	let params = S3Params { connections: 1000, ..S3Params::default() };
	assert_calibrated(&calibrate(&params, CalibrationLoad::default()).unwrap());
}

#[test]
fn the_summary_gives_the_mean_connection_wait() {
	// Waits overlap: 1,000 requests that each waited 20 ms for one of few connections are
	// 20 s added up, which is no span of time the run took.
	let counts = S3Counts {
		connection_waits: 1000,
		connection_wait: Duration::from_secs(20),
		..S3Counts::default()
	};
	let summary = counts.summary(&S3Params::default());
	assert!(summary.contains("1000 waited for a connection (for 20.0 ms on average)"), "{summary}");
	let none = S3Counts::default().summary(&S3Params::default());
	assert!(none.contains("0 waited for a connection (for — ms on average)"), "{none}");
}

#[test]
fn the_benchmark_smoke_load_calibrates_within_ten_percent() {
	// The smaller load `benches/persistence` checks the model with in its smoke run.
	let load = CalibrationLoad { latency_requests: 10_000, rate_window: Duration::from_secs(1) };
	assert_calibrated(&calibrate(&S3Params::default(), load).unwrap());
}

/// A model whose sleeps take 10 ms exactly (no tail), on paused tokio time.
fn flat(params: S3Params) -> (Arc<S3Model>, Arc<dyn ObjectStore>, Arc<dyn ObjectStore>) {
	let params = S3Params {
		median: Duration::from_millis(10),
		p99: Duration::from_millis(10),
		clock: Clock::Tokio,
		..params
	};
	let model = S3Model::new(params);
	let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
	let store = S3LikeStore::wrap(Arc::clone(&inner), Arc::clone(&model));
	(model, inner, store)
}

#[tokio::test(start_paused = true)]
async fn past_the_rate_requests_fail_with_slow_down_and_change_nothing() {
	let (model, inner, store) = flat(S3Params {
		writes_per_sec: 10.0,
		burst: Duration::from_secs(1),
		..S3Params::default()
	});
	let puts = (0..15).map(|i| put(&store, format!("k/{i}")));
	let results = join_all(puts).await;
	let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
	assert_eq!(refused.len(), 5, "a full bucket holds 10 tokens");
	for e in &refused {
		let text = e.to_string();
		assert!(text.contains("503") && text.contains("<Code>SlowDown</Code>"), "{text}");
		assert!(matches!(e, object_store::Error::Generic { store: "S3", .. }), "{e:?}");
	}
	let landed = inner.list(None).count().await;
	assert_eq!(landed, 10, "a throttled PUT does not reach the inner store");
	let counts = model.counts();
	assert_eq!(counts.served[Kind::Put.index()], 10);
	assert_eq!(counts.throttled[Kind::Put.index()], 5);
	// Reads have a bucket of their own.
	let landed = inner.list(None).next().await.unwrap().unwrap().location;
	store.get(&landed).await.unwrap();
	// Half a second later five tokens are back.
	tokio::time::sleep(Duration::from_millis(500)).await;
	let puts = (0..6).map(|i| put(&store, format!("j/{i}")));
	let ok = join_all(puts).await.iter().filter(|r| r.is_ok()).count();
	assert_eq!(ok, 5);
}

#[tokio::test(start_paused = true)]
async fn each_partition_has_its_own_rate() {
	let params =
		S3Params { writes_per_sec: 5.0, burst: Duration::from_secs(1), ..S3Params::default() };
	let (_, _, one) = flat(S3Params { partitioning: Partitioning::Bucket, ..params });
	let (_, _, split) = flat(S3Params { partitioning: Partitioning::KeyPrefix(2), ..params });
	for (store, expected) in [(one, 5), (split, 10)] {
		let puts = (0..10).map(|i| {
			let prefix = if i % 2 == 0 { "a/" } else { "b/" };
			put(&store, format!("{prefix}{i}"))
		});
		let ok = join_all(puts).await.iter().filter(|r| r.is_ok()).count();
		assert_eq!(ok, expected);
	}
	assert_eq!(Partitioning::KeyPrefix(3).of("abcdef"), "abc");
	assert_eq!(Partitioning::KeyPrefix(9).of("ab"), "ab");
	assert_eq!(Partitioning::Bucket.of("abcdef"), "");
}

#[tokio::test(start_paused = true)]
async fn requests_beyond_the_connections_wait_for_one() {
	let (model, inner, store) = flat(S3Params { connections: 2, ..S3Params::default() });
	inner.put(&Path::from("o"), PutPayload::from(vec![1])).await.unwrap();
	let started = tokio::time::Instant::now();
	let gets = (0..6).map(|_| get(&store, "o"));
	assert!(join_all(gets).await.iter().all(Result::is_ok));
	// Three waves of two requests of 10 ms each.
	let elapsed = started.elapsed();
	assert!(
		elapsed >= Duration::from_millis(30) && elapsed < Duration::from_millis(34),
		"{elapsed:?}"
	);
	let counts = model.counts();
	assert_eq!(counts.max_in_flight, 2);
	assert_eq!(counts.connection_waits, 4);
	// The wait is not latency.
	assert!(counts
		.latencies
		.iter()
		.all(|l| *l >= Duration::from_millis(10) && *l < Duration::from_millis(12)));
}

#[tokio::test(start_paused = true)]
async fn listings_and_batch_deletes_count_as_s3_does() {
	let (model, inner, store) = flat(S3Params { writes_per_sec: 1200.0, ..S3Params::default() });
	for i in 0..2500 {
		inner.put(&Path::from(format!("d/{i:05}")), PutPayload::from(vec![1])).await.unwrap();
	}
	let listed: Vec<_> = store.list(Some(&Path::from("d"))).collect().await;
	assert_eq!(listed.len(), 2500);
	assert_eq!(model.counts().served[Kind::List.index()], 3, "one request per 1,000 entries");
	let head = store.head(&Path::from("d/00001")).await.unwrap();
	assert_eq!(head.size, 1);
	assert_eq!(model.counts().served[Kind::Head.index()], 1);

	// 2,500 keys in three DeleteObjects requests of 1,000, 1,000 and 500 keys, one token per key,
	// from a bucket of 1,200 (refilling 12 per 10 ms round trip): the first is served, the
	// other two find too few tokens.
	let paths = listed.into_iter().map(|m| m.map(|m| m.location)).collect::<Vec<_>>();
	let results: Vec<_> = store.delete_stream(futures::stream::iter(paths).boxed()).collect().await;
	assert_eq!(results.len(), 2500);
	let counts = model.counts();
	assert_eq!(counts.served[Kind::Delete.index()], 1);
	assert_eq!(counts.throttled[Kind::Delete.index()], 2);
	assert_eq!(counts.deleted_objects, 1000);
	assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1500);
	assert_eq!(inner.list(None).count().await, 1500);
}

#[tokio::test(start_paused = true)]
async fn a_disabled_model_passes_requests_straight_through() {
	let (model, inner, store) = flat(S3Params { writes_per_sec: 1.0, ..S3Params::default() });
	model.set_enabled(false);
	let started = tokio::time::Instant::now();
	for i in 0..20 {
		store.put(&Path::from(format!("s/{i}")), PutPayload::from(vec![1])).await.unwrap();
	}
	assert_eq!(started.elapsed(), Duration::ZERO);
	assert_eq!(model.counts().served_total(), 0);
	assert_eq!(inner.list(None).count().await, 20);
	model.set_enabled(true);
	store.get(&Path::from("s/1")).await.unwrap();
	assert_eq!(model.counts().served_total(), 1);
}
