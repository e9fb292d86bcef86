//! Two copies of addrprobe in one process (`addrprobe` 0.1.x as copy A, the same source as
//! `addrprobe` 0.99.0 as copy B): each installs its own SignalGuard handler, and the one
//! installed second must chain to the first.
//!
//! Without arguments this is the driver: it runs every case in a child process (this binary
//! with `case <name>`), kills a child that runs longer than 20 s, and prints one line per case:
//!
//! ```text
//! RESULT <case> status=<exit:N|signal:N|hung> ready=<bool> ok=<bool>
//! ```
//!
//! `ready` means the child got past its probes (printed `READY`), `ok` that it printed
//! `PROBES OK`. `tests/two_copies.rs` asserts on these lines: the probing cases exit 0, and
//! every stray fault ends exactly as in the baseline cases, which create no prober.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use addrprobe as a;
use addrprobe_other as b;

/// One probing interface over both copies' (distinct) `Prober` types.
trait Probe: Send + Sync {
    fn label(&self) -> String;
    fn check(&self, addr: usize, len: usize) -> Result<bool, String>;
    fn read(&self, addr: usize, dst: &mut [u8]) -> Result<bool, String>;
    /// The guarantee's name: "mapped", "region-readable", "readable" or "unsound".
    fn guarantee_name(&self) -> &'static str;
    /// The guarded loads of 1, 4 and 8 bytes at `addr` (as u64), if this is a SignalGuard
    /// prober; `None` for any other.
    fn guarded(&self, addr: usize) -> Option<[Option<u64>; 3]>;
    fn readable(&self) -> bool {
        self.guarantee_name() == "readable"
    }
}

macro_rules! impl_probe {
    ($krate:ident, $copy:literal) => {
        impl Probe for $krate::Prober {
            fn label(&self) -> String {
                format!("{}:{}", $copy, self.backend())
            }
            fn check(&self, addr: usize, len: usize) -> Result<bool, String> {
                $krate::Prober::check(self, addr, len).map_err(|e| e.to_string())
            }
            fn read(&self, addr: usize, dst: &mut [u8]) -> Result<bool, String> {
                $krate::Prober::read(self, addr, dst).map_err(|e| e.to_string())
            }
            fn guarantee_name(&self) -> &'static str {
                self.guarantee().name()
            }
            fn guarded(&self, addr: usize) -> Option<[Option<u64>; 3]> {
                let g = $krate::Prober::guarded(self)?;
                Some([
                    g.load_u8(addr).map(u64::from),
                    g.load_u32(addr).map(u64::from),
                    g.load_u64(addr),
                ])
            }
        }
    };
}
impl_probe!(a, "A");
impl_probe!(b, "B");

fn guard_a() -> a::Prober {
    a::Prober::new(a::Backend::SignalGuard).expect("copy A: signal-guard")
}

fn guard_b() -> b::Prober {
    b::Prober::new(b::Backend::SignalGuard).expect("copy B: signal-guard")
}

/// Both copies' SignalGuard probers, created in `order` ("ab": A first, "ba": B first).
fn guards(order: &str) -> Vec<Box<dyn Probe>> {
    match order {
        "ab" => {
            let pa = guard_a();
            let pb = guard_b();
            vec![Box::new(pa), Box::new(pb)]
        }
        "ba" => {
            let pb = guard_b();
            let pa = guard_a();
            vec![Box::new(pa), Box::new(pb)]
        }
        o => panic!("unknown order {o}"),
    }
}

fn ps() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

fn mmap(len: usize, prot: i32, flags: i32, fd: i32) -> usize {
    // SAFETY: a fresh mapping at a kernel-chosen address aliases nothing.
    let p = unsafe { libc::mmap(core::ptr::null_mut(), len, prot, flags, fd, 0) };
    assert_ne!(p, libc::MAP_FAILED, "mmap");
    p as usize
}

/// The memory the probes are judged against, built with mmap/mprotect/munmap and a memfd.
struct Fixtures {
    /// A read-write page holding `pattern`.
    valid: usize,
    pattern: Vec<u8>,
    /// A PROT_NONE page (SIGSEGV on load).
    prot_none: usize,
    /// A hole: mapped, then unmapped (SIGSEGV on load).
    unmapped: usize,
    /// A MAP_SHARED page beyond the end of its one-page file (SIGBUS on load).
    beyond_eof: usize,
}

