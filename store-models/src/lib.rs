//! Models of an object store, shared by ldk-object-store's benchmarks (`benches/persistence`,
//! `benches/ldk-0.3`) and by its tests that inject latency. Each is an `ObjectStore` around
//! another (in practice `object_store`'s `InMemory`):
//!
//! - [`LatencyStore`]: a fixed round trip per request, and request counting ([`Counters`],
//!   [`Counts`]).
//! - [`S3LikeStore`]: S3 under load: request rates per partition with `503 SlowDown` past them,
//!   a log-normal latency with a tail, a bound on connections; [`calibrate()`] checks it.
//! - [`Delay`]: latency distributions for the tests' own request hooks.
//!
//! Each module's docs state what its model guarantees and what it leaves out.

#![warn(missing_docs)]

pub mod calibrate;
pub mod dist;
pub mod latency;
pub mod s3;

pub use calibrate::{calibrate, Calibration, CalibrationLoad, Check, TOLERANCE};
pub use dist::{rng, Delay, LogNormal, Rng};
pub use latency::{Control, Counters, Counts, LatencyStore};
pub use s3::{slow_down, Clock, Kind, Partitioning, S3Counts, S3LikeStore, S3Model, S3Params};
