//! Optional client-side encryption: [`EncryptedStore`], an [`ObjectStore`] wrapper that encrypts
//! every object before it leaves the process and decrypts it on the way back, so that the storage
//! provider, and anyone who can read the bucket, sees only ciphertext.
//!
//! ```
//! use std::sync::Arc;
//! use ldk_object_store::encryption::{EncryptNames, EncryptedStore, EncryptionKey};
//! use ldk_object_store::StoreBuilder;
//! use lightning::util::persist::KVStoreSync;
//! use object_store::memory::InMemory;
//!
//! // 64 hexadecimal characters; keep it apart from the bucket, and never lose it.
//! let key = EncryptionKey::from_hex(&"ab".repeat(32))?;
//! let bucket = Arc::new(InMemory::new());
//! let encrypted = EncryptedStore::new(bucket, key, EncryptNames::Yes);
//! let store = StoreBuilder::from_store(Arc::new(encrypted)).build()?;
//! KVStoreSync::write(&store, "monitors", "", "deadbeef_0", vec![1, 2, 3])?;
//! assert_eq!(KVStoreSync::read(&store, "monitors", "", "deadbeef_0")?, vec![1, 2, 3]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is protected
//!
//! - **Contents: confidentiality and integrity.** Every object is sealed with XChaCha20-Poly1305
//!   under a fresh random 24-byte nonce and stored as
//!   `version (1 byte) || nonce (24) || ciphertext || tag (16)`. Changing, truncating or extending
//!   an object makes its read fail with a [`DecryptError`]; nothing unauthenticated is returned.
//! - **Binding to the key.** The object's logical path (the path before any name encryption,
//!   relative to [`EncryptedStore::with_root`] if one is set) is authenticated with the contents.
//!   A ciphertext moved or copied to another path, say one channel's monitor put in place of
//!   another's, or an update renamed to a later id, fails to decrypt.
//! - **Names, optionally** ([`EncryptNames::Yes`]). Each path segment is replaced by a
//!   deterministic, authenticated encryption of itself (SIV style: a 16-byte synthetic IV, the
//!   truncated HMAC-SHA256 of the segment and of the plaintext segments above it, then XChaCha20
//!   under that IV), written in lowercase base32. Determinism keeps prefix and delimiter listings
//!   working; a name that does not decrypt and authenticate is reported as an error naming the
//!   object, never skipped.
//!
//! Contents and names use separate subkeys, derived from the one 32-byte [`EncryptionKey`] by
//! HKDF-SHA256 expansion with distinct labels. The key never appears in an error, a log line or a
//! `Debug` output, and is zeroed when dropped.
//!
//! # What is not protected
//!
//! - **Sizes.** A ciphertext is its plaintext plus [`CIPHERTEXT_OVERHEAD`] bytes, and an encrypted
//!   name is about 1.6 times its plaintext plus 26 characters: sizes are visible to within that.
//! - **The shape of the data**: the number of objects, their depth, which share a namespace, when
//!   they are written, read and deleted, and the timing of requests. With names encrypted, a
//!   path always encrypts to the same name (that is what keeps listing working), so rewrites of
//!   one key are recognizable as such.
//! - **Deletion and rollback.** Whoever can write to the bucket can delete an object, or put back
//!   an older ciphertext of the *same* path (an earlier version of a monitor): it decrypts and
//!   authenticates. For a Lightning node a rolled-back `ChannelMonitor` is dangerous, so guard
//!   against it with the storage's own controls (restricted write access, object versioning or
//!   object lock); this layer cannot detect it.
//! - **Metadata** the backend keeps beside the contents (e-tags, versions, modification times,
//!   attributes such as a content type, tags) is stored as given.
//! - **A wrong key, with encrypted names.** Another key computes other names, so its reads answer
//!   "not found" and its listings come back empty, as for a new node; only a listing of the root
//!   (with [`EncryptedStore::with_root`]) sees names that do not decrypt. Call
//!   [`EncryptedStore::check_key`] before trusting an empty store. (With plaintext names, a wrong
//!   key fails every read with a [`DecryptError`].)
//! - **Key management.** There is one key, no key identifier and no rotation: re-encrypting under
//!   a new key means copying every key through two stores (LDK's `migrate_kv_store_data`). Whoever
//!   loses the key loses the data.
//!
//! # Operations
//!
//! Whole objects are encrypted and decrypted in memory. A ranged read (`GetOptions::range`,
//! `get_range`, `get_ranges`) fetches and authenticates the whole object, then returns the range
//! of the plaintext; sizes reported by `get`, `head` and listings are plaintext sizes. Conditional
//! puts (`PutMode::Create`, `PutMode::Update`) and conditional gets go to the inner store
//! unchanged: their e-tags are those of the ciphertext. A copy or rename decrypts and re-encrypts
//! under the target path (it is therefore not atomic, and not server side). A multipart upload is
//! buffered in memory and sealed and written with a single put on `complete`.
//!
//! Objects written without encryption cannot be read through this wrapper (they fail with a
//! [`DecryptError`]); migrate them instead. With names encrypted, keep each plaintext segment
//! below about 140 bytes so that its encryption stays under the 255-byte file name limit of local
//! file systems; LDK's names (at most 120 characters) encrypt to at most 218 characters, so three
//! of them stay well within S3's 1024-byte key limit.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::XChaCha20;
use chacha20poly1305::aead::{AeadInOut, Generate, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use futures::stream::{self, BoxStream, StreamExt};
use hmac::{Hmac, Mac};
use object_store::path::{Path, PathPart};
use object_store::{
	Attributes, CopyMode, CopyOptions, Extensions, GetOptions, GetRange, GetResult,
	GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
	PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
	RenameTargetMode, Result, UploadPart,
};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The first byte of every object this module writes.
const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + NONCE_LEN;
/// Bytes a ciphertext has beyond its plaintext: the format version, the nonce and the tag.
pub const CIPHERTEXT_OVERHEAD: u64 = (HEADER_LEN + TAG_LEN) as u64;
/// Length of the synthetic IV at the start of an encrypted name.
const SIV_LEN: usize = 16;
/// The `store` of the `object_store::Error::Generic` errors of this module.
const STORE: &str = "Encrypted";

/// A 32-byte key for [`EncryptedStore`].
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
		let digits = hex.as_bytes();
		for (i, byte) in bytes.iter_mut().enumerate() {
			let high = hex_value(digits[2 * i]).ok_or(KeyError::NotHex(2 * i + 1))?;
			let low = hex_value(digits[2 * i + 1]).ok_or(KeyError::NotHex(2 * i + 2))?;
			*byte = (high << 4) | low;
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
		const DIGITS: &[u8; 16] = b"0123456789abcdef";
		let mut hex = Zeroizing::new(String::with_capacity(64));
		for byte in self.0.iter() {
			hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
			hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
		}
		hex
	}
}

