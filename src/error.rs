//! Every error this crate returns, and the one place where storage failures are classified and
//! turned into the `io::Error`s that LDK sees.
//!
//! The rule that matters most: only an object that is really absent becomes
//! [`io::ErrorKind::NotFound`]. LDK reads "not found" as "start from nothing", so a 403, a 5xx, a
//! timeout or a refused connection must never look like one.

use std::fmt;

use lightning::io;

use crate::keys::NamePart;

/// The store operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
	/// `read`
	Read,
	/// `write`
	Write,
	/// `remove`
	Remove,
	/// `list` of one namespace
	List,
	/// `list_all_keys`
	ListAll,
}

impl fmt::Display for Operation {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		f.write_str(match self {
			Operation::Read => "read",
			Operation::Write => "write",
			Operation::Remove => "remove",
			Operation::List => "list",
			Operation::ListAll => "list_all_keys",
		})
	}
}

/// What kind of storage failure happened, independent of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
	/// The object does not exist.
	NotFound,
	/// The credentials lack a permission (HTTP 403). On S3 this is also the answer for a missing
	/// object when the caller lacks `s3:ListBucket`, which is why it never counts as absent.
	PermissionDenied,
	/// The credentials were missing, wrong or expired (HTTP 401).
	Unauthenticated,
	/// A create-only write found an object already there.
	AlreadyExists,
	/// A conditional request's precondition failed (HTTP 412).
	Precondition,
	/// Another writer changed the object since this store last saw it; nothing was overwritten
	/// (see [`crate::fencing`]).
	Fenced,
	/// The request timed out.
	TimedOut,
	/// No connection could be made.
	ConnectFailed,
	/// The backend cannot do what was asked.
	Unsupported,
	/// The object's encryption does not check out: it was altered, truncated, moved from another
	/// key, or written with another key (see [`crate::encryption`]). A retry reads the same bytes.
	Corrupt,
	/// The server refused the request with a 4xx status that says nothing about the object (a
	/// missing bucket, a malformed request), or the local file system did (a path that runs
	/// through a file, a full disk); repeating it will not help.
	Rejected,
	/// The request's credentials expired (S3's `ExpiredToken`, `TokenRefreshRequired`,
	/// `RequestExpired`); the backend's credential provider renews them, so a retry may succeed.
	CredentialsExpired,
	/// Anything else the backend reported: server errors, throttling, dropped connections, and
	/// the 4xx answers that S3 documents as retryable (`ConditionalRequestConflict`, …).
	Backend,
	/// This instance no longer holds the writer lease on the prefix: the write or remove was
	/// refused before any request was sent (see [`crate::lease`]). Never retried.
	LeaseLost,
}

impl FailureKind {
	/// Classifies a backend error.
	pub fn of(err: &object_store::Error) -> Self {
		use object_store::Error as E;
		if let E::Generic { source, .. } = err {
			if source.downcast_ref::<crate::lease::LeaseLostError>().is_some() {
				return FailureKind::LeaseLost;
			}
		}
		if let E::Precondition { source, .. } = err {
			if source.downcast_ref::<crate::fencing::FencedError>().is_some() {
				return FailureKind::Fenced;
			}
		}
		// S3 names some 4xx answers retryable by their error code, whatever object_store made of
		// the status (409 becomes `AlreadyExists`, 403 `PermissionDenied`): read the code first.
		// None of them is ever a 404, so "not found" stays exactly as strict.
		if let Some(kind) = error_code(err).and_then(kind_of_code) {
			return kind;
		}
		match err {
			// A missing bucket or container is a configuration error, not an absent object: read
			// as "absent", a typo in a bucket name would look like an empty node to LDK.
			E::NotFound { .. } if missing_container(err) => FailureKind::Rejected,
			E::NotFound { .. } => FailureKind::NotFound,
			E::PermissionDenied { .. } => FailureKind::PermissionDenied,
			E::Unauthenticated { .. } => FailureKind::Unauthenticated,
			E::AlreadyExists { .. } => FailureKind::AlreadyExists,
			E::Precondition { .. } => FailureKind::Precondition,
			E::NotSupported { .. } | E::NotImplemented { .. } => FailureKind::Unsupported,
			// Facts about the request that no retry changes.
			E::InvalidPath { .. } | E::NotModified { .. } | E::UnknownConfigurationKey { .. } => {
				FailureKind::Rejected
			},
			_ => transport_kind(err).unwrap_or(FailureKind::Backend),
		}
	}

