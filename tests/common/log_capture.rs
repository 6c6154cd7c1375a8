//! A global `tracing` subscriber that writes into memory, for tests that check what reaches the
//! logs. Global because the store logs from its own runtime's threads; so each such test lives in
//! a binary of its own.

use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
	fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
		self.0.lock().unwrap().extend_from_slice(buf);
		Ok(buf.len())
	}
	fn flush(&mut self) -> std::io::Result<()> {
		Ok(())
	}
}

/// What the process has logged so far.
#[derive(Clone)]
pub struct Log(Captured);

impl Log {
	pub fn text(&self) -> String {
		String::from_utf8_lossy(&self.0 .0.lock().unwrap()).into_owned()
	}
}

/// Installs the capturing subscriber for the whole process, at `level` and above.
pub fn capture(level: tracing::Level) -> Log {
	let captured = Captured::default();
	let writer = captured.clone();
	tracing_subscriber::fmt()
		.with_max_level(level)
		.with_ansi(false)
		.with_writer(move || writer.clone())
		.init();
	Log(captured)
}
