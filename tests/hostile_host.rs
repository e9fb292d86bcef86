//! Hostile hosts: memory whose readability the kernel's copy, the CPU and `/proc/self/maps`
//! judge differently, and memory whose faults are handled by user space.
//!
//! - Exec-only (`PROT_EXEC`) and write-only (`PROT_WRITE`) pages. On x86_64 the CPU can load a
//!   write-only page (a present PTE is always readable) and an exec-only one, unless the kernel
//!   gives exec-only mappings a protection key that denies data access (`pku` + `ospke`:
//!   `/proc/self/smaps` then shows a non-zero `ProtectionKey`). Neither has `r` in the maps.
//!   The truth is established independently of the crate, by a plain load in a forked
//!   grandchild with the default SIGSEGV/SIGBUS disposition.
//! - `userfaultfd`-registered pages, with `UFFD_FEATURE_SIGBUS` (a missing page raises SIGBUS,
//!   nothing blocks) and without it (a fault waits until a resolver thread fills the page).
//!
//! Every case runs in a child process (a re-execution of this binary, killed if it hangs).
//! Each prints one `HOSTILE |` markdown row per fixture and backend: what the backend answered
//! and whether that is correct, an allowed false negative, or a failure.

// The expectations (write-only and exec-only pages, protection keys) and the loads are x86_64's.
#![cfg(target_arch = "x86_64")]

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use addrprobe::{Backend, Error, Guarantee, Prober};
use support::{Region, is_child, page_pattern, ps, run_child_env};

/// No core files from children that are meant to crash.
fn no_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid struct; this process is a disposable child.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
}

/// A prober for every backend that is available here; the others are printed and skipped.
/// A self-test failure fails the test.
fn available_probers() -> Vec<Prober> {
    let mut v = Vec::new();
    for b in Backend::ALL {
        match Prober::new(b) {
            Ok(p) => v.push(p),
            Err(e @ Error::Unavailable { .. }) => println!("SKIP backend {b}: {e}"),
            Err(e) => panic!("Prober::new({b}) failed: {e}"),
        }
    }
    v
}

fn show(r: &Result<bool, Error>) -> String {
    match r {
        Ok(true) => "yes".into(),
        Ok(false) => "no".into(),
        Err(Error::Unavailable { errno, .. }) => format!("unavailable ({errno:?})"),
        Err(e) => format!("error: {e}"),
    }
}

fn row(fixture: &str, backend: Backend, check: &str, read: &str, verdict: &str) {
    println!("HOSTILE | {fixture} | {backend} | {check} | {read} | {verdict} |");
}

/// A load of one byte the compiler cannot remove or reason about.
///
/// # Safety
/// `addr` may fault: only call it where a fault is the intended outcome (a disposable
/// process) or the page is known to be loadable.
unsafe fn raw_load(addr: usize) -> u8 {
    let v: u8;
    // SAFETY: the caller accepts a fault.
    unsafe {
        core::arch::asm!("mov {v}, byte ptr [{a}]", a = in(reg) addr, v = out(reg_byte) v, options(nostack, readonly))
    };
    v
}

/// What a plain CPU load of a page does, found out in a forked grandchild.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Load {
    /// Every byte loaded and equal to the expected contents.
    Loads,
    /// Every byte loaded but the contents differ (the fixture is wrong).
    Mismatch,
    /// The load was killed by this signal.
    Faults(i32),
}

/// Loads every byte of `want.len()` bytes at `addr` with plain loads in a grandchild whose
/// SIGSEGV/SIGBUS dispositions are the default ones, and compares them with `want`. The
/// grandchild's page faults touch only its own copy of the address space.
fn load_in_grandchild(addr: usize, want: &[u8]) -> Load {
    // SAFETY: the grandchild only resets two dispositions, loads and `_exit`s: all
    // async-signal-safe, so the other threads of this process (whose locks it inherits) do not
    // matter.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: as above; `raw_load` may fault, which kills this grandchild with the signal
        // the parent reports.
        unsafe {
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::signal(libc::SIGBUS, libc::SIG_DFL);
            let mut same = true;
            for (i, &w) in want.iter().enumerate() {
                same &= raw_load(addr + i) == w;
            }
            libc::_exit(if same { 0 } else { 3 });
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "waitpid");
        if Instant::now() > deadline {
            // SAFETY: our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("the loading grandchild hung");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if libc::WIFSIGNALED(status) {
        Load::Faults(libc::WTERMSIG(status))
    } else {
        match libc::WEXITSTATUS(status) {
            0 => Load::Loads,
            3 => Load::Mismatch,
            c => panic!("the loading grandchild exited with {c}"),
        }
    }
}