	/// Whether repeating the same request may succeed: server errors, throttling, timeouts and
	/// dropped connections. Answers that state a fact about the object or the credentials do not
	/// change on a retry.
	pub fn is_transient(self) -> bool {
		matches!(
			self,
			FailureKind::TimedOut
				| FailureKind::ConnectFailed
				| FailureKind::CredentialsExpired
				| FailureKind::Backend
		)
	}

	/// Whether a failure of a write or remove means the request can no longer land: the
	/// backend's answer to it (a refusal that says something about the object, the request or
	/// the credentials), or no connection made at all (nothing was sent), rather than a timeout,
	/// a dropped connection or a server error, which may have left it in flight.
	pub(crate) fn ends_the_request(self) -> bool {
		!matches!(self, FailureKind::TimedOut | FailureKind::Backend | FailureKind::LeaseLost)
	}

	fn io_kind(self) -> io::ErrorKind {
		match self {
			FailureKind::NotFound => io::ErrorKind::NotFound,
			FailureKind::PermissionDenied
			| FailureKind::Unauthenticated
			| FailureKind::CredentialsExpired => io::ErrorKind::PermissionDenied,
			FailureKind::AlreadyExists => io::ErrorKind::AlreadyExists,
			FailureKind::TimedOut => io::ErrorKind::TimedOut,
			FailureKind::Corrupt => io::ErrorKind::InvalidData,
			FailureKind::ConnectFailed => io::ErrorKind::NotConnected,
			FailureKind::Precondition
			| FailureKind::Fenced
			| FailureKind::Unsupported
			| FailureKind::Rejected
			| FailureKind::LeaseLost
			| FailureKind::Backend => io::ErrorKind::Other,
		}
	}
}

impl fmt::Display for FailureKind {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		f.write_str(match self {
			FailureKind::NotFound => "not found",
			FailureKind::PermissionDenied => "permission denied",
			FailureKind::Unauthenticated => "not authenticated",
			FailureKind::AlreadyExists => "already exists",
			FailureKind::Precondition => "precondition failed",
			FailureKind::Fenced => "fenced",
			FailureKind::TimedOut => "timed out",
			FailureKind::ConnectFailed => "connection failed",
			FailureKind::Unsupported => "not supported by the backend",
			FailureKind::Rejected => "rejected",
			FailureKind::Corrupt => "fails to decrypt",
			FailureKind::CredentialsExpired => "credentials expired",
			FailureKind::Backend => "backend error",
			FailureKind::LeaseLost => "writer lease lost",
		})
	}
}

/// Whether a "not found" is about the bucket or container rather than the object. S3 and GCS
/// answer `NoSuchBucket`, Azure `ContainerNotFound`, in the error body that object_store keeps in
/// the source chain.
fn missing_container(err: &object_store::Error) -> bool {
	let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
	while let Some(e) = current {
		let message = e.to_string();
		// The codes come in XML bodies; batch deletes keep only the messages.
		if [
			"<Code>NoSuchBucket</Code>",
			"<Code>ContainerNotFound</Code>",
			"The specified bucket does not exist",
			"The specified container does not exist",
		]
		.iter()
		.any(|marker| message.contains(marker))
		{
			return true;
		}
		current = e.source();
	}
	false
}

/// The S3 error code (`<Code>…</Code>` in the XML body that object_store keeps in the message)
/// anywhere in the error's source chain.
fn error_code(err: &object_store::Error) -> Option<String> {
	let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
	while let Some(e) = current {
		let message = e.to_string();
		if let Some(code) = message
			.split_once("<Code>")
			.and_then(|(_, rest)| rest.split_once("</Code>"))
			.map(|(code, _)| code.trim().to_owned())
		{
			return Some(code);
		}
		current = e.source();
	}
	None
}

