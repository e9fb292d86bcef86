//! Helpers shared by the reliability tests: running a case in a child process, listing
//! descriptors, building memory fixtures and printing the figures that
//! `scripts/reliability-report` collects (`RELIABILITY key=value` lines on stdout).
//!
//! Cargo runs the tests of one binary as threads of one process, so a case that changes
//! something process-wide (rlimits, seccomp, signal dispositions, `close_range`) or that
//! may kill the process runs in a child: the test binary re-executes itself with
//! `--exact <test> --nocapture` and `ADDRPROBE_CHILD=<test>` ([`run_child`]), and the parent
//! asserts on the child's exit status, signal and output. A `harness = false` binary whose
//! cases need the main thread of a fresh process uses [`harness_main`] as its `main`, which
//! runs each case through [`run_case_env`]. Every child is killed after a timeout.

#![allow(dead_code)]

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use addrprobe::{Backend, Error, Prober};

/// The environment variable that selects the case a re-executed test binary runs.
pub const CHILD_ENV: &str = "ADDRPROBE_CHILD";

/// Whether this process is the child re-executed to run `case`.
pub fn is_child(case: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|v| v == case)
}

/// What a child process did.
#[derive(Debug)]
pub struct ChildResult {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl ChildResult {
    /// The signal that killed it, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    /// Panics with the child's output unless it exited with status 0.
    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "child failed: {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }

