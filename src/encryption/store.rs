//! [`EncryptedStore`]: the `ObjectStore` wrapper that puts contents and names through the
//! encryption on their way to the inner store.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
	Attributes, CopyMode, CopyOptions, Extensions, GetOptions, GetRange, GetResult,
	GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
	PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
	RenameTargetMode, Result, UploadPart,
};
use zeroize::Zeroizing;

use super::contents::{self, plaintext_size};
use super::error::{decrypt_error, generic};
use super::key::{EncryptionKey, Keys};
use super::names::Names;
use super::EncryptNames;

/// What the wrapper's streams and uploads share.
#[derive(Clone)]
struct Shared {
	contents_key: Zeroizing<[u8; 32]>,
	/// Bound into every object's associated data; empty for none.
	identity: Vec<u8>,
	names: Names,
}

impl Shared {
	fn seal(&self, logical: &Path, payload: &PutPayload) -> Result<Vec<u8>> {
		let relative = self.names.relative_path(logical)?;
		contents::seal(&self.contents_key, &self.identity, &relative, payload).map_err(generic)
	}

	fn open(&self, logical: &Path, sealed: &[u8]) -> Result<Vec<u8>> {
		let relative = self.names.relative_path(logical)?;
		contents::open(&self.contents_key, &self.identity, &relative, sealed)
			.map_err(|reason| decrypt_error(logical, reason))
	}

	fn raw_path(&self, logical: &Path) -> Result<Path> {
		self.names.raw_path(logical)
	}

	fn raw_prefix(&self, prefix: Option<&Path>) -> Result<Option<Path>> {
		self.names.raw_prefix(prefix)
	}

	fn logical_path(&self, raw: &Path) -> Result<Path> {
		self.names.logical_path(raw)
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
		if !self.names.encrypted() {
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

/// An [`ObjectStore`] that encrypts contents (and optionally names) on their way to `inner`; see
/// the [module documentation](super) for what it protects and what it does not.
#[derive(Clone)]
pub struct EncryptedStore {
	inner: Arc<dyn ObjectStore>,
	shared: Arc<Shared>,
}

impl EncryptedStore {
	/// Encrypts everything written to `inner` under `key`; with [`EncryptNames::Yes`], object
	/// names as well. The whole path is treated as the object's name; see [`Self::with_root`].
	pub fn new(inner: Arc<dyn ObjectStore>, key: EncryptionKey, names: EncryptNames) -> Self {
		let Keys { contents, names: names_key } = Keys::derive(&key);
		let names_key = (names == EncryptNames::Yes).then_some(names_key);
		let shared = Shared {
			contents_key: contents,
			identity: Vec::new(),
			names: Names::new(names_key, Path::default()),
		};
		EncryptedStore { inner, shared: Arc::new(shared) }
	}

	/// Leaves the prefix `root` out of the encryption: its segments stay readable in the bucket,
	/// and the paths bound to the contents are relative to it, so that the whole tree can be
	/// moved to another prefix (by a raw copy) and still decrypt there. Every path and listing
	/// prefix given to the store must then be `root` or below it; others fail.
	pub fn with_root(self, root: Path) -> Self {
		self.map_shared(|shared| {
			let key = shared.names.key().cloned();
			shared.names = Names::new(key, root);
		})
	}

	/// Binds every object's contents to `identity` as well as to its path: for several stores
	/// (several nodes) under one key, so that an object of one cannot be put in place of the
	/// same key of another (node A's `manager` for node B's) without failing to decrypt. Each
	/// store must then be opened with its own identity, always; an empty identity is the same
	/// as none. The identity is not secret and not stored: choose a stable one, such as the
	/// node's public key.
	pub fn with_identity(self, identity: impl Into<Vec<u8>>) -> Self {
		let identity = identity.into();
		self.map_shared(|shared| shared.identity = identity)
	}

	/// The same encryption (keys, root, identity) over another client of the same backend (the
	/// store sends its writes through a client of their own).
	pub(crate) fn over(&self, inner: Arc<dyn ObjectStore>) -> Self {
		EncryptedStore { inner, shared: Arc::clone(&self.shared) }
	}

	fn map_shared(self, change: impl FnOnce(&mut Shared)) -> Self {
		// With clones of the store alive: the same keys, copied.
		let mut shared = Arc::unwrap_or_clone(self.shared);
		change(&mut shared);
		EncryptedStore { inner: self.inner, shared: Arc::new(shared) }
	}

	/// The store that holds the ciphertext.
	pub fn inner(&self) -> &Arc<dyn ObjectStore> {
		&self.inner
	}

	/// Whether names are encrypted.
	pub fn encrypts_names(&self) -> bool {
		self.shared.names.encrypted()
	}

	/// The stored path of a logical one (as the inner store sees it).
	pub fn stored_path(&self, logical: &Path) -> Result<Path> {
		self.shared.raw_path(logical)
	}

	/// Checks that the objects below the root were written with this store's key (and
	/// identity), and returns how many it checked (0 for an empty store): with encrypted names,
	/// the name of every entry directly below the root must decrypt; in either case, so must
	/// the first (non-empty) object listed.
	///
	/// Worth calling before trusting an empty-looking store: with encrypted names, a wrong key
	/// looks up other names, so its reads answer "not found" and its listings of a namespace
	/// come back empty, as for a new node. Meant for a store whose root (see [`Self::with_root`])
	/// holds nothing else; fails with a [`DecryptError`](super::DecryptError) naming the first
	/// object that does not decrypt.
	pub async fn check_key(&self) -> Result<usize> {
		let root = self.shared.names.root();
		let root = (!root.is_root()).then_some(root);
		let mut checked = 0;
		if self.shared.names.encrypted() {
			let listed = self.inner.list_with_delimiter(root).await?;
			let objects = listed.objects.iter().map(|meta| &meta.location);
			for raw in listed.common_prefixes.iter().chain(objects) {
				self.shared.logical_path(raw)?;
			}
			checked = listed.common_prefixes.len() + listed.objects.len();
		}
		// An empty object is a directory marker left by a tool, never one of ours (those have
		// at least the overhead): the first non-empty one is checked.
		let mut objects = self.inner.list(root).try_filter(|meta| future::ready(meta.size > 0));
		match objects.next().await.transpose()? {
			None => Ok(checked),
			Some(meta) => {
				let logical = self.shared.logical_path(&meta.location)?;
				self.get_plaintext(&logical, GetOptions::default()).await?;
				Ok(checked.max(1))
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
			.field("names", &self.encrypts_names())
			.field("root", self.shared.names.root())
			.field("identity", &String::from_utf8_lossy(&self.shared.identity))
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
		if self.shared.names.encrypted() {
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