fn fixtures() -> Fixtures {
    let page = ps();
    // The hole is the lowest page of a 64-page gap under a PROT_NONE fence: the kernel's
    // top-down allocator fills a gap from its top, so the crates' own later mappings (each
    // copy's per-process page) cannot land on the probed page.
    let base = mmap(
        67 * page,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    );
    let pattern: Vec<u8> = (0..page).map(|i| (i as u8).wrapping_mul(37) | 1).collect();
    // SAFETY: `base` is our fresh writable page; the rest are our own pages.
    unsafe {
        core::ptr::copy_nonoverlapping(pattern.as_ptr(), base as *mut u8, page);
        assert_eq!(
            libc::mprotect((base + page) as *mut libc::c_void, page, libc::PROT_NONE),
            0
        );
        assert_eq!(
            libc::munmap((base + 2 * page) as *mut libc::c_void, 64 * page),
            0
        );
        assert_eq!(
            libc::mprotect(
                (base + 66 * page) as *mut libc::c_void,
                page,
                libc::PROT_NONE
            ),
            0
        );
    }
    // SAFETY: memfd_create with a static name; sizing and mapping our own memfd.
    let beyond_eof = unsafe {
        let fd = libc::memfd_create(c"two-copies".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0, "memfd_create");
        assert_eq!(libc::ftruncate(fd, page as libc::off_t), 0);
        let p = mmap(2 * page, libc::PROT_READ, libc::MAP_SHARED, fd);
        libc::close(fd);
        p + page
    };
    Fixtures {
        valid: base,
        pattern,
        prot_none: base + page,
        unmapped: base + 2 * page,
        beyond_eof,
    }
}

/// Probes every fixture with every prober, `rounds` times, interleaving the copies; returns
/// the answers that contradict the prober's guarantee (a "yes" from the unsound backend is
/// not judged).
fn probe_all(probers: &[Box<dyn Probe>], fx: &Fixtures, rounds: usize) -> Vec<String> {
    let mut wrong = Vec::new();
    let page = ps();
    let mut buf = vec![0u8; page];
    for round in 0..rounds {
        for p in probers {
            let g = p.guarantee_name();
            let mapped = g == "mapped";
            let region = mapped || g == "region-readable";
            let mut expect = |what: &str, got: Result<bool, String>, want: bool| {
                if g == "unsound" && got == Ok(true) {
                    return;
                }
                if got != Ok(want) {
                    wrong.push(format!(
                        "round {round}: {} on {what}: {got:?}, want {want}",
                        p.label()
                    ));
                }
            };
            expect("valid", p.check(fx.valid, page), true);
            expect("valid+8", p.check(fx.valid + 8, 8), true);
            expect("PROT_NONE", p.check(fx.prot_none, 8), mapped);
            expect("unmapped", p.check(fx.unmapped, 8), false);
            expect("beyond EOF", p.check(fx.beyond_eof, 8), region);
            expect("NULL", p.check(0, 8), false);
            expect("valid->PROT_NONE", p.check(fx.valid, 2 * page), mapped);
            if p.readable() {
                expect("read PROT_NONE", p.read(fx.prot_none, &mut buf[..8]), false);
                expect(
                    "read beyond EOF",
                    p.read(fx.beyond_eof, &mut buf[..8]),
                    false,
                );
                buf.fill(0);
                let got = p.read(fx.valid, &mut buf);
                if got != Ok(true) || buf != fx.pattern {
                    wrong.push(format!(
                        "round {round}: {} read of the valid page: {got:?}",
                        p.label()
                    ));
                }
            }
            if p.label().ends_with("signal-guard") {
                // Both copies' loads are in the one table of this executable: whichever
                // handler the kernel calls first resolves them.
                let le = |at: usize, n: usize| {
                    let mut b = [0u8; 8];
                    b[..n].copy_from_slice(&fx.pattern[at..at + n]);
                    Some(u64::from_le_bytes(b))
                };
                for (what, addr, want) in [
                    ("valid+13", fx.valid + 13, [le(13, 1), le(13, 4), le(13, 8)]),
                    ("valid end", fx.prot_none - 3, [le(page - 3, 1), None, None]),
                    ("PROT_NONE", fx.prot_none, [None; 3]),
                    ("unmapped", fx.unmapped + 8, [None; 3]),
                    ("beyond EOF", fx.beyond_eof, [None; 3]),
                    ("NULL", 0, [None; 3]),
                ] {
                    let got = p.guarded(addr);
                    if got != Some(want) {
                        wrong.push(format!(
                            "round {round}: {} guarded loads at {what}: {got:?}, want {want:?}",
                            p.label()
                        ));
                    }
                }
            } else if p.guarded(fx.valid).is_some() {
                wrong.push(format!("{} has guarded loads", p.label()));
            }
        }
    }
    wrong
}

