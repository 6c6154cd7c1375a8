//! What the persister remembers of each channel between calls: the newest full monitor it has
//! written, and how many bytes of update objects are stored after it. The first keeps an older
//! full monitor from being written after a newer one; the second decides when an update is
//! better stored by writing the full monitor (consolidation by size).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// One channel, by monitor key.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ChannelLedger {
	/// The highest monitor id of a full write started or queued in this run.
	pub(crate) highest_full: Option<u64>,
	/// The size of the newest full monitor object, once known (written or loaded in this run).
	pub(crate) full_len: Option<usize>,
	/// Bytes of the update objects stored after that monitor.
	pub(crate) pending_bytes: usize,
	/// How many update objects that is; `None` when unknown (neither loaded nor consolidated in
	/// this run), which counts as pending.
	pub(crate) pending: Option<u64>,
}

impl ChannelLedger {
	/// Whether an update of `update_len` bytes should be stored by writing the full monitor:
	/// the update objects after the stored monitor would then weigh at least as much as the
	/// monitor itself, so reading the monitor alone at startup is cheaper than reading them.
	pub(crate) fn update_reaches_monitor_size(&self, update_len: usize) -> bool {
		self.full_len.is_some_and(|full| self.pending_bytes.saturating_add(update_len) >= full)
	}

	/// Whether the channel's monitor is small enough to be written whole for every update
	/// ([`PersisterConfig::full_monitors_up_to`](super::PersisterConfig::full_monitors_up_to)):
	/// at most `limit` bytes, or of a size not known yet (the full write learns it). Never with
	/// `limit` 0.
	pub(crate) fn is_small(&self, limit: usize) -> bool {
		limit != 0 && self.full_len.is_none_or(|len| len <= limit)
	}

	/// Whether update objects may be stored after the newest full monitor.
	pub(crate) fn has_pending(&self) -> bool {
		self.pending != Some(0)
	}

	pub(crate) fn note_update(&mut self, update_len: usize) {
		self.pending_bytes = self.pending_bytes.saturating_add(update_len);
		self.pending = self.pending.map(|n| n + 1);
	}

	/// A full monitor of `len` bytes is written: the updates it holds no longer count.
	pub(crate) fn note_full(&mut self, len: usize) {
		self.full_len = Some(len);
		self.pending_bytes = 0;
		self.pending = Some(0);
	}
}

/// Every channel's ledger, under one lock.
#[derive(Debug, Default)]
pub(crate) struct Ledger(Mutex<HashMap<String, ChannelLedger>>);

impl Ledger {
	pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<String, ChannelLedger>> {
		self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
	}

	/// What a load found: a monitor object of `full_len` bytes followed by `pending` update
	/// objects of `pending_bytes` bytes in all.
	pub(crate) fn note_loaded(
		&self, monitor_key: &str, full_len: usize, pending: u64, pending_bytes: usize,
	) {
		let mut channels = self.lock();
		let channel = channels.entry(monitor_key.to_owned()).or_default();
		channel.full_len = Some(full_len);
		channel.pending_bytes = pending_bytes;
		channel.pending = Some(pending);
	}

	pub(crate) fn forget(&self, monitor_key: &str) {
		self.lock().remove(monitor_key);
	}

	/// Whether `monitor_key` may have update objects after its stored monitor.
	pub(crate) fn has_pending(&self, monitor_key: &str) -> bool {
		self.lock().get(monitor_key).is_none_or(ChannelLedger::has_pending)
	}
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn consolidates_once_updates_weigh_as_much_as_the_monitor() {
		let mut channel = ChannelLedger::default();
		assert!(!channel.update_reaches_monitor_size(1 << 30), "size unknown: never");
		channel.note_full(1_000);
		assert!(!channel.has_pending());
		for _ in 0..3 {
			assert!(!channel.update_reaches_monitor_size(300));
			channel.note_update(300);
		}
		assert!(channel.has_pending());
		assert!(channel.update_reaches_monitor_size(100), "900 + 100 bytes reach 1,000");
		channel.note_full(1_200);
		assert_eq!((channel.pending_bytes, channel.pending), (0, Some(0)));
	}

	#[test]
	fn small_monitors_are_written_whole_up_to_the_limit() {
		let mut channel = ChannelLedger::default();
		assert!(channel.is_small(64), "size unknown: the full write learns it");
		assert!(!channel.is_small(0), "0 turns it off");
		channel.note_full(64);
		assert!(channel.is_small(64));
		channel.note_full(65);
		assert!(!channel.is_small(64));
	}

	#[test]
	fn a_channel_never_seen_counts_as_pending() {
		let ledger = Ledger::default();
		assert!(ledger.has_pending("abc_1"));
		ledger.note_loaded("abc_1", 100, 0, 0);
		assert!(!ledger.has_pending("abc_1"));
		ledger.note_loaded("abc_1", 100, 2, 40);
		assert!(ledger.has_pending("abc_1"));
	}
}
