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
//! let encrypted = EncryptedStore::new(bucket, key, EncryptNames::Yes).with_identity("node-1");
//! let store = StoreBuilder::from_store(Arc::new(encrypted)).build()?;
//! KVStoreSync::write(&store, "monitors", "", "deadbeef_0", vec![1, 2, 3])?;
//! assert_eq!(KVStoreSync::read(&store, "monitors", "", "deadbeef_0")?, vec![1, 2, 3]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Only reviewed constructions, from the RustCrypto crates: XChaCha20-Poly1305 for contents,
//! AES-SIV (RFC 5297) for names, HKDF-SHA256 (RFC 5869) for the subkeys.
//!
//! # What is protected
//!
//! - **Contents: confidentiality and integrity.** Every object is sealed with XChaCha20-Poly1305
//!   under a fresh random 24-byte nonce and stored as
//!   `version (1 byte, 2) || nonce (24) || ciphertext || tag (16)`. Changing, truncating or
//!   extending an object makes its read fail with a [`DecryptError`]; nothing unauthenticated is
//!   returned.
//! - **Binding to the key.** The object's logical path (the path before any name encryption,
//!   relative to [`EncryptedStore::with_root`] if one is set) is authenticated with the contents,
//!   as associated data: `version (1) || identity length (8, big-endian) || identity || path`.
//!   A ciphertext moved or copied to another path, say one channel's monitor put in place of
//!   another's, or an update renamed to a later id, fails to decrypt.
//! - **Binding to the store, optionally** ([`EncryptedStore::with_identity`]). Several nodes
//!   sharing one key are told apart by an identity in the same associated data, so that node A's
//!   `manager` copied in place of node B's fails to decrypt too. Without an identity, stores
//!   under one key accept each other's objects at the same relative path.
//! - **Names, optionally** ([`EncryptNames::Yes`]). Each path segment is replaced by its
//!   AES-SIV encryption (RFC 5297, AES-256, deterministic and authenticated), with the plaintext
//!   segments above it as associated data, written in unpadded lowercase base32. Determinism
//!   keeps prefix and delimiter listings working; a name decrypts only below the segments it was
//!   encrypted under and only from its one canonical encoding, and a name that does not decrypt
//!   is reported as an error naming the object, never skipped.
//!
//! Contents and names use separate subkeys, derived from the one 32-byte [`EncryptionKey`] by
//! HKDF-SHA256: Extract with the salt `ldk-object-store/v2`, then Expand with the labels
//! `ldk-object-store/v2/contents/xchacha20-poly1305` (32 bytes) and
//! `ldk-object-store/v2/names/aes-256-siv` (64 bytes). The key never appears in an error, a log
//! line or a `Debug` output, and is zeroed when dropped.
//!
//! # What is not protected
//!
//! - **Sizes.** A ciphertext is its plaintext plus [`CIPHERTEXT_OVERHEAD`] bytes, and an encrypted
//!   name is about 1.6 times its plaintext plus 26 characters: sizes are visible to within that.
//! - **The shape of the data**: the number of objects, their depth, which share a namespace, when
//!   they are written, read and deleted, and the timing of requests. With names encrypted, a
//!   path always encrypts to the same name (that is what keeps listing working), so rewrites of
//!   one key are recognizable as such, and stores under one key and root layout share names.
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
//! # Format versions
//!
//! This module writes and reads format version 2. Objects of version 1 (an earlier,
//! unreleased format of this crate) are refused with [`DecryptFailure::OldFormat`], whose
//! message says so; their names, with name encryption, do not decrypt.
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
//!
//! [`ObjectStore`]: object_store::ObjectStore

mod contents;
mod error;
mod key;
mod names;
mod store;

pub use contents::CIPHERTEXT_OVERHEAD;
pub use error::{DecryptError, DecryptFailure};
pub use key::{EncryptionKey, KeyError};
pub use store::EncryptedStore;

/// Whether [`EncryptedStore`] encrypts object names as well as contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptNames {
	/// Every path segment (below [`EncryptedStore::with_root`], if set) is encrypted.
	Yes,
	/// Names are stored as they are; only contents are encrypted.
	No,
}
