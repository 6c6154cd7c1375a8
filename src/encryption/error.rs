//! The errors of the encryption layer.

use std::fmt;

use super::contents::FORMAT_VERSION;

/// The `store` of the `object_store::Error::Generic` errors of this module.
pub(super) const STORE: &str = "Encrypted";

/// Why an object could not be decrypted; see [`DecryptError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecryptFailure {
	/// The object is shorter than the encryption overhead.
	Truncated,
	/// The object was written in an older format of this module (its first byte, `version`),
	/// which this version no longer reads.
	OldFormat {
		/// The format version the object starts with.
		version: u8,
	},
	/// The object does not start with a format version this module writes: it was written
	/// without encryption, or altered.
	UnknownFormat,
	/// Authentication of the contents failed.
	Authentication,
	/// The object's name (with [`EncryptNames::Yes`](super::EncryptNames::Yes)) does not decrypt
	/// and authenticate.
	Name,
}

/// An object whose contents or name failed to decrypt or authenticate.
///
/// Returned inside `object_store::Error::Generic { store: "Encrypted", source }`; find it with
/// `source.downcast_ref::<DecryptError>()`. It is a fact about the stored data, not a transient
/// failure: a retry reads the same bytes. It holds no key material and no contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptError {
	pub(super) path: String,
	pub(super) reason: DecryptFailure,
}

impl DecryptError {
	/// The object: its logical path for contents, the stored (encrypted) path for a name.
	pub fn path(&self) -> &str {
		&self.path
	}

	/// What failed.
	pub fn reason(&self) -> DecryptFailure {
		self.reason
	}
}

impl fmt::Display for DecryptError {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		let path = &self.path;
		match self.reason {
			DecryptFailure::Truncated => write!(
				f,
				"object {path} cannot be decrypted: it is shorter than the encryption overhead \
				 (truncated, tampered with, or not written through the encryption layer)"
			),
			DecryptFailure::OldFormat { version } => write!(
				f,
				"object {path} is in the old encryption format version {version}, which this \
				 version of ldk-object-store no longer reads (it reads and writes version \
				 {FORMAT_VERSION}); copy the data out with the version that wrote it"
			),
			DecryptFailure::UnknownFormat => write!(
				f,
				"object {path} cannot be decrypted: it does not start with a known format version \
				 (written without encryption, or tampered with)"
			),
			DecryptFailure::Authentication => write!(
				f,
				"object {path} failed to decrypt: it was tampered with, truncated, moved or copied \
				 from another key or another store identity, or encrypted with another key"
			),
			DecryptFailure::Name => write!(
				f,
				"the name of object {path} does not decrypt: it was not written through this \
				 encryption layer (or by an older format version of it), was renamed or tampered \
				 with, or was encrypted with another key"
			),
		}
	}
}

impl std::error::Error for DecryptError {}

/// A path given to the wrapper that is not below its root.
#[derive(Debug)]
pub(super) struct OutsideRoot {
	pub(super) path: String,
	pub(super) root: String,
}

impl fmt::Display for OutsideRoot {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		write!(f, "path {:?} is outside the encrypted store's root {:?}", self.path, self.root)
	}
}

impl std::error::Error for OutsideRoot {}

/// A failure of the encryption itself (the system's random number generator, an absurd size or
/// depth).
#[derive(Debug)]
pub(super) struct SealFailed(pub(super) &'static str);

impl fmt::Display for SealFailed {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		write!(f, "encryption failed: {}", self.0)
	}
}

impl std::error::Error for SealFailed {}

pub(super) fn generic(
	source: impl std::error::Error + Send + Sync + 'static,
) -> object_store::Error {
	object_store::Error::Generic { store: STORE, source: Box::new(source) }
}

pub(super) fn decrypt_error(
	path: impl fmt::Display, reason: DecryptFailure,
) -> object_store::Error {
	generic(DecryptError { path: path.to_string(), reason })
}
