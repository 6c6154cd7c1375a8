//! Latency distributions and the random numbers they draw from, for the models and for the tests
//! that delay requests (`tests/common/wrappers.rs`).
//!
//! No dependency beyond the standard library: a SplitMix64 generator (Steele, Lea and Flood,
//! "Fast splittable pseudorandom number generators", OOPSLA 2014) shared between threads through
//! one atomic counter, and the Box–Muller transform for normal variates.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The standard normal distribution's 99th percentile, Φ⁻¹(0.99).
pub const Z99: f64 = 2.326_347_874_040_841;

/// A pseudorandom generator that many threads may draw from at once (SplitMix64 over an atomic
/// counter). Deterministic from its seed, except for the interleaving of the threads that draw.
#[derive(Debug)]
pub struct Rng(AtomicU64);

impl Rng {
	/// A generator whose sequence is fixed by `seed`.
	pub fn new(seed: u64) -> Rng {
		Rng(AtomicU64::new(seed))
	}

	/// A generator seeded from the process's hash randomness (different in every process).
	pub fn from_entropy() -> Rng {
		let mut hasher = RandomState::new().build_hasher();
		hasher.write_u64(0x5eed);
		Rng::new(hasher.finish())
	}

	/// The next 64 random bits.
	pub fn u64(&self) -> u64 {
		const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
		let mut z = self.0.fetch_add(GAMMA, Ordering::Relaxed).wrapping_add(GAMMA);
		z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
		z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
		z ^ (z >> 31)
	}

	/// Uniform in [0, 1), with 53 random bits.
	pub fn f64(&self) -> f64 {
		(self.u64() >> 11) as f64 / (1u64 << 53) as f64
	}

	/// Uniform in [0, `max`] (`max` included).
	pub fn up_to(&self, max: u64) -> u64 {
		match max.checked_add(1) {
			// Multiply-shift: the bias is below 2⁻⁶⁴ × max, nothing a test can see.
			Some(span) => ((self.u64() as u128 * span as u128) >> 64) as u64,
			None => self.u64(),
		}
	}

	/// A standard normal variate (Box–Muller).
	pub fn normal(&self) -> f64 {
		// 1 - f64() is in (0, 1], so the logarithm is finite.
		let u1 = 1.0 - self.f64();
		let u2 = self.f64();
		(-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
	}
}

/// One generator for the whole process, seeded from [`Rng::from_entropy`].
pub fn rng() -> &'static Rng {
	static RNG: OnceLock<Rng> = OnceLock::new();
	RNG.get_or_init(Rng::from_entropy)
}

/// A log-normal distribution of request latency given by its median and its 99th percentile:
/// ln(latency) is normal with mean ln(median) and standard deviation ln(p99 / median) / Φ⁻¹(0.99).
/// Its mean is median × exp(σ² / 2), above the median: the tail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogNormal {
	/// Half the draws are shorter.
	pub median: Duration,
	/// 99% of the draws are shorter.
	pub p99: Duration,
}

impl LogNormal {
	/// σ of ln(latency); zero if the p99 is not above the median (every draw is then the median).
	pub fn sigma(&self) -> f64 {
		let (m, q) = (self.median.as_secs_f64(), self.p99.as_secs_f64());
		if m > 0.0 && q > m {
			(q / m).ln() / Z99
		} else {
			0.0
		}
	}

	/// The distribution's mean.
	pub fn mean(&self) -> Duration {
		let s = self.sigma();
		self.median.mul_f64((s * s / 2.0).exp())
	}

	/// The `q` quantile (0 < q < 1) from a standard normal quantile `z` = Φ⁻¹(q).
	pub fn quantile_at_z(&self, z: f64) -> Duration {
		self.median.mul_f64((self.sigma() * z).exp())
	}

	/// One draw.
	pub fn sample(&self, rng: &Rng) -> Duration {
		let factor = (self.sigma() * rng.normal()).exp();
		// A draw past an hour is a broken parameter, not a latency: cap it.
		Duration::from_secs_f64((self.median.as_secs_f64() * factor).min(3600.0))
	}
}

/// A delay before each request: the latency models of the tests that inject latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delay {
	/// The same delay every time.
	Fixed(Duration),
	/// Uniform between zero and `max` (both included, to the nanosecond), so that requests
	/// overtake each other.
	Uniform {
		/// The longest delay.
		max: Duration,
	},
	/// A log-normal latency with a tail.
	LogNormal(LogNormal),
}

impl Delay {
	/// One draw.
	pub fn sample(&self, rng: &Rng) -> Duration {
		match self {
			Delay::Fixed(delay) => *delay,
			Delay::Uniform { max } => {
				Duration::from_nanos(rng.up_to(u64::try_from(max.as_nanos()).unwrap_or(u64::MAX)))
			},
			Delay::LogNormal(distribution) => distribution.sample(rng),
		}
	}

	/// Sleeps one draw on tokio's timer (so paused time applies), drawing from [`rng`]. A draw
	/// of zero still goes through tokio's timer, as `tokio::time::sleep(Duration::ZERO)` does.
	pub async fn tokio_sleep(&self) {
		tokio::time::sleep(self.sample(rng())).await;
	}
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn log_normal_quantiles_match_the_parameters() {
		let d = LogNormal { median: Duration::from_millis(30), p99: Duration::from_millis(200) };
		let rng = Rng::new(7);
		let mut draws: Vec<Duration> = (0..200_000).map(|_| d.sample(&rng)).collect();
		draws.sort();
		let median = draws[draws.len() / 2].as_secs_f64();
		let p99 = draws[draws.len() * 99 / 100].as_secs_f64();
		assert!((median / 0.030 - 1.0).abs() < 0.02, "median {median}");
		assert!((p99 / 0.200 - 1.0).abs() < 0.03, "p99 {p99}");
		assert!((d.quantile_at_z(Z99).as_secs_f64() - 0.2).abs() < 1e-9);
	}

	#[test]
	fn uniform_delays_stay_in_range_and_spread() {
		let rng = Rng::new(1);
		let max = Duration::from_millis(5);
		let draws: Vec<Duration> =
			(0..10_000).map(|_| Delay::Uniform { max }.sample(&rng)).collect();
		assert!(draws.iter().all(|d| *d <= max));
		let mean = draws.iter().sum::<Duration>() / draws.len() as u32;
		assert!((mean.as_secs_f64() / 0.0025 - 1.0).abs() < 0.05, "{mean:?}");
		assert_eq!(Delay::Fixed(max).sample(&rng), max);
	}
}
