//! Peak heap memory: the system allocator, counting the bytes allocated and the highest count
//! since the last [`reset_peak`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Every byte ever allocated (growth of a reallocation included): what a piece of work copied
/// into fresh memory.
static TOTAL: AtomicUsize = AtomicUsize::new(0);
/// Allocations ever made (a reallocation that grows counts as one).
static COUNT: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
	unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
		// SAFETY: forwarded unchanged to the system allocator.
		let ptr = unsafe { System.alloc(layout) };
		if !ptr.is_null() {
			added(layout.size());
		}
		ptr
	}

	unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
		// SAFETY: forwarded unchanged to the system allocator.
		let ptr = unsafe { System.alloc_zeroed(layout) };
		if !ptr.is_null() {
			added(layout.size());
		}
		ptr
	}

	unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
		// SAFETY: forwarded unchanged to the system allocator.
		unsafe { System.dealloc(ptr, layout) };
		CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
	}

	unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
		// SAFETY: forwarded unchanged to the system allocator.
		let new = unsafe { System.realloc(ptr, layout, new_size) };
		if !new.is_null() {
			if new_size >= layout.size() {
				added(new_size - layout.size());
			} else {
				CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
			}
		}
		new
	}
}

fn added(bytes: usize) {
	COUNT.fetch_add(1, Ordering::Relaxed);
	TOTAL.fetch_add(bytes, Ordering::Relaxed);
	let now = CURRENT.fetch_add(bytes, Ordering::Relaxed) + bytes;
	PEAK.fetch_max(now, Ordering::Relaxed);
}

/// Bytes allocated now.
pub fn current() -> usize {
	CURRENT.load(Ordering::Relaxed)
}

/// Starts a new peak from the current level; returns that level.
pub fn reset_peak() -> usize {
	let now = current();
	PEAK.store(now, Ordering::Relaxed);
	now
}

/// The highest level since the last [`reset_peak`].
pub fn peak() -> usize {
	PEAK.load(Ordering::Relaxed)
}

/// Bytes allocated since the process started (never decreases).
pub fn total() -> usize {
	TOTAL.load(Ordering::Relaxed)
}

/// Allocations since the process started (never decreases).
pub fn allocations() -> usize {
	COUNT.load(Ordering::Relaxed)
}
