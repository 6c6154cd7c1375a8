//! Names: each path segment below the root is replaced by its AES-SIV (RFC 5297) encryption,
//! with the plaintext segments above it as the associated-data vector, in unpadded lowercase
//! base32 (RFC 4648).
//!
//! AES-SIV is deterministic, which keeps prefix and delimiter listings working, and
//! authenticated: a segment decrypts only below the parents it was encrypted under, and a name
//! decodes only from its one canonical encoding (lowercase, no padding, zero trailing bits).

use aes_siv::siv::Aes256Siv;
use aes_siv::KeyInit;
use data_encoding::BASE32_NOPAD;
use object_store::path::{Path, PathPart};
use object_store::Result;
use zeroize::Zeroizing;

use super::error::{decrypt_error, generic, OutsideRoot, SealFailed};
use super::DecryptFailure;

/// Length of the synthetic IV at the start of an encrypted segment.
const SIV_LEN: usize = 16;

/// RFC 5297's deterministic authenticated encryption with a vector of associated data, as the
/// `aes-siv` crate provides it; a trait so that the RFC's AES-128 test vectors run through the
/// same functions as our AES-256 names.
pub(super) trait VectorSiv {
	fn encrypt_vector(&mut self, headers: &[&[u8]], plaintext: &[u8]) -> Option<Vec<u8>>;
	fn decrypt_vector(&mut self, headers: &[&[u8]], ciphertext: &[u8]) -> Option<Vec<u8>>;
}

impl VectorSiv for Aes256Siv {
	fn encrypt_vector(&mut self, headers: &[&[u8]], plaintext: &[u8]) -> Option<Vec<u8>> {
		self.encrypt(headers, plaintext).ok()
	}

	fn decrypt_vector(&mut self, headers: &[&[u8]], ciphertext: &[u8]) -> Option<Vec<u8>> {
		self.decrypt(headers, ciphertext).ok()
	}
}

/// Seals one segment: `SIV (16 bytes) || ciphertext`. Each parent is its own component of the
/// associated-data vector (S2V keeps them apart, so their boundaries need no encoding); `None`
/// only for a path deeper than RFC 5297's 126 components.
pub(super) fn seal_segment<S: VectorSiv>(
	siv: &mut S, parents: &[&[u8]], segment: &[u8],
) -> Option<Vec<u8>> {
	siv.encrypt_vector(parents, segment)
}

/// The inverse of [`seal_segment`]; `None` unless it authenticates under these parents.
pub(super) fn open_segment<S: VectorSiv>(
	siv: &mut S, parents: &[&[u8]], sealed: &[u8],
) -> Option<Vec<u8>> {
	siv.decrypt_vector(parents, sealed)
}

/// Unpadded lowercase base32.
fn encode(bytes: &[u8]) -> String {
	BASE32_NOPAD.encode(bytes).to_ascii_lowercase()
}

/// The inverse of [`encode`]; `None` for anything it cannot have written (uppercase, padding,
/// impossible lengths, non-zero trailing bits), so that every name has one encoding.
fn decode(text: &str) -> Option<Vec<u8>> {
	let lowercase = text.bytes().all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c));
	// `BASE32_NOPAD` checks lengths and trailing bits.
	lowercase.then(|| BASE32_NOPAD.decode(text.to_ascii_uppercase().as_bytes()).ok()).flatten()
}

fn encrypt_segment(siv: &mut Aes256Siv, parents: &[&str], segment: &str) -> Result<String> {
	let parents: Vec<&[u8]> = parents.iter().map(|p| p.as_bytes()).collect();
	let sealed = seal_segment(siv, &parents, segment.as_bytes())
		.ok_or_else(|| generic(SealFailed("the path is too deep to encrypt its names")))?;
	Ok(encode(&sealed))
}

fn decrypt_segment(siv: &mut Aes256Siv, parents: &[&str], encrypted: &str) -> Option<String> {
	let sealed = decode(encrypted)?;
	// A segment is never empty.
	if sealed.len() <= SIV_LEN {
		return None;
	}
	let parents: Vec<&[u8]> = parents.iter().map(|p| p.as_bytes()).collect();
	String::from_utf8(open_segment(siv, &parents, &sealed)?).ok()
}

