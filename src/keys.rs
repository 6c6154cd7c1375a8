//! The mapping between LDK's `(primary_namespace, secondary_namespace, key)` triples and object
//! paths, and the validation of names.
//!
//! Empty namespaces are left out of the path, as LDK's `FilesystemStore` does:
//!
//! ```text
//! ("", "", "manager")                     -> <root>/manager
//! ("monitors", "", "<txid>_<vout>")       -> <root>/monitors/<txid>_<vout>
//! ("monitor_updates", "<monitor>", "17")  -> <root>/monitor_updates/<monitor>/17
//! ```
//!
//! Because LDK forbids an empty primary namespace with a non-empty secondary one, the number of
//! path segments below the root (one, two or three) tells which parts were empty, so the mapping is
//! injective and can be reversed for [`MigratableKVStore::list_all_keys`]. A key and a namespace of
//! the same name (say `("", "", "monitors")` next to `("monitors", "", "x")`) never meet on an object
//! store: the first is an object, the second a prefix, and a delimiter listing keeps them apart.
//!
//! [`MigratableKVStore::list_all_keys`]: lightning::util::persist::MigratableKVStore::list_all_keys

use lightning::util::persist::KVSTORE_NAMESPACE_KEY_MAX_LEN;
use object_store::path::Path;

use crate::error::Error;

/// Which part of a name failed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamePart {
	/// The primary namespace.
	PrimaryNamespace,
	/// The secondary namespace.
	SecondaryNamespace,
	/// The key.
	Key,
}

impl std::fmt::Display for NamePart {
	fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
		f.write_str(match self {
			NamePart::PrimaryNamespace => "primary namespace",
			NamePart::SecondaryNamespace => "secondary namespace",
			NamePart::Key => "key",
		})
	}
}

/// A validated `(primary_namespace, secondary_namespace, key)` triple.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KvKey {
	/// The primary namespace; may be empty.
	pub primary_namespace: String,
	/// The secondary namespace; empty whenever the primary namespace is.
	pub secondary_namespace: String,
	/// The key; never empty.
	pub key: String,
}

impl KvKey {
	/// Validates the triple against LDK's rules.
	pub fn new(
		primary_namespace: &str, secondary_namespace: &str, key: &str,
	) -> Result<Self, Error> {
		validate_namespace(primary_namespace, secondary_namespace)?;
		if key.is_empty() {
			return Err(invalid(NamePart::Key, key, "must not be empty"));
		}
		validate_name(NamePart::Key, key)?;
		Ok(KvKey {
			primary_namespace: primary_namespace.to_owned(),
			secondary_namespace: secondary_namespace.to_owned(),
			key: key.to_owned(),
		})
	}
}

impl std::fmt::Display for KvKey {
	/// Shows the triple as `primary/secondary/key`, keeping empty parts so the three stay visible.
	fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
		write!(f, "{}/{}/{}", self.primary_namespace, self.secondary_namespace, self.key)
	}
}

/// Checks a namespace pair as `list` receives it.
pub fn validate_namespace(primary_namespace: &str, secondary_namespace: &str) -> Result<(), Error> {
	validate_name(NamePart::PrimaryNamespace, primary_namespace)?;
	validate_name(NamePart::SecondaryNamespace, secondary_namespace)?;
	if primary_namespace.is_empty() && !secondary_namespace.is_empty() {
		return Err(invalid(
			NamePart::SecondaryNamespace,
			secondary_namespace,
			"must be empty when the primary namespace is empty",
		));
	}
	Ok(())
}

fn validate_name(part: NamePart, name: &str) -> Result<(), Error> {
	if name.len() > KVSTORE_NAMESPACE_KEY_MAX_LEN {
		return Err(invalid(part, name, "is longer than 120 characters"));
	}
	if !name.bytes().all(is_alphabet) {
		return Err(invalid(part, name, "has a character outside [A-Za-z0-9_-]"));
	}
	Ok(())
}

