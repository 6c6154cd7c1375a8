//! Where a command points: a URL from what the user typed, a check that a local directory exists
//! (read-only commands never create one), and a refusal to treat a location without a node's
//! data as a clean node.

use std::path::Path;

use ldk_object_store::inspect::Inventory;
use url::Url;

use crate::output::redact;

/// The location a command works on, as typed; [`url()`] makes it a store URL.
#[derive(Debug, clap::Args)]
pub(crate) struct StoreArg {
	/// Store URL (s3://bucket/prefix, gs://, az://, file:///abs/dir, memory://) or a local
	/// directory's path, absolute or relative to the current directory.
	#[arg(value_name = "URL")]
	pub(crate) location: String,
}

impl StoreArg {
	/// The store URL of a location that must already exist (see [`existing`]).
	pub(crate) fn existing_url(&self) -> Result<String, String> {
		existing(&self.location)
	}
}

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

/// The store URL for `raw`, for a command that needs it to exist already: a missing local
/// directory is an error, never created.
pub(crate) fn existing(raw: &str) -> Result<String, String> {
	let url = url(raw)?;
	must_exist(&url)?;
	Ok(url)
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
	let base = url.trim_end_matches('/');
	if !inventory.node_roots_below.is_empty() {
		let roots: Vec<String> =
			inventory.node_roots_below.iter().map(|root| format!("{base}/{root}")).collect();
		return Err(roots_below(&url, &roots, "found by listing everything below it"));
	}
	if inventory.objects == 0 {
		return Err(nothing_stored(&url));
	}
	Err(no_node_objects(&url, inventory.objects))
}

/// The error for a location without a node's data but with node roots below it (their URLs);
/// `how` says how they were found.
pub(crate) fn roots_below(url: &str, roots: &[String], how: &str) -> String {
	let mut shown: Vec<&str> = roots.iter().take(SHOWN_ROOTS).map(String::as_str).collect();
	let more = format!("… and {} more", roots.len().saturating_sub(SHOWN_ROOTS));
	if roots.len() > SHOWN_ROOTS {
		shown.push(&more);
	}
	format!(
		"no node data at {url}, but {} node root(s) below it ({how}); point the command at one \
		 of them:\n  {}",
		roots.len(),
		shown.join("\n  ")
	)
}

/// The error for a location that holds nothing at all.
pub(crate) fn nothing_stored(url: &str) -> String {
	format!(
		"no node data at {url}: nothing is stored there (check the bucket, the prefix and, for an \
		 encrypted store, LDK_OBJECT_STORE_ENCRYPTION_KEY)"
	)
}

/// The error for a location whose objects are none of a node's.
pub(crate) fn no_node_objects(url: &str, objects: usize) -> String {
	format!(
		"no node data at {url}: {objects} object(s), but no ChannelManager (`manager`), monitor \
		 or monitor update among them; point the command at a node's root"
	)
}

/// The command's `-o` options for one of its locations: they are meant for cloud stores, and a
/// local directory or memory store takes none.
pub(crate) fn cloud_options<'a>(
	url: &str, options: &'a [(String, String)],
) -> &'a [(String, String)] {
	if url.starts_with("file:") || url.starts_with("memory:") {
		&[]
	} else {
		options
	}
}

/// The local directory of a `file://` URL.
pub(crate) fn local_dir(url: &str) -> Option<std::path::PathBuf> {
	let parsed = Url::parse(url).ok()?;
	(parsed.scheme() == "file").then(|| parsed.to_file_path().ok()).flatten()
}