/// How logical paths map to stored ones: below `root`, encrypted or not.
#[derive(Clone)]
pub(super) struct Names {
	/// The AES-256-SIV key (64 bytes); `None` keeps names as they are.
	key: Option<Zeroizing<[u8; 64]>>,
	root: Path,
}

impl Names {
	pub(super) fn new(key: Option<Zeroizing<[u8; 64]>>, root: Path) -> Self {
		Names { key, root }
	}

	pub(super) fn encrypted(&self) -> bool {
		self.key.is_some()
	}

	pub(super) fn root(&self) -> &Path {
		&self.root
	}

	pub(super) fn key(&self) -> Option<&Zeroizing<[u8; 64]>> {
		self.key.as_ref()
	}

	/// The segments of `path` below the root.
	fn relative<'a>(&self, path: &'a Path) -> Result<Vec<PathPart<'a>>> {
		match path.prefix_match(&self.root) {
			Some(parts) => Ok(parts.collect()),
			None => {
				Err(generic(OutsideRoot { path: path.to_string(), root: self.root.to_string() }))
			},
		}
	}

	/// The logical path relative to the root, its segments joined by `/`: what the contents
	/// are bound to.
	pub(super) fn relative_path(&self, logical: &Path) -> Result<String> {
		let parts = self.relative(logical)?;
		Ok(parts.iter().map(|part| part.as_ref()).collect::<Vec<_>>().join("/"))
	}

	/// A cipher for one path: AES-SIV keeps state while it works, so each path gets its own.
	fn siv(key: &[u8; 64]) -> Aes256Siv {
		Aes256Siv::new(key.into())
	}

	/// The stored path of a logical one.
	pub(super) fn raw_path(&self, logical: &Path) -> Result<Path> {
		let parts = self.relative(logical)?;
		let Some(key) = &self.key else { return Ok(logical.clone()) };
		let mut siv = Self::siv(key);
		let plain: Vec<&str> = parts.iter().map(|p| p.as_ref()).collect();
		let encrypted = (0..plain.len())
			.map(|i| encrypt_segment(&mut siv, &plain[..i], plain[i]))
			.collect::<Result<Vec<String>>>()?;
		let mut raw = self.root.clone();
		raw.extend(encrypted.into_iter().map(PathPart::from));
		Ok(raw)
	}

	/// The stored prefix to list for a logical one: `None` for the top of the store.
	pub(super) fn raw_prefix(&self, prefix: Option<&Path>) -> Result<Option<Path>> {
		let logical = prefix.cloned().unwrap_or_default();
		let raw = self.raw_path(&logical)?;
		Ok((!raw.is_root()).then_some(raw))
	}

	/// The logical path of a stored one; an error naming the object if its name does not
	/// decrypt, or does not decrypt to a valid path segment.
	pub(super) fn logical_path(&self, raw: &Path) -> Result<Path> {
		let Some(key) = &self.key else { return Ok(raw.clone()) };
		let bad_name = || decrypt_error(raw, DecryptFailure::Name);
		let parts = raw.prefix_match(&self.root).ok_or_else(bad_name)?;
		let mut siv = Self::siv(key);
		let mut plain: Vec<String> = Vec::new();
		for part in parts {
			let parents: Vec<&str> = plain.iter().map(String::as_str).collect();
			let segment =
				decrypt_segment(&mut siv, &parents, part.as_ref()).ok_or_else(bad_name)?;
			plain.push(segment);
		}
		let decrypted: Vec<PathPart<'_>> = plain
			.iter()
			.map(|segment| PathPart::parse(segment))
			.collect::<Result<_, _>>()
			.map_err(|_| bad_name())?;
		let mut logical = self.root.clone();
		logical.extend(decrypted);
		Ok(logical)
	}
}

