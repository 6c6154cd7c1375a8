//! Monitor and update key names, parsed the way LDK writes them (LDK's own parser is private).

use std::str::FromStr;

use bitcoin::hashes::hex::FromHex;
use bitcoin::Txid;
use lightning::chain::transaction::OutPoint;
use lightning::io;
use lightning::ln::types::ChannelId;
use lightning::util::persist::{
	MonitorName, ARCHIVED_CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE,
	ARCHIVED_CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE,
	CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE, CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE,
	CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE,
};

/// Where full monitors live (LDK's namespaces, by shorter names).
pub(crate) const MONITORS: &str = CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE;
pub(crate) const MONITORS_SECONDARY: &str = CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE;
/// Where update objects live; the secondary namespace is the monitor key.
pub(crate) const UPDATES: &str = CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE;
/// Where archived monitors live.
pub(crate) const ARCHIVE: &str = ARCHIVED_CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE;
pub(crate) const ARCHIVE_SECONDARY: &str = ARCHIVED_CHANNEL_MONITOR_PERSISTENCE_SECONDARY_NAMESPACE;

/// Parses a monitor key: `<funding txid>_<output index>` for v1 channels, the 64-hex channel id
/// for v2 channels.
pub(crate) fn parse_monitor_key(key: &str) -> Result<MonitorName, io::Error> {
	let invalid = |why: &str| {
		crate::error::io_error(
			io::ErrorKind::InvalidData,
			format!("monitor key {key:?} is invalid: {why}"),
		)
	};
	match key.split_once('_') {
		Some((txid, index)) => {
			let txid = Txid::from_str(txid).map_err(|_| invalid("bad funding txid"))?;
			let index = index.parse::<u16>().map_err(|_| invalid("bad output index"))?;
			Ok(MonitorName::V1Channel(OutPoint { txid, index }))
		},
		None => {
			let bytes = <[u8; 32]>::from_hex(key).map_err(|_| invalid("not a channel id"))?;
			Ok(MonitorName::V2Channel(ChannelId(bytes)))
		},
	}
}

/// Parses an update key: the update id in decimal, as LDK writes it.
pub(crate) fn parse_update_key(monitor_key: &str, key: &str) -> Result<u64, io::Error> {
	// `u64::from_str` accepts a leading `+`, which LDK never writes.
	if !key.bytes().all(|b| b.is_ascii_digit()) {
		return Err(bad_update_key(monitor_key, key));
	}
	key.parse().map_err(|_| bad_update_key(monitor_key, key))
}

fn bad_update_key(monitor_key: &str, key: &str) -> io::Error {
	crate::error::io_error(
		io::ErrorKind::InvalidData,
		format!("update key monitor_updates/{monitor_key}/{key} is not a decimal update id"),
	)
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn monitor_keys_round_trip() {
		for key in [
			"deadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeef_1",
			"0101010101010101010101010101010101010101010101010101010101010101",
		] {
			assert_eq!(parse_monitor_key(key).unwrap().to_string(), key);
		}
		for bad in ["", "xyz_1", "deadbeef_1", "00_x", "abcd"] {
			let err = parse_monitor_key(bad).unwrap_err();
			assert_eq!(err.kind(), io::ErrorKind::InvalidData);
		}
	}

	#[test]
	fn update_keys_are_decimal() {
		assert_eq!(parse_update_key("m", "17").unwrap(), 17);
		assert_eq!(parse_update_key("m", &u64::MAX.to_string()).unwrap(), u64::MAX);
		for bad in ["", "+1", "1a", "-1", "18446744073709551616"] {
			assert!(parse_update_key("m", bad).is_err(), "{bad}");
		}
	}
}