/// The `ProtectionKey` of the mapping that contains `addr`, from `/proc/self/smaps` (0 where
/// the kernel has no protection keys and prints no such line).
fn protection_key(addr: usize) -> u32 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-')
            && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            inside = (lo..hi).contains(&addr);
            continue;
        }
        if inside && let Some(k) = line.strip_prefix("ProtectionKey:") {
            return k.trim().parse().expect("ProtectionKey value");
        }
    }
    0
}

/// The permission letters of the mapping that contains `addr`, from `/proc/self/maps`.
fn maps_perms(addr: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    for line in maps.lines() {
        let mut it = line.split_whitespace();
        let (Some(range), Some(perms)) = (it.next(), it.next()) else {
            continue;
        };
        let (lo, hi) = range.split_once('-').unwrap();
        let (lo, hi) = (
            usize::from_str_radix(lo, 16).unwrap(),
            usize::from_str_radix(hi, 16).unwrap(),
        );
        if (lo..hi).contains(&addr) {
            return perms.to_owned();
        }
    }
    panic!("{addr:#x} is in no mapping")
}

fn cpu_flag(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|w| w == flag))
}

/// Judges one backend on one page whose CPU-loadability is `truth` and whose contents are
/// `want`. Returns a failure description, if any; prints the table row.
fn judge_page(fixture: &str, p: &Prober, addr: usize, want: &[u8], truth: Load) -> Option<String> {
    let b = p.backend();
    let loads = truth == Load::Loads;
    let check = p.check(addr, want.len());
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    let mut read_shown = "-".to_owned();
    match p.guarantee() {
        Guarantee::Mapped => {
            if check != Ok(true) {
                failures.push(format!("mapped page answered {}", show(&check)));
            }
        }
        Guarantee::RegionReadable => match check {
            Ok(false) | Err(Error::Unavailable { .. }) => {}
            ref other => failures.push(format!("no `r` in the maps but answered {}", show(other))),
        },
        Guarantee::Unsound => notes.push("proves nothing".to_owned()),
        Guarantee::Readable => {
            match check {
                Ok(true) if !loads => failures.push(format!(
                    "FALSE POSITIVE: check yes, a plain load gives {truth:?}"
                )),
                Ok(false) if loads => notes.push("false negative (check)".to_owned()),
                Ok(_) | Err(Error::Unavailable { .. }) => {}
                Err(ref e) => failures.push(format!("check error: {e}")),
            }
            let mut buf = vec![0u8; want.len()];
            let read = p.read(addr, &mut buf);
            read_shown = show(&read);
            match read {
                Ok(true) if !loads => failures.push(format!(
                    "FALSE POSITIVE: read yes (the page's bytes: {}), a plain load gives {truth:?}",
                    buf == want
                )),
                Ok(true) if buf != want => {
                    failures.push("read yes with bytes that are not the page's".to_owned())
                }
                Ok(false) if loads => notes.push("false negative (read)".to_owned()),
                Ok(_) | Err(Error::Unavailable { .. }) => {}
                Err(e) => failures.push(format!("read error: {e}")),
            }
            if matches!((check, read), (Ok(a), Ok(b)) if a != b) {
                notes.push("check and read disagree".to_owned());
            }
        }
        g => failures.push(format!("unknown guarantee {g}")),
    }
    let verdict = if !failures.is_empty() {
        format!("FAIL: {}", failures.join("; "))
    } else if !notes.is_empty() {
        notes.join("; ")
    } else {
        "ok".to_owned()
    };
    row(fixture, b, &show(&check), &read_shown, &verdict);
    (!failures.is_empty()).then(|| format!("{b} on {fixture}: {verdict}"))
}

