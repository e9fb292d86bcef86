//! Quick timing for the CLI's cost tables: the median of several repetitions of a tight loop.
//!
//! Under QEMU with `-icount shift=0` the guest clock advances one nanosecond per guest
//! instruction, so the same code reports instructions per call there.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Median nanoseconds per call of `f`: `reps` repetitions, each of as many calls as fit in
/// `budget` (at least 16, at most `max_iters`).
pub fn ns_per_call(reps: usize, budget: Duration, max_iters: u64, mut f: impl FnMut()) -> f64 {
    // Calibrate: how many calls fit in the budget.
    let start = Instant::now();
    let mut iters = 0u64;
    while iters < max_iters && (iters < 16 || start.elapsed() < budget) {
        f();
        iters += 1;
    }
    let mut samples: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    black_box(samples[samples.len() / 2])
}
