//! `doctor`: is this store fit to keep a Lightning node's state?

use std::fmt::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ldk_object_store::{FailureKind, ObjectKvStore};
use lightning::io::ErrorKind;
use lightning::util::persist::KVStore;
use object_store::{PutMode, PutOptions, PutPayload};
use serde_json::json;

use crate::output::{CommandResult, Outcome, Output};

/// A namespace no LDK component uses, so the probes cannot touch a node's data.
const PROBE_NAMESPACE: &str = "ldk_object_store_doctor";

struct Check {
	name: &'static str,
	ok: bool,
	detail: String,
}

fn kind_of(err: &lightning::io::Error) -> String {
	format!("{:?}: {err}", err.kind())
}

pub(crate) async fn run(store: &ObjectKvStore, out: &Output) -> CommandResult {
	let mut checks = Vec::new();
	let nonce = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
	let probe_key = format!("probe-{nonce}");

	// 1. Listing and credentials.
	let listing = KVStore::list(store, "", "").await;
	checks.push(Check {
		name: "list the root (credentials, bucket, network)",
		ok: listing.is_ok(),
		detail: match &listing {
			Ok(keys) => format!("{} key(s) at the top level", keys.len()),
			Err(e) => kind_of(e),
		},
	});

	// 2. A missing key must answer "not found"; S3 answers 403 without s3:ListBucket.
	let missing = KVStore::read(store, PROBE_NAMESPACE, "", &format!("{probe_key}-absent")).await;
	let (ok, detail) = match &missing {
		Err(e) if e.kind() == ErrorKind::NotFound => (true, "NotFound".to_owned()),
		Err(e) if e.kind() == ErrorKind::PermissionDenied => (
			false,
			format!(
				"{} — on S3 grant s3:ListBucket, or LDK cannot tell absent from forbidden",
				kind_of(e)
			),
		),
		Err(e) => (false, kind_of(e)),
		Ok(_) => (false, "a key that was never written was found".to_owned()),
	};
	checks.push(Check { name: "a missing key reads as NotFound", ok, detail });

	// 3. Write, read back, remove; latency of each.
	let mut latencies = Vec::new();
	let mut round_trip = Ok(());
	for i in 0..5 {
		let key = format!("{probe_key}-{i}");
		let started = Instant::now();
		let result = async {
			KVStore::write(store, PROBE_NAMESPACE, "", &key, vec![i; 1024]).await?;
			let back = KVStore::read(store, PROBE_NAMESPACE, "", &key).await?;
			KVStore::remove(store, PROBE_NAMESPACE, "", &key, false).await?;
			if back != vec![i; 1024] {
				return Err(lightning::io::Error::new(
					ErrorKind::InvalidData,
					"read back other bytes",
				));
			}
			Ok(())
		}
		.await;
		latencies.push(started.elapsed() / 3);
		if let Err(e) = result {
			round_trip = Err(kind_of(&e));
			break;
		}
	}
	latencies.sort();
	let median = latencies.get(latencies.len() / 2).copied().unwrap_or(Duration::ZERO);
	checks.push(Check {
		name: "write, read back and remove",
		ok: round_trip.is_ok(),
		detail: match &round_trip {
			Ok(()) => format!("median {:.1} ms per request", median.as_secs_f64() * 1000.0),
			Err(e) => e.clone(),
		},
	});

	// 4. Conditional writes: a second create-only write must be refused.
	let conditional = conditional_writes(store, &format!("{probe_key}-create")).await;
	checks.push(Check {
		name: "conditional writes (create-only)",
		ok: conditional.is_ok(),
		detail: conditional.unwrap_or_else(|e| e),
	});
	let replace = conditional_replace(store, &format!("{probe_key}-update")).await;
	checks.push(Check {
		name: "conditional writes (replace if unchanged), needed by the writer lease",
		ok: replace.is_ok(),
		detail: replace.unwrap_or_else(|e| e),
	});

	let problems = checks.iter().filter(|c| !c.ok).count();
	let mut text = String::new();
	for c in &checks {
		let _ = writeln!(text, "{} {}: {}", if c.ok { "ok  " } else { "FAIL" }, c.name, c.detail);
	}
	let _ = writeln!(text, "{problems} problem(s)");
	out.report(
		&text,
		json!({
			"checks": checks.iter().map(|c| json!({"check": c.name, "ok": c.ok, "detail": c.detail})).collect::<Vec<_>>(),
			"median_request_ms": median.as_secs_f64() * 1000.0,
			"problems": problems,
		}),
	);
	Ok(Outcome::from_problems(problems))
}