/// The S3 error codes that AWS's SDKs retry although their status is 4xx. Every other code is
/// left to the status.
fn kind_of_code(code: String) -> Option<FailureKind> {
	match code.as_str() {
		"RequestTimeout" => Some(FailureKind::TimedOut),
		"ExpiredToken" | "ExpiredTokenException" | "TokenRefreshRequired" | "RequestExpired" => {
			Some(FailureKind::CredentialsExpired)
		},
		"ConditionalRequestConflict"
		| "OperationAborted"
		| "RequestTimeTooSkewed"
		| "SlowDown"
		| "Throttling"
		| "ThrottlingException"
		| "RequestThrottled"
		| "InternalError"
		| "ServiceUnavailable" => Some(FailureKind::Backend),
		_ => None,
	}
}

/// Finds an HTTP status or a transport failure (timeout, connection) in the source chain of an
/// error that `object_store` left generic. Its listing requests, for one, report a 403 that way.
fn transport_kind(err: &object_store::Error) -> Option<FailureKind> {
	let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
	while let Some(e) = current {
		if e.downcast_ref::<crate::encryption::DecryptError>().is_some() {
			return Some(FailureKind::Corrupt);
		}
		if let Some(kind) = http_status(e).map(kind_of_status) {
			return Some(kind);
		}
		#[cfg(feature = "cloud")]
		if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
			use object_store::client::HttpErrorKind as K;
			return match http.kind() {
				K::Timeout => Some(FailureKind::TimedOut),
				K::Connect => Some(FailureKind::ConnectFailed),
				_ => None,
			};
		}
		if let Some(io) = e.downcast_ref::<std::io::Error>() {
			use std::io::ErrorKind as K;
			return match io.kind() {
				K::TimedOut => Some(FailureKind::TimedOut),
				K::ConnectionRefused | K::NotConnected => Some(FailureKind::ConnectFailed),
				K::PermissionDenied => Some(FailureKind::PermissionDenied),
				// Facts about a local file system that no retry changes.
				K::NotADirectory
				| K::IsADirectory
				| K::ReadOnlyFilesystem
				| K::StorageFull
				| K::FileTooLarge
				| K::InvalidFilename
				| K::AlreadyExists
				| K::InvalidInput => Some(FailureKind::Rejected),
				_ => None,
			};
		}
		current = e.source();
	}
	None
}

/// The status of a failed HTTP response. `object_store` does not export its request error type,
/// so this reads the status from that error's fixed message, "Server returned non-2xx status
/// code: 403 Forbidden: …". Only a refinement: without it the failure stays `Backend`.
/// Whether the backend answered the request, however it failed (an HTTP status or an S3 error
/// code in the error's source chain): an answered request is over on the server and can no
/// longer land later, whereas a timeout or a dropped connection may have left it in flight.
pub(crate) fn is_backend_answer(err: &object_store::Error) -> bool {
	if error_code(err).is_some() {
		return true;
	}
	let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
	while let Some(e) = current {
		if http_status(e).is_some() {
			return true;
		}
		current = e.source();
	}
	false
}

