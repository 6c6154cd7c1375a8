//! Promotion (the replica becomes the primary) and detaching (the primary goes on alone), each
//! under the writer lease of the copy that goes on.

use super::{read_own, write_own, ReplicaRecord, Role, SyncState};
use crate::error::ConfigError;
use crate::{ObjectKvStore, StoreBuilder};

/// What a promotion did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Promoted {
	/// The new primary's generation.
	pub generation: u64,
	/// Whether the old primary was reached and recorded as retired (a node can then never start
	/// on it again by mistake).
	pub old_primary_retired: bool,
	/// What the operator should know: what `force` overrode, and an old primary that could not
	/// be reached or read.
	pub warnings: Vec<String>,
}

/// The replica record of a store's own location (`None` if it has none).
pub async fn read_record(store: &ObjectKvStore) -> Result<Option<ReplicaRecord>, ConfigError> {
	read_own(store, false).await
}

/// The keys the journal of a store's own location names: those written or removed while its
/// replica lagged ([`ReplicaMode::LagWhenUnreachable`](super::ReplicaMode)), not yet repaired.
pub async fn journal(store: &ObjectKvStore) -> Result<Vec<crate::keys::KvKey>, ConfigError> {
	store.start_list_journal().await.map_err(ConfigError::from_store)
}

/// Makes the replica at `replica` the primary, when the primary is lost:
///
/// 1. takes the writer lease on the replica's location, under the takeover rules (refused while
///    an instance renews it: every instance writing to the pair holds the lease on both copies);
/// 2. refuses unless the replica is recorded in sync, and, where the old primary (`primary`) can
///    still be read, unless its record agrees; `force` overrides both, with a warning, since
///    acknowledged updates may then be missing;
/// 3. records the replica as a primary of the next generation, then the old primary, where it
///    can be reached, as retired, so that no node starts on it again;
/// 4. releases the lease: start the node on the promoted location.
pub async fn promote(
	replica: StoreBuilder, primary: Option<StoreBuilder>, force: bool,
) -> Result<Promoted, ConfigError> {
	let store = replica.for_replica_tools().build_async().await?;
	let promoted = promote_on(&store, primary, force).await;
	store.close().await;
	promoted
}

async fn promote_on(
	store: &ObjectKvStore, primary: Option<StoreBuilder>, force: bool,
) -> Result<Promoted, ConfigError> {
	let mut warnings = Vec::new();
	let refuse = |why: String| {
		ConfigError::Replica(format!(
			"{why}; it may miss acknowledged updates, so it is not promoted (`--force` promotes it \
			 anyway)"
		))
	};
	let record = read_own(store, false).await?;
	// A replica that may lag cannot know it is stale: only its primary's record, read under the
	// primary's lease (no instance writes there meanwhile), can say it is not.
	let may_lag = record.as_ref().is_some_and(|record| record.may_lag);
	let generation = match record {
		Some(record) if record.role == Role::Primary => {
			return Err(ConfigError::Replica(format!(
				"this location is already a primary ({record})"
			)))
		},
		Some(record) if record.role == Role::Replica && record.sync == SyncState::InSync => {
			record.generation
		},
		Some(record) if force => {
			warnings.push(format!("promoted although its record says: {record}"));
			record.generation
		},
		Some(record) => return Err(refuse(format!("the replica's record says: {record}"))),
		None if force => {
			warnings.push("promoted although it has no replica record".to_owned());
			0
		},
		None => return Err(refuse("this location has no replica record".to_owned())),
	};
	let old = match primary {
		None => None,
		Some(primary) => {
			let primary = primary.for_replica_tools();
			let opened = match may_lag {
				true => primary.build_async().await,
				false => primary.without_writer_lease().build_async().await,
			};
			match opened {
				Ok(old) => Some(old),
				Err(err) if may_lag && !force => {
					return Err(refuse(format!(
						"this pair may lag, and its primary could not be opened under its writer \
						 lease ({err})"
					)))
				},
				Err(err) => {
					warnings.push(format!("the old primary could not be opened: {err}"));
					None
				},
			}
		},
	};
	if may_lag && old.is_none() {
		if !force {
			return Err(refuse(
				"this pair may lag (LagWhenUnreachable), so only its primary's record can say the \
				 replica is in sync: give the primary's location"
					.to_owned(),
			));
		}
		warnings.push(
			"promoted without the primary's word although the pair may lag: acknowledged \
			 updates may be missing"
				.to_owned(),
		);
	}
	if let Some(old) = &old {
		match read_own(old, false).await {
			Ok(Some(record))
				if record.role == Role::Primary
					&& (record.generation != generation || record.sync != SyncState::InSync) =>
			{
				let why = format!("the old primary's record says: {record}");
				if !force {
					return Err(refuse(why));
				}
				warnings.push(format!("promoted although {why}"));
			},
			Ok(_) => {},
			Err(err) => warnings.push(format!("the old primary's record could not be read: {err}")),
		}
	}
	let next = generation + 1;
	write_own(store, false, ReplicaRecord::new(Role::Primary, next, SyncState::None).encode())
		.await?;
	let retired = ReplicaRecord::new(Role::Retired, next, SyncState::Stale).encode();
	let old_primary_retired = match &old {
		Some(old) => match write_own(old, false, retired).await {
			Ok(()) => true,
			Err(err) => {
				warnings.push(format!("the old primary could not be marked retired: {err}"));
				false
			},
		},
		None => false,
	};
	if let Some(old) = old {
		old.close().await;
	}
	Ok(Promoted { generation: next, old_primary_retired, warnings })
}

/// Detaches the replica from the primary at `primary`, which then starts alone: under the
/// primary's writer lease, records the replica (where `replica` is given and reachable) as
/// stale, then the primary as having no replica, at the next generation (so that the replica,
/// if it was missed, still cannot be promoted past the primary's word). Returns the new
/// generation.
pub async fn detach(
	primary: StoreBuilder, replica: Option<StoreBuilder>,
) -> Result<u64, ConfigError> {
	let store = primary.for_replica_tools().build_async().await?;
	let detached = async {
		let generation = match read_own(&store, false).await? {
			Some(record) if record.role == Role::Primary => record.generation,
			Some(record) => {
				return Err(ConfigError::Replica(format!(
					"this location is not a primary ({record}); nothing to detach"
				)))
			},
			None => 0,
		};
		if let Some(replica) = replica {
			let replica = replica.for_replica_tools().without_writer_lease().build_async().await?;
			let marked = async {
				// Never demote a copy that is not this primary's replica (one promoted since).
				match read_own(&replica, false).await? {
					Some(record)
						if record.role != Role::Replica || record.generation > generation =>
					{
						return Err(ConfigError::Replica(format!(
							"the replica's location is not this primary's replica: it holds \
							 {record}, and the primary is at generation {generation}. Nothing was \
							 changed; if it was promoted, run the node on it"
						)))
					},
					_ => {},
				}
				let stale = ReplicaRecord::new(Role::Replica, generation, SyncState::Stale);
				write_own(&replica, false, stale.encode()).await
			};
			let marked = marked.await;
			replica.close().await;
			marked?;
		}
		let next = generation + 1;
		let alone = ReplicaRecord::new(Role::Primary, next, SyncState::None).encode();
		write_own(&store, false, alone).await?;
		Ok(next)
	};
	let detached = detached.await;
	store.close().await;
	detached
}