async fn conditional_writes(store: &ObjectKvStore, key: &str) -> Result<String, String> {
	let path = store.key_mapper().object_path(
		&ldk_object_store::keys::KvKey::new(PROBE_NAMESPACE, "", key).map_err(|e| e.to_string())?,
	);
	let backend = store.backend();
	let create = || PutOptions { mode: PutMode::Create, ..Default::default() };
	let first = backend.put_opts(&path, PutPayload::from_static(b"first"), create()).await;
	let second = match first {
		Ok(_) => backend.put_opts(&path, PutPayload::from_static(b"second"), create()).await,
		Err(e) => {
			return Err(format!("a create-only write failed: {e}"));
		},
	};
	let _ = KVStore::remove(store, PROBE_NAMESPACE, "", key, false).await;
	match second {
		Err(e)
			if FailureKind::of(&e) == FailureKind::AlreadyExists
				|| FailureKind::of(&e) == FailureKind::Precondition =>
		{
			Ok("a second create-only write is refused".to_owned())
		},
		Err(e) => Err(format!("the second create-only write failed oddly: {e}")),
		Ok(_) => Err("the server ignored If-None-Match and overwrote the object".to_owned()),
	}
}

/// `PutMode::Update`: a replacement on the current ETag succeeds, one on a stale ETag is refused.
/// The writer lease depends on both.
async fn conditional_replace(store: &ObjectKvStore, key: &str) -> Result<String, String> {
	use object_store::UpdateVersion;
	let path = store.key_mapper().object_path(
		&ldk_object_store::keys::KvKey::new(PROBE_NAMESPACE, "", key).map_err(|e| e.to_string())?,
	);
	let backend = store.backend();
	let update = |version: &UpdateVersion| PutOptions {
		mode: PutMode::Update(version.clone()),
		..Default::default()
	};
	let outcome = async {
		let first = backend
			.put_opts(&path, PutPayload::from_static(b"first"), PutOptions::default())
			.await
			.map_err(|e| format!("a plain write failed: {e}"))?;
		let first = UpdateVersion { e_tag: first.e_tag, version: first.version };
		if first.e_tag.is_none() && first.version.is_none() {
			return Err("writes return no ETag or version".to_owned());
		}
		backend
			.put_opts(&path, PutPayload::from_static(b"second"), update(&first))
			.await
			.map_err(|e| format!("a replacement on the current ETag failed: {e}"))?;
		let stale =
			backend.put_opts(&path, PutPayload::from_static(b"stale"), update(&first)).await;
		match stale {
			Err(e) if FailureKind::of(&e) == FailureKind::Precondition => {
				Ok("a replacement on a stale ETag is refused".to_owned())
			},
			Err(e) => Err(format!("a replacement on a stale ETag failed oddly: {e}")),
			Ok(_) => Err("the server ignored If-Match and overwrote the object".to_owned()),
		}
	}
	.await;
	let _ = KVStore::remove(store, PROBE_NAMESPACE, "", key, false).await;
	match outcome {
		// A file:// store holds an OS lock instead of a lease object.
		Err(why) if store.backend().to_string().starts_with("LocalFileSystem") => Ok(format!(
			"not offered by a local directory ({why}); a file:// store takes an OS lock instead"
		)),
		other => other,
	}
}
