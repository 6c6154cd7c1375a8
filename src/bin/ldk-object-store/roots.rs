//! Whether a location holds a node's data and, if it does not, which folders below it do: found
//! level by level with one delimiter listing per folder, never by listing every object below the
//! location (on a parent folder such as a source checkout, that walked all of its build output).
//!
//! A folder is a node root if it directly holds a key that a node writes at its root (`manager`,
//! `network_graph`, `scorer`, `output_sweeper`), a `monitors` or `archived_monitors` folder with an
//! object in it, or a `monitor_updates` folder with a channel's folder in it. Below a location that
//! is not one, the search
//! - goes at most [`MAX_DEPTH`] levels down and lists at most [`MAX_LISTINGS`] folders, so that
//!   its cost does not grow with what the location holds;
//! - does not look inside a node root it found;
//! - does not look inside a folder tagged as a cache: one holding a `CACHEDIR.TAG` file that starts
//!   with the signature of the Cache Directory Tagging Specification
//!   (<https://bford.info/cachedir/>), as Cargo's `target/` does. A cache is deleted and rebuilt at
//!   will, so no node keeps its state there;
//! - does look inside hidden folders: a node's data directory is often one (`~/.ldk`).
//!
//! Its error names the node roots it found and says how far it looked.

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt};
use ldk_object_store::inspect::Inventory;
use ldk_object_store::lease::{LEASE_OBJECT, LOCK_FILE};
use ldk_object_store::{Error, FailureKind, ObjectKvStore};
use lightning::util::persist::{
	ARCHIVED_CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE as ARCHIVED,
	CHANNEL_MANAGER_PERSISTENCE_KEY, CHANNEL_MONITOR_PERSISTENCE_PRIMARY_NAMESPACE as MONITORS,
	CHANNEL_MONITOR_UPDATE_PERSISTENCE_PRIMARY_NAMESPACE as UPDATES, NETWORK_GRAPH_PERSISTENCE_KEY,
	OUTPUT_SWEEPER_PERSISTENCE_KEY, SCORER_PERSISTENCE_KEY,
};
use object_store::path::Path;

use crate::location;
use crate::output::redact;

/// How many levels below the location the search looks for node roots.
const MAX_DEPTH: usize = 4;
/// How many folders the search lists at most.
const MAX_LISTINGS: usize = 1000;
/// How many skipped cache folders a message names.
const SHOWN_CACHES: usize = 5;
/// Folder listings in flight at once.
const CONCURRENCY: usize = 8;

/// The keys a node writes at its root.
const ROOT_KEYS: [&str; 4] = [
	CHANNEL_MANAGER_PERSISTENCE_KEY,
	NETWORK_GRAPH_PERSISTENCE_KEY,
	SCORER_PERSISTENCE_KEY,
	OUTPUT_SWEEPER_PERSISTENCE_KEY,
];

/// The tag file of a cache folder, and the bytes it starts with (Cache Directory Tagging
/// Specification).
const CACHE_TAG: &str = "CACHEDIR.TAG";
const CACHE_TAG_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// The inventory of the node whose root is the store's root: the full scan is made only once one
/// listing of the root shows a node's data there. Anywhere else an error, which names the node
/// roots found below the location.
pub(crate) async fn node_inventory(store: &ObjectKvStore, url: &str) -> Result<Inventory, String> {
	let root = store.key_mapper().root().clone();
	let mut search = Search {
		store,
		url: redact(url).trim_end_matches('/').to_owned(),
		root: root.clone(),
		listed: BTreeMap::new(),
		cut: None,
	};
	search.list(std::slice::from_ref(&root)).await?;
	if search.is_node_root(&root).await? {
		let inventory = Inventory::scan(store).await.map_err(|e| e.to_string())?;
		location::require_node_data(&inventory, url)?;
		return Ok(inventory);
	}
	let no_node_data = search.below().await?;
	Err(no_node_data)
}

/// What one delimiter listing shows directly in a folder.
struct Folder {
	/// The objects' names and sizes.
	objects: Vec<(String, u64)>,
	/// The folders in it, as full paths.
	folders: Vec<Path>,
}

impl Folder {
	fn has_object(&self, name: &str) -> bool {
		self.objects.iter().any(|(object, _)| object == name)
	}
}

/// Why the search stopped before it had looked everywhere.
enum Cut {
	Depth,
	Listings,
}

