//! Scaling: probes per second from 1 to `nproc` threads probing at once, with and without a
//! thread that loops `mmap`/`munmap` (mmap-lock contention).
//!
//! Every thread probes 8 bytes of its own resident stack variable in a loop for the run's
//! duration; the total number of `Ok(true)` answers divided by the wall time is the result.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::hint::black_box;
use std::time::{Duration, Instant};

use addrprobe::Prober;

/// Total probes per second over `threads` threads probing with `prober` for `duration`,
/// with an mmap/munmap churn thread if `churn`.
pub fn probes_per_s(prober: &Prober, threads: usize, churn: bool, duration: Duration) -> f64 {
    let stop = AtomicBool::new(false);
    let total = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        if churn {
            s.spawn(|| super::churn(&stop));
        }
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let value = 0x55u64;
                let addr = black_box(&value) as *const u64 as usize;
                let mut n = 0u64;
                // At least one batch per thread, however late the thread starts.
                loop {
                    for _ in 0..64 {
                        n += u64::from(prober.check(addr, 8) == Ok(true));
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                total.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use addrprobe::Backend;

    #[test]
    fn every_thread_gets_answers() {
        let p = Prober::new(Backend::SigprocMask).unwrap();
        assert!(probes_per_s(&p, 2, true, Duration::from_millis(50)) > 0.0);
    }
}
