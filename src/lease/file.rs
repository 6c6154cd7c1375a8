//! The OS lock of a `file://` store.

use std::sync::{Arc, Mutex};

use super::{Held, Kind, LeaseConfig, LeaseInfo, LeaseState, LOCK_FILE};
use crate::error::ConfigError;

/// Takes the OS lock of a `file://` store at `dir` (its root prefix's directory).
pub(crate) fn acquire_file(dir: &std::path::Path) -> Result<Arc<LeaseState>, ConfigError> {
	use fs4::fs_std::FileExt;
	let io =
		|what: &str, source| ConfigError::Io { what: format!("{what} {}", dir.display()), source };
	std::fs::create_dir_all(dir).map_err(|e| io("creating directory", e))?;
	let file = open_lock_target(dir).map_err(|e| io("opening for locking", e))?;
	let locked = FileExt::try_lock_exclusive(&file).map_err(|e| io("locking", e))?;
	if !locked {
		return Err(ConfigError::LeaseHeld {
			holder: format!("another process (it holds an exclusive lock on {})", dir.display()),
			generation: 0,
			expires: "that process ends or drops its store".to_owned(),
		});
	}
	let me = LeaseInfo::new_for_this_process()?;
	Ok(LeaseState::new(
		Kind::File { file: Mutex::new(Some(file)) },
		LeaseConfig::default(),
		Held { info: me, version: None, valid_until: None },
	))
}

/// What a `file://` store locks: the directory itself where the OS allows it (so that nothing
/// is added to a directory LDK's own `FilesystemStore` may read), a lock file otherwise.
fn open_lock_target(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
	if cfg!(unix) {
		std::fs::File::open(dir)
	} else {
		std::fs::OpenOptions::new()
			.read(true)
			.write(true)
			.create(true)
			.truncate(false)
			.open(dir.join(LOCK_FILE))
	}
}

/// Whether a `file://` store's directory is locked by a store right now (for the CLI). Takes a
/// shared lock for an instant: a store starting in that instant is refused and may retry.
pub fn directory_is_locked(dir: &std::path::Path) -> std::io::Result<bool> {
	use fs4::fs_std::FileExt;
	let file = open_lock_target(dir)?;
	// Called through the trait: std's own `File::try_lock_shared` needs a newer Rust than the MSRV.
	Ok(!FileExt::try_lock_shared(&file)?)
}