fn no_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid struct; this process is a disposable child.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
}

/// A byte load the compiler cannot remove or check: a stray access, not a probe.
fn stray_load(addr: usize) -> u8 {
    let v: u8;
    // SAFETY: not safe at all: this is the stray fault under test; the child is meant to die.
    unsafe {
        core::arch::asm!("mov {v}, byte ptr [{a}]", a = in(reg) addr, v = out(reg_byte) v, options(nostack, readonly))
    };
    v
}

fn ready(probers: &[Box<dyn Probe>], fx: &Fixtures) {
    let wrong = probe_all(probers, fx, 100);
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
    println!("READY");
}

/// How a stray fault is made to happen.
fn stray(kind: &str, fx: &Fixtures) {
    match kind {
        "null" => {
            stray_load(core::hint::black_box(0));
        }
        "kill" => {
            // SAFETY: kill on our own pid; the child is meant to die.
            unsafe { libc::kill(libc::getpid(), libc::SIGSEGV) };
            // Give a pending signal every chance to arrive.
            std::thread::sleep(Duration::from_millis(200));
        }
        "sigbus" => {
            stray_load(fx.beyond_eof);
        }
        k => panic!("unknown stray fault {k}"),
    }
    println!("SURVIVED");
}

/// Descriptor-holding backends of both copies, a fork, and dropping one copy's probers: each
/// copy keeps its own descriptors and answers correctly in the parent and in the child.
fn descriptors_and_fork(order: &str, fx: &Fixtures) {
    let mut probers: Vec<Box<dyn Probe>> = Vec::new();
    let copies: [&str; 2] = if order == "ab" {
        ["A", "B"]
    } else {
        ["B", "A"]
    };
    for copy in copies {
        for name in [
            "pipe",
            "sigprocmask",
            "dev-null",
            "procmap-query",
            "signal-guard",
        ] {
            let p: Result<Box<dyn Probe>, String> = if copy == "A" {
                a::Prober::new(name.parse().unwrap())
                    .map(|p| Box::new(p) as Box<dyn Probe>)
                    .map_err(|e| format!("{e} ({})", e.is_unavailable()))
            } else {
                b::Prober::new(name.parse().unwrap())
                    .map(|p| Box::new(p) as Box<dyn Probe>)
                    .map_err(|e| format!("{e} ({})", e.is_unavailable()))
            };
            match p {
                Ok(p) => probers.push(p),
                Err(e) if name == "procmap-query" && e.ends_with("(true)") => {
                    println!("SKIP {copy}:{name}: {e}")
                }
                Err(e) => panic!("{copy}:{name}: {e}"),
            }
        }
    }
    let wrong = probe_all(&probers, fx, 10);
    assert!(wrong.is_empty(), "before fork:\n{}", wrong.join("\n"));
    // SAFETY: this process is single-threaded; the child probes (async-signal-safe) and
    // `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let wrong = probe_all(&probers, fx, 10);
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(if wrong.is_empty() { 0 } else { 1 }) };
    }
    let wrong = probe_all(&probers, fx, 10);
    assert!(wrong.is_empty(), "parent after fork:\n{}", wrong.join("\n"));
    let mut status = 0;
    // SAFETY: waiting for our own child, which only probes.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the fork child got wrong answers (status {status:#x})"
    );
    // Drop the first copy's probers: the second copy's descriptors must stay its own.
    let first = copies[0];
    probers.retain(|p| !p.label().starts_with(first));
    let wrong = probe_all(&probers, fx, 10);
    assert!(
        wrong.is_empty(),
        "after dropping copy {first}:\n{}",
        wrong.join("\n")
    );
    println!("PROBES OK");
}