fn http_status(e: &(dyn std::error::Error + 'static)) -> Option<u16> {
	const PREFIX: &str = "Server returned non-2xx status code: ";
	let message = e.to_string();
	let rest = message.strip_prefix(PREFIX)?;
	rest.get(..3)?.parse().ok()
}

fn kind_of_status(status: u16) -> FailureKind {
	match status {
		401 => FailureKind::Unauthenticated,
		403 => FailureKind::PermissionDenied,
		408 => FailureKind::TimedOut,
		412 => FailureKind::Precondition,
		// A 404 that object_store did not turn into `NotFound` is about something else than the
		// object (a missing bucket, say): never report it as the object's absence.
		400..=499 if status != 429 => FailureKind::Rejected,
		_ => FailureKind::Backend,
	}
}

/// The error type of this crate.
///
/// LDK receives it inside a `lightning::io::Error`, whose `Display` prints the inner error's
/// `Debug`; so `Debug` prints the same readable message as `Display`. The original stays
/// reachable with `io_error.get_ref().and_then(|e| e.downcast_ref::<Error>())`.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
	/// A namespace or key broke LDK's naming rules; nothing was sent to the store.
	#[error("invalid {part} {name:?}: it {reason}")]
	InvalidName {
		/// Which part was invalid.
		part: NamePart,
		/// The offending name (cut to a sane length).
		name: String,
		/// Why it is invalid.
		reason: &'static str,
	},
	/// An object below the root prefix that this crate's key mapping cannot have written.
	#[error("object {path} is not an LDK key of this store: {reason}")]
	ForeignObject {
		/// The object's path.
		path: String,
		/// Why it does not map back to a key.
		reason: &'static str,
	},
	/// The backend failed, after any retries.
	#[error("{operation} of {target} failed after {attempts} attempt(s): {kind}: {source}")]
	Storage {
		/// What was being done.
		operation: Operation,
		/// The key (`primary/secondary/key`) or namespace concerned.
		target: String,
		/// The classified failure.
		kind: FailureKind,
		/// How many attempts were made.
		attempts: u32,
		/// The backend's own error.
		#[source]
		source: object_store::Error,
	},
	/// The store was dropped or its runtime stopped while the operation was running.
	#[error("{operation} of {target} was cancelled: the store's runtime has shut down")]
	Cancelled {
		/// What was being done.
		operation: Operation,
		/// The key or namespace concerned.
		target: String,
	},
}

/// Why a store could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
	/// The URL did not parse, or has parts this crate does not accept.
	#[error("invalid store URL: {0}")]
	InvalidUrl(String),
	/// The URL's scheme is not one this crate knows, or its backend was compiled out.
	#[error(
		"unsupported store URL scheme {0:?}: use s3://, gs://, az://, file:// or memory:// \
		 (cloud schemes need the crate's aws, gcp or azure feature)"
	)]
	UnsupportedScheme(String),
	/// A bucket or container name is missing from the URL.
	#[error("the {0}:// URL names no bucket or container")]
	MissingBucket(String),
	/// A backend option that the backend does not know.
	#[error("unknown option {key:?} for {scheme}:// stores")]
	UnknownOption {
		/// The URL scheme.
		scheme: String,
		/// The option's name (its value is never shown: it may be a secret).
		key: String,
	},
	/// The root prefix is not a valid object path.
	#[error("invalid root prefix {prefix:?}: {source}")]
	InvalidPrefix {
		/// The prefix as given.
		prefix: String,
		/// Why it is invalid.
		source: object_store::path::Error,
	},
	/// An environment variable held a value that does not parse.
	#[error("environment variable {var} is invalid: {reason}")]
	InvalidEnv {
		/// The variable's name.
		var: &'static str,
		/// Why its value was refused.
		reason: String,
	},
	/// The stored objects do not decrypt with the configured key (or the check could not run).
	#[error("the encryption key does not match the stored objects: {0}")]
	Encryption(#[source] object_store::Error),
	/// The backend's own builder refused the configuration.
	#[error("the backend refused the configuration: {0}")]
	Backend(#[source] object_store::Error),
	/// Another instance holds the writer lease on this prefix (see [`crate::lease`]).
	#[error(
		"another instance holds the writer lease on this prefix: {holder}, generation \
		 {generation}: {expires}. Refusing to start a second writer; if that instance is dead, \
		 start again later, or break the lease with `ldk-object-store lease URL --break`"
	)]
	LeaseHeld {
		/// Who holds it: instance id, host and process id.
		holder: String,
		/// The lease's generation.
		generation: u64,
		/// Until when, and when a new instance may take it over, in words.
		expires: String,
	},
	/// Another store holds the OS lock of this `file://` store's directory (see
	/// [`crate::lease`]): a store of this process, or another process.
	#[error(
		"{holder} holds the lock of {}: refusing to start a second writer on it. The lock has \
		 no expiry and nothing to break: it is released when that store is closed \
		 (`ObjectKvStore::close`) or dropped, or when its process ends. {}",
		dir.display(),
		if holder.starts_with("a store of this process") {
			"Use that store (clone it), or close it first"
		} else {
			"Stop that process first"
		}
	)]
	DirectoryLocked {
		/// The directory, as the operating system resolves it.
		dir: std::path::PathBuf,
		/// Who holds it, in words.
		holder: String,
	},
	/// A `file://` store's directory does not exist. An unmounted volume looks like this, and
	/// must not be taken for a new, empty node.
	#[error(
		"the store's directory {} does not exist (an unmounted volume looks like this): create \
		 it, or build with StoreBuilder::create_if_missing(true) \
		 (LDK_OBJECT_STORE_CREATE_IF_MISSING=true) for a new node",
		.0.display()
	)]
	MissingDirectory(std::path::PathBuf),
	/// The writer lease could not be taken (the backend cannot, or failed), or a setting needs
	/// what the backend cannot do.
	#[error("{0}")]
	Lease(String),
	/// The replica, or the replica record of a copy, refuses this start or this operation (the
	/// text says why and what to do; see [`crate::replica`]).
	#[error("replica: {0}")]
	Replica(String),
	/// A local directory could not be created, the running mark of a `file://` store with a
	/// replica could not be placed, or the store's runtime could not start.
	#[error("{what}: {source}")]
	Io {
		/// What was being done.
		what: String,
		/// The cause.
		source: std::io::Error,
	},
}

