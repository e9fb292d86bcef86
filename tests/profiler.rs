//! The SIGPROF profiler workload (`addrprobe_lab::bench::profiler`) must end when its run
//! ends, whatever the machine's speed. A walk that takes longer than the sampling period
//! (a slow or emulated CPU, a deep stack, a syscall per frame) must not starve the worker it
//! interrupts: without a guard the next signal is already pending when the handler returns,
//! the worker never executes another instruction, never sees the stop flag, and the run
//! never returns. The case runs in a child process killed after a timeout.

mod support;

use std::time::Duration;

use addrprobe::{Backend, Prober};
use addrprobe_lab::bench::profiler::{self, Config, Walker};
use support::{is_child, run_child_env};

/// A period (1 µs) far shorter than one walk: 64 frames with one `rt_sigprocmask` per frame
/// take tens of microseconds on any CPU.
#[test]
fn walks_longer_than_the_period_do_not_stop_the_run() {
    const CASE: &str = "walks_longer_than_the_period_do_not_stop_the_run";
    if is_child(CASE) {
        let prober = Prober::new(Backend::SigprocMask).expect("sigprocmask");
        let cfg = Config {
            walker: Walker::Backend(Backend::SigprocMask),
            hz: 1_000_000,
            threads: 2,
            depth: 64,
            duration: Duration::from_millis(200),
            churn: false,
            keep_samples: 0,
        };
        // What is asserted is that the run returns: how much work and how many samples fit
        // into it depends on the machine (on a loaded emulated CPU the workers may not finish
        // one work unit), so those are printed, not asserted.
        let r = profiler::run(cfg, Some(&prober));
        assert!(r.late_walks <= r.samples, "{r:?}");
        println!(
            "CHILD DONE samples={} late={} units={}",
            r.samples, r.late_walks, r.units
        );
        return;
    }
    let out = run_child_env(CASE, &[], Duration::from_secs(60));
    out.assert_success();
    assert!(out.stdout.contains("CHILD DONE"), "{}", out.stdout);
}
