//! The crate inside a Rust `dylib` (`-C prefer-dynamic`): `tests/dylib-fixture/` re-exports
//! addrprobe from a `dylib` and uses it from an executable, std linked dynamically too. The
//! SignalGuard handler and its statics live in the dylib, but the executable's `check`,
//! `read` and `GuardedLoads` are inlined into the executable, so their table entries are in
//! the executable's own table. Each case runs the executable in a fresh process:
//!
//! - `exe`: the executable's own probes of NULL and of address 8 answer "no" (before the
//!   handler found the executable's table, each killed the process with SIGSEGV);
//! - `dylib`: the dylib's own probes;
//! - `both`: the executable's, the dylib's and the executable's again;
//! - `stray`: after probing, a NULL load of the executable's that is no probe still kills it
//!   with SIGSEGV (chained to the default action).

// The fixture is built with cargo when the test runs, or carried prebuilt into an x86_64
// kernel-matrix guest (`support::cargo_fixture`); the arm64 guests get no fixtures.
#![cfg(target_arch = "x86_64")]

mod support;

use std::process::Command;
use std::time::Duration;

/// Building the fixture (release, two small crates and a dylib) takes well under a minute.
const TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn probes_from_the_executable_and_the_dylib() {
    let (_, dir) = support::cargo_fixture(
        "dylib-fixture",
        "build",
        &[("RUSTFLAGS", Some("-C prefer-dynamic"))],
        TIMEOUT,
    );
    // std's shared library: the toolchain's, or the copy a prebuilt fixture carries in `rustlib`
    let libdir = if support::prebuilt_fixtures().is_some() {
        dir.join("rustlib").display().to_string()
    } else {
        let out = Command::new("rustc")
            .args(["--print", "target-libdir"])
            .output()
            .expect("rustc --print target-libdir");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let path = format!("{}:{libdir}", dir.join("deps").display());
    let host = dir.join("dylib-host");
    for case in ["exe", "dylib", "both", "stray"] {
        let mut cmd = Command::new(&host);
        cmd.arg(case).env("LD_LIBRARY_PATH", &path);
        let out = support::run_command(cmd, case, Duration::from_secs(30));
        println!("{case}: {:?}\n{}{}", out.status, out.stdout, out.stderr);
        if case == "stray" {
            assert!(
                out.stdout.contains("RESULT stray probed"),
                "{case}: {}",
                out.stdout
            );
            assert_eq!(
                out.signal(),
                Some(libc::SIGSEGV),
                "{case}: {:?}",
                out.status
            );
        } else {
            out.assert_success();
            assert!(
                out.stdout.contains(&format!("RESULT {case} ok")),
                "{case}: {}",
                out.stdout
            );
        }
    }
}
