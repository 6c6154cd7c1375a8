//! What a listing holds besides keys, and the one rule that leaves it out.
//!
//! Below a node's root prefix a listing can show objects that no LDK key maps to, left by other
//! writers next to the keys: directory markers (empty "folder" objects that consoles and
//! SeaweedFS's filer create) and the leftovers of LDK's own `FilesystemStore` after a crash
//! (`<key>.<n>.tmp` files it writes before renaming them, `<key>.<n>.trash` files it deletes
//! through). LDK's names never contain a `.`, so these can never be keys; `FilesystemStore` skips
//! them when it lists, and so does this store. So are this crate's own writer lease object and
//! lock file at the root (see [`crate::lease`]). Anything else that is not a key still fails a
//! listing with an error that names it.

use std::collections::HashSet;

use object_store::path::Path;
use object_store::{ListResult, ObjectMeta};

/// Whether `location` is a leftover of LDK's `FilesystemStore` (`*.tmp`, `*.trash`).
pub(crate) fn is_leftover(location: &Path) -> bool {
	// `FilesystemStore` names them `<key>.<counter>.tmp` and `<key>.<counter>.trash`.
	location
		.filename()
		.and_then(|name| name.rsplit_once('.'))
		.is_some_and(|(stem, ext)| !stem.is_empty() && (ext == "tmp" || ext == "trash"))
}

/// Whether an object is a directory marker: an empty object standing for a folder that has
/// something below it, or any object at the listed prefix itself, where no key can live.
fn is_directory_marker(
	meta: &ObjectMeta, listed: &Path, has_children: impl Fn(&Path) -> bool,
) -> bool {
	(!listed.as_ref().is_empty() && meta.location == *listed)
		|| (meta.size == 0 && has_children(&meta.location))
}

/// The objects of a recursive listing of `root` that may be keys.
pub(crate) fn keys_of_full_listing<'a>(
	objects: &'a [ObjectMeta], root: &'a Path,
) -> impl Iterator<Item = &'a ObjectMeta> + 'a {
	let parents: HashSet<Path> = objects
		.iter()
		.filter_map(|meta| {
			let parts: Vec<_> = meta.location.parts().collect();
			(parts.len() > 1).then(|| Path::from_iter(parts[..parts.len() - 1].iter().cloned()))
		})
		.collect();
	objects.iter().filter(move |meta| {
		!is_leftover(&meta.location)
			&& !crate::lease::is_lease_path(root, &meta.location)
			&& !is_directory_marker(meta, root, |location| parents.contains(location))
	})
}

/// The objects of a delimited listing of `prefix`, below the store's `root`, that may be keys.
pub(crate) fn keys_of_listing<'a>(
	listing: &'a ListResult, prefix: &'a Path, root: &'a Path,
) -> impl Iterator<Item = &'a ObjectMeta> + 'a {
	listing.objects.iter().filter(move |meta| {
		!is_leftover(&meta.location)
			&& !crate::lease::is_lease_path(root, &meta.location)
			&& !is_directory_marker(meta, prefix, |location| {
				listing.common_prefixes.contains(location)
			})
	})
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn leftovers_of_filesystem_store_are_recognized() {
		for name in ["manager.0.tmp", "monitors/abc_1.17.tmp", "scorer.3.trash", "a/b/17.12.trash"]
		{
			assert!(is_leftover(&Path::from(name)), "{name}");
		}
		for name in ["manager", "monitors/tmp", "monitor_updates/x/17", "trash", "a/tmp/b"] {
			assert!(!is_leftover(&Path::from(name)), "{name}");
		}
	}
}
