//! Where a command points: a URL from what the user typed, a check that a local directory exists
//! (read-only commands never create one), and a refusal to treat a location without a node's
//! data as a clean node.

use std::path::Path;

use ldk_object_store::inspect::Inventory;
use url::Url;

use crate::output::redact;

/// The store URL for `raw`: a URL as it is, and a local path (absolute, or relative to the current
/// directory) as its `file://` URL.
pub(crate) fn url(raw: &str) -> Result<String, String> {
	let path = Path::new(raw);
	if path.is_absolute() {
		return Url::from_file_path(path)
			.map(String::from)
			.map_err(|()| format!("{raw:?} is not a usable path; try file:///abs/dir"));
	}
	match Url::parse(raw) {
		Ok(_) => Ok(raw.to_owned()),
		// Not a URL and no scheme: a relative path, as `ls ./ldk_data` means.
		Err(url::ParseError::RelativeUrlWithoutBase) if !raw.contains("://") => {
			let dir = std::env::current_dir()
				.map_err(|e| format!("{raw:?}: cannot resolve a relative path: {e}"))?;
			Url::from_file_path(dir.join(path))
				.map(String::from)
				.map_err(|()| format!("{raw:?} is not a usable path; try file:///abs/dir"))
		},
		Err(e) => Err(format!(
			"invalid store URL {:?}: {e} (a local directory is file:///abs/dir or /abs/dir)",
			redact(raw)
		)),
	}
}

/// Fails if `url` is a local directory that does not exist, so that nothing creates it.
pub(crate) fn must_exist(url: &str) -> Result<(), String> {
	let Some(dir) = local_dir(url) else { return Ok(()) };
	match std::fs::metadata(&dir) {
		Ok(meta) if meta.is_dir() => Ok(()),
		Ok(_) => Err(format!("{} is not a directory", dir.display())),
		Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
			"{} does not exist, so it holds no node data (nothing was created)",
			dir.display()
		)),
		Err(e) => Err(format!("cannot read {}: {e}", dir.display())),
	}
}

/// How many node roots an error names before it only counts the rest.
const SHOWN_ROOTS: usize = 20;

/// Fails unless the inventory found a node's data at the root. Pointed at a parent of node roots,
/// the message names them.
pub(crate) fn require_node_data(inventory: &Inventory, url: &str) -> Result<(), String> {
	if inventory.holds_node_data {
		return Ok(());
	}
	let url = redact(url);
	if !inventory.node_roots_below.is_empty() {
		let base = url.trim_end_matches('/');
		let below = &inventory.node_roots_below;
		let mut roots: Vec<String> =
			below.iter().take(SHOWN_ROOTS).map(|root| format!("{base}/{root}")).collect();
		if below.len() > SHOWN_ROOTS {
			roots.push(format!("… and {} more", below.len() - SHOWN_ROOTS));
		}
		return Err(format!(
			"no node data at {url}, but {} node root(s) below it; point the command at one of \
			 them:\n  {}",
			below.len(),
			roots.join("\n  ")
		));
	}
	if inventory.objects == 0 {
		return Err(format!(
			"no node data at {url}: nothing is stored there (check the bucket, the prefix and, for \
			 an encrypted store, LDK_OBJECT_STORE_ENCRYPTION_KEY)"
		));
	}
	Err(format!(
		"no node data at {url}: {} object(s), but no ChannelManager (`manager`), monitor or \
		 monitor update among them",
		inventory.objects
	))
}

/// The local directory of a `file://` URL.
pub(crate) fn local_dir(url: &str) -> Option<std::path::PathBuf> {
	let parsed = Url::parse(url).ok()?;
	(parsed.scheme() == "file").then(|| parsed.to_file_path().ok()).flatten()
}