impl fmt::Debug for EncryptionKey {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		f.write_str("EncryptionKey(<redacted>)")
	}
}

fn hex_value(digit: u8) -> Option<u8> {
	match digit {
		b'0'..=b'9' => Some(digit - b'0'),
		b'a'..=b'f' => Some(digit - b'a' + 10),
		b'A'..=b'F' => Some(digit - b'A' + 10),
		_ => None,
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

/// Whether [`EncryptedStore`] encrypts object names as well as contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptNames {
	/// Every path segment (below [`EncryptedStore::with_root`], if set) is encrypted.
	Yes,
	/// Names are stored as they are; only contents are encrypted.
	No,
}

/// Why an object could not be decrypted; see [`DecryptError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecryptFailure {
	/// The object is shorter than the encryption overhead.
	Truncated,
	/// The object does not start with a format version this module writes: it was written
	/// without encryption, or altered.
	UnknownFormat,
	/// Authentication of the contents failed.
	Authentication,
	/// The object's name (with [`EncryptNames::Yes`]) does not decrypt and authenticate.
	Name,
}

/// An object whose contents or name failed to decrypt or authenticate.
///
/// Returned inside `object_store::Error::Generic { store: "Encrypted", source }`; find it with
/// `source.downcast_ref::<DecryptError>()`. It is a fact about the stored data, not a transient
/// failure: a retry reads the same bytes. It holds no key material and no contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptError {
	path: String,
	reason: DecryptFailure,
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
			DecryptFailure::UnknownFormat => write!(
				f,
				"object {path} cannot be decrypted: it does not start with a known format version \
				 (written without encryption, or tampered with)"
			),
			DecryptFailure::Authentication => write!(
				f,
				"object {path} failed to decrypt: it was tampered with, truncated, moved or copied \
				 from another key, or encrypted with another key"
			),
			DecryptFailure::Name => write!(
				f,
				"the name of object {path} does not decrypt: it was not written through this \
				 encryption layer, was renamed or tampered with, or was encrypted with another key"
			),
		}
	}
}

impl std::error::Error for DecryptError {}

/// A path given to the wrapper that is not below its root.
#[derive(Debug)]
struct OutsideRoot {
	path: String,
	root: String,
}

impl fmt::Display for OutsideRoot {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		write!(f, "path {:?} is outside the encrypted store's root {:?}", self.path, self.root)
	}
}

impl std::error::Error for OutsideRoot {}

/// A failure of the encryption itself (the system's random number generator, an absurd size).
#[derive(Debug)]
struct SealFailed(&'static str);

impl fmt::Display for SealFailed {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		write!(f, "encryption failed: {}", self.0)
	}
}

impl std::error::Error for SealFailed {}