struct Search<'a> {
	/// Every request goes through the store: its retry policy and bound on requests in flight.
	store: &'a ObjectKvStore,
	/// The location, for messages.
	url: String,
	root: Path,
	/// Every folder listed so far.
	listed: BTreeMap<Path, Folder>,
	/// Why the search stopped early, if it did.
	cut: Option<Cut>,
}

impl Search<'_> {
	/// Lists the folders not listed yet, a few at a time, as far as [`MAX_LISTINGS`] allows:
	/// the others stay unlisted, and the search is marked as cut short.
	async fn list(&mut self, folders: &[Path]) -> Result<(), String> {
		let mut new: Vec<&Path> =
			folders.iter().filter(|f| !self.listed.contains_key(*f)).collect();
		let room = MAX_LISTINGS.saturating_sub(self.listed.len());
		if new.len() > room {
			new.truncate(room);
			self.cut = Some(Cut::Listings);
		}
		let this = &*self;
		let listed: Vec<_> = stream::iter(new)
			.map(|folder| async move { (folder.clone(), this.list_one(folder).await) })
			.buffered(CONCURRENCY)
			.collect()
			.await;
		for (folder, listing) in listed {
			self.listed.insert(folder, listing?);
		}
		Ok(())
	}

	async fn list_one(&self, folder: &Path) -> Result<Folder, String> {
		let listing = self
			.store
			.list_folder(folder.clone(), self.shown(folder))
			.await
			.map_err(|e| self.failed(e))?;
		let objects = listing
			.objects
			.into_iter()
			// An object at the folder's own path is a directory marker, never a key.
			.filter(|meta| meta.location != *folder)
			.filter_map(|meta| Some((meta.location.filename()?.to_owned(), meta.size)))
			.collect();
		Ok(Folder { objects, folders: listing.common_prefixes })
	}

	/// Whether `folder` (already listed) is a node root; lists its monitor folders if it must.
	async fn is_node_root(&mut self, folder: &Path) -> Result<bool, String> {
		let Some(listing) = self.listed.get(folder) else { return Ok(false) };
		if ROOT_KEYS.iter().any(|key| listing.has_object(key)) {
			return Ok(true);
		}
		let namespaces: Vec<Path> = listing
			.folders
			.iter()
			.filter(|f| matches!(f.filename(), Some(MONITORS | ARCHIVED | UPDATES)))
			.cloned()
			.collect();
		for namespace in namespaces {
			self.list(std::slice::from_ref(&namespace)).await?;
			let Some(inside) = self.listed.get(&namespace) else { continue };
			let found = if namespace.filename() == Some(UPDATES) {
				!inside.folders.is_empty()
			} else {
				// LDK's keys are never empty and never hold a `.` (leftovers of its
				// `FilesystemStore`, `*.tmp` and `*.trash`, do).
				inside.objects.iter().any(|(name, size)| *size > 0 && !name.contains('.'))
			};
			if found {
				return Ok(true);
			}
		}
		Ok(false)
	}

	/// Whether `folder` (already listed) holds a cache tag with the specification's signature.
	async fn is_cache(&self, folder: &Path) -> Result<bool, String> {
		let signature_len = CACHE_TAG_SIGNATURE.len() as u64;
		let tagged = self.listed.get(folder).is_some_and(|listing| {
			listing.objects.iter().any(|(name, size)| name == CACHE_TAG && *size >= signature_len)
		});
		if !tagged {
			return Ok(false);
		}
		let tag = folder.clone().join(CACHE_TAG);
		let head = match self
			.store
			.read_object_range(tag.clone(), 0..signature_len, self.shown(&tag))
			.await
		{
			Ok(head) => Some(head),
			// Gone since the listing.
			Err(e) if e.failure_kind() == Some(FailureKind::NotFound) => None,
			Err(e) => return Err(self.failed(e)),
		};
		Ok(head.is_some_and(|head| head.as_ref() == CACHE_TAG_SIGNATURE))
	}

	/// Searches the folders below the root (listed, and not a node root) and returns the message
	/// that says what it found; fails only if a request does.
	async fn below(mut self) -> Result<String, String> {
		let root = self.root.clone();
		let (mut roots, mut caches) = (Vec::new(), Vec::new());
		let mut frontier = vec![root.clone()];
		for _ in 0..MAX_DEPTH {
			let mut children: Vec<Path> = frontier
				.iter()
				.filter_map(|folder| self.listed.get(folder))
				.flat_map(|listing| listing.folders.iter().cloned())
				.collect();
			self.list(&children).await?;
			frontier.clear();
			// Folders left unlisted by the bound on listings are not searched.
			children.retain(|child| self.listed.contains_key(child));
			for child in children {
				if self.is_node_root(&child).await? {
					roots.push(self.relative(&child));
				} else if self.is_cache(&child).await? {
					caches.push(self.relative(&child));
				} else {
					frontier.push(child);
				}
			}
			if self.cut.is_some() || frontier.is_empty() {
				break;
			}
		}
		let deeper = |folder: &Path| self.listed.get(folder).is_some_and(|l| !l.folders.is_empty());
		if self.cut.is_none() && frontier.iter().any(deeper) {
			self.cut = Some(Cut::Depth);
		}
		Ok(self.message(&roots, &caches))
	}

	fn message(&self, roots: &[String], caches: &[String]) -> String {
		let url = &self.url;
		let searched = self.listed.len();
		let mut how_far = format!("searched {searched} folder(s), up to {MAX_DEPTH} levels down");
		if !caches.is_empty() {
			let mut shown =
				caches.iter().take(SHOWN_CACHES).cloned().collect::<Vec<_>>().join(", ");
			if caches.len() > SHOWN_CACHES {
				shown.push_str(&format!(" and {} more", caches.len() - SHOWN_CACHES));
			}
			how_far.push_str(&format!(
				", skipping the cache folder(s) {shown} (tagged by a {CACHE_TAG})"
			));
		}
		match self.cut {
			Some(Cut::Depth) => how_far.push_str("; deeper folders were not searched"),
			Some(Cut::Listings) => how_far.push_str(&format!(
				"; stopped at {MAX_LISTINGS} folders, so some were not searched"
			)),
			None => {},
		}
		if !roots.is_empty() {
			let mut roots: Vec<String> = roots.iter().map(|root| format!("{url}/{root}")).collect();
			roots.sort();
			return location::roots_below(url, &roots, &how_far);
		}
		let top = self.listed.get(&self.root);
		let folders = top.map_or(0, |top| top.folders.len());
		let objects = top.map_or(0, |top| {
			top.objects.iter().filter(|(name, _)| name != LEASE_OBJECT && name != LOCK_FILE).count()
		});
		if folders == 0 && objects == 0 {
			return location::nothing_stored(url);
		}
		if folders == 0 {
			return location::no_node_objects(url, objects);
		}
		format!(
			"no node data at {url}, nor in the folders below it ({how_far}); point the command \
			 at a node's root: the folder or prefix that holds its `manager`, `monitors/` and \
			 `monitor_updates/`"
		)
	}

	/// `folder` relative to the root, for messages.
	fn relative(&self, folder: &Path) -> String {
		match folder.prefix_match(&self.root) {
			Some(parts) => parts.map(|part| part.as_ref().to_owned()).collect::<Vec<_>>().join("/"),
			None => folder.to_string(),
		}
	}

	/// A failed request as the command reports it: the error, and what to check.
	fn failed(&self, failed: Error) -> String {
		let check = match failed.failure_kind() {
			Some(
				FailureKind::PermissionDenied
				| FailureKind::Unauthenticated
				| FailureKind::CredentialsExpired,
			) => "check the credentials; ",
			Some(FailureKind::ConnectFailed | FailureKind::TimedOut) => {
				"check the endpoint and that the store is reachable; "
			},
			_ => "",
		};
		format!("{failed} ({check}`ldk-object-store doctor {}` checks the store)", self.url)
	}

	/// `path` as a URL below the location, for errors.
	fn shown(&self, path: &Path) -> String {
		let relative = self.relative(path);
		if relative.is_empty() {
			self.url.clone()
		} else {
			format!("{}/{relative}", self.url)
		}
	}
}

