//! Shared test code: the backends, the conformance suite, and the wrappers for faults, latency and
//! counting. Each test binary uses a different part of it.
#![allow(dead_code)]

pub mod backends;
pub mod conformance;
pub mod crash_support;
pub mod dual_flow;
pub mod failing_flow;
pub mod ldk_flow;
pub mod log_capture;
pub mod network;
pub mod strace;
pub mod watch;
pub mod wrappers;