fn generic(source: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
	object_store::Error::Generic { store: STORE, source: Box::new(source) }
}

/// The subkeys, each zeroed on drop.
#[derive(Clone)]
struct Keys {
	contents: Zeroizing<[u8; 32]>,
	/// The name MAC key, zero-padded to SHA-256's block size (which HMAC does anyway), so that
	/// the MAC is made without a fallible call.
	name_mac: Zeroizing<[u8; 64]>,
	name_stream: Zeroizing<[u8; 32]>,
}

impl Keys {
	fn derive(key: &EncryptionKey) -> Self {
		let mut name_mac = Zeroizing::new([0u8; 64]);
		name_mac[..32].copy_from_slice(&*expand(key, b"ldk-object-store/v1/name-siv"));
		Keys {
			contents: expand(key, b"ldk-object-store/v1/contents"),
			name_mac,
			name_stream: expand(key, b"ldk-object-store/v1/name-stream"),
		}
	}

	fn name_mac(&self) -> Hmac<Sha256> {
		let key: &[u8; 64] = &self.name_mac;
		<Hmac<Sha256> as KeyInit>::new(key.into())
	}
}

fn hmac(key: &[u8; 32]) -> Hmac<Sha256> {
	let mut padded = Zeroizing::new([0u8; 64]);
	padded[..32].copy_from_slice(key);
	let padded: &[u8; 64] = &padded;
	<Hmac<Sha256> as KeyInit>::new(padded.into())
}

/// HKDF-Expand (RFC 5869) of one 32-byte block, with the uniformly random key as the
/// pseudorandom key: `HMAC-SHA256(key, info || 0x01)`.
fn expand(key: &EncryptionKey, info: &[u8]) -> Zeroizing<[u8; 32]> {
	let mut mac = hmac(&key.0);
	mac.update(info);
	mac.update(&[1]);
	let mut out = Zeroizing::new([0u8; 32]);
	out.copy_from_slice(&mac.finalize().into_bytes());
	out
}

/// What the wrapper's streams and uploads share.
struct Shared {
	keys: Keys,
	names: EncryptNames,
	root: Path,
}

