//! Two copies of the crate in one process (as when an application links two major
//! versions): each installs its own SignalGuard handler, and the one installed second must
//! chain to the first, in either order.
//!
//! `tests/two-copies/` is a standalone cargo project (its own workspace and `Cargo.lock`) whose
//! binary links this crate as `addrprobe` 0.1.x and the same source as `addrprobe` 0.99.0
//! (`tests/two-copies/other/`). This test builds and runs it with the cargo that runs the
//! tests, offline and with its committed lock file, into its own target directory, and asserts
//! on the `RESULT` line the binary prints for each case (each case runs in a child process of
//! that binary, killed after 20 s):
//!
//! - `<order>-std-probes`: both copies' SignalGuard probers (and every other backend of both)
//!   answer correctly on valid, PROT_NONE, unmapped, beyond-EOF (SIGBUS) and NULL addresses,
//!   from two threads, with `check`, `read` and their guarded loads (`load_u8`/`u32`/`u64`).
//!   Both copies' inline loads are in the executable's one exception table (one section name),
//!   so the handler the kernel calls first resolves either copy's faults, and both chain
//!   every other fault.
//! - `<order>-std-fds`: the descriptor-holding backends of both copies, across a `fork` and
//!   after the first copy's probers are dropped, keep answering correctly.
//! - `<order>-<previous>-{null,kill,sigbus}`: after both are installed and have probed, a stray
//!   NULL load, a `kill(getpid(), SIGSEGV)` and a stray load beyond EOF end as in the baseline
//!   `none-<previous>-*` without the crate: killed by SIGSEGV / SIGSEGV / SIGBUS, except that
//!   with Rust std's own handler as the previous one (`std`) a sent SIGSEGV is survived once,
//!   with the crate as without it (std resets the disposition and returns; the crate adopts
//!   that disposition, see its module docs).

// SignalGuard (and the project's stray loads) exist on x86_64 only.
#![cfg(target_arch = "x86_64")]

mod support;

use std::time::Duration;

/// Building the project (release, 8 small crates) on a busy 2-core machine takes about a
/// minute; running it a second.
const TIMEOUT: Duration = Duration::from_secs(900);

fn run_two_copies() -> (String, String) {
    let (r, _) = support::cargo_fixture("two-copies", "run", &[], TIMEOUT);
    (r.stdout, r.stderr)
}

#[test]
fn two_copies_chain_their_signal_handlers() {
    let (stdout, _) = run_two_copies();
    print!("{stdout}");
    let mut failures = Vec::new();
    let sigsegv = format!("signal:{}", libc::SIGSEGV);
    let sigbus = format!("signal:{}", libc::SIGBUS);
    // The baselines: what a stray fault does without the crate.
    let survived = "exit:0".to_owned();
    for (case, want) in [
        ("none-std-null", &sigsegv),
        ("none-std-kill", &survived),
        ("none-std-sigbus", &sigbus),
        ("none-dfl-null", &sigsegv),
        ("none-dfl-kill", &sigsegv),
        ("none-dfl-sigbus", &sigbus),
    ] {
        let (status, _, _) = support::fixture_result(&stdout, case);
        if status != want {
            failures.push(format!("baseline {case}: {status}, expected {want}"));
        }
    }
    for order in ["ab", "ba"] {
        for what in ["probes", "fds"] {
            let case = format!("{order}-std-{what}");
            let (status, _, ok) = support::fixture_result(&stdout, &case);
            if status != "exit:0" || !ok {
                failures.push(format!("{case}: {status}, PROBES OK printed: {ok}"));
            }
        }
        for previous in ["std", "dfl"] {
            for what in ["null", "kill", "sigbus"] {
                let case = format!("{order}-{previous}-{what}");
                let (status, ready, _) = support::fixture_result(&stdout, &case);
                let want = support::fixture_result(&stdout, &format!("none-{previous}-{what}")).0;
                if status != want || !ready {
                    failures.push(format!(
                        "{case}: {status} (probes done: {ready}), expected {want} after the probes"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "two copies interfere:\n{}\n--- output\n{stdout}",
        failures.join("\n")
    );
}