impl fmt::Debug for Error {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		fmt::Display::fmt(self, f)
	}
}

impl Error {
	/// The same failure, said of the replica: its target names the copy that failed.
	pub(crate) fn on_replica(self) -> Self {
		match self {
			Error::Storage { operation, target, kind, attempts, source } => Error::Storage {
				operation,
				target: format!("{target} on the replica"),
				kind,
				attempts,
				source,
			},
			Error::Cancelled { operation, target } => {
				Error::Cancelled { operation, target: format!("{target} on the replica") }
			},
			other => other,
		}
	}

	/// The classified storage failure, if this is one.
	pub fn failure_kind(&self) -> Option<FailureKind> {
		match self {
			Error::Storage { kind, .. } => Some(*kind),
			_ => None,
		}
	}

	fn io_kind(&self) -> io::ErrorKind {
		match self {
			Error::InvalidName { .. } => io::ErrorKind::InvalidInput,
			Error::ForeignObject { .. } => io::ErrorKind::InvalidData,
			Error::Storage { kind, .. } => kind.io_kind(),
			Error::Cancelled { .. } => io::ErrorKind::Other,
		}
	}
}

/// A plain message as an error whose `Debug` is its text, for `io::Error`s made in this crate
/// (LDK shows an `io::Error`'s inner error by `Debug`).
#[derive(thiserror::Error)]
#[error("{0}")]
pub(crate) struct Message(pub(crate) String);

impl fmt::Debug for Message {
	fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
		f.write_str(&self.0)
	}
}

/// An `io::Error` of `kind` with a readable `message`.
pub(crate) fn io_error(kind: io::ErrorKind, message: impl Into<String>) -> io::Error {
	io::Error::new(kind, Message(message.into()))
}

/// The text of an `io::Error` without the wrapper's kind prefix.
pub(crate) fn io_text(err: &io::Error) -> String {
	err.get_ref().map_or_else(|| format!("{:?}", err.kind()), |inner| inner.to_string())
}

impl From<Error> for io::Error {
	fn from(err: Error) -> Self {
		io::Error::new(err.io_kind(), err)
	}
}

#[cfg(test)]
mod tests {
	use super::*;

	fn boxed(msg: &str) -> Box<dyn std::error::Error + Send + Sync> {
		msg.to_string().into()
	}