impl Shared {
	/// The segments of `path` below the root.
	fn relative<'a>(&self, path: &'a Path) -> Result<Vec<PathPart<'a>>> {
		match path.prefix_match(&self.root) {
			Some(parts) => Ok(parts.collect()),
			None => {
				Err(generic(OutsideRoot { path: path.to_string(), root: self.root.to_string() }))
			},
		}
	}

	/// The associated data of an object's contents: the format version and the logical path
	/// relative to the root.
	fn associated_data(&self, logical: &Path) -> Result<Vec<u8>> {
		let parts = self.relative(logical)?;
		let mut data = vec![FORMAT_VERSION];
		for (i, part) in parts.iter().enumerate() {
			if i > 0 {
				data.push(b'/');
			}
			data.extend_from_slice(part.as_ref().as_bytes());
		}
		Ok(data)
	}

	fn seal(&self, logical: &Path, payload: &PutPayload) -> Result<Vec<u8>> {
		let associated_data = self.associated_data(logical)?;
		let nonce = XNonce::try_generate()
			.map_err(|_| generic(SealFailed("the random number generator failed")))?;
		let mut sealed = Vec::with_capacity(HEADER_LEN + payload.content_length() + TAG_LEN);
		sealed.push(FORMAT_VERSION);
		sealed.extend_from_slice(&nonce);
		for chunk in payload {
			sealed.extend_from_slice(chunk);
		}
		let cipher = XChaCha20Poly1305::new((&*self.keys.contents).into());
		let tag = cipher
			.encrypt_inout_detached(&nonce, &associated_data, (&mut sealed[HEADER_LEN..]).into())
			.map_err(|_| generic(SealFailed("the object is too large")))?;
		sealed.extend_from_slice(&tag);
		Ok(sealed)
	}

	fn open(&self, logical: &Path, sealed: &[u8]) -> Result<Vec<u8>> {
		let fail = |reason| generic(DecryptError { path: logical.to_string(), reason });
		if sealed.len() < HEADER_LEN + TAG_LEN {
			return Err(fail(DecryptFailure::Truncated));
		}
		if sealed[0] != FORMAT_VERSION {
			return Err(fail(DecryptFailure::UnknownFormat));
		}
		let associated_data = self.associated_data(logical)?;
		let nonce = XNonce::try_from(&sealed[1..HEADER_LEN])
			.map_err(|_| fail(DecryptFailure::Truncated))?;
		let (body, tag) = sealed[HEADER_LEN..].split_at(sealed.len() - HEADER_LEN - TAG_LEN);
		let tag =
			chacha20poly1305::Tag::try_from(tag).map_err(|_| fail(DecryptFailure::Truncated))?;
		let mut plaintext = body.to_vec();
		let cipher = XChaCha20Poly1305::new((&*self.keys.contents).into());
		cipher
			.decrypt_inout_detached(&nonce, &associated_data, plaintext.as_mut_slice().into(), &tag)
			.map_err(|_| fail(DecryptFailure::Authentication))?;
		Ok(plaintext)
	}

	/// The synthetic IV of a name segment: the truncated HMAC of the plaintext segments from the
	/// root down to it, each prefixed with its length.
	fn siv(&self, parents: &[&str], segment: &[u8]) -> Hmac<Sha256> {
		let mut mac = self.keys.name_mac();
		for parent in parents {
			mac.update(&(parent.len() as u64).to_be_bytes());
			mac.update(parent.as_bytes());
		}
		mac.update(&(segment.len() as u64).to_be_bytes());
		mac.update(segment);
		mac
	}

	fn name_stream(&self, siv: &[u8; SIV_LEN]) -> XChaCha20 {
		let mut nonce = [0u8; NONCE_LEN];
		nonce[..SIV_LEN].copy_from_slice(siv);
		XChaCha20::new((&*self.keys.name_stream).into(), (&nonce).into())
	}

	fn encrypt_segment(&self, parents: &[&str], segment: &str) -> String {
		let tag = self.siv(parents, segment.as_bytes()).finalize().into_bytes();
		let mut siv = [0u8; SIV_LEN];
		siv.copy_from_slice(&tag[..SIV_LEN]);
		let mut out = Vec::with_capacity(SIV_LEN + segment.len());
		out.extend_from_slice(&siv);
		out.extend_from_slice(segment.as_bytes());
		self.name_stream(&siv).apply_keystream(&mut out[SIV_LEN..]);
		base32_encode(&out)
	}

	fn decrypt_segment(&self, parents: &[&str], encrypted: &str) -> Option<String> {
		let bytes = base32_decode(encrypted)?;
		if bytes.len() <= SIV_LEN {
			return None;
		}
		let mut siv = [0u8; SIV_LEN];
		siv.copy_from_slice(&bytes[..SIV_LEN]);
		let mut segment = bytes[SIV_LEN..].to_vec();
		self.name_stream(&siv).apply_keystream(&mut segment);
		self.siv(parents, &segment).verify_truncated_left(&siv).ok()?;
		String::from_utf8(segment).ok()
	}

	/// The stored path of a logical one.
	fn raw_path(&self, logical: &Path) -> Result<Path> {
		let parts = self.relative(logical)?;
		if self.names == EncryptNames::No {
			return Ok(logical.clone());
		}
		let plain: Vec<&str> = parts.iter().map(|p| p.as_ref()).collect();
		let encrypted: Vec<String> =
			(0..plain.len()).map(|i| self.encrypt_segment(&plain[..i], plain[i])).collect();
		let mut raw = self.root.clone();
		raw.extend(encrypted.into_iter().map(PathPart::from));
		Ok(raw)
	}

	/// The stored prefix to list for a logical one: `None` for the top of the store.
	fn raw_prefix(&self, prefix: Option<&Path>) -> Result<Option<Path>> {
		let logical = prefix.cloned().unwrap_or_default();
		let raw = self.raw_path(&logical)?;
		Ok((!raw.is_root()).then_some(raw))
	}

	/// The logical path of a stored one; an error naming the object if its name does not
	/// decrypt.
	fn logical_path(&self, raw: &Path) -> Result<Path> {
		if self.names == EncryptNames::No {
			return Ok(raw.clone());
		}
		let bad_name =
			|| generic(DecryptError { path: raw.to_string(), reason: DecryptFailure::Name });
		let parts = raw.prefix_match(&self.root).ok_or_else(bad_name)?;
		let mut plain: Vec<String> = Vec::new();
		for part in parts {
			let parents: Vec<&str> = plain.iter().map(String::as_str).collect();
			let segment = self.decrypt_segment(&parents, part.as_ref()).ok_or_else(bad_name)?;
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

	/// A listed object as the caller sees it: its logical path and plaintext size.
	fn logical_meta(&self, meta: ObjectMeta) -> Result<ObjectMeta> {
		Ok(ObjectMeta {
			location: self.logical_path(&meta.location)?,
			size: plaintext_size(meta.size),
			..meta
		})
	}

	/// Puts the logical path into an inner error that names the stored one.
	fn relabel(&self, err: object_store::Error, logical: Option<&Path>) -> object_store::Error {
		use object_store::Error as E;
		if self.names == EncryptNames::No {
			return err;
		}
		let name = |path: String| match logical {
			Some(logical) => logical.to_string(),
			None => Path::parse(&path)
				.ok()
				.and_then(|raw| self.logical_path(&raw).ok())
				.map_or(path, |logical| logical.to_string()),
		};
		match err {
			E::NotFound { path, source } => E::NotFound { path: name(path), source },
			E::AlreadyExists { path, source } => E::AlreadyExists { path: name(path), source },
			E::Precondition { path, source } => E::Precondition { path: name(path), source },
			E::NotModified { path, source } => E::NotModified { path: name(path), source },
			E::PermissionDenied { path, source } => {
				E::PermissionDenied { path: name(path), source }
			},
			E::Unauthenticated { path, source } => E::Unauthenticated { path: name(path), source },
			other => other,
		}
	}
}

fn plaintext_size(stored: u64) -> u64 {
	stored.saturating_sub(CIPHERTEXT_OVERHEAD)
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// RFC 4648 base32 in lowercase, without padding.
fn base32_encode(bytes: &[u8]) -> String {
	let mut out = String::with_capacity((bytes.len() * 8).div_ceil(5));
	let (mut buffer, mut bits) = (0u32, 0u32);
	for &byte in bytes {
		buffer = (buffer << 8) | u32::from(byte);
		bits += 8;
		while bits >= 5 {
			bits -= 5;
			out.push(char::from(BASE32[((buffer >> bits) & 31) as usize]));
		}
		buffer &= (1 << bits) - 1;
	}
	if bits > 0 {
		out.push(char::from(BASE32[((buffer << (5 - bits)) & 31) as usize]));
	}
	out
}

/// The inverse of [`base32_encode`]; `None` for anything it cannot have written (so that every
/// name has exactly one encoding).
fn base32_decode(text: &str) -> Option<Vec<u8>> {
	let mut out = Vec::with_capacity(text.len() * 5 / 8);
	let (mut buffer, mut bits) = (0u32, 0u32);
	for c in text.bytes() {
		let value = match c {
			b'a'..=b'z' => c - b'a',
			b'2'..=b'7' => c - b'2' + 26,
			_ => return None,
		};
		buffer = (buffer << 5) | u32::from(value);
		bits += 5;
		if bits >= 8 {
			bits -= 8;
			out.push((buffer >> bits) as u8);
			buffer &= (1 << bits) - 1;
		}
	}
	(bits < 5 && buffer == 0).then_some(out)
}

/// An [`ObjectStore`] that encrypts contents (and optionally names) on their way to `inner`; see
/// the [module documentation](self) for what it protects and what it does not.
#[derive(Clone)]
pub struct EncryptedStore {
	inner: Arc<dyn ObjectStore>,
	shared: Arc<Shared>,
}

impl EncryptedStore {
	/// Encrypts everything written to `inner` under `key`; with [`EncryptNames::Yes`], object
	/// names as well. The whole path is treated as the object's name; see [`Self::with_root`].
	pub fn new(inner: Arc<dyn ObjectStore>, key: EncryptionKey, names: EncryptNames) -> Self {
		let shared = Shared { keys: Keys::derive(&key), names, root: Path::default() };
		EncryptedStore { inner, shared: Arc::new(shared) }
	}

	/// Leaves the prefix `root` out of the encryption: its segments stay readable in the bucket,
	/// and the paths bound to the contents are relative to it, so that the whole tree can be
	/// moved to another prefix (by a raw copy) and still decrypt there. Every path and listing
	/// prefix given to the store must then be `root` or below it; others fail.
	pub fn with_root(self, root: Path) -> Self {
		let (keys, names) = match Arc::try_unwrap(self.shared) {
			Ok(shared) => (shared.keys, shared.names),
			// With clones of the store alive: the same keys, copied.
			Err(shared) => (shared.keys.clone(), shared.names),
		};
		EncryptedStore { inner: self.inner, shared: Arc::new(Shared { keys, names, root }) }
	}

	/// The store that holds the ciphertext.
	pub fn inner(&self) -> &Arc<dyn ObjectStore> {
		&self.inner
	}

	/// Whether names are encrypted.
	pub fn encrypts_names(&self) -> bool {
		self.shared.names == EncryptNames::Yes
	}

	/// The stored path of a logical one (as the inner store sees it).
	pub fn stored_path(&self, logical: &Path) -> Result<Path> {
		self.shared.raw_path(logical)
	}

	/// Checks that the objects below the root were written with this store's key, and returns
	/// how many it checked (0 for an empty store): with encrypted names, the name of every entry
	/// directly below the root must decrypt; otherwise the first object listed must.
	///
	/// Worth calling before trusting an empty-looking store: with encrypted names, a wrong key
	/// looks up other names, so its reads answer "not found" and its listings of a namespace
	/// come back empty, as for a new node. Meant for a store whose root (see [`Self::with_root`])
	/// holds nothing else; fails with a [`DecryptError`] naming the first object that does not
	/// decrypt.
	pub async fn check_key(&self) -> Result<usize> {
		let root = (!self.shared.root.is_root()).then_some(&self.shared.root);
		if self.shared.names == EncryptNames::Yes {
			let listed = self.inner.list_with_delimiter(root).await?;
			let objects = listed.objects.iter().map(|meta| &meta.location);
			for raw in listed.common_prefixes.iter().chain(objects) {
				self.shared.logical_path(raw)?;
			}
			return Ok(listed.common_prefixes.len() + listed.objects.len());
		}
		match self.inner.list(root).next().await.transpose()? {
			None => Ok(0),
			Some(meta) => {
				self.get_plaintext(&meta.location, GetOptions::default()).await?;
				Ok(1)
			},
		}
	}

	/// Fetches, authenticates and decrypts a whole object.
	async fn get_plaintext(&self, location: &Path, mut options: GetOptions) -> Result<Plaintext> {
		let raw = self.shared.raw_path(location)?;
		options.range = None;
		options.head = false;
		let mut result = self
			.inner
			.get_opts(&raw, options)
			.await
			.map_err(|e| self.shared.relabel(e, Some(location)))?;
		let attributes = std::mem::take(&mut result.attributes);
		let extensions = std::mem::take(&mut result.extensions);
		let meta = result.meta.clone();
		let sealed = result.bytes().await.map_err(|e| self.shared.relabel(e, Some(location)))?;
		let bytes = Bytes::from(self.shared.open(location, &sealed)?);
		let meta = ObjectMeta { location: location.clone(), size: bytes.len() as u64, ..meta };
		Ok(Plaintext { meta, bytes, attributes, extensions })
	}
}

/// A decrypted object, with what the inner store said about it.
struct Plaintext {
	/// The logical path and plaintext size; the ciphertext's e-tag, version and time.
	meta: ObjectMeta,
	bytes: Bytes,
	attributes: Attributes,
	extensions: Extensions,
}

impl fmt::Debug for EncryptedStore {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		f.debug_struct("EncryptedStore")
			.field("inner", &self.inner)
			.field("names", &self.shared.names)
			.field("root", &self.shared.root)
			.field("key", &"<redacted>")
			.finish()
	}
}

impl fmt::Display for EncryptedStore {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		write!(f, "Encrypted({})", self.inner)
	}
}

