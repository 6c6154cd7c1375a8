//! The replica record: one small object at the root of each copy that says what the copy is (the
//! primary, a replica, or a primary retired by a promotion), the pair's generation, and whether
//! the replica holds everything the primary acknowledged.

use std::fmt;

use object_store::path::Path;

/// The record's name below each copy's root prefix (listings skip it, as they skip the lease).
pub const REPLICA_RECORD: &str = ".ldk-object-store-replica";

const HEADER: &str = "ldk-object-store replica record v1";

/// The record's path for a copy rooted at `root`.
pub fn record_path(root: &Path) -> Path {
	root.clone().join(REPLICA_RECORD)
}

/// The folder below the primary's root prefix that holds the journal of a replica that lags: one
/// empty object per key written or removed while the replica was unreachable (listings skip it).
pub const JOURNAL_FOLDER: &str = ".ldk-object-store-journal";

/// The journal entry of `key` (`primary/secondary/key`, hex-encoded, since a key's parts may be
/// empty) on a primary rooted at `root`.
pub fn journal_path(root: &Path, key: &str) -> Path {
	use hex_conservative::DisplayHex;
	root.clone().join(JOURNAL_FOLDER).join(key.as_bytes().to_lower_hex_string())
}

/// The key a journal entry's name stands for, if it is one.
pub(crate) fn journal_key(name: &str) -> Option<String> {
	let bytes = <Vec<u8> as hex_conservative::FromHex>::from_hex(name).ok()?;
	String::from_utf8(bytes).ok()
}

/// What a copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
	/// The copy a node reads from and writes to first.
	Primary,
	/// The second copy: written beside the primary, never read by a node, promoted only while in
	/// sync.
	Replica,
	/// A former primary whose replica was promoted: no node may start on it until it is filled
	/// again from the new primary (configure it as the new primary's replica).
	Retired,
}

/// Whether a replica holds every update the primary acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
	/// No replica is attached (a primary's record only).
	None,
	/// Being filled or repaired: it lacks acknowledged updates. Never promoted without `--force`.
	Filling,
	/// A verified pass found it equal to the primary, and every write since was acknowledged by
	/// both copies.
	InSync,
	/// Detached from its primary: writes no longer reach it.
	Stale,
}

/// One copy's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRecord {
	/// What this copy is.
	pub role: Role,
	/// The pair's generation: 1 for a new pair, one more at every promotion. A retired primary
	/// holds the generation of the promotion that retired it.
	pub generation: u64,
	/// On a primary: its replica's state. On a replica: its own. On a retired copy: `Stale`.
	pub sync: SyncState,
	/// When it was written, in milliseconds since the Unix epoch (the writer's wall clock; for
	/// operators only).
	pub updated_unix_ms: u64,
	/// Whether the pair runs in [`ReplicaMode::LagWhenUnreachable`](super::ReplicaMode): the
	/// replica may then miss updates without knowing it, and is promoted only on the primary's
	/// word.
	pub may_lag: bool,
}

impl ReplicaRecord {
	/// A record with the wall clock's time.
	pub fn new(role: Role, generation: u64, sync: SyncState) -> Self {
		let updated_unix_ms = std::time::SystemTime::now()
			.duration_since(std::time::UNIX_EPOCH)
			.map_or(0, |elapsed| elapsed.as_millis() as u64);
		ReplicaRecord { role, generation, sync, updated_unix_ms, may_lag: false }
	}

	/// The same record for a pair that may lag (see [`Self::may_lag`]).
	pub fn lagging(mut self, may_lag: bool) -> Self {
		self.may_lag = may_lag;
		self
	}

	/// The object's text.
	pub fn encode(&self) -> String {
		format!(
			"{HEADER}\nrole={}\ngeneration={}\nsync={}\nupdated_unix_ms={}\nmode={}\n",
			self.role,
			self.generation,
			self.sync,
			self.updated_unix_ms,
			if self.may_lag { "lag-when-unreachable" } else { "strict" }
		)
	}

	/// Parses a record; `None` if the text is not one.
	pub fn parse(text: &str) -> Option<Self> {
		let mut lines = text.lines();
		if lines.next()? != HEADER {
			return None;
		}
		let (mut role, mut generation, mut sync, mut updated_unix_ms) = (None, None, None, 0);
		let mut may_lag = false;
		for line in lines {
			let Some((key, value)) = line.split_once('=') else { continue };
			match key {
				"role" => role = Some(Role::parse(value)?),
				"generation" => generation = Some(value.parse().ok()?),
				"sync" => sync = Some(SyncState::parse(value)?),
				"updated_unix_ms" => updated_unix_ms = value.parse().ok()?,
				"mode" => may_lag = value == "lag-when-unreachable",
				// Fields of later versions.
				_ => {},
			}
		}
		Some(ReplicaRecord {
			role: role?,
			generation: generation?,
			sync: sync?,
			updated_unix_ms,
			may_lag,
		})
	}
}

impl Role {
	fn parse(text: &str) -> Option<Self> {
		Some(match text {
			"primary" => Role::Primary,
			"replica" => Role::Replica,
			"retired" => Role::Retired,
			_ => return None,
		})
	}
}

impl fmt::Display for Role {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		f.write_str(match self {
			Role::Primary => "primary",
			Role::Replica => "replica",
			Role::Retired => "retired",
		})
	}
}

impl SyncState {
	fn parse(text: &str) -> Option<Self> {
		Some(match text {
			"none" => SyncState::None,
			"filling" => SyncState::Filling,
			"in-sync" => SyncState::InSync,
			"stale" => SyncState::Stale,
			_ => return None,
		})
	}
}

impl fmt::Display for SyncState {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		f.write_str(match self {
			SyncState::None => "none",
			SyncState::Filling => "filling",
			SyncState::InSync => "in-sync",
			SyncState::Stale => "stale",
		})
	}
}

impl fmt::Display for ReplicaRecord {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		match self.role {
			Role::Primary => {
				write!(f, "a primary, generation {}, its replica {}", self.generation, self.sync)
			},
			Role::Replica => write!(f, "a replica, generation {}, {}", self.generation, self.sync),
			Role::Retired => write!(f, "a primary retired at generation {}", self.generation),
		}
	}
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn records_round_trip_and_refuse_garbage() {
		for role in [Role::Primary, Role::Replica, Role::Retired] {
			for sync in [SyncState::None, SyncState::Filling, SyncState::InSync, SyncState::Stale] {
				for may_lag in [false, true] {
					let record = ReplicaRecord::new(role, 7, sync).lagging(may_lag);
					assert_eq!(ReplicaRecord::parse(&record.encode()), Some(record));
				}
			}
		}
		assert_eq!(ReplicaRecord::parse("role=primary\ngeneration=1\nsync=none\n"), None);
		let unknown = format!("{HEADER}\nrole=leader\ngeneration=1\nsync=none\n");
		assert_eq!(ReplicaRecord::parse(&unknown), None);
		let missing = format!("{HEADER}\nrole=primary\nsync=none\n");
		assert_eq!(ReplicaRecord::parse(&missing), None);
	}
}
