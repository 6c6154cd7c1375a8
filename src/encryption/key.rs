//! The one user key, and the subkeys derived from it.

use std::fmt;
use std::fmt::Write as _;

use chacha20poly1305::aead::Generate;
use hex_conservative::{DisplayHex, HexToBytesIter};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The HKDF-Extract salt: names the scheme and its format version, so that another use of the
/// same key material, or a later format, derives unrelated subkeys.
const SALT: &[u8] = b"ldk-object-store/v2";
/// The HKDF-Expand label of the contents' XChaCha20-Poly1305 key (32 bytes).
pub(super) const CONTENTS_LABEL: &[u8] = b"ldk-object-store/v2/contents/xchacha20-poly1305";
/// The HKDF-Expand label of the names' AES-256-SIV key (64 bytes: CMAC key, then CTR key).
pub(super) const NAMES_LABEL: &[u8] = b"ldk-object-store/v2/names/aes-256-siv";

/// A 32-byte key for [`EncryptedStore`](super::EncryptedStore).
///
/// Its `Debug` output is `EncryptionKey(<redacted>)`, and it is zeroed when dropped.
#[derive(Clone)]
pub struct EncryptionKey(Zeroizing<[u8; 32]>);

impl EncryptionKey {
	/// A key from its 32 bytes.
	pub fn from_bytes(bytes: [u8; 32]) -> Self {
		EncryptionKey(Zeroizing::new(bytes))
	}

	/// A key from 64 hexadecimal characters (either case; surrounding whitespace, such as the
	/// newline at the end of a key file, is ignored). The error never shows the input.
	pub fn from_hex(hex: &str) -> Result<Self, KeyError> {
		let hex = hex.trim();
		if hex.len() != 64 {
			return Err(KeyError::WrongLength(hex.chars().count()));
		}
		let mut bytes = Zeroizing::new([0u8; 32]);
		// The length is even, checked above.
		let digits = HexToBytesIter::new(hex).map_err(|_| KeyError::WrongLength(hex.len()))?;
		for (i, (byte, digit)) in bytes.iter_mut().zip(digits).enumerate() {
			// The error holds the offending character: report its position only.
			*byte = digit.map_err(|_| {
				let first_bad = !hex.as_bytes()[2 * i].is_ascii_hexdigit();
				KeyError::NotHex(if first_bad { 2 * i + 1 } else { 2 * i + 2 })
			})?;
		}
		Ok(EncryptionKey(bytes))
	}

	/// A new random key from the operating system's generator.
	pub fn generate() -> Result<Self, KeyError> {
		let bytes = <[u8; 32]>::try_generate().map_err(|_| KeyError::Random)?;
		Ok(EncryptionKey(Zeroizing::new(bytes)))
	}

	/// The key as 64 lowercase hexadecimal characters, to store it away (for a key made by
	/// [`Self::generate`]). The string is zeroed when dropped; do not log it.
	pub fn to_hex(&self) -> Zeroizing<String> {
		// Allocated once at its final size, so that no unzeroed copy is left behind.
		let mut hex = Zeroizing::new(String::with_capacity(64));
		// Writing to a `String` cannot fail.
		let _ = write!(hex, "{:x}", self.0.as_hex());
		hex
	}
}

impl fmt::Debug for EncryptionKey {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		f.write_str("EncryptionKey(<redacted>)")
	}
}

/// Why an [`EncryptionKey`] could not be made. Never shows the key or any part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
	/// The hexadecimal form did not have 64 characters.
	#[error("an encryption key is 64 hexadecimal characters (32 bytes); this one has {0}")]
	WrongLength(usize),
	/// A character of the hexadecimal form (its position, from 1) is not a hexadecimal digit.
	#[error("an encryption key is 64 hexadecimal characters; character {0} is not one")]
	NotHex(usize),
	/// The operating system's random number generator failed.
	#[error("the operating system's random number generator failed")]
	Random,
}

/// The subkeys of one [`EncryptionKey`], each zeroed on drop: HKDF-SHA256 (RFC 5869) Extract
/// with [`SALT`], then Expand with one label per subkey.
#[derive(Clone)]
pub(super) struct Keys {
	pub(super) contents: Zeroizing<[u8; 32]>,
	pub(super) names: Zeroizing<[u8; 64]>,
}

impl Keys {
	pub(super) fn derive(key: &EncryptionKey) -> Self {
		let hkdf = Hkdf::<Sha256>::new(Some(SALT), key.0.as_slice());
		Keys { contents: expand(&hkdf, CONTENTS_LABEL), names: expand(&hkdf, NAMES_LABEL) }
	}
}

fn expand<const N: usize>(hkdf: &Hkdf<Sha256>, label: &[u8]) -> Zeroizing<[u8; N]> {
	// HKDF-SHA256 expands to at most 255 blocks of 32 bytes; `expand` fails only beyond that.
	const { assert!(N <= 255 * 32) };
	let mut okm = Zeroizing::new([0u8; N]);
	hkdf.expand(label, okm.as_mut_slice())
		.expect("HKDF-SHA256 output within 255 blocks, checked at compile time");
	okm
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn keys_parse_and_stay_secret() {
		let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF\n";
		let key = EncryptionKey::from_hex(hex).unwrap();
		assert_eq!(key.to_hex().as_str(), hex.trim().to_lowercase());
		assert_eq!(format!("{key:?}"), "EncryptionKey(<redacted>)");
		assert_eq!(EncryptionKey::from_hex("abc").unwrap_err(), KeyError::WrongLength(3));
		for (at, position) in [(10, 11), (11, 12)] {
			let bad = format!("{}g{}", "0".repeat(at), "0".repeat(63 - at));
			let err = EncryptionKey::from_hex(&bad).unwrap_err();
			assert_eq!(err, KeyError::NotHex(position));
			assert!(!err.to_string().contains('g'));
		}
		let a = EncryptionKey::generate().unwrap();
		let b = EncryptionKey::generate().unwrap();
		assert_ne!(a.to_hex(), b.to_hex());
	}

	/// The subkeys are HKDF-SHA256 of the key with the documented salt and labels (checked
	/// against the `hkdf` crate's one-shot form), distinct from each other and from the key.
	#[test]
	fn subkeys_are_hkdf_with_distinct_labels() {
		let key = EncryptionKey::from_bytes([7; 32]);
		let keys = Keys::derive(&key);
		let (_, hkdf) = Hkdf::<Sha256>::extract(Some(b"ldk-object-store/v2"), &[7; 32]);
		let mut contents = [0u8; 32];
		hkdf.expand(b"ldk-object-store/v2/contents/xchacha20-poly1305", &mut contents).unwrap();
		assert_eq!(*keys.contents, contents);
		let mut names = [0u8; 64];
		hkdf.expand(b"ldk-object-store/v2/names/aes-256-siv", &mut names).unwrap();
		assert_eq!(*keys.names, names);
		assert_ne!(keys.contents[..], keys.names[..32]);
		assert_ne!(*keys.contents, [7; 32]);
	}
}