fn slice(data: &Bytes, range: &Range<u64>) -> Bytes {
	// `as_range` keeps ranges within `data`, whose length is a `usize`.
	data.slice(range.start as usize..range.end as usize)
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for EncryptedStore {
	async fn put_opts(
		&self, location: &Path, payload: PutPayload, opts: PutOptions,
	) -> Result<PutResult> {
		let raw = self.shared.raw_path(location)?;
		let sealed = self.shared.seal(location, &payload)?;
		self.inner
			.put_opts(&raw, PutPayload::from(sealed), opts)
			.await
			.map_err(|e| self.shared.relabel(e, Some(location)))
	}

	async fn put_multipart_opts(
		&self, location: &Path, opts: PutMultipartOptions,
	) -> Result<Box<dyn MultipartUpload>> {
		// Fails now, not at the end, for a path outside the root.
		self.shared.raw_path(location)?;
		Ok(Box::new(BufferedUpload {
			store: self.clone(),
			location: location.clone(),
			opts,
			parts: Vec::new(),
		}))
	}

	async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
		if options.head {
			let raw = self.shared.raw_path(location)?;
			let options = GetOptions { range: None, ..options };
			let result = self
				.inner
				.get_opts(&raw, options)
				.await
				.map_err(|e| self.shared.relabel(e, Some(location)))?;
			let size = plaintext_size(result.meta.size);
			let meta = ObjectMeta { location: location.clone(), size, ..result.meta };
			return Ok(GetResult {
				payload: GetResultPayload::Stream(stream::empty().boxed()),
				meta,
				range: 0..size,
				attributes: result.attributes,
				extensions: result.extensions,
			});
		}
		let requested = options.range.clone();
		let Plaintext { meta, bytes, attributes, extensions } =
			self.get_plaintext(location, options).await?;
		let range = match requested {
			Some(range) => range.as_range(meta.size).map_err(generic)?,
			None => 0..meta.size,
		};
		let body = slice(&bytes, &range);
		Ok(GetResult {
			payload: GetResultPayload::Stream(stream::once(async move { Ok(body) }).boxed()),
			meta,
			range,
			attributes,
			extensions,
		})
	}

	async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
		let object = self.get_plaintext(location, GetOptions::default()).await?;
		ranges
			.iter()
			.map(|range| {
				let range = GetRange::Bounded(range.clone()).as_range(object.meta.size);
				Ok(slice(&object.bytes, &range.map_err(generic)?))
			})
			.collect()
	}

	fn delete_stream(
		&self, locations: BoxStream<'static, Result<Path>>,
	) -> BoxStream<'static, Result<Path>> {
		let (to_raw, to_logical) = (Arc::clone(&self.shared), Arc::clone(&self.shared));
		let raw = locations.map(move |location| to_raw.raw_path(&location?)).boxed();
		self.inner
			.delete_stream(raw)
			.map(move |outcome| match outcome {
				Ok(raw) => to_logical.logical_path(&raw),
				Err(e) => Err(to_logical.relabel(e, None)),
			})
			.boxed()
	}

	fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
		let raw_prefix = match self.shared.raw_prefix(prefix) {
			Ok(raw_prefix) => raw_prefix,
			Err(e) => return stream::once(async move { Err(e) }).boxed(),
		};
		let shared = Arc::clone(&self.shared);
		self.inner
			.list(raw_prefix.as_ref())
			.map(move |meta| match meta {
				Ok(meta) => shared.logical_meta(meta),
				Err(e) => Err(shared.relabel(e, None)),
			})
			.boxed()
	}

	fn list_with_offset(
		&self, prefix: Option<&Path>, offset: &Path,
	) -> BoxStream<'static, Result<ObjectMeta>> {
		let offset = offset.clone();
		if self.shared.names == EncryptNames::Yes {
			// Encrypted names sort differently: filter the logical names instead.
			return self
				.list(prefix)
				.filter(move |meta| {
					let keep = meta.as_ref().map_or(true, |meta| meta.location > offset);
					std::future::ready(keep)
				})
				.boxed();
		}
		let raw_prefix = match self.shared.raw_prefix(prefix) {
			Ok(raw_prefix) => raw_prefix,
			Err(e) => return stream::once(async move { Err(e) }).boxed(),
		};
		let shared = Arc::clone(&self.shared);
		self.inner
			.list_with_offset(raw_prefix.as_ref(), &offset)
			.map(move |meta| shared.logical_meta(meta?))
			.boxed()
	}

	async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
		let raw_prefix = self.shared.raw_prefix(prefix)?;
		let listed = self
			.inner
			.list_with_delimiter(raw_prefix.as_ref())
			.await
			.map_err(|e| self.shared.relabel(e, prefix))?;
		Ok(ListResult {
			common_prefixes: listed
				.common_prefixes
				.iter()
				.map(|raw| self.shared.logical_path(raw))
				.collect::<Result<_>>()?,
			objects: listed
				.objects
				.into_iter()
				.map(|meta| self.shared.logical_meta(meta))
				.collect::<Result<_>>()?,
			extensions: listed.extensions,
		})
	}

	async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
		// The contents are bound to their path: re-encrypt for the new one.
		let CopyOptions { mode, extensions } = options;
		let object = self.get_plaintext(from, GetOptions::default()).await?;
		let mode = match mode {
			CopyMode::Overwrite => PutMode::Overwrite,
			CopyMode::Create => PutMode::Create,
		};
		let opts =
			PutOptions { mode, attributes: object.attributes, extensions, ..Default::default() };
		self.put_opts(to, PutPayload::from(object.bytes), opts).await?;
		Ok(())
	}

	async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
		let RenameOptions { target_mode, extensions } = options;
		let mode = match target_mode {
			RenameTargetMode::Overwrite => CopyMode::Overwrite,
			RenameTargetMode::Create => CopyMode::Create,
		};
		self.copy_opts(from, to, CopyOptions { mode, extensions }).await?;
		self.delete(from).await
	}
}