/// Exec-only and write-only pages, each filled with a pattern before losing `PROT_READ` and
/// each also never touched, judged for every backend against a plain load in a grandchild.
#[test]
fn exec_only_and_write_only_pages() {
    const CASE: &str = "exec_only_and_write_only_pages";
    if is_child(CASE) {
        no_core_dumps();
        let pku = cpu_flag("pku") && cpu_flag("ospke");
        println!("cpu flags pku+ospke: {pku}");
        let probers = available_probers();
        let mut failures = Vec::new();
        println!("HOSTILE | fixture | backend | check | read | verdict |");
        println!("HOSTILE | --- | --- | --- | --- | --- |");
        for p in &probers {
            // A fresh region per backend, so that "never touched" holds for each of them.
            // [filled write-only][filled exec-only][untouched write-only][untouched exec-only]
            // and, where the kernel has protection keys, the two exec-only pages again with
            // key 0 (`pkey_mprotect`), which the CPU can load.
            let r = Region::anon(6);
            let (ww, wx, wk) = (
                page_pattern(0, 0x51),
                page_pattern(1, 0x52),
                page_pattern(4, 0x53),
            );
            r.fill(0, &ww);
            r.fill(1, &wx);
            r.fill(4, &wk);
            r.protect(0, libc::PROT_WRITE);
            r.protect(1, libc::PROT_EXEC);
            r.protect(2, libc::PROT_WRITE);
            r.protect(3, libc::PROT_EXEC);
            let zero = vec![0u8; ps()];
            let key = protection_key(r.page(1));
            assert_eq!(
                protection_key(r.page(3)),
                key,
                "both exec-only pages get the same key"
            );
            let mut fixtures: Vec<(String, usize, &[u8])> = vec![
                ("write-only, filled".into(), r.page(0), &ww),
                (format!("exec-only (pkey {key}), filled"), r.page(1), &wx),
                ("write-only, never touched".into(), r.page(2), &zero),
                (
                    format!("exec-only (pkey {key}), never touched"),
                    r.page(3),
                    &zero,
                ),
            ];
            if key != 0 {
                for (i, want) in [(4, &wk[..]), (5, &zero[..])] {
                    // SAFETY: pkey_mprotect of a page of our own mapping; key 0 is the
                    // default key, which every thread may access.
                    let ret = unsafe {
                        libc::syscall(libc::SYS_pkey_mprotect, r.page(i), ps(), libc::PROT_EXEC, 0)
                    };
                    assert_eq!(ret, 0, "pkey_mprotect(PROT_EXEC, 0)");
                    assert_eq!(protection_key(r.page(i)), 0);
                    let touched = if i == 4 { "filled" } else { "never touched" };
                    fixtures.push((format!("exec-only (pkey 0), {touched}"), r.page(i), want));
                }
            }
            for (name, addr, want) in &fixtures {
                let perms = maps_perms(*addr);
                assert!(
                    perms.starts_with('-'),
                    "{name}: the fixture has `r` in the maps: {perms}"
                );
                let truth = load_in_grandchild(*addr, want);
                // What the CPU does follows from the key, not from the backend.
                let expected = if name.starts_with("exec-only") && protection_key(*addr) != 0 {
                    Load::Faults(libc::SIGSEGV)
                } else {
                    Load::Loads
                };
                assert_eq!(truth, expected, "{name}: plain load (pku+ospke: {pku})");
                if let Some(f) = judge_page(name, p, *addr, want, truth) {
                    failures.push(f);
                }
            }
        }
        assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
        println!("CHILD DONE");
        return;
    }
    let out = run_child_env(CASE, &[], Duration::from_secs(60));
    print!("{}", out.stdout);
    out.assert_success();
    assert!(out.stdout.contains("CHILD DONE"), "{out:?}");
}

// ---------------------------------------------------------------------------------------
// userfaultfd, with the structures and ioctl numbers of include/uapi/linux/userfaultfd.h
// (the libc crate has none of them).

const UFFD_API: u64 = 0xaa;
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
const UFFD_FEATURE_SIGBUS: u64 = 1 << 7;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

/// `struct uffd_msg` (packed in the kernel; this layout has the same offsets): for a page
/// fault, `arg[0]` is the flags and `arg[1]` the address.
#[repr(C)]
struct UffdMsg {
    event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    arg: [u64; 3],
}

