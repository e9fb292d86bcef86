//! The framehop profiler example, built WITHOUT frame pointers, unwinds every sample taken in
//! the leaf of a 64-deep recursion completely.
//!
//! `tests/framehop-nofp/` is a standalone cargo project (its own workspace and `Cargo.lock`)
//! whose binary is `examples/framehop_profile.rs`. This test builds it with the cargo that runs
//! the tests, offline, with `RUSTFLAGS="-C force-frame-pointers=no"` (which overrides the
//! repository's `.cargo/config.toml`) into its own target directory, runs it for 300 leaf
//! samples (about 1.2 CPU seconds at 250 Hz) and asserts on its `SUMMARY` line:
//!
//! - at least 99 % of the leaf samples hold all 64 recursion frames (framehop through
//!   `.eh_frame`, memory read through `StackReader`);
//! - no sample latched a backend error;
//! - the crate's own frame-pointer unwinder, run on the same samples, got far fewer than 64
//!   frames: the build really has no frame pointers, so the first check is not a frame-pointer
//!   walk in disguise;
//! - every one of those short frame-pointer walks of a leaf sample is reported as probably
//!   truncated (`Walk::ending`), not as a clean end of the stack.
//!
//! Requires the `framehop` feature (`cargo test --features framehop --test framehop_profiler`),
//! so that a plain `cargo test` does not build a second copy of the crate.

#![cfg(target_arch = "x86_64")]

mod support;

use std::time::Duration;

/// Building the project (release, 8 small crates) takes under a minute on a busy 2-core
/// machine; the run a few seconds (it stops itself after 60 CPU seconds in any case).
const TIMEOUT: Duration = Duration::from_secs(900);

fn run_profiler() -> String {
    let env = [
        ("RUSTFLAGS", Some("-C force-frame-pointers=no")),
        ("CARGO_ENCODED_RUSTFLAGS", None),
        ("FRAMEHOP_PROFILE_SAMPLES", Some("300")),
        ("FRAMEHOP_PROFILE_QUIET", Some("1")),
    ];
    support::cargo_fixture("framehop-nofp", "run", &env, TIMEOUT)
        .0
        .stdout
}

#[test]
fn framehop_unwinds_every_leaf_sample_without_frame_pointers() {
    let stdout = run_profiler();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("SUMMARY "))
        .unwrap_or_else(|| panic!("no SUMMARY line:\n{stdout}"));
    let field = |name: &str| -> usize {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    let (leaf, complete, errors, fp_max, fp_truncated) = (
        field("leaf_samples"),
        field("complete"),
        field("errors"),
        field("fp_max_depth"),
        field("fp_truncated"),
    );
    println!("{line}");
    assert!(leaf >= 100, "too few leaf samples to judge: {line}");
    assert!(
        complete * 100 >= leaf * 99,
        "fewer than 99 % of the leaf samples hold all 64 frames: {line}"
    );
    assert_eq!(errors, 0, "the reader latched backend errors: {line}");
    assert!(
        fp_max < 64,
        "the frame-pointer walk reached {fp_max} frames: the build has frame pointers, so \
         this test proves nothing about .eh_frame unwinding ({line})"
    );
    assert_eq!(
        fp_truncated, leaf,
        "every leaf sample's frame-pointer walk ends far below the worker's entry frames and \
         must be reported as probably truncated ({line})"
    );
}