/// A multipart upload to an [`EncryptedStore`]: the parts are kept in memory and sealed and
/// written with one put on `complete`.
struct BufferedUpload {
	store: EncryptedStore,
	location: Path,
	opts: PutMultipartOptions,
	parts: Vec<PutPayload>,
}

impl fmt::Debug for BufferedUpload {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		f.debug_struct("BufferedUpload")
			.field("location", &self.location)
			.field("parts", &self.parts.len())
			.finish()
	}
}

#[async_trait]
impl MultipartUpload for BufferedUpload {
	fn put_part(&mut self, data: PutPayload) -> UploadPart {
		self.parts.push(data);
		Box::pin(async { Ok(()) })
	}

	async fn complete(&mut self) -> Result<PutResult> {
		let payload: PutPayload = std::mem::take(&mut self.parts).into_iter().flatten().collect();
		let PutMultipartOptions { tags, attributes, extensions } = std::mem::take(&mut self.opts);
		let opts = PutOptions { mode: PutMode::Overwrite, tags, attributes, extensions };
		self.store.put_opts(&self.location, payload, opts).await
	}

	async fn abort(&mut self) -> Result<()> {
		self.parts.clear();
		Ok(())
	}
}

#[cfg(test)]
mod tests {
	use super::*;

	fn shared(names: EncryptNames, byte: u8) -> Shared {
		Shared {
			keys: Keys::derive(&EncryptionKey::from_bytes([byte; 32])),
			names,
			root: Path::default(),
		}
	}