const fn iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (0xaa << 8) | nr
}
const UFFDIO_API: u64 = iowr(0x3f, size_of::<UffdioApi>());
const UFFDIO_REGISTER: u64 = iowr(0x00, size_of::<UffdioRegister>());
const UFFDIO_COPY: u64 = iowr(0x03, size_of::<UffdioCopy>());
const UFFDIO_ZEROPAGE: u64 = iowr(0x04, size_of::<UffdioZeropage>());
// The kernel's values, so that a wrong struct size cannot go unnoticed.
const _: () = assert!(UFFDIO_API == 0xc018_aa3f);
const _: () = assert!(UFFDIO_REGISTER == 0xc020_aa00);
const _: () = assert!(UFFDIO_COPY == 0xc028_aa03);
const _: () = assert!(UFFDIO_ZEROPAGE == 0xc020_aa04);
const _: () = assert!(size_of::<UffdMsg>() == 32);

/// An open, API-negotiated userfaultfd.
struct Uffd {
    fd: libc::c_int,
    /// Opened with `UFFD_USER_MODE_ONLY`: faults taken by the kernel itself (copy_from_user,
    /// GUP) are not handed to us but fail (EFAULT), so the kernel-copy backends answer "no".
    user_mode_only: bool,
}

impl Uffd {
    /// Opens one with `features` (with `UFFD_USER_MODE_ONLY` if `user_mode_only`, or where
    /// this process may not handle kernel faults), or says why it cannot be done here.
    fn open(features: u64, mut user_mode_only: bool) -> Result<Uffd, String> {
        let mode = if user_mode_only {
            UFFD_USER_MODE_ONLY
        } else {
            0
        };
        // SAFETY: the userfaultfd syscall takes only flags.
        let mut fd = unsafe {
            libc::syscall(
                libc::SYS_userfaultfd,
                libc::O_CLOEXEC | libc::O_NONBLOCK | mode,
            )
        };
        if fd < 0 && !user_mode_only && support::errno() == libc::EPERM {
            // Unprivileged and vm.unprivileged_userfaultfd = 0: user-mode faults only.
            user_mode_only = true;
            // SAFETY: as above.
            fd = unsafe {
                libc::syscall(
                    libc::SYS_userfaultfd,
                    libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY,
                )
            };
        }
        if fd < 0 {
            return Err(format!(
                "userfaultfd: {}",
                std::io::Error::from_raw_os_error(support::errno())
            ));
        }
        let fd = fd as libc::c_int;
        let mut api = UffdioApi {
            api: UFFD_API,
            features,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes one `struct uffdio_api`.
        if unsafe { libc::ioctl(fd, UFFDIO_API as _, &mut api) } != 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: our own descriptor.
            unsafe { libc::close(fd) };
            return Err(format!("UFFDIO_API with features {features:#x}: {e}"));
        }
        Ok(Uffd { fd, user_mode_only })
    }

    /// Registers `[addr, addr + len)` for missing-page faults.
    fn register_missing(&self, addr: usize, len: usize) {
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: addr as u64,
                len: len as u64,
            },
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes one `struct uffdio_register`; the range is
        // our own anonymous mapping.
        let r = unsafe { libc::ioctl(self.fd, UFFDIO_REGISTER as _, &mut reg) };
        assert_eq!(r, 0, "UFFDIO_REGISTER: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Uffd {
    fn drop(&mut self) {
        // SAFETY: our own descriptor.
        unsafe { libc::close(self.fd) };
    }
}

fn uffd_mode(u: &Uffd) -> &'static str {
    if u.user_mode_only {
        "user-mode-only"
    } else {
        "all faults"
    }
}

