//! A read-only inventory of what a node keeps in a store: namespaces with their sizes, and for each
//! monitor its stored update id, its pending updates, and the stale, orphaned or unreachable
//! update objects around it. It needs no keys: a monitor's update id is read from the first bytes
//! of its object, which LDK writes before anything else.

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt;
use lightning::util::persist::{
	ARCHIVED_CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
	CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
	CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE,
	MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL,
};
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{Error, FailureKind, Operation};
use crate::keys::KvKey;
use crate::ObjectKvStore;

/// Keys and bytes of one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceStats {
	/// Number of keys.
	pub keys: usize,
	/// Total size of their objects.
	pub bytes: u64,
}

/// One stored monitor and the update objects of its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorEntry {
	/// The monitor key.
	pub key: String,
	/// Size of the monitor object.
	pub bytes: u64,
	/// Whether the object starts with the `0xFF 0xFF` sentinel of the differential format.
	pub sentinel: bool,
	/// The update id of the stored monitor object, or why it could not be read.
	pub update_id: Result<u64, String>,
	/// The updates a load applies: the consecutive ids right after `update_id`.
	pub pending: Vec<u64>,
	/// Update ids above `update_id` after a gap: a load never applies them.
	pub beyond_gap: Vec<u64>,
	/// Update ids at or below `update_id`: already in the monitor, safe to delete.
	pub stale: Vec<u64>,
	/// Update keys that are not decimal ids.
	pub malformed: Vec<String>,
	/// Total size of the monitor's update objects.
	pub update_bytes: u64,
}

/// Everything below a store's root, summarized.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
	/// Every namespace `(primary, secondary)` with keys.
	pub namespaces: BTreeMap<(String, String), NamespaceStats>,
	/// The monitors, by key.
	pub monitors: Vec<MonitorEntry>,
	/// Update namespaces whose monitor is not stored (archived or gone), with their keys.
	pub orphaned_updates: BTreeMap<String, Vec<String>>,
	/// Archived monitor keys.
	pub archived: Vec<String>,
}

impl Inventory {
	/// Lists everything below the store's root and reads the first bytes of each monitor. Runs on
	/// the store's runtime, so it may be awaited on any executor.
	pub async fn scan(store: &ObjectKvStore) -> Result<Inventory, Error> {
		let scanning = store.spawn(Self::scan_on_runtime(store.clone()));
		scanning.await.unwrap_or(Err(Error::Cancelled {
			operation: Operation::ListAll,
			target: "all keys".to_owned(),
		}))
	}

	async fn scan_on_runtime(store: ObjectKvStore) -> Result<Inventory, Error> {
		let backend = store.backend();
		let keys = store.key_mapper();
		let root = keys.root().clone();
		let prefix = (!root.as_ref().is_empty()).then_some(&root);
		let objects: Vec<_> = backend
			.list(prefix)
			.try_collect()
			.await
			.map_err(|source| storage_error(Operation::ListAll, "all keys", source))?;

		let mut inventory = Inventory::default();
		let mut monitors = BTreeMap::new();
		let mut updates: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
		for meta in crate::store::without_directory_markers(&objects) {
			if meta.location == root || crate::lease::is_lease_path(&root, &meta.location) {
				continue;
			}
			let key = keys.kv_key(&meta.location)?;
			let stats = inventory
				.namespaces
				.entry((key.primary_namespace.clone(), key.secondary_namespace.clone()))
				.or_default();
			stats.keys += 1;
			stats.bytes += meta.size;
			match key.primary_namespace.as_str() {
				CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE
					if key.secondary_namespace.is_empty() =>
				{
					monitors.insert(key.key.clone(), (meta.location.clone(), meta.size));
				},
				CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE
					if !key.secondary_namespace.is_empty() =>
				{
					updates.entry(key.secondary_namespace).or_default().push((key.key, meta.size));
				},
				ARCHIVED_CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE => {
					inventory.archived.push(key.key);
				},
				_ => {},
			}
		}

		for (monitor_key, (path, size)) in monitors {
			let head = header(backend.as_ref(), &path, size).await.map_err(|source| {
				let target =
					KvKey::new(CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE, "", &monitor_key)
						.map(|k| k.to_string())
						.unwrap_or_default();
				storage_error(Operation::Read, &target, source)
			})?;
			let (sentinel, update_id) = parse_header(&head);
			let its_updates = updates.remove(&monitor_key).unwrap_or_default();
			inventory.monitors.push(classify(monitor_key, size, sentinel, update_id, its_updates));
		}
		inventory.orphaned_updates = updates
			.into_iter()
			.map(|(monitor, keys)| (monitor, keys.into_iter().map(|(k, _)| k).collect()))
			.collect();
		Ok(inventory)
	}
}

