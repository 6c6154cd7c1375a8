//! The workload's plan: how many updates each channel makes and in what order, from fixed seeds,
//! so that every persister (and `benches/ldk-0.3`, which includes this file) lives the same life.

/// How many of its recorded updates each channel makes: 1 to `updates - 1`, at random, so that
/// channels stop at different points between two full monitors, as on a live node (were they all
/// to stop at one update id, LDK's `maximum_pending_updates` might line up with it).
pub fn counts(channels: usize, updates: usize) -> Vec<usize> {
	let mut rng = fastrand::Rng::with_seed(7);
	(0..channels).map(|_| rng.usize(1..updates.max(2))).collect()
}

/// The order of the updates: bursts of 1–8 consecutive updates of one channel (about one or two
/// payments), channels picked at random, the same for both persisters.
pub fn bursts(counts: &[usize]) -> Vec<(usize, usize)> {
	let mut rng = fastrand::Rng::with_seed(11);
	let mut left = counts.to_vec();
	let mut open: Vec<usize> = (0..counts.len()).filter(|c| left[*c] > 0).collect();
	let mut plan = Vec::new();
	while !open.is_empty() {
		let slot = rng.usize(..open.len());
		let channel = open[slot];
		let burst = rng.usize(1..=8).min(left[channel]);
		plan.push((channel, burst));
		left[channel] -= burst;
		if left[channel] == 0 {
			open.swap_remove(slot);
		}
	}
	plan
}

/// Goes through `plan` in order, handing `update` each update as (channel, index of the update
/// among the channel's recorded ones); checks that every channel made its `counts`.
pub fn replay(plan: &[(usize, usize)], counts: &[usize], mut update: impl FnMut(usize, usize)) {
	let mut next = vec![0; counts.len()];
	for &(channel, burst) in plan {
		for index in next[channel]..next[channel] + burst {
			update(channel, index);
		}
		next[channel] += burst;
	}
	assert_eq!(next, counts, "every planned update went through");
}