/// With `UFFD_FEATURE_SIGBUS`, a missing page raises SIGBUS instead of waiting: every backend
/// must answer at once. Each backend gets a populated page followed by a missing one, both
/// registered. At the end a plain load of a missing page must kill the child with SIGBUS,
/// which shows the fixture is what the test claims.
#[test]
fn userfaultfd_sigbus_pages_answer_without_blocking() {
    const CASE: &str = "userfaultfd_sigbus_pages_answer_without_blocking";
    if is_child(CASE) {
        no_core_dumps();
        let uffd = match Uffd::open(UFFD_FEATURE_SIGBUS, false) {
            Ok(u) => u,
            Err(why) => {
                println!("skipped: userfaultfd: {why}");
                return;
            }
        };
        println!("userfaultfd mode: {}", uffd_mode(&uffd));
        let probers = available_probers();
        let r = Region::anon(2 * probers.len());
        let mut patterns = Vec::new();
        for (k, _) in probers.iter().enumerate() {
            let pat = page_pattern(2 * k, 0x60);
            r.fill(2 * k, &pat);
            patterns.push(pat);
        }
        uffd.register_missing(r.addr, r.len);
        let mut failures = Vec::new();
        println!("HOSTILE | fixture | backend | check | read | verdict |");
        println!("HOSTILE | --- | --- | --- | --- | --- |");
        for (k, p) in probers.iter().enumerate() {
            let b = p.backend();
            let (present, missing) = (r.page(2 * k), r.page(2 * k + 1));
            let mut fail = |what: String| failures.push(format!("{b}: {what}"));
            let c_missing = p.check(missing, 8);
            let c_span = p.check(present, 2 * ps());
            let c_present = p.check(present, ps());
            let mut read_shown = "-".to_owned();
            match p.guarantee() {
                Guarantee::Mapped | Guarantee::RegionReadable => {
                    // Mapped, and in a VMA with read permission.
                    for (what, got) in [("missing", &c_missing), ("present+missing", &c_span)] {
                        if *got != Ok(true) {
                            fail(format!("{what}: {}", show(got)));
                        }
                    }
                }
                Guarantee::Readable => {
                    for (what, got) in [("missing", &c_missing), ("present+missing", &c_span)] {
                        if !matches!(got, Ok(false) | Err(Error::Unavailable { .. })) {
                            fail(format!(
                                "{what}: {} (a load raises SIGBUS there)",
                                show(got)
                            ));
                        }
                    }
                    let mut buf = vec![0u8; ps()];
                    let rd = p.read(missing, &mut buf);
                    read_shown = show(&rd);
                    if !matches!(rd, Ok(false) | Err(Error::Unavailable { .. })) {
                        fail(format!("read of the missing page: {}", show(&rd)));
                    }
                    if p.read(present, &mut buf) != Ok(true) || buf != patterns[k] {
                        fail("read of the populated page".into());
                    }
                }
                _ => {}
            }
            // Unsound (dev-null) only has to answer; a "no" for the populated page would
            // still be wrong.
            if c_present != Ok(true) && p.guarantee() != Guarantee::Unsound {
                fail(format!("populated page: {}", show(&c_present)));
            }
            let verdict = if failures.iter().any(|f| f.starts_with(&format!("{b}:"))) {
                "FAIL"
            } else if p.guarantee() == Guarantee::Unsound {
                "proves nothing"
            } else {
                "ok"
            };
            row(
                "uffd missing page, SIGBUS feature",
                b,
                &format!("{} (present+missing: {})", show(&c_missing), show(&c_span)),
                &read_shown,
                verdict,
            );
        }
        assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
        println!("PROBES DONE");
        // The fixture's truth: a plain load of a missing page raises SIGBUS. The crate's
        // handler (if signal-guard is available) chains it to the default, which kills.
        // SAFETY: the intended fault of this disposable child.
        unsafe { raw_load(r.page(1)) };
        println!("CHILD SURVIVED");
        return;
    }
    let out = run_child_env(CASE, &[], Duration::from_secs(30));
    print!("{}", out.stdout);
    if out.stdout.contains("skipped: userfaultfd") {
        out.assert_success();
        return;
    }
    assert!(
        out.stdout.contains("PROBES DONE"),
        "the probes failed or hung: {out:?}"
    );
    assert_eq!(
        out.signal(),
        Some(libc::SIGBUS),
        "a plain load of the missing page should raise SIGBUS: {out:?}"
    );
}

/// The pages the resolver thread serves, and what it saw.
const MAX_PAGES: usize = 16;
static BASE: AtomicUsize = AtomicUsize::new(0);
static FAULTS: [AtomicUsize; MAX_PAGES] = [const { AtomicUsize::new(0) }; MAX_PAGES];
/// Set by the prober's thread when a probe of the page has returned.
static RETURNED: [AtomicBool; MAX_PAGES] = [const { AtomicBool::new(false) }; MAX_PAGES];
/// Set by the resolver when, after its delay, the probe of the page had still not returned.
static STILL_BLOCKED: [AtomicBool; MAX_PAGES] = [const { AtomicBool::new(false) }; MAX_PAGES];
static STOP: AtomicBool = AtomicBool::new(false);