#[cfg(test)]
mod tests {
	use aes_siv::siv::Aes128Siv;

	use super::*;

	impl VectorSiv for Aes128Siv {
		fn encrypt_vector(&mut self, headers: &[&[u8]], plaintext: &[u8]) -> Option<Vec<u8>> {
			self.encrypt(headers, plaintext).ok()
		}

		fn decrypt_vector(&mut self, headers: &[&[u8]], ciphertext: &[u8]) -> Option<Vec<u8>> {
			self.decrypt(headers, ciphertext).ok()
		}
	}

	fn hex(text: &str) -> Vec<u8> {
		let text: String = text.split_whitespace().collect();
		hex_conservative::FromHex::from_hex(&text).unwrap()
	}

	/// Runs a test vector through `seal_segment` and `open_segment`, with the vector's
	/// associated data as the parents.
	fn check_vector<S: VectorSiv>(
		siv: &mut S, headers: &[Vec<u8>], plaintext: &[u8], output: &[u8],
	) {
		let headers: Vec<&[u8]> = headers.iter().map(Vec::as_slice).collect();
		assert_eq!(seal_segment(siv, &headers, plaintext).unwrap(), output);
		assert_eq!(open_segment(siv, &headers, output).unwrap(), plaintext);
		let mut tampered = output.to_vec();
		tampered[SIV_LEN] ^= 1;
		assert!(open_segment(siv, &headers, &tampered).is_none());
		assert!(open_segment(siv, &headers[..headers.len() - 1], output).is_none());
	}

	/// RFC 5297, appendix A.1 (deterministic authenticated encryption) and A.2 (three
	/// associated-data components, the last a nonce), through the functions names use.
	#[test]
	fn rfc5297_test_vectors() {
		let key: [u8; 32] =
			hex("fffefdfc fbfaf9f8 f7f6f5f4 f3f2f1f0 f0f1f2f3 f4f5f6f7 f8f9fafb fcfdfeff")
				.try_into()
				.unwrap();
		check_vector(
			&mut Aes128Siv::new(&key.into()),
			&[hex("10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627")],
			&hex("11223344 55667788 99aabbcc ddee"),
			&hex("85632d07 c6e8f37f 950acd32 0a2ecc93 40c02b96 90c4dc04 daef7f6a fe5c"),
		);
		let key: [u8; 32] =
			hex("7f7e7d7c 7b7a7978 77767574 73727170 40414243 44454647 48494a4b 4c4d4e4f")
				.try_into()
				.unwrap();
		check_vector(
			&mut Aes128Siv::new(&key.into()),
			&[
				hex("00112233 44556677 8899aabb ccddeeff deaddada deaddada ffeeddcc bbaa9988 \
				     77665544 33221100"),
				hex("10203040 50607080 90a0"),
				hex("09f91102 9d74e35b d84156c5 635688c0"),
			],
			&hex("74686973 20697320 736f6d65 20706c61 696e7465 78742074 6f20656e 63727970 \
			      74207573 696e6720 5349562d 414553"),
			&hex("7bdb6e3b 432667eb 06f4d14b ff2fbd0f cb900f2f ddbe4043 26601965 c889bf17 \
			      dba77ceb 094fa663 b7a3f748 ba8af829 ea64ad54 4a272e9c 485b62a3 fd5c0d"),
		);
	}

	/// The AES-256 (512-bit key) form names use, on the first AES-CMAC-SIV-512 vector of the
	/// `aes-siv` crate's own suite (RFC 5297's A.1 inputs under a longer key).
	#[test]
	fn aes256_siv_vector() {
		let key: [u8; 64] = hex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f06f6e6d6c6b6a69686766656463626160\
		                         f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000102030405060708090a0b0c0d0e0f")
		.try_into()
		.unwrap();
		check_vector(
			&mut Names::siv(&key),
			&[hex("101112131415161718191a1b1c1d1e1f2021222324252627")],
			&hex("112233445566778899aabbccddee"),
			&hex("f125274c598065cfc26b0e71575029088b035217e380cac8919ee800c126"),
		);
	}

