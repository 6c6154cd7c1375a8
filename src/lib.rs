//! Keep the state of an [LDK](https://lightningdevkit.org) Lightning node in object storage: Amazon
//! S3, Google Cloud Storage, Azure Blob Storage, any S3-compatible server (MinIO, LocalStack,
//! SeaweedFS), a local directory, or memory, through the [`object_store`] crate.
//!
//! [`ObjectKvStore`] implements LDK's [`KVStore`] (async), [`KVStoreSync`] and
//! [`MigratableKVStore`], so it can be handed to everything in LDK and ldk-node that persists:
//! the `ChannelManager`, the `ChainMonitor`'s persister, the background processor, the output
//! sweeper, the network graph and the scorer.
//!
//! ```
//! use lightning::util::persist::KVStoreSync;
//! use ldk_object_store::StoreBuilder;
//!
//! // `s3://bucket/node-1`, `gs://…`, `az://…` and `file:///…` work the same way.
//! let store = StoreBuilder::from_url("memory:///node-1").build()?;
//! KVStoreSync::write(&store, "monitors", "", "deadbeef_0", vec![1, 2, 3])?;
//! assert_eq!(KVStoreSync::read(&store, "monitors", "", "deadbeef_0")?, vec![1, 2, 3]);
//! assert_eq!(KVStoreSync::list(&store, "monitors", "")?, vec!["deadbeef_0".to_string()]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`MonitorPersister`] persists `ChannelMonitor`s in LDK's differential format, byte for byte
//! what LDK's `MonitorUpdatingPersister` writes, with concurrent (optionally asynchronous) writes
//! and a parallel, read-only startup load; see [`persister`].
//!
//! # Object layout
//!
//! Every key is one object. Empty namespaces are left out of the path, exactly as LDK's
//! `FilesystemStore` lays out its directory, so a copy of such a directory is readable as is. For a
//! node at `s3://my-bucket/node-1`:
//!
//! ```text
//! s3://my-bucket/node-1/manager                                    ("", "", "manager")
//! s3://my-bucket/node-1/network_graph                              ("", "", "network_graph")
//! s3://my-bucket/node-1/scorer                                     ("", "", "scorer")
//! s3://my-bucket/node-1/output_sweeper                             ("", "", "output_sweeper")
//! s3://my-bucket/node-1/monitors/<funding txid>_<vout>             ("monitors", "", <monitor>)
//! s3://my-bucket/node-1/monitor_updates/<monitor>/<update id>      ("monitor_updates", <monitor>, "17")
//! s3://my-bucket/node-1/archived_monitors/<monitor>                ("archived_monitors", "", <monitor>)
//! ```
//!
//! Names use LDK's alphabet `[A-Za-z0-9_-]`, at most 120 characters each, so they need no escaping.
//! Anything else below the root prefix is not a key of this store: `list` and `list_all_keys`
//! fail on it with an error that names the object rather than skip it. (The one exception is the
//! writer lease object `.ldk-object-store-lease`, see [`lease`].)
//!
//! # Guarantees
//!
//! - **Order per key as called.** Each `read`, `write` and `remove` takes its place in its key's
//!   queue inside the synchronous call and runs only after the calls before it on that key have
//!   finished, however the returned futures are awaited (or not). A stale write is never sent after
//!   a newer one, and this store has at most one attempt per key outstanding at a time. (An
//!   attempt given up without an answer may still be delivered by the network: its write or
//!   remove ends only once the lease's safety margin has passed since, so the key's next
//!   operation never runs beside it. On `file://` a write or remove is never given up.)
//!   Different keys run concurrently, up to [`StoreBuilder::with_max_in_flight`] requests at once.
//! - **Strict "not found".** Only an object that is really absent yields
//!   [`ErrorKind::NotFound`](lightning::io::ErrorKind::NotFound). Permission errors (including the
//!   403 that S3 answers for a missing key when `s3:ListBucket` is not granted), server errors,
//!   timeouts and connection failures keep kinds of their own, and their messages name the
//!   operation and the key.
//! - **`list` of one namespace only**: the keys directly in it, never deeper namespaces, across
//!   every page of the listing.
//! - **Idempotent `remove`** on every backend. Lazy removes are carried out like eager ones.
//! - **Invalid names** get [`ErrorKind::InvalidInput`](lightning::io::ErrorKind::InvalidInput)
//!   naming the part and the value; nothing is sent to the backend.
//! - **Retries** of transient failures with exponential backoff and jitter ([`RetryPolicy`]).
//! - **Works from any thread.** The store runs its I/O on a small runtime of its own. The sync
//!   trait blocks only the calling thread, so it can be called from plain threads and from inside
//!   multi-thread or current-thread tokio runtimes (as ldk-node does); the async trait's futures
//!   can be awaited on any executor.
//! - **One writer per prefix** ([`lease`]): the store takes a writer lease when it is built and
//!   refuses to start while another instance holds it; an instance that loses it refuses every
//!   write and remove and says so ([`ObjectKvStore::writer_lease`]), and no request of it lands
//!   after a successor took the lease over. [`ObjectKvStore::close`] at shutdown drains the
//!   requests in flight and releases the lease, so the next instance starts at once. On by
//!   default.
//! - **Fencing** ([`StoreBuilder::with_fencing`]; on by default where the lease is an object
//!   lease): conditional writes make the server refuse a write over an object another writer
//!   changed, before it overwrites anything ([`fencing`]).
//! - **Optional encryption at rest** ([`StoreBuilder::with_encryption`]): authenticated
//!   encryption of every object, bound to its key, and optionally of the key names ([`encryption`]).
//! - **Observability** through `tracing`: one span per operation (`ldk_object_store`, with the
//!   operation, namespaces, key, size, outcome, attempts and duration). Object contents and
//!   credentials are never logged.
//!
//! [`KVStore`]: lightning::util::persist::KVStore
//! [`KVStoreSync`]: lightning::util::persist::KVStoreSync
//! [`MigratableKVStore`]: lightning::util::persist::MigratableKVStore

#![deny(rustdoc::broken_intra_doc_links)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations, clippy::clone_on_ref_ptr)]
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
pub mod encryption;
mod error;
pub mod fencing;
#[doc(hidden)]
pub mod inspect;
pub mod keys;
pub mod lease;
mod limit;
mod listing;
mod ordering;
pub mod persister;
pub mod replica;
mod retry;
mod runtime;
mod store;
mod traits;

pub use config::StoreBuilder;
pub use error::{ConfigError, Error, FailureKind, Operation};
pub use persister::{
	LoadMode, LoadedMonitor, MonitorPersister, MonitorUpdateSink, PersistMode, PersisterConfig,
};
pub use retry::RetryPolicy;
pub use store::ObjectKvStore;

/// The README's Rust blocks, compiled and run by `cargo test --doc` (CI runs it), so that every
/// snippet a user copies builds as shown.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
