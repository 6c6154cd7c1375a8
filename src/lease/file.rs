//! The OS lock of a `file://` store.
//!
//! An exclusive `flock` on the store's directory, held while the store (or a request of it still
//! in flight) lives and released by the OS when the process ends, crash included. Stores of this
//! process are also known by directory, so that a second store on the same directory in the same
//! process is told so rather than blamed on "another process".

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::state::{Held, Kind, LeaseState};
use super::{LeaseConfig, LeaseInfo, LOCK_FILE, RUNNING_MARK};
use crate::error::ConfigError;

/// The directories locked by stores of this process, with the locking store's instance id.
fn locked_here() -> &'static Mutex<HashMap<PathBuf, String>> {
	static LOCKED: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
	LOCKED.get_or_init(Default::default)
}

/// A locked directory: the lock is held while this lives.
#[derive(Debug)]
pub(crate) struct LockedDir {
	/// Closing it releases the OS lock.
	_file: std::fs::File,
	key: PathBuf,
	/// The running mark this lock placed (see `mark_running`), removed when the lock is released
	/// after a drain.
	mark: Mutex<Option<PathBuf>>,
}

impl LockedDir {
	/// Places the running mark in the directory, durably, and returns whether a mark was there
	/// already. The OS drops a lock at a crash as it does at a clean stop; the mark tells the two
	/// apart: it is removed only when the lock is released after every request drained, so a
	/// mark found at the start means the store before this one ended with requests that may have
	/// landed on one copy of a replicated pair only.
	pub(super) fn mark_running(&self) -> std::io::Result<bool> {
		let path = self.key.join(RUNNING_MARK);
		let named = |err: std::io::Error| {
			std::io::Error::new(err.kind(), format!("{}: {err}", path.display()))
		};
		let found = path.try_exists().map_err(named)?;
		std::fs::File::create(&path).and_then(|file| file.sync_all()).map_err(named)?;
		sync_directory(&self.key).map_err(named)?;
		*self.mark.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
		Ok(found)
	}
}

impl Drop for LockedDir {
	fn drop(&mut self) {
		if let Some(mark) = self.mark.lock().unwrap_or_else(|p| p.into_inner()).take() {
			// Not synced: a mark that comes back after a power loss costs one full comparison.
			if let Err(err) = std::fs::remove_file(&mark) {
				tracing::warn!(error = %err, "the running mark could not be removed: the next start compares the replica in full");
			}
		}
		locked_here().lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
	}
}

/// Syncs a directory's entries (a created file's name) to disk; a no-op where directories
/// cannot be opened.
fn sync_directory(dir: &Path) -> std::io::Result<()> {
	if cfg!(unix) {
		std::fs::File::open(dir)?.sync_all()?;
	}
	Ok(())
}

/// Takes the OS lock of a `file://` store at `dir` (its root prefix's directory), which must
/// exist.
pub(crate) fn acquire_file(dir: &Path) -> Result<Arc<LeaseState>, ConfigError> {
	use fs4::fs_std::FileExt;
	let io =
		|what: &str, source| ConfigError::Io { what: format!("{what} {}", dir.display()), source };
	let key = dir.canonicalize().map_err(|e| io("resolving", e))?;
	let mut me = LeaseInfo::new_for_this_process(LeaseConfig::default().ttl)?;
	me.expires_unix_ms = super::NEVER;
	let mut here = locked_here().lock().unwrap_or_else(|p| p.into_inner());
	if let Some(instance) = here.get(&key) {
		return Err(ConfigError::DirectoryLocked {
			dir: key.clone(),
			holder: format!("a store of this process (instance {instance})"),
		});
	}
	let file = open_lock_target(&key).map_err(|e| io("opening for locking", e))?;
	if !FileExt::try_lock_exclusive(&file).map_err(|e| io("locking", e))? {
		return Err(ConfigError::DirectoryLocked {
			dir: key.clone(),
			holder: "another process".to_owned(),
		});
	}
	here.insert(key.clone(), me.instance.clone());
	drop(here);
	let locked = Arc::new(LockedDir { _file: file, key, mark: Mutex::new(None) });
	Ok(LeaseState::new(
		Kind::File { dir: Mutex::new(Some(locked)) },
		LeaseConfig::default(),
		Held { info: me, version: None, valid_until: None, wall_valid_until_ms: None },
	))
}

/// What a `file://` store locks: the directory itself where the OS allows it (so that nothing
/// is added to a directory LDK's own `FilesystemStore` may read), a lock file otherwise.
fn open_lock_target(dir: &Path) -> std::io::Result<std::fs::File> {
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
pub fn directory_is_locked(dir: &Path) -> std::io::Result<bool> {
	use fs4::fs_std::FileExt;
	if let Ok(key) = dir.canonicalize() {
		if locked_here().lock().unwrap_or_else(|p| p.into_inner()).contains_key(&key) {
			return Ok(true);
		}
	}
	let file = open_lock_target(dir)?;
	// Called through the trait: std's own `File::try_lock_shared` needs a newer Rust than the MSRV.
	Ok(!FileExt::try_lock_shared(&file)?)
}
