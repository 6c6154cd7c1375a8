//! Reads the fixture files of the main benchmark (`benches/persistence/fixtures.rs`, format
//! `LDKOSBF2`): real `ChannelMonitor`s and the `ChannelMonitorUpdate`s that followed them,
//! recorded from LDK 0.2.7 flows. The parsing is that file's, read-only.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

const MAGIC: &[u8; 8] = b"LDKOSBF2";

/// One channel: a monitor and the updates that followed it.
#[derive(Debug, Clone)]
pub struct ChannelFixture {
	/// What the channel is (`startup-00042`, `size-4MB`, …).
	pub label: String,
	/// Its key in `monitors/` (`<funding txid>_<vout>`).
	pub key: String,
	/// The monitor as LDK encodes it (no sentinel).
	pub monitor: Vec<u8>,
	/// The monitor's latest update id.
	pub update_id: u64,
	/// The next updates, `update_id + 1, + 2, …`, as LDK encodes them.
	pub updates: Vec<Vec<u8>>,
}

impl ChannelFixture {
	/// The id of the `i`-th recorded update (0-based).
	pub fn update_id_at(&self, i: usize) -> u64 {
		self.update_id + 1 + i as u64
	}
}

/// A saved set of channels with a description of how it was made.
#[derive(Debug, Clone, Default)]
pub struct FixtureSet {
	/// `key = value` lines: the generator's parameters, timings, the LDK version.
	pub notes: Vec<(String, String)>,
	pub channels: Vec<ChannelFixture>,
}

impl FixtureSet {
	/// The startup channels (the main benchmark's startup section uses the same), in label order.
	pub fn startup_channels(&self) -> Vec<&ChannelFixture> {
		let mut channels: Vec<&ChannelFixture> =
			self.channels.iter().filter(|c| c.label.starts_with("startup-")).collect();
		channels.sort_by(|a, b| a.label.cmp(&b.label));
		channels
	}

	pub fn load(path: &Path) -> io::Result<FixtureSet> {
		let mut input = io::BufReader::new(fs::File::open(path)?);
		let mut magic = [0u8; 8];
		input.read_exact(&mut magic)?;
		if &magic != MAGIC {
			return Err(io::Error::new(io::ErrorKind::InvalidData, "not a fixture file"));
		}
		let mut set = FixtureSet::default();
		for _ in 0..get_u32(&mut input)? {
			let k = get_string(&mut input)?;
			let v = get_string(&mut input)?;
			set.notes.push((k, v));
		}
		for _ in 0..get_u32(&mut input)? {
			let label = get_string(&mut input)?;
			let key = get_string(&mut input)?;
			let monitor = get_bytes(&mut input)?;
			let mut id = [0u8; 8];
			input.read_exact(&mut id)?;
			// In-flight HTLCs and payments before the monitor: not needed here.
			let _inflight_htlcs = get_u32(&mut input)?;
			let _payments_before = get_u32(&mut input)?;
			let n = get_u32(&mut input)?;
			let updates = (0..n).map(|_| get_bytes(&mut input)).collect::<io::Result<_>>()?;
			set.channels.push(ChannelFixture {
				label,
				key,
				monitor,
				update_id: u64::from_le_bytes(id),
				updates,
			});
		}
		Ok(set)
	}
}

fn get_u32(input: &mut impl Read) -> io::Result<u32> {
	let mut n = [0u8; 4];
	input.read_exact(&mut n)?;
	Ok(u32::from_le_bytes(n))
}

fn get_bytes(input: &mut impl Read) -> io::Result<Vec<u8>> {
	let n = get_u32(input)? as usize;
	let mut bytes = vec![0u8; n];
	input.read_exact(&mut bytes)?;
	Ok(bytes)
}

fn get_string(input: &mut impl Read) -> io::Result<String> {
	String::from_utf8(get_bytes(input)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