	/// A request whose connection was never made was never sent: it cannot land later, so its
	/// operation need not wait out the safety margin; a timeout or a server error may have left
	/// it in flight.
	#[test]
	fn only_a_request_never_sent_or_answered_ends() {
		let refused = object_store::Error::Generic {
			store: "S3",
			source: Box::new(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused")),
		};
		assert_eq!(FailureKind::of(&refused), FailureKind::ConnectFailed);
		assert!(FailureKind::ConnectFailed.ends_the_request());
		assert!(FailureKind::Precondition.ends_the_request());
		assert!(!FailureKind::TimedOut.ends_the_request());
		assert!(!FailureKind::Backend.ends_the_request());
		// A server error is an answer: the request is over on the server.
		let answered = object_store::Error::Generic {
			store: "S3",
			source: boxed("Server returned non-2xx status code: 503 Service Unavailable"),
		};
		assert_eq!(FailureKind::of(&answered), FailureKind::Backend);
		assert!(is_backend_answer(&answered));
		let dropped = object_store::Error::Generic { store: "S3", source: boxed("reset") };
		assert!(!is_backend_answer(&dropped) && !is_backend_answer(&refused));
	}

	fn storage(source: object_store::Error) -> io::Error {
		let kind = FailureKind::of(&source);
		Error::Storage {
			operation: Operation::Read,
			target: "p//k".into(),
			kind,
			attempts: 1,
			source,
		}
		.into()
	}

	#[test]
	fn only_absence_is_not_found() {
		let not_found = object_store::Error::NotFound { path: "k".into(), source: boxed("gone") };
		assert_eq!(storage(not_found).kind(), io::ErrorKind::NotFound);

		let denied =
			object_store::Error::PermissionDenied { path: "k".into(), source: boxed("403") };
		assert_eq!(storage(denied).kind(), io::ErrorKind::PermissionDenied);

		let server = object_store::Error::Generic { store: "S3", source: boxed("500") };
		assert_eq!(storage(server).kind(), io::ErrorKind::Other);

		// A NotFound from deep inside a generic failure (a missing directory, a missing bucket) is
		// not the object's absence.
		let nested = object_store::Error::Generic {
			store: "LocalFileSystem",
			source: Box::new(std::io::Error::from(std::io::ErrorKind::NotFound)),
		};
		assert_eq!(storage(nested).kind(), io::ErrorKind::Other);

		let timeout = object_store::Error::Generic {
			store: "S3",
			source: Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)),
		};
		assert_eq!(storage(timeout).kind(), io::ErrorKind::TimedOut);

