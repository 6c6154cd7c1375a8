//! Contents: XChaCha20-Poly1305 under a fresh random nonce, bound to the object's path and to the
//! store identity through the associated data.
//!
//! An object is `version (1 byte) || nonce (24) || ciphertext || tag (16)`; the associated data
//! is `version (1) || identity length (8, big-endian) || identity || path`, where `path` is the
//! logical path relative to the root, its segments joined by `/`.

use chacha20poly1305::aead::{AeadInOut, Generate, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use object_store::PutPayload;

use super::error::SealFailed;
use super::DecryptFailure;

/// The first byte of every object this module writes.
pub(super) const FORMAT_VERSION: u8 = 2;
/// Format versions this module once wrote and no longer reads.
const OLD_FORMAT_VERSIONS: std::ops::RangeInclusive<u8> = 1..=1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + NONCE_LEN;
/// Bytes a ciphertext has beyond its plaintext: the format version, the nonce and the tag.
pub const CIPHERTEXT_OVERHEAD: u64 = (HEADER_LEN + TAG_LEN) as u64;

/// The associated data of an object's contents.
fn associated_data(identity: &[u8], relative_path: &str) -> Vec<u8> {
	let mut data = Vec::with_capacity(1 + 8 + identity.len() + relative_path.len());
	data.push(FORMAT_VERSION);
	data.extend_from_slice(&(identity.len() as u64).to_be_bytes());
	data.extend_from_slice(identity);
	data.extend_from_slice(relative_path.as_bytes());
	data
}

/// Encrypts `payload` for the object at `relative_path` of the store `identity`.
pub(super) fn seal(
	key: &[u8; 32], identity: &[u8], relative_path: &str, payload: &PutPayload,
) -> Result<Vec<u8>, SealFailed> {
	let nonce =
		XNonce::try_generate().map_err(|_| SealFailed("the random number generator failed"))?;
	let mut sealed = Vec::with_capacity(HEADER_LEN + payload.content_length() + TAG_LEN);
	sealed.push(FORMAT_VERSION);
	sealed.extend_from_slice(&nonce);
	for chunk in payload {
		sealed.extend_from_slice(chunk);
	}
	let associated_data = associated_data(identity, relative_path);
	let tag = XChaCha20Poly1305::new(key.into())
		.encrypt_inout_detached(&nonce, &associated_data, (&mut sealed[HEADER_LEN..]).into())
		.map_err(|_| SealFailed("the object is too large"))?;
	sealed.extend_from_slice(&tag);
	Ok(sealed)
}

/// Authenticates and decrypts an object read from `relative_path` of the store `identity`.
pub(super) fn open(
	key: &[u8; 32], identity: &[u8], relative_path: &str, sealed: &[u8],
) -> Result<Vec<u8>, DecryptFailure> {
	// The version first: an old object gets the error that says so, whatever its length.
	match sealed.first() {
		Some(&FORMAT_VERSION) => {},
		Some(&version) if OLD_FORMAT_VERSIONS.contains(&version) => {
			return Err(DecryptFailure::OldFormat { version })
		},
		Some(_) if sealed.len() >= HEADER_LEN + TAG_LEN => {
			return Err(DecryptFailure::UnknownFormat)
		},
		_ => return Err(DecryptFailure::Truncated),
	}
	if sealed.len() < HEADER_LEN + TAG_LEN {
		return Err(DecryptFailure::Truncated);
	}
	let nonce = XNonce::try_from(&sealed[1..HEADER_LEN]).map_err(|_| DecryptFailure::Truncated)?;
	let (body, tag) = sealed[HEADER_LEN..].split_at(sealed.len() - HEADER_LEN - TAG_LEN);
	let tag = Tag::try_from(tag).map_err(|_| DecryptFailure::Truncated)?;
	let mut plaintext = body.to_vec();
	XChaCha20Poly1305::new(key.into())
		.decrypt_inout_detached(
			&nonce,
			&associated_data(identity, relative_path),
			plaintext.as_mut_slice().into(),
			&tag,
		)
		.map_err(|_| DecryptFailure::Authentication)?;
	Ok(plaintext)
}

/// The plaintext size of a stored object of `stored` bytes.
pub(super) fn plaintext_size(stored: u64) -> u64 {
	stored.saturating_sub(CIPHERTEXT_OVERHEAD)
}

#[cfg(test)]
mod tests {
	use super::*;

	const KEY: [u8; 32] = [3; 32];

	fn sealed(identity: &[u8], path: &str) -> Vec<u8> {
		seal(&KEY, identity, path, &PutPayload::from_static(b"secret")).unwrap()
	}

	#[test]
	fn contents_are_bound_to_their_path_key_and_identity() {
		let sealed = sealed(b"", "monitors/a_0");
		assert_eq!(sealed.len() as u64, 6 + CIPHERTEXT_OVERHEAD);
		assert_eq!(sealed[0], 2);
		assert_eq!(open(&KEY, b"", "monitors/a_0", &sealed).unwrap(), b"secret");
		let fails = |key: &[u8; 32], identity: &[u8], path: &str, bytes: &[u8]| {
			open(key, identity, path, bytes).unwrap_err()
		};
		let auth = DecryptFailure::Authentication;
		assert_eq!(fails(&KEY, b"", "monitors/b_0", &sealed), auth);
		assert_eq!(fails(&KEY, b"", "monitors/a_0", &sealed[..sealed.len() - 1]), auth);
		assert_eq!(fails(&[4; 32], b"", "monitors/a_0", &sealed), auth);
		assert_eq!(fails(&KEY, b"node-b", "monitors/a_0", &sealed), auth);
		// The identity's length is bound: no shifting of bytes between identity and path.
		let with_identity = self::sealed(b"node-a", "manager");
		assert_eq!(open(&KEY, b"node-a", "manager", &with_identity).unwrap(), b"secret");
		assert_eq!(fails(&KEY, b"node-am", "anager", &with_identity), auth);
		assert_eq!(fails(&KEY, b"", "manager", &with_identity), auth);
		// Two writes of the same value differ (a fresh nonce each).
		assert_ne!(sealed, self::sealed(b"", "monitors/a_0"));
	}

	#[test]
	fn versions_and_lengths_are_told_apart() {
		let good = sealed(b"", "k");
		let open = |bytes: &[u8]| open(&KEY, b"", "k", bytes).unwrap_err();
		for version in [0u8, 3, 0xff] {
			let mut other = good.clone();
			other[0] = version;
			assert_eq!(open(&other), DecryptFailure::UnknownFormat);
		}
		let mut old = good.clone();
		old[0] = 1;
		assert_eq!(open(&old), DecryptFailure::OldFormat { version: 1 });
		assert_eq!(open(&[1]), DecryptFailure::OldFormat { version: 1 });
		assert_eq!(open(&good[..20]), DecryptFailure::Truncated);
		assert_eq!(open(&[]), DecryptFailure::Truncated);
	}
}