	#[test]
	fn base32_round_trips_and_is_canonical() {
		for len in 0..40 {
			let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
			let text = encode(&bytes);
			assert_eq!(text.len(), (len * 8usize).div_ceil(5));
			assert_eq!(decode(&text).unwrap(), bytes);
		}
		assert_eq!(encode(b"foobar"), "mzxw6ytboi");
		// Non-zero trailing bits, impossible lengths, padding and foreign characters are refused.
		assert_eq!(decode("ma").unwrap(), b"`");
		for bad in ["mb", "m", "mzx", "MZ", "Mz", "m1", "my======", "mz=", "m z"] {
			assert!(decode(bad).is_none(), "{bad}");
		}
	}

	fn names(byte: u8, root: &str) -> Names {
		Names::new(Some(Zeroizing::new([byte; 64])), Path::from(root))
	}

	fn encrypt(names: &Names, parents: &[&str], segment: &str) -> String {
		encrypt_segment(&mut Names::siv(names.key().unwrap()), parents, segment).unwrap()
	}

	fn decrypt(names: &Names, parents: &[&str], encrypted: &str) -> Option<String> {
		decrypt_segment(&mut Names::siv(names.key().unwrap()), parents, encrypted)
	}

	#[test]
	fn names_round_trip_deterministically_and_detect_tampering() {
		let s = names(7, "");
		let long = "x".repeat(120);
		for name in ["manager", "17", long.as_str(), "a-b_C"] {
			let encrypted = encrypt(&s, &["monitors"], name);
			assert_eq!(encrypted, encrypt(&s, &["monitors"], name), "deterministic");
			assert!(encrypted.len() <= 218, "{} chars", encrypted.len());
			assert!(!encrypted.contains(name));
			assert_eq!(decrypt(&s, &["monitors"], &encrypted).unwrap(), name);
			// Bound to its parents, their order and their boundaries.
			assert_ne!(encrypted, encrypt(&s, &["other"], name));
			assert!(decrypt(&s, &["other"], &encrypted).is_none());
			assert!(decrypt(&s, &[], &encrypted).is_none());
			assert!(decrypt(&s, &["moni", "tors"], &encrypted).is_none());
			// Another key does not decrypt it.
			assert!(decrypt(&names(8, ""), &["monitors"], &encrypted).is_none());
			// A changed character is detected.
			let mut bytes = encrypted.clone().into_bytes();
			let last = bytes.len() - 3;
			bytes[last] = if bytes[last] == b'a' { b'b' } else { b'a' };
			assert!(decrypt(&s, &["monitors"], &String::from_utf8(bytes).unwrap()).is_none());
			// Another spelling of the same bytes is not accepted.
			assert!(decrypt(&s, &["monitors"], &encrypted.to_uppercase()).is_none());
		}
	}

	#[test]
	fn paths_map_both_ways() {
		let s = names(1, "");
		let logical = Path::from("node/monitor_updates/abc_0/17");
		let raw = s.raw_path(&logical).unwrap();
		assert_eq!(raw.parts().count(), 4);
		assert!(!raw.as_ref().contains("monitor"));
		assert_eq!(s.logical_path(&raw).unwrap(), logical);
		assert_eq!(s.raw_prefix(None).unwrap(), None);
		assert_eq!(s.relative_path(&logical).unwrap(), "node/monitor_updates/abc_0/17");

		let rooted = names(1, "node");
		let raw = rooted.raw_path(&logical).unwrap();
		assert!(raw.as_ref().starts_with("node/"));
		assert_eq!(rooted.logical_path(&raw).unwrap(), logical);
		assert!(rooted.raw_path(&Path::from("elsewhere/x")).is_err());
		assert_eq!(rooted.relative_path(&logical).unwrap(), "monitor_updates/abc_0/17");

		let plain = Names::new(None, Path::from("node"));
		assert_eq!(plain.raw_path(&logical).unwrap(), logical);
		assert_eq!(plain.logical_path(&logical).unwrap(), logical);
	}
}