		let not_a_dir = object_store::Error::Generic {
			store: "LocalFileSystem",
			source: Box::new(std::io::Error::from(std::io::ErrorKind::NotADirectory)),
		};
		assert_eq!(FailureKind::of(&not_a_dir), FailureKind::Rejected);
		assert!(!FailureKind::of(&not_a_dir).is_transient());
	}

	#[test]
	fn messages_name_operation_and_key() {
		let source = object_store::Error::Generic { store: "S3", source: boxed("503 SlowDown") };
		let err = storage(source).to_string();
		assert!(err.contains("read of p//k"), "{err}");
		assert!(err.contains("503 SlowDown"), "{err}");
	}

	#[test]
	fn statuses_in_generic_errors_are_read() {
		#[derive(Debug)]
		struct Status(&'static str);
		impl fmt::Display for Status {
			fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
				f.write_str(self.0)
			}
		}
		impl std::error::Error for Status {}
		let generic =
			|text| object_store::Error::Generic { store: "S3", source: Box::new(Status(text)) };
		let kind = |text| FailureKind::of(&generic(text));
		assert_eq!(
			kind("Server returned non-2xx status code: 403 Forbidden: <Error/>"),
			FailureKind::PermissionDenied
		);
		assert_eq!(
			kind("Server returned non-2xx status code: 404 Not Found: NoSuchBucket"),
			FailureKind::Rejected
		);
		assert_eq!(
			kind("Server returned non-2xx status code: 503 Service Unavailable"),
			FailureKind::Backend
		);
		assert_eq!(
			kind("Server returned non-2xx status code: 429 Too Many Requests"),
			FailureKind::Backend
		);
		assert_eq!(kind("something else: 403"), FailureKind::Backend);
		assert!(!FailureKind::Rejected.is_transient());
	}

	#[test]
	fn a_missing_bucket_is_not_a_missing_object() {
		let body = "Server returned non-2xx status code: 404 Not Found: <Error><Code>NoSuchBucket</Code></Error>";
		let err = object_store::Error::NotFound { path: "k".into(), source: body.into() };
		assert_eq!(FailureKind::of(&err), FailureKind::Rejected);
		let body = "404: <Error><Code>ContainerNotFound</Code></Error>";
		let err = object_store::Error::NotFound { path: "k".into(), source: body.into() };
		assert_eq!(FailureKind::of(&err), FailureKind::Rejected);
		let err = object_store::Error::NotFound {
			path: "k".into(),
			source: "<Code>NoSuchKey</Code>".into(),
		};
		assert_eq!(FailureKind::of(&err), FailureKind::NotFound);
	}

	#[test]
	fn retryable_s3_codes_are_transient_whatever_the_status() {
		let body = |status: &str, code: &str| {
			format!(
				"Server returned non-2xx status code: {status}: <?xml version=\"1.0\" \
				 encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>m</Message></Error>"
			)
		};
		let generic =
			|text: String| object_store::Error::Generic { store: "S3", source: text.into() };
		let timeout = FailureKind::of(&generic(body("400 Bad Request", "RequestTimeout")));
		assert_eq!(timeout, FailureKind::TimedOut);
		// object_store turns 409 into AlreadyExists and 403 into PermissionDenied.
		let conflict = object_store::Error::AlreadyExists {
			path: "k".into(),
			source: body("409 Conflict", "ConditionalRequestConflict").into(),
		};
		assert_eq!(FailureKind::of(&conflict), FailureKind::Backend);
		let expired = object_store::Error::PermissionDenied {
			path: "k".into(),
			source: body("403 Forbidden", "ExpiredToken").into(),
		};
		assert_eq!(FailureKind::of(&expired), FailureKind::CredentialsExpired);
		let expired = generic(body("400 Bad Request", "ExpiredToken"));
		assert_eq!(FailureKind::of(&expired), FailureKind::CredentialsExpired);
		for kind in [timeout, FailureKind::of(&conflict), FailureKind::of(&expired)] {
			assert!(kind.is_transient(), "{kind}");
		}
		// Other codes keep their status's meaning.
		let denied = object_store::Error::PermissionDenied {
			path: "k".into(),
			source: body("403 Forbidden", "AccessDenied").into(),
		};
		assert_eq!(FailureKind::of(&denied), FailureKind::PermissionDenied);
		let exists = object_store::Error::AlreadyExists {
			path: "k".into(),
			source: body("412 Precondition Failed", "PreconditionFailed").into(),
		};
		assert_eq!(FailureKind::of(&exists), FailureKind::AlreadyExists);
		let missing = object_store::Error::NotFound {
			path: "k".into(),
			source: body("404 Not Found", "NoSuchKey").into(),
		};
		assert_eq!(FailureKind::of(&missing), FailureKind::NotFound);
	}

	#[test]
	fn request_faults_are_permanent() {
		let invalid = object_store::Error::InvalidPath {
			source: object_store::path::Error::EmptySegment { path: "a//b".into() },
		};
		assert_eq!(FailureKind::of(&invalid), FailureKind::Rejected);
		let unchanged = object_store::Error::NotModified { path: "k".into(), source: "304".into() };
		assert!(!FailureKind::of(&unchanged).is_transient());
	}

	#[test]
	fn transient_failures() {
		assert!(FailureKind::Backend.is_transient());
		assert!(FailureKind::TimedOut.is_transient());
		assert!(!FailureKind::NotFound.is_transient());
		assert!(!FailureKind::PermissionDenied.is_transient());
		assert!(!FailureKind::Precondition.is_transient());
	}
}