fn is_alphabet(b: u8) -> bool {
	b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn invalid(part: NamePart, name: &str, reason: &'static str) -> Error {
	// Names can be arbitrary caller input: cap what goes into the message.
	let shown: String = name.chars().take(KVSTORE_NAMESPACE_KEY_MAX_LEN + 8).collect();
	Error::InvalidName { part, name: shown, reason }
}

/// Maps validated names to object paths below one root prefix, and back.
#[derive(Debug, Clone)]
pub struct KeyMapper {
	root: Path,
}

impl KeyMapper {
	/// A mapper whose objects live below `root` (`""` for the bucket's top level).
	pub fn new(root: Path) -> Self {
		KeyMapper { root }
	}

	/// The root prefix.
	pub fn root(&self) -> &Path {
		&self.root
	}

	/// The object path of a key.
	pub fn object_path(&self, key: &KvKey) -> Path {
		self.namespace_path(&key.primary_namespace, &key.secondary_namespace).join(key.key.as_str())
	}

	/// The prefix below which the keys of one (validated) namespace live.
	pub fn namespace_path(&self, primary_namespace: &str, secondary_namespace: &str) -> Path {
		let mut path = self.root.clone();
		for part in [primary_namespace, secondary_namespace] {
			if !part.is_empty() {
				path = path.join(part);
			}
		}
		path
	}

	/// Reverses [`Self::object_path`]. Fails for objects below the root that this mapping cannot
	/// have made, naming the object.
	pub fn kv_key(&self, path: &Path) -> Result<KvKey, Error> {
		let foreign =
			|reason: &'static str| Error::ForeignObject { path: path.to_string(), reason };
		let parts: Vec<_> = path
			.prefix_match(&self.root)
			.ok_or_else(|| foreign("it is outside the root"))?
			.collect();
		let names: Vec<&str> = parts.iter().map(|p| p.as_ref()).collect();
		let (primary, secondary, key) = match names.as_slice() {
			[key] => ("", "", *key),
			[primary, key] => (*primary, "", *key),
			[primary, secondary, key] => (*primary, *secondary, *key),
			_ => return Err(foreign("it is not one to three levels below the root")),
		};
		// A part outside the alphabet arrives percent-encoded, and fails here as well.
		KvKey::new(primary, secondary, key)
			.map_err(|_| foreign("its name is outside LDK's alphabet or length"))
	}
}

#[cfg(test)]
mod tests {
	use super::*;

	fn mapper(root: &str) -> KeyMapper {
		KeyMapper::new(Path::from(root))
	}

	#[test]
	fn layout_is_the_documented_one() {
		let m = mapper("node1");
		let path = |p, s, k| m.object_path(&KvKey::new(p, s, k).unwrap()).to_string();
		assert_eq!(path("", "", "manager"), "node1/manager");
		assert_eq!(path("monitors", "", "abc_1"), "node1/monitors/abc_1");
		assert_eq!(path("monitor_updates", "abc_1", "17"), "node1/monitor_updates/abc_1/17");
		assert_eq!(
			mapper("").object_path(&KvKey::new("", "", "manager").unwrap()).as_ref(),
			"manager"
		);
	}

	#[test]
	fn mapping_reverses() {
		for root in ["", "a", "a/b/c"] {
			let m = mapper(root);
			for (p, s, k) in [("", "", "k"), ("p", "", "k"), ("p", "s", "k"), ("k", "k", "k")] {
				let key = KvKey::new(p, s, k).unwrap();
				assert_eq!(m.kv_key(&m.object_path(&key)).unwrap(), key);
			}
		}
	}

	#[test]
	fn foreign_paths_are_refused_by_name() {
		let m = mapper("root");
		for bad in ["root/a/b/c/d", "other/x", "root/a.txt", "root/p/s p"] {
			let err = m.kv_key(&Path::from(bad)).unwrap_err().to_string();
			assert!(err.contains(&Path::from(bad).to_string()), "{err}");
		}
	}

	#[test]
	fn invalid_names_name_the_part() {
		let long = "x".repeat(121);
		let cases = [
			(("", "", ""), "key"),
			(("", "s", "k"), "secondary namespace"),
			(("p/q", "", "k"), "primary namespace"),
			(("p", "s.", "k"), "secondary namespace"),
			(("p", "", "k k"), "key"),
			(("p", "", long.as_str()), "key"),
		];
		for ((p, s, k), part) in cases {
			let err = KvKey::new(p, s, k).unwrap_err().to_string();
			assert!(err.contains(part), "{err} should name {part}");
		}
		let max = "x".repeat(120);
		assert!(KvKey::new(&max, &max, &max).is_ok());
	}
}