	#[test]
	fn base32_round_trips_and_is_canonical() {
		for len in 0..40 {
			let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
			let text = base32_encode(&bytes);
			assert_eq!(text.len(), (len * 8usize).div_ceil(5));
			assert_eq!(base32_decode(&text).unwrap(), bytes);
		}
		assert_eq!(base32_encode(b"foobar"), "mzxw6ytboi");
		// Non-zero padding bits, impossible lengths and foreign characters are refused.
		assert_eq!(base32_decode("ma").unwrap(), b"`");
		assert!(base32_decode("mb").is_none());
		assert!(base32_decode("m").is_none());
		assert!(base32_decode("mzx").is_none());
		assert!(base32_decode("MZ").is_none());
		assert!(base32_decode("m1").is_none());
	}

	#[test]
	fn names_round_trip_deterministically_and_detect_tampering() {
		let s = shared(EncryptNames::Yes, 7);
		let long = "x".repeat(120);
		for name in ["manager", "17", long.as_str(), "a-b_C"] {
			let encrypted = s.encrypt_segment(&["monitors"], name);
			assert_eq!(encrypted, s.encrypt_segment(&["monitors"], name), "deterministic");
			assert!(encrypted.len() <= 218, "{} chars", encrypted.len());
			assert!(!encrypted.contains(name));
			assert_eq!(s.decrypt_segment(&["monitors"], &encrypted).unwrap(), name);
			// Bound to its parents.
			assert_ne!(encrypted, s.encrypt_segment(&["other"], name));
			assert!(s.decrypt_segment(&["other"], &encrypted).is_none());
			// Another key does not decrypt it.
			assert!(shared(EncryptNames::Yes, 8)
				.decrypt_segment(&["monitors"], &encrypted)
				.is_none());
			// A changed character is detected.
			let mut bytes = encrypted.clone().into_bytes();
			let last = bytes.len() - 3;
			bytes[last] = if bytes[last] == b'a' { b'b' } else { b'a' };
			let tampered = String::from_utf8(bytes).unwrap();
			assert!(s.decrypt_segment(&["monitors"], &tampered).is_none());
		}
	}