#[cfg(test)]
mod tests {
	use std::sync::{Arc, Mutex};

	use futures::stream::BoxStream;
	use ldk_object_store::StoreBuilder;
	use object_store::memory::InMemory;
	use object_store::{
		CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
		PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
	};

	use super::*;

	/// An in-memory store (listed as a bucket is: a folder exists only with an object below it)
	/// that records every listing it is asked for.
	#[derive(Debug, Default)]
	struct Recorded {
		inner: InMemory,
		delimited: Mutex<Vec<String>>,
		recursive: Mutex<Vec<String>>,
	}

	impl std::fmt::Display for Recorded {
		fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
			write!(f, "Recorded({})", self.inner)
		}
	}

	#[async_trait::async_trait]
	impl ObjectStore for Recorded {
		async fn put_opts(
			&self, location: &Path, payload: PutPayload, opts: PutOptions,
		) -> Result<PutResult> {
			self.inner.put_opts(location, payload, opts).await
		}
		async fn put_multipart_opts(
			&self, location: &Path, opts: PutMultipartOptions,
		) -> Result<Box<dyn MultipartUpload>> {
			self.inner.put_multipart_opts(location, opts).await
		}
		async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
			self.inner.get_opts(location, options).await
		}
		fn delete_stream(
			&self, locations: BoxStream<'static, Result<Path>>,
		) -> BoxStream<'static, Result<Path>> {
			self.inner.delete_stream(locations)
		}
		fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
			self.recursive.lock().unwrap().push(prefix.map(Path::to_string).unwrap_or_default());
			self.inner.list(prefix)
		}
		async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
			self.delimited.lock().unwrap().push(prefix.map(Path::to_string).unwrap_or_default());
			self.inner.list_with_delimiter(prefix).await
		}
		async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
			self.inner.copy_opts(from, to, options).await
		}
	}

	async fn bucket(objects: &[(&str, &[u8])]) -> Arc<Recorded> {
		let bucket = Arc::new(Recorded::default());
		for (path, bytes) in objects {
			let payload = PutPayload::from(bytes.to_vec());
			bucket.put_opts(&Path::from(*path), payload, PutOptions::default()).await.unwrap();
		}
		bucket.delimited.lock().unwrap().clear();
		bucket
	}

	fn store_at(bucket: &Arc<Recorded>, prefix: &str) -> ObjectKvStore {
		let backend: Arc<dyn ObjectStore> = bucket.clone();
		let builder = StoreBuilder::from_store(backend).with_prefix(prefix);
		builder.without_writer_lease().build().unwrap()
	}

	/// A parent prefix in a bucket: the roots below are found with delimiter listings only, none
	/// inside a found root, a cache or past the depth bound; a node's own prefix gets the one
	/// full listing of its scan.
	#[tokio::test]
	async fn a_bucket_is_searched_with_delimiter_listings_only() {
		let monitor = format!("{}_0", "ab".repeat(32));
		let bucket = bucket(&[
			("p/notes", b"not a node"),
			("p/node-a/manager", b"m"),
			("p/node-a/old/unrelated", b"x"),
			("p/team/node-b/monitor_updates/m1/3", b"u"),
			("p/team/node-b/old/unrelated", b"x"),
			("p/builds/CACHEDIR.TAG", b"Signature: 8a477f597d28d172789f06886806bc55\n"),
			("p/builds/x/y/z", b"x"),
			("p/deep/1/2/3/4/manager", b"m"),
			("p/odd/monitors/.keep", b"x"),
			(&format!("p/odd/archived_monitors/{monitor}"), b""),
		])
		.await;
		let message = match node_inventory(&store_at(&bucket, "p"), "memory:///p").await {
			Err(message) => message,
			Ok(inventory) => panic!("a parent read as a node: {inventory:?}"),
		};
		assert!(
			message.starts_with(
				"no node data at memory:///p, but 2 node root(s) below it (searched 13 folder(s), \
				 up to 4 levels down, skipping the cache folder(s) builds (tagged by a \
				 CACHEDIR.TAG); deeper folders were not searched)"
			),
			"{message}"
		);
		assert!(
			message.ends_with("\n  memory:///p/node-a\n  memory:///p/team/node-b"),
			"{message}"
		);
		assert_eq!(*bucket.recursive.lock().unwrap(), Vec::<String>::new());
		let mut listed = bucket.delimited.lock().unwrap().clone();
		listed.sort();
		assert_eq!(
			listed,
			[
				"p",
				"p/builds",
				"p/deep",
				"p/deep/1",
				"p/deep/1/2",
				"p/deep/1/2/3",
				"p/node-a",
				"p/odd",
				"p/odd/archived_monitors",
				"p/odd/monitors",
				"p/team",
				"p/team/node-b",
				"p/team/node-b/monitor_updates",
			]
		);

		bucket.delimited.lock().unwrap().clear();
		let store = store_at(&bucket, "p/team/node-b");
		let inventory = node_inventory(&store, "memory:///p/team/node-b").await.unwrap();
		assert!(inventory.holds_node_data);
		assert_eq!(*bucket.recursive.lock().unwrap(), ["p/team/node-b"]);
	}
}