    /// Re-prints the child's `RELIABILITY` lines so that the report sees them.
    pub fn forward_figures(&self) {
        // The harness's "test name ... " prefix may share the line.
        for line in self.stdout.lines() {
            if let Some(i) = line.find("RELIABILITY ") {
                println!("{}", &line[i..]);
            }
        }
    }
}

/// The factor by which the children's hang timeouts are stretched: `ADDRPROBE_TIMEOUT_SCALE`
/// (a whole number, default 1). An emulated CPU (the arm64 kernel matrix under QEMU/TCG sets
/// 30) runs the same work many times slower; the timeouts only catch hangs and assert no
/// timing. A stress test may also scale a time budget for its loop with it (the ownership
/// test does, keeping a minimum number of rounds), so that it ends inside its timeout.
pub fn timeout_scale() -> u32 {
    std::env::var("ADDRPROBE_TIMEOUT_SCALE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1)
}

/// Re-executes this test binary to run only `test` with `ADDRPROBE_CHILD=test`, kills it
/// after 14 s (times [`timeout_scale`]), and returns what it did.
pub fn run_child(test: &str) -> ChildResult {
    run_child_env(test, &[], Duration::from_secs(14))
}

/// Like [`run_child`], with extra environment variables and a timeout. Panics if the child
/// hangs past `timeout` (it is killed first).
pub fn run_child_env(test: &str, env: &[(&str, &str)], timeout: Duration) -> ChildResult {
    let mut cmd = self_command(test, env);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"]);
    match wait_child(cmd, timeout) {
        Ok(r) => r,
        Err(r) => panic!(
            "child {test} hung for more than {:?} and was killed ({:?})\n--- stdout\n{}\n--- stderr\n{}",
            timeout * timeout_scale(),
            r.status,
            r.stdout,
            r.stderr
        ),
    }
}

/// For a `harness = false` test binary: re-executes it with `ADDRPROBE_CHILD=case` and the
/// extra environment variables, without arguments (its `main` picks the case from the
/// variable, see [`harness_main`]), kills it after `timeout` and returns what it did: `Err`
/// if it had to be killed.
pub fn run_case_env(
    case: &str,
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<ChildResult, ChildResult> {
    wait_child(self_command(case, env), timeout)
}

/// This test binary, set up to run `case` in a child: `ADDRPROBE_CHILD=case`, no backtraces,
/// stdin closed, stdout and stderr captured.
fn self_command(case: &str, env: &[(&str, &str)]) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.env(CHILD_ENV, case)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Spawns `cmd`, collects its output and waits for it for at most `timeout`: `Err` (with
/// what the killed child wrote) if it was still running then.
fn wait_child(mut cmd: Command, timeout: Duration) -> Result<ChildResult, ChildResult> {
    let mut child = cmd.spawn().expect("spawn the child");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let timeout = timeout * timeout_scale();
    let deadline = Instant::now() + timeout;
    let (status, timed_out) = loop {
        if let Some(st) = child.try_wait().expect("wait for the child") {
            break (st, false);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break (child.wait().expect("wait for the killed child"), true);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let r = ChildResult {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    };
    if timed_out { Err(r) } else { Ok(r) }
}

/// Runs `cmd` (stdin closed, output captured) for at most `timeout`; panics, with what it
/// wrote, if it was still running then. `what` names it in messages.
pub fn run_command(mut cmd: Command, what: &str, timeout: Duration) -> ChildResult {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    wait_child(cmd, timeout).unwrap_or_else(|r| {
        panic!(
            "{what} took more than {timeout:?}\n--- stdout\n{}\n--- stderr\n{}",
            r.stdout, r.stderr
        )
    })
}

/// Builds (`cargo build`) or runs (`cargo run`) the release binary of `tests/<project>`, a
/// standalone cargo project with its own workspace and lock file, with the cargo that runs the
/// tests, offline and `--locked`, into its own target directory `<target>/tmp/<project>`, with
/// `env` set (`("NAME", None)` removes a variable), for at most `timeout`. Panics unless cargo
/// succeeds, saying how to regenerate an out-of-date lock file. Returns cargo's output and the
/// project's release directory.
///
/// Where no cargo can run (a kernel-matrix guest), `ADDRPROBE_PREBUILT_FIXTURES=DIR` names a
/// directory holding each project's release directory, built beforehand with the same command
/// (`scripts/kernel-matrix` does): then nothing is built, `run` runs `DIR/<project>/<project>`
/// (which must then exist) and the release directory returned is `DIR/<project>`.
pub fn cargo_fixture(
    project: &str,
    subcommand: &str,
    env: &[(&str, Option<&str>)],
    timeout: Duration,
) -> (ChildResult, std::path::PathBuf) {
    if let Some(dir) = prebuilt_fixtures() {
        let dir = dir.join(project);
        assert!(
            dir.is_dir(),
            "ADDRPROBE_PREBUILT_FIXTURES has no {project}: {}",
            dir.display()
        );
        let r = if subcommand == "run" {
            let mut cmd = Command::new(dir.join(project));
            set_env(&mut cmd, env);
            let r = run_command(cmd, &format!("prebuilt tests/{project}"), timeout);
            r.assert_success();
            r
        } else {
            ChildResult {
                status: std::os::unix::process::ExitStatusExt::from_raw(0),
                stdout: String::new(),
                stderr: String::new(),
            }
        };
        return (r, dir);
    }
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(project);
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cmd.args([subcommand, "--release", "--offline", "--locked", "--quiet"])
        .arg("--manifest-path")
        .arg(root.join("tests").join(project).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir);
    set_env(&mut cmd, env);
    let r = run_command(
        cmd,
        &format!("cargo {subcommand} of tests/{project}"),
        timeout,
    );
    assert!(
        r.status.success(),
        "cargo {subcommand} of tests/{project} failed ({:?}). If its lock file is out of date, \
         regenerate it from the main one: `cp Cargo.lock tests/{project}/ && cargo update \
         --offline --workspace --manifest-path tests/{project}/Cargo.toml`\n--- stdout\n{}\n\
         --- stderr\n{}",
        r.status,
        r.stdout,
        r.stderr
    );
    (r, target_dir.join("release"))
}

/// Sets (`Some`) or removes (`None`) each variable of `env` for `cmd`.
fn set_env(cmd: &mut Command, env: &[(&str, Option<&str>)]) {
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
}

/// Whether this kernel installs seccomp filters: a feature probe, in a forked child (a filter
/// cannot be removed), that sets `no_new_privs` and installs an allow-everything filter.
/// `Err` says why not: ENOSYS (a kernel without `CONFIG_SECCOMP`) or EINVAL (without
/// `CONFIG_SECCOMP_FILTER`, which needs `CONFIG_NET`), as a test's "skipped" reason.
pub fn seccomp_filters() -> Result<(), String> {
    let allow = [bpf_stmt(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_ALLOW,
    )];
    let prog = libc::sock_fprog {
        len: 1,
        filter: allow.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the child makes only async-signal-safe calls (prctl, syscall, _exit) before it
    // exits; the parent waits for it.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: as above; the filter program outlives the call.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                libc::_exit(200);
            }
            let r = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            );
            libc::_exit(if r == 0 { 0 } else { errno().min(199) });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status),
        "the seccomp probe child: {status:#x}"
    );
    match libc::WEXITSTATUS(status) {
        0 => Ok(()),
        e @ (libc::ENOSYS | libc::EINVAL) => Err(format!(
            "this kernel installs no seccomp filter (seccomp(SECCOMP_SET_MODE_FILTER): {})",
            std::io::Error::from_raw_os_error(e)
        )),
        // anything else is not a missing feature: the test must not pass as skipped
        200 => panic!("prctl(PR_SET_NO_NEW_PRIVS) failed in the seccomp probe"),
        e => panic!(
            "the seccomp probe's filter failed: {}",
            std::io::Error::from_raw_os_error(e)
        ),
    }
}

/// The directory of prebuilt fixture projects, when `ADDRPROBE_PREBUILT_FIXTURES` names one
/// (see [`cargo_fixture`]).
pub fn prebuilt_fixtures() -> Option<std::path::PathBuf> {
    std::env::var_os("ADDRPROBE_PREBUILT_FIXTURES")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
}

/// In the output of a standalone fixture program (`tests/two-copies`, `tests/extable-fixture`),
/// the `status=` of case `case` from its `RESULT <case> ...` line, and whether that line says
/// `ready=true` and `ok=true`. Panics if the line or a field is missing.
pub fn fixture_result<'a>(stdout: &'a str, case: &str) -> (&'a str, bool, bool) {
    let prefix = format!("RESULT {case} ");
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no result for {case}:\n{stdout}"));
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    (
        field("status="),
        field("ready=") == "true",
        field("ok=") == "true",
    )
}

/// One case of a `harness = false` test binary: its name and the function a child runs.
pub type Case = (&'static str, fn());

/// The `main` of a `harness = false` test binary whose every case runs on the main thread of
/// its own child process.
///
/// In a child (`ADDRPROBE_CHILD=<case>`) it runs that case and exits 0; a panic or a crash
/// of the case is the child's exit status or signal. In the parent it runs the cases whose
/// names contain one of the arguments that do not start with `-` (all of them without such
/// arguments; `--list` lists them), each in a child killed after `timeout`, prints a
/// libtest-like report and exits 101 if any failed.
pub fn harness_main(cases: &[Case], timeout: Duration) {
    if let Ok(name) = std::env::var(CHILD_ENV) {
        match cases.iter().find(|(n, _)| *n == name) {
            Some((_, f)) => {
                f();
                std::process::exit(0);
            }
            None => {
                eprintln!("unknown case {name:?}");
                std::process::exit(2);
            }
        }
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in cases {
            println!("{name}: test");
        }
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let chosen: Vec<&Case> = cases
        .iter()
        .filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests (each in a child process)", chosen.len());
    let mut failed = Vec::new();
    for (name, _) in &chosen {
        let why = match run_case_env(name, &[], timeout) {
            Ok(r) if r.status.success() => {
                // a case that cannot run here says why: pass that on (kernel-matrix counts it)
                for line in r.stdout.lines().filter(|l| l.starts_with("skipped: ")) {
                    println!("{line}");
                }
                None
            }
            Ok(r) => Some(match r.signal() {
                Some(sig) => (format!("child killed by signal {sig}"), r),
                None => (format!("child exited with {}", r.status), r),
            }),
            Err(r) => Some((format!("timed out after {timeout:?}"), r)),
        };
        println!(
            "test {name} ... {}",
            if why.is_none() { "ok" } else { "FAILED" }
        );
        if let Some((why, r)) = why {
            failed.push((name, format!("{why}\n{}{}", r.stdout, r.stderr)));
        }
    }
    for (name, detail) in &failed {
        println!("\n---- {name} ----\n{detail}");
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        chosen.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}

/// Prints one figure for `scripts/reliability-report`.
pub fn figure(key: &str, value: impl std::fmt::Display) {
    println!("RELIABILITY {key}={value}");
}

/// Every open descriptor of this process with what it points to (`readlink`), sorted.
/// The descriptor that reads the directory itself is left out.
pub fn fd_list() -> Vec<(i32, String)> {
    let mut v = Vec::new();
    let dir = std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd");
    for entry in dir.flatten() {
        let Ok(n) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(target) = std::fs::read_link(entry.path()) {
            v.push((n, target.to_string_lossy().into_owned()));
        }
    }
    v.sort();
    // The directory stream's own descriptor is gone by now: drop entries that no longer exist.
    // SAFETY: F_GETFD on any number is harmless.
    v.retain(|&(n, _)| unsafe { libc::fcntl(n, libc::F_GETFD) } >= 0);
    v
}

/// The number of open descriptors.
pub fn fd_count() -> usize {
    fd_list().len()
}

/// Descriptors in `after` that are not in `before` (by number and target).
pub fn new_fds(before: &[(i32, String)], after: &[(i32, String)]) -> Vec<(i32, String)> {
    after
        .iter()
        .filter(|x| !before.contains(x))
        .cloned()
        .collect()
}

/// The page size.
pub fn ps() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Maps `len` bytes in a quiet part of the address space (`addrprobe_lab::fixtures::map_quiet`):
/// a page a test unmaps there stays a hole while other threads call `mmap`.
pub fn mmap_quiet(len: usize, prot: i32, flags: i32, fd: i32) -> usize {
    addrprobe_lab::fixtures::map_quiet(len, prot, flags, fd).expect("mmap")
}

/// An anonymous mapping of up to 64 pages in a quiet region; the pages still ours are
/// unmapped on drop (a page [`Region::unmap`]ped earlier is left alone: it may be someone
/// else's by then).
pub struct Region {
    /// Its first byte.
    pub addr: usize,
    /// Its length in bytes.
    pub len: usize,
    unmapped: std::sync::atomic::AtomicU64,
}

impl Region {
    /// `pages` read-write private anonymous pages.
    pub fn anon(pages: usize) -> Region {
        assert!(pages <= 64);
        let len = pages * ps();
        let addr = mmap_quiet(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
        );
        Region {
            addr,
            len,
            unmapped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The address of page `i`.
    pub fn page(&self, i: usize) -> usize {
        self.addr + i * ps()
    }

    /// Fills page `i` with `bytes` (the page must be writable).
    pub fn fill(&self, i: usize, bytes: &[u8]) {
        assert!(bytes.len() <= ps());
        // SAFETY: page `i` lies in our writable mapping.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.page(i) as *mut u8, bytes.len())
        }
    }

    /// `mprotect` of page `i`.
    pub fn protect(&self, i: usize, prot: i32) {
        // SAFETY: page `i` lies in our mapping; no Rust reference points into it.
        let r = unsafe { libc::mprotect(self.page(i) as *mut libc::c_void, ps(), prot) };
        assert_eq!(r, 0, "mprotect");
    }

    /// `munmap` of page `i`.
    pub fn unmap(&self, i: usize) {
        // SAFETY: page `i` lies in our mapping.
        let r = unsafe { libc::munmap(self.page(i) as *mut libc::c_void, ps()) };
        assert_eq!(r, 0, "munmap");
        self.unmapped
            .fetch_or(1 << i, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let gone = self.unmapped.load(std::sync::atomic::Ordering::Relaxed);
        for i in 0..self.len / ps() {
            if gone & (1 << i) == 0 {
                // SAFETY: page `i` is still our mapping.
                unsafe { libc::munmap(self.page(i) as *mut libc::c_void, ps()) };
            }
        }
    }
}

/// The bytes of page `i`'s pattern (distinct per page and seed, never all zero).
pub fn page_pattern(i: usize, seed: u8) -> Vec<u8> {
    addrprobe_lab::fixtures::pattern(ps(), seed.wrapping_add((i as u8).wrapping_mul(17)))
}

/// `AUDIT_ARCH_*` of this target, the value a seccomp filter sees in `seccomp_data.arch`
/// (`AUDIT_ARCH_X86_64` = `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`,
/// `AUDIT_ARCH_AARCH64` = `EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`). A filter that
/// compares it and the target's `libc::SYS_*` numbers (which differ per architecture) works
/// on both.
pub const AUDIT_ARCH: u32 = {
    #[cfg(target_arch = "x86_64")]
    {
        0xC000_003E
    }
    #[cfg(target_arch = "aarch64")]
    {
        0xC000_00B7
    }
};

/// Whether this architecture has `SignalGuard`'s guarded load (x86_64 and aarch64). On the
/// others the backend is [`Error::Unavailable`] and the tests that need it skip.
pub const SIGNAL_GUARD_ARCH: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// `true`, after saying that `test` is skipped, on an architecture without `SignalGuard`'s
/// guarded load. It asserts that the backend really is unavailable there, so that a port to a
/// new architecture fails here until [`SIGNAL_GUARD_ARCH`] includes it (and the tests run).
pub fn no_signal_guard_here(test: &str) -> bool {
    if SIGNAL_GUARD_ARCH {
        return false;
    }
    match Prober::new(Backend::SignalGuard) {
        Err(Error::Unavailable { .. }) => {
            eprintln!(
                "skipped: {test}: SignalGuard has no guarded load on {}",
                std::env::consts::ARCH
            );
            true
        }
        other => panic!(
            "SignalGuard on {}: {other:?}; add the architecture to SIGNAL_GUARD_ARCH",
            std::env::consts::ARCH
        ),
    }
}

/// A prober for every backend that is available here. Only `ProcmapQuery` (kernels before
/// 6.11 answer ENOTTY) and, on an architecture without the guarded load, `SignalGuard` may
/// be missing; any other error fails the test.
pub fn all_probers() -> Vec<Prober> {
    let mut v = Vec::new();
    for b in Backend::ALL {
        match Prober::new(b) {
            Ok(p) => v.push(p),
            Err(Error::Unavailable { .. }) if b == Backend::ProcmapQuery => {
                eprintln!("note: procmap-query is unavailable on this kernel");
            }
            Err(Error::Unavailable { .. }) if b == Backend::SignalGuard && !SIGNAL_GUARD_ARCH => {
                eprintln!(
                    "note: signal-guard has no guarded load on {}",
                    std::env::consts::ARCH
                );
            }
            Err(e) => panic!("Prober::new({b}) failed: {e}"),
        }
    }
    v
}

/// This thread's errno.
pub fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Sets this thread's errno.
pub fn set_errno(v: i32) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = v }
}

/// A small xorshift generator: deterministic, allocation-free, usable in signal handlers.
#[derive(Clone, Copy)]
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The bytes one signal frame takes on this CPU and kernel: the kernel's own figure
/// (`getauxval(AT_MINSIGSTKSZ)`, Linux 5.14+ on x86_64, 4.18+ on arm64), or, where the kernel
/// gives none, what a delivery really took (a SIGUSR2 handler on a 256 KiB alternate stack
/// reports how far below the top its frame starts), whichever is larger. Never a constant:
/// frames are ~1 KiB on some x86_64 CPUs, 3.4 KiB with AVX-512, more with AMX or SVE.
pub fn signal_frame_size() -> usize {
    use std::sync::OnceLock;
    static SIZE: OnceLock<usize> = OnceLock::new();
    *SIZE.get_or_init(|| {
        // SAFETY: getauxval has no preconditions; 0 means "not reported".
        let auxv = unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize;
        auxv.max(measured_signal_frame())
    })
}

static FRAME_LOW: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn note_frame(_: libc::c_int, _: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // The ucontext lies inside the frame; the frame reaches from below it to the top.
    let local = 0u8;
    let low = (&local as *const u8 as usize).min(ctx as usize);
    FRAME_LOW.store(low, std::sync::atomic::Ordering::SeqCst);
}

/// One SIGUSR2 delivered on a fresh 256 KiB alternate stack on a new thread: the distance from
/// the stack's top to the handler's first local, rounded up to 64 bytes.
fn measured_signal_frame() -> usize {
    std::thread::spawn(|| {
        const LEN: usize = 256 * 1024;
        let stack = vec![0u8; LEN];
        // SAFETY: a fresh alternate stack for this thread only, removed before `stack` is
        // freed; a SIGUSR2 handler installed and restored around one tgkill to this thread.
        unsafe {
            let ss = libc::stack_t {
                ss_sp: stack.as_ptr() as *mut libc::c_void,
                ss_flags: 0,
                ss_size: LEN,
            };
            let mut old_ss: libc::stack_t = core::mem::zeroed();
            assert_eq!(libc::sigaltstack(&ss, &mut old_ss), 0);
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = note_frame as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            let mut old_sa: libc::sigaction = core::mem::zeroed();
            assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, &mut old_sa), 0);
            let mut set: libc::sigset_t = core::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, core::ptr::null_mut());
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                libc::gettid(),
                libc::SIGUSR2,
            );
            libc::sigaction(libc::SIGUSR2, &old_sa, core::ptr::null_mut());
            let off = libc::stack_t {
                ss_sp: core::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            libc::sigaltstack(&off, core::ptr::null_mut());
        }
        let low = FRAME_LOW.load(std::sync::atomic::Ordering::SeqCst);
        let top = stack.as_ptr() as usize + LEN;
        assert!(
            low > stack.as_ptr() as usize && low < top,
            "no SIGUSR2 frame seen"
        );
        (top - low).next_multiple_of(64)
    })
    .join()
    .unwrap()
}

/// Gives the calling thread an alternate signal stack of exactly `len` bytes, with a
/// `PROT_NONE` page right below it (so that a handler that runs past its bottom faults at
/// once, instead of writing over whatever lies there). Leaked: it stays the thread's stack.
pub fn small_altstack(len: usize) {
    let pages = len.div_ceil(ps()) + 1;
    let base = mmap_quiet(
        pages * ps(),
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    );
    // SAFETY: the first page of our own fresh mapping; then the calling thread's alternate
    // stack, inside that mapping, which is never unmapped.
    unsafe {
        assert_eq!(
            libc::mprotect(base as *mut libc::c_void, ps(), libc::PROT_NONE),
            0
        );
        let ss = libc::stack_t {
            ss_sp: (base + ps()) as *mut libc::c_void,
            ss_flags: 0,
            ss_size: len,
        };
        assert_eq!(
            libc::sigaltstack(&ss, core::ptr::null_mut()),
            0,
            "sigaltstack"
        );
    }
}

/// Whether the calling thread is running on its alternate signal stack.
pub fn on_altstack() -> bool {
    // SAFETY: sigaltstack with a null new stack only reports the current one;
    // async-signal-safe.
    unsafe {
        let mut ss: libc::stack_t = core::mem::zeroed();
        libc::sigaltstack(core::ptr::null(), &mut ss);
        ss.ss_flags & libc::SS_ONSTACK != 0
    }
}

/// A classic BPF statement, for seccomp filters.
pub fn bpf_stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// A classic BPF conditional jump, for seccomp filters.
pub fn bpf_jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// A raw `clone` child (no `CLONE_VM`: a fork) whose `exit_signal` is `sig` and which exits at
/// once; reaped here (`__WALL`: it is not a SIGCHLD child), retrying on `EINTR`. Its exit
/// makes the kernel send this process `sig` with `si_code = CLD_EXITED`.
pub fn clone_child_exits_with(sig: i32) {
    // SAFETY: clone without CLONE_VM is a fork: the child only calls `_exit`.
    unsafe {
        let pid = libc::syscall(
            libc::SYS_clone,
            sig as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        );
        if pid == 0 {
            libc::_exit(0);
        }
        assert!(pid > 0, "clone");
        let mut status = 0;
        while libc::waitpid(pid as libc::pid_t, &mut status, libc::__WALL) < 0
            && errno() == libc::EINTR
        {}
    }
}