	#[test]
	fn paths_map_both_ways() {
		let s = shared(EncryptNames::Yes, 1);
		let logical = Path::from("node/monitor_updates/abc_0/17");
		let raw = s.raw_path(&logical).unwrap();
		assert_eq!(raw.parts().count(), 4);
		assert!(!raw.as_ref().contains("monitor"));
		assert_eq!(s.logical_path(&raw).unwrap(), logical);
		assert_eq!(s.raw_prefix(None).unwrap(), None);

		let rooted = Shared { root: Path::from("node"), ..shared(EncryptNames::Yes, 1) };
		let raw = rooted.raw_path(&logical).unwrap();
		assert!(raw.as_ref().starts_with("node/"));
		assert_eq!(rooted.logical_path(&raw).unwrap(), logical);
		assert!(rooted.raw_path(&Path::from("elsewhere/x")).is_err());
	}

	#[test]
	fn contents_are_bound_to_their_path() {
		let s = shared(EncryptNames::No, 3);
		let path = Path::from("monitors/a_0");
		let sealed = s.seal(&path, &PutPayload::from_static(b"secret")).unwrap();
		assert_eq!(sealed.len() as u64, 6 + CIPHERTEXT_OVERHEAD);
		assert_eq!(s.open(&path, &sealed).unwrap(), b"secret");
		assert!(s.open(&Path::from("monitors/b_0"), &sealed).is_err());
		assert!(s.open(&path, &sealed[..sealed.len() - 1]).is_err());
		assert!(shared(EncryptNames::No, 4).open(&path, &sealed).is_err());
		// Two writes of the same value differ (a fresh nonce each).
		assert_ne!(sealed, s.seal(&path, &PutPayload::from_static(b"secret")).unwrap());
	}

	#[test]
	fn keys_parse_and_stay_secret() {
		let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF\n";
		let key = EncryptionKey::from_hex(hex).unwrap();
		assert_eq!(key.to_hex().as_str(), hex.trim().to_lowercase());
		assert_eq!(format!("{key:?}"), "EncryptionKey(<redacted>)");
		assert_eq!(EncryptionKey::from_hex("abc").unwrap_err(), KeyError::WrongLength(3));
		let bad = format!("{}g{}", "0".repeat(10), "0".repeat(53));
		let err = EncryptionKey::from_hex(&bad).unwrap_err();
		assert_eq!(err, KeyError::NotHex(11));
		assert!(!err.to_string().contains('g'));
		let a = EncryptionKey::generate().unwrap();
		let b = EncryptionKey::generate().unwrap();
		assert_ne!(a.to_hex(), b.to_hex());
	}
}