fn storage_error(operation: Operation, target: &str, source: object_store::Error) -> Error {
	let kind = FailureKind::of(&source);
	Error::Storage { operation, target: target.to_owned(), kind, attempts: 1, source }
}

/// Enough of a monitor object to read its update id: sentinel, two version bytes, eight id bytes.
const HEADER_LEN: u64 = 12;

async fn header(
	backend: &dyn ObjectStore, path: &object_store::path::Path, size: u64,
) -> Result<Vec<u8>, object_store::Error> {
	Ok(backend.get_range(path, 0..HEADER_LEN.min(size)).await?.to_vec())
}

/// The sentinel flag and the update id from a monitor object's first bytes.
pub(crate) fn parse_header(head: &[u8]) -> (bool, Result<u64, String>) {
	let sentinel = head.starts_with(MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL);
	let body =
		if sentinel { &head[MONITOR_UPDATING_PERSISTER_PREPEND_SENTINEL.len()..] } else { head };
	// LDK writes a version byte and a minimum-version byte (both 1 today), then the id.
	let id = match body {
		[version, min_version, id @ ..] if id.len() >= 8 => {
			if *min_version > 1 {
				Err(format!("written by a newer LDK (version {version}, needs {min_version})"))
			} else {
				let mut bytes = [0u8; 8];
				bytes.copy_from_slice(&id[..8]);
				Ok(u64::from_be_bytes(bytes))
			}
		},
		_ => Err(format!("too short for a ChannelMonitor ({} bytes)", head.len())),
	};
	(sentinel, id)
}

fn classify(
	key: String, bytes: u64, sentinel: bool, update_id: Result<u64, String>,
	updates: Vec<(String, u64)>,
) -> MonitorEntry {
	let update_bytes = updates.iter().map(|(_, size)| size).sum();
	let mut ids = BTreeSet::new();
	let mut malformed = Vec::new();
	for (name, _) in updates {
		match name.parse::<u64>() {
			Ok(id) if name.bytes().all(|b| b.is_ascii_digit()) => {
				ids.insert(id);
			},
			_ => malformed.push(name),
		}
	}
	let (mut pending, mut beyond_gap, mut stale) = (Vec::new(), Vec::new(), Vec::new());
	if let Ok(base) = update_id {
		let mut next = base.checked_add(1);
		for id in ids {
			if id <= base {
				stale.push(id);
			} else if Some(id) == next {
				pending.push(id);
				next = id.checked_add(1);
			} else {
				next = None;
				beyond_gap.push(id);
			}
		}
	}
	MonitorEntry {
		key,
		bytes,
		sentinel,
		update_id,
		pending,
		beyond_gap,
		stale,
		malformed,
		update_bytes,
	}
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn headers_give_the_update_id() {
		let mut head = vec![0xff, 0xff, 1, 1];
		head.extend_from_slice(&42u64.to_be_bytes());
		assert_eq!(parse_header(&head), (true, Ok(42)));
		assert_eq!(parse_header(&head[2..]), (false, Ok(42)));
		assert!(parse_header(&head[..6]).1.is_err());
		let mut newer = vec![3, 2];
		newer.extend_from_slice(&1u64.to_be_bytes());
		assert!(parse_header(&newer).1.unwrap_err().contains("newer LDK"));
	}

	#[test]
	fn updates_are_sorted_into_pending_stale_and_beyond_a_gap() {
		let updates =
			["3", "4", "5", "6", "8", "9", "x1"].iter().map(|k| (k.to_string(), 10)).collect();
		let entry = classify("m".into(), 100, true, Ok(4), updates);
		assert_eq!(entry.stale, [3, 4]);
		assert_eq!(entry.pending, [5, 6]);
		assert_eq!(entry.beyond_gap, [8, 9]);
		assert_eq!(entry.malformed, ["x1"]);
		assert_eq!(entry.update_bytes, 70);
	}
}