/// Serves missing-page faults on `BASE..BASE + MAX_PAGES` pages until `STOP` (at most 20 s):
/// after 20 ms, even pages get their pattern (`UFFDIO_COPY`), odd pages zeros
/// (`UFFDIO_ZEROPAGE`).
fn resolver(fd: libc::c_int) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let source: Vec<Vec<u8>> = (0..MAX_PAGES).map(|i| page_pattern(i, 0x70)).collect();
    while !STOP.load(Ordering::SeqCst) && Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd of ours.
        if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
            continue;
        }
        let mut msg = UffdMsg {
            event: 0,
            reserved1: 0,
            reserved2: 0,
            reserved3: 0,
            arg: [0; 3],
        };
        // SAFETY: reads at most one message into our buffer of its size.
        let n = unsafe { libc::read(fd, (&mut msg as *mut UffdMsg).cast(), size_of::<UffdMsg>()) };
        if n != size_of::<UffdMsg>() as isize {
            continue;
        }
        assert_eq!(msg.event, UFFD_EVENT_PAGEFAULT, "unexpected uffd event");
        let page = msg.arg[1] as usize & !(ps() - 1);
        let i = (page - BASE.load(Ordering::SeqCst)) / ps();
        assert!(i < MAX_PAGES, "fault outside the registered pages");
        FAULTS[i].fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        // Causal, not timed: the probe cannot have returned before we resolve the fault.
        STILL_BLOCKED[i].store(!RETURNED[i].load(Ordering::SeqCst), Ordering::SeqCst);
        let r = if i.is_multiple_of(2) {
            let mut copy = UffdioCopy {
                dst: page as u64,
                src: source[i].as_ptr() as u64,
                len: ps() as u64,
                mode: 0,
                copy: 0,
            };
            // SAFETY: UFFDIO_COPY copies one page from our buffer into the registered page.
            unsafe { libc::ioctl(fd, UFFDIO_COPY as _, &mut copy) }
        } else {
            let mut zero = UffdioZeropage {
                range: UffdioRange {
                    start: page as u64,
                    len: ps() as u64,
                },
                mode: 0,
                zeropage: 0,
            };
            // SAFETY: UFFDIO_ZEROPAGE maps the zero page at the registered page.
            unsafe { libc::ioctl(fd, UFFDIO_ZEROPAGE as _, &mut zero) }
        };
        assert!(
            r == 0 || support::errno() == libc::EEXIST,
            "resolving page {i}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Without `UFFD_FEATURE_SIGBUS`, a fault on a missing page waits for the resolver thread.
/// Each backend gets two missing pages: a "yes" (and the resolver's bytes) proves the probe
/// waited for the resolution, and the resolver sees that the probe had not returned while the
/// fault was pending. Backends that do not touch the page (mapped, region-readable,
/// dev-null) answer without any fault. A hang is the child's timeout, which fails the test.
#[test]
fn userfaultfd_page_blocks_probe_until_resolved() {
    blocks_until_resolved("userfaultfd_page_blocks_probe_until_resolved", false);
}

/// The same with a `UFFD_USER_MODE_ONLY` descriptor (what an unprivileged process gets when
/// `vm.unprivileged_userfaultfd` is 0): the kernel's own faults are refused, so the
/// kernel-copy backends answer "no" at once; only the guarded load waits and then reads.
#[test]
fn userfaultfd_user_mode_only_blocks_only_the_guarded_load() {
    blocks_until_resolved(
        "userfaultfd_user_mode_only_blocks_only_the_guarded_load",
        true,
    );
}

fn blocks_until_resolved(case: &str, user_mode_only: bool) {
    if is_child(case) {
        let uffd = match Uffd::open(0, user_mode_only) {
            Ok(u) => u,
            Err(why) => {
                println!("skipped: userfaultfd: {why}");
                return;
            }
        };
        println!("userfaultfd mode: {}", uffd_mode(&uffd));
        let probers = available_probers();
        assert!(2 * probers.len() <= MAX_PAGES);
        let r = Region::anon(2 * probers.len());
        BASE.store(r.addr, Ordering::SeqCst);
        uffd.register_missing(r.addr, r.len);
        let fd = uffd.fd;
        let t = std::thread::spawn(move || resolver(fd));
        let mut failures = Vec::new();
        println!("HOSTILE | fixture | backend | check | read | verdict |");
        println!("HOSTILE | --- | --- | --- | --- | --- |");
        for (k, p) in probers.iter().enumerate() {
            let b = p.backend();
            let (i0, i1) = (2 * k, 2 * k + 1);
            let mut fail = |what: String| failures.push(format!("{b}: {what}"));
            let check;
            let mut read_shown = "-".to_owned();
            let mut verdict = "ok";
            match p.guarantee() {
                Guarantee::Readable => {
                    // Page i0: check (served with the pattern), then read it back.
                    check = p.check(r.page(i0), 8);
                    RETURNED[i0].store(true, Ordering::SeqCst);
                    // Page i1: read (served with zeros).
                    let mut buf = vec![0xffu8; ps()];
                    let rd = p.read(r.page(i1), &mut buf);
                    RETURNED[i1].store(true, Ordering::SeqCst);
                    read_shown = show(&rd);
                    let kernel_copy = b != Backend::SignalGuard;
                    if uffd.user_mode_only && kernel_copy {
                        // The kernel's own fault is refused (EFAULT): "no" without waiting, and
                        // no fault reaches the resolver.
                        if check != Ok(false) || rd != Ok(false) {
                            fail(format!(
                                "user-mode-only uffd: expected no/no, got {}/{}",
                                show(&check),
                                show(&rd)
                            ));
                        }
                        let faults =
                            FAULTS[i0].load(Ordering::SeqCst) + FAULTS[i1].load(Ordering::SeqCst);
                        if faults != 0 {
                            fail(format!(
                                "user-mode-only uffd: {faults} faults were handed over"
                            ));
                        }
                        verdict = "false negative (user-mode-only uffd)";
                    } else {
                        if check != Ok(true) {
                            fail(format!("check after resolution: {}", show(&check)));
                        }
                        if rd != Ok(true) || buf.iter().any(|&x| x != 0) {
                            fail(format!("read after resolution: {} or not zeros", show(&rd)));
                        }
                        let mut back = vec![0u8; ps()];
                        if p.read(r.page(i0), &mut back) != Ok(true)
                            || back != page_pattern(i0, 0x70)
                        {
                            fail("read of the resolved page is not the resolver's pattern".into());
                        }
                        for i in [i0, i1] {
                            if FAULTS[i].load(Ordering::SeqCst) != 1 {
                                fail(format!(
                                    "page {i}: {} faults, expected 1",
                                    FAULTS[i].load(Ordering::SeqCst)
                                ));
                            }
                            if !STILL_BLOCKED[i].load(Ordering::SeqCst) {
                                fail(format!("page {i}: the probe returned before resolution"));
                            }
                        }
                        verdict = "blocked until resolved";
                    }
                }
                _ => {
                    // These never touch the page: no fault, no wait.
                    check = p.check(r.page(i0), 2 * ps());
                    RETURNED[i0].store(true, Ordering::SeqCst);
                    RETURNED[i1].store(true, Ordering::SeqCst);
                    let faults =
                        FAULTS[i0].load(Ordering::SeqCst) + FAULTS[i1].load(Ordering::SeqCst);
                    if p.guarantee() != Guarantee::Unsound && check != Ok(true) {
                        fail(format!("mapped, readable region: {}", show(&check)));
                    }
                    if faults != 0 {
                        fail(format!("{faults} faults from a backend that loads nothing"));
                    }
                    if p.guarantee() == Guarantee::Unsound {
                        verdict = "proves nothing";
                    }
                }
            }
            if failures.iter().any(|f| f.starts_with(&format!("{b}:"))) {
                verdict = "FAIL";
            }
            row(
                &format!(
                    "uffd missing page ({}), resolved after 20 ms",
                    uffd_mode(&uffd)
                ),
                b,
                &show(&check),
                &read_shown,
                verdict,
            );
        }
        STOP.store(true, Ordering::SeqCst);
        t.join().expect("resolver thread");
        assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
        println!("CHILD DONE");
        return;
    }
    let out = run_child_env(case, &[], Duration::from_secs(30));
    print!("{}", out.stdout);
    out.assert_success();
    assert!(
        out.stdout.contains("CHILD DONE") || out.stdout.contains("skipped: userfaultfd"),
        "{out:?}"
    );
}

/// Data pages under a memory protection key (x86 `pku` + `ospke`): a page of a readable VMA
/// whose key denies this thread access (`PKEY_DISABLE_ACCESS`) faults on a CPU load, although
/// `/proc/self/maps` shows `r`; a key that only denies writes leaves it loadable. Judged for
/// every backend against a plain load in a grandchild, which inherits this thread's PKRU.
#[test]
fn pkey_access_disabled_pages() {
    const CASE: &str = "pkey_access_disabled_pages";
    if is_child(CASE) {
        no_core_dumps();
        const PKEY_DISABLE_ACCESS: libc::c_ulong = 1;
        const PKEY_DISABLE_WRITE: libc::c_ulong = 2;
        let mut keys = Vec::new();
        for rights in [PKEY_DISABLE_ACCESS, PKEY_DISABLE_WRITE] {
            // SAFETY: pkey_alloc takes flags and access rights; it sets this thread's PKRU
            // for the new key only.
            let k = unsafe { libc::syscall(libc::SYS_pkey_alloc, 0 as libc::c_ulong, rights) };
            if k < 0 {
                println!(
                    "skipped: protection keys: pkey_alloc: {}",
                    std::io::Error::last_os_error()
                );
                return;
            }
            keys.push(k as libc::c_int);
        }
        let probers = available_probers();
        let mut failures = Vec::new();
        println!("HOSTILE | fixture | backend | check | read | verdict |");
        println!("HOSTILE | --- | --- | --- | --- | --- |");
        for p in &probers {
            let r = Region::anon(2);
            let pats = [page_pattern(0, 0x81), page_pattern(1, 0x82)];
            for (i, (&key, rights)) in keys.iter().zip(["access", "write"]).enumerate() {
                r.fill(i, &pats[i]);
                // SAFETY: pkey_mprotect of a page of our own mapping with a key we own.
                let ret = unsafe {
                    libc::syscall(
                        libc::SYS_pkey_mprotect,
                        r.page(i),
                        ps(),
                        libc::PROT_READ | libc::PROT_WRITE,
                        key,
                    )
                };
                assert_eq!(ret, 0, "pkey_mprotect");
                assert_eq!(protection_key(r.page(i)), key as u32);
                assert!(maps_perms(r.page(i)).starts_with("rw"));
                let name = format!("read-write, pkey {key} denies {rights}");
                let truth = load_in_grandchild(r.page(i), &pats[i]);
                let expected = if rights == "access" {
                    Load::Faults(libc::SIGSEGV)
                } else {
                    Load::Loads
                };
                assert_eq!(truth, expected, "{name}: plain load");
                // The VMA is readable: region-readable says yes, which is its guarantee.
                if p.guarantee() == Guarantee::RegionReadable {
                    let c = p.check(r.page(i), ps());
                    let ok = matches!(c, Ok(true) | Err(Error::Unavailable { .. }));
                    row(
                        &name,
                        p.backend(),
                        &show(&c),
                        "-",
                        if ok { "ok (region)" } else { "FAIL" },
                    );
                    if !ok {
                        failures.push(format!("procmap-query on {name}: {}", show(&c)));
                    }
                    continue;
                }
                // The documented exception: process_vm_readv pins the page as a remote
                // access, which the kernel does not check against protection keys. Its
                // `check` may say yes; its `read` must still copy exactly the page's bytes.
                if p.backend() == Backend::ProcessVmReadv && rights == "access" {
                    let c = p.check(r.page(i), ps());
                    let mut buf = vec![0u8; ps()];
                    let rd = p.read(r.page(i), &mut buf);
                    let ok = match rd {
                        Ok(true) => buf == pats[i],
                        Ok(false) | Err(Error::Unavailable { .. }) => true,
                        Err(_) => false,
                    };
                    row(
                        &name,
                        p.backend(),
                        &show(&c),
                        &show(&rd),
                        if ok {
                            "documented: remote access ignores protection keys"
                        } else {
                            "FAIL"
                        },
                    );
                    if !ok {
                        failures.push(format!("process-vm-readv read on {name}: {}", show(&rd)));
                    }
                    continue;
                }
                if let Some(f) = judge_page(&name, p, r.page(i), &pats[i], truth) {
                    failures.push(f);
                }
            }
        }
        assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
        println!("CHILD DONE");
        return;
    }
    let out = run_child_env(CASE, &[], Duration::from_secs(60));
    print!("{}", out.stdout);
    out.assert_success();
    assert!(
        out.stdout.contains("CHILD DONE") || out.stdout.contains("skipped: protection keys"),
        "{out:?}"
    );
}