/// Sets SIGSEGV and SIGBUS to their default disposition (replacing Rust std's handler).
fn default_dispositions() {
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: signal() with SIG_DFL in a disposable child.
        assert_ne!(unsafe { libc::signal(sig, libc::SIG_DFL) }, libc::SIG_ERR);
    }
}

/// Runs `<order>-<previous>-<what>`: `order` is `none` (no prober), `ab` or `ba`; `previous`
/// is `std` (Rust std's SIGSEGV/SIGBUS handler, as at startup) or `dfl` (the default
/// disposition, set before any prober); `what` is `probes`, `fds` or a stray fault (`null`,
/// `kill`, `sigbus`).
fn run_case(case: &str) {
    no_core_dumps();
    let fx = fixtures();
    let mut parts = case.splitn(3, '-');
    let (Some(order), Some(previous), Some(what)) = (parts.next(), parts.next(), parts.next())
    else {
        panic!("case <order>-<previous>-<what>: {case}");
    };
    match previous {
        "std" => {}
        "dfl" => default_dispositions(),
        p => panic!("unknown previous disposition {p}"),
    }
    if order == "none" {
        println!("READY");
        stray(what, &fx);
        return;
    }
    match what {
        "probes" => {
            let probers = guards(order);
            let wrong = probe_all(&probers, &fx, 1000);
            assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
            // Every other backend of both copies, next to the two handlers.
            let mut all: Vec<Box<dyn Probe>> = Vec::new();
            for backend in a::Backend::ALL {
                match a::Prober::new(backend) {
                    Ok(p) => all.push(Box::new(p)),
                    Err(e) if e.is_unavailable() && backend == a::Backend::ProcmapQuery => {}
                    Err(e) => panic!("copy A {backend}: {e}"),
                }
            }
            for backend in b::Backend::ALL {
                match b::Prober::new(backend) {
                    Ok(p) => all.push(Box::new(p)),
                    Err(e) if e.is_unavailable() && backend == b::Backend::ProcmapQuery => {}
                    Err(e) => panic!("copy B {backend}: {e}"),
                }
            }
            let wrong = probe_all(&all, &fx, 10);
            assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
            // From a second thread too (its own alternate signal stack, set up by std).
            std::thread::scope(|s| {
                s.spawn(|| {
                    let wrong = probe_all(&probers, &fx, 100);
                    assert!(wrong.is_empty(), "other thread:\n{}", wrong.join("\n"));
                });
            });
            println!("PROBES OK");
        }
        "fds" => descriptors_and_fork(order, &fx),
        stray_kind => {
            let probers = guards(order);
            ready(&probers, &fx);
            stray(stray_kind, &fx);
        }
    }
}

/// Every case: the baselines without the crate, then both orders; stray faults under both
/// previous dispositions.
fn cases() -> Vec<String> {
    let mut v = Vec::new();
    for order in ["none", "ab", "ba"] {
        for previous in ["std", "dfl"] {
            if order != "none" && previous == "std" {
                v.push(format!("{order}-{previous}-probes"));
                v.push(format!("{order}-{previous}-fds"));
            }
            for what in ["null", "kill", "sigbus"] {
                v.push(format!("{order}-{previous}-{what}"));
            }
        }
    }
    v
}

fn drive() {
    let exe = std::env::current_exe().expect("current_exe");
    for case in cases() {
        let mut child = Command::new(&exe)
            .args(["case", &case])
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a case");
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
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        let status = match status {
            None => "hung".to_owned(),
            Some(st) => match (st.code(), st.signal()) {
                (Some(c), _) => format!("exit:{c}"),
                (None, Some(s)) => format!("signal:{s}"),
                _ => format!("{st:?}"),
            },
        };
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            println!("  {case} stderr: {line}");
        }
        println!(
            "RESULT {case} status={status} ready={} ok={}",
            stdout.lines().any(|l| l == "READY"),
            stdout.lines().any(|l| l == "PROBES OK"),
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "case" {
        run_case(&args[2]);
    } else {
        drive();
    }
}
