//! Fixtures: real `ChannelMonitor`s and the `ChannelMonitorUpdate`s that followed them, recorded
//! from LDK flows by [`crate::flow`], saved to a file so that benchmark runs need not rerun LDK.
//!
//! A fixture set is a list of channels; each holds the full monitor as LDK encoded it at a moment
//! (the bytes `MonitorUpdatingPersister` writes after its 2-byte sentinel), its key, its update id,
//! and the updates that LDK made next, in order, each encoded as LDK writes it. Loading a monitor
//! plus any prefix of its updates is therefore exactly a state that LDK's persister leaves in a
//! store: a full monitor and the update objects written after it.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"LDKOSBF2";

/// One channel: a monitor and the updates that followed it.
#[derive(Debug, Clone)]
pub struct ChannelFixture {
	/// What the channel is (`startup-0042`, `size-4MB`, …).
	pub label: String,
	/// Its key in `monitors/` (`<funding txid>_<vout>`).
	pub key: String,
	/// The monitor as LDK encodes it (no sentinel).
	pub monitor: Vec<u8>,
	/// The monitor's latest update id.
	pub update_id: u64,
	/// The next updates, `update_id + 1, + 2, …`, as LDK encodes them.
	pub updates: Vec<Vec<u8>>,
	/// In-flight HTLCs on the channel while the updates were made.
	pub inflight_htlcs: u32,
	/// Payments made over the channel before the monitor was recorded.
	pub payments_before: u32,
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
	pub fn note(&self, key: &str) -> Option<&str> {
		self.notes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
	}

	pub fn by_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a ChannelFixture> {
		self.channels.iter().filter(move |c| c.label.starts_with(prefix))
	}

	pub fn save(&self, path: &Path) -> io::Result<()> {
		if let Some(dir) = path.parent() {
			fs::create_dir_all(dir)?;
		}
		let tmp = path.with_extension("tmp");
		let mut out = io::BufWriter::new(fs::File::create(&tmp)?);
		out.write_all(MAGIC)?;
		put_u32(&mut out, self.notes.len() as u32)?;
		for (k, v) in &self.notes {
			put_bytes(&mut out, k.as_bytes())?;
			put_bytes(&mut out, v.as_bytes())?;
		}
		put_u32(&mut out, self.channels.len() as u32)?;
		for c in &self.channels {
			put_bytes(&mut out, c.label.as_bytes())?;
			put_bytes(&mut out, c.key.as_bytes())?;
			put_bytes(&mut out, &c.monitor)?;
			out.write_all(&c.update_id.to_le_bytes())?;
			put_u32(&mut out, c.inflight_htlcs)?;
			put_u32(&mut out, c.payments_before)?;
			put_u32(&mut out, c.updates.len() as u32)?;
			for u in &c.updates {
				put_bytes(&mut out, u)?;
			}
		}
		out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
		fs::rename(tmp, path)
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
			let inflight_htlcs = get_u32(&mut input)?;
			let payments_before = get_u32(&mut input)?;
			let n = get_u32(&mut input)?;
			let updates = (0..n).map(|_| get_bytes(&mut input)).collect::<io::Result<_>>()?;
			set.channels.push(ChannelFixture {
				label,
				key,
				monitor,
				update_id: u64::from_le_bytes(id),
				updates,
				inflight_htlcs,
				payments_before,
			});
		}
		Ok(set)
	}
}

fn put_u32(out: &mut impl Write, n: u32) -> io::Result<()> {
	out.write_all(&n.to_le_bytes())
}

fn put_bytes(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
	put_u32(out, bytes.len() as u32)?;
	out.write_all(bytes)
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

/// Where fixtures live: `target/bench-fixtures/` unless `--fixtures DIR` says otherwise.
pub fn default_dir() -> PathBuf {
	let target = std::env::var_os("CARGO_TARGET_DIR")
		.map(PathBuf::from)
		.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
	target.join("bench-fixtures")
}
