//! CPU use during a run, from `/proc`: how many cores this process kept busy, and the whole
//! machine (other processes included), so a table can show when the CPU rather than the round
//! trips set the pace.

use std::time::Instant;

/// `/proc` reports CPU time in `USER_HZ` ticks, 100 a second on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Clone, Copy)]
pub struct Sample {
	process: u64,
	machine_busy: u64,
	machine_total: u64,
	at: Instant,
}

/// Cores kept busy between a sample and now: (this process, the whole machine).
#[derive(Debug, Clone, Copy, Default)]
pub struct Use {
	pub process: f64,
	pub machine: f64,
}

impl Use {
	pub fn cell(&self) -> String {
		format!("{:.1} / {:.1}", self.process, self.machine)
	}

	/// Whether the machine's cores were at least 85% busy: then the CPU, not the round trips,
	/// may have set the pace.
	pub fn cpu_bound(&self) -> bool {
		self.machine >= 0.85 * cores() as f64
	}

	pub fn cpu_bound_cell(&self) -> String {
		if self.cpu_bound() {
			"yes".into()
		} else {
			"no".into()
		}
	}
}

fn process_ticks() -> u64 {
	let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
	// After the command name (in parentheses, which may hold spaces) come the fields from the
	// 3rd (`state`) on; utime and stime are the 14th and 15th.
	let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
	let fields: Vec<&str> = rest.split_whitespace().collect();
	let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
	field(14 - 3) + field(15 - 3)
}

fn machine_ticks() -> (u64, u64) {
	let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
	let Some(line) = stat.lines().next() else { return (0, 0) };
	let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
	let total: u64 = ticks.iter().take(8).sum();
	let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
	(total.saturating_sub(idle), total)
}

pub fn sample() -> Sample {
	let (machine_busy, machine_total) = machine_ticks();
	Sample { process: process_ticks(), machine_busy, machine_total, at: Instant::now() }
}

impl Sample {
	pub fn usage(&self) -> Use {
		let now = sample();
		let wall = now.at.duration_since(self.at).as_secs_f64();
		if wall <= 0.0 {
			return Use::default();
		}
		let cores = cores() as f64;
		let total = now.machine_total.saturating_sub(self.machine_total) as f64;
		let busy = now.machine_busy.saturating_sub(self.machine_busy) as f64;
		Use {
			process: now.process.saturating_sub(self.process) as f64 / TICKS_PER_SECOND / wall,
			machine: if total > 0.0 { busy / total * cores } else { 0.0 },
		}
	}
}

/// The cores this process may use.
pub fn cores() -> usize {
	std::thread::available_parallelism().map_or(1, usize::from)
}

/// User + system CPU time of this whole process so far (`getrusage(RUSAGE_SELF)`, to the
/// microsecond).
pub fn process_time() -> std::time::Duration {
	// SAFETY: `rusage` is plain integers, for which all zeroes is a valid value.
	let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
	// SAFETY: `getrusage` writes only into the zeroed struct it is given.
	if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
		return std::time::Duration::ZERO;
	}
	let time = |t: libc::timeval| {
		std::time::Duration::from_secs(t.tv_sec as u64)
			+ std::time::Duration::from_micros(t.tv_usec as u64)
	};
	time(usage.ru_utime) + time(usage.ru_stime)
}
