//! Concurrency and signals: probing memory that another thread keeps remapping, probing from
//! SIGPROF handlers at 10 kHz on several threads, and a probe inside a signal handler that
//! interrupts a probe of the same backend on the same thread.
//!
//! Each case installs handlers or timers, or needs to be alone with its memory, so each runs
//! in a child process (a re-execution of this test binary).

mod support;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use addrprobe::{Backend, Guarantee, Prober};
use support::{Rng, figure, is_child, ps, run_child};

/// The byte at offset `i` of page `page` in every fixture of this file.
fn pat(page: usize, i: usize) -> u8 {
    ((i as u8).wrapping_mul(13) ^ (page as u8).wrapping_mul(101)).wrapping_add(5) | 1
}

fn expect_ok(test: &str) {
    let out = run_child(test);
    out.assert_success();
    out.forward_figures();
}

// ---------------------------------------------------------------------------------------
// Eight threads probe a region while a ninth keeps unmapping, mapping and re-protecting it.

const PAGES: usize = 32;
const RUN: Duration = Duration::from_millis(1500);
const MAX_ITERATIONS: usize = 2_000_000;

fn memfd_with_pattern() -> i32 {
    // SAFETY: memfd_create with a static name.
    let fd = unsafe { libc::memfd_create(c"concurrency".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    let mut bytes = vec![0u8; PAGES * ps()];
    for (o, b) in bytes.iter_mut().enumerate() {
        *b = pat(o / ps(), o % ps());
    }
    // SAFETY: writing our own buffer to our own memfd.
    let n = unsafe { libc::pwrite(fd, bytes.as_ptr().cast(), bytes.len(), 0) };
    assert_eq!(n as usize, bytes.len());
    fd
}

fn child_mutating_region() {
    let fd = memfd_with_pattern();
    let len = PAGES * ps();
    let base = support::mmap_quiet(len, libc::PROT_READ, libc::MAP_SHARED, fd);
    let probers = support::all_probers();
    let stop = AtomicBool::new(false);
    let (probes, verified, mismatches, errors, mutations, lost_pages) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    std::thread::scope(|s| {
        // The mutator. Page states: 0 mapped readable, 1 PROT_NONE, 2 unmapped, 3 anonymous
        // PROT_NONE over it, 4 lost (the hole was taken by someone else: left alone).
        s.spawn(|| {
            let mut state = [0u8; PAGES];
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let start = Instant::now();
            while start.elapsed() < RUN {
                let i = rng.below(PAGES);
                let addr = (base + i * ps()) as *mut libc::c_void;
                let op = rng.below(4);
                // SAFETY: every call targets page `i` of our own region, which is ours in
                // every state but 4; MAP_FIXED is only used over a page that is ours.
                unsafe {
                    match (state[i], op) {
                        (4, _) => continue,
                        (0 | 1 | 3, 0) => {
                            assert_eq!(libc::munmap(addr, ps()), 0);
                            state[i] = 2;
                        }
                        (2, _) => {
                            let p = libc::mmap(
                                addr,
                                ps(),
                                libc::PROT_READ,
                                libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE,
                                fd,
                                (i * ps()) as libc::off_t,
                            );
                            if p == addr {
                                state[i] = 0;
                            } else {
                                if p != libc::MAP_FAILED {
                                    libc::munmap(p, ps());
                                }
                                state[i] = 4;
                                lost_pages.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        (0 | 1, 1) => {
                            assert_eq!(libc::mprotect(addr, ps(), libc::PROT_NONE), 0);
                            state[i] = 1;
                        }
                        (0 | 1, 2) => {
                            assert_eq!(libc::mprotect(addr, ps(), libc::PROT_READ), 0);
                            state[i] = 0;
                        }
                        (0 | 1, _) => {
                            let p = libc::mmap(
                                addr,
                                ps(),
                                libc::PROT_NONE,
                                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                                -1,
                                0,
                            );
                            assert_eq!(p, addr);
                            state[i] = 3;
                        }
                        (3, _) => {
                            let p = libc::mmap(
                                addr,
                                ps(),
                                libc::PROT_READ,
                                libc::MAP_SHARED | libc::MAP_FIXED,
                                fd,
                                (i * ps()) as libc::off_t,
                            );
                            assert_eq!(p, addr);
                            state[i] = 0;
                        }
                        _ => unreachable!(),
                    }
                }
                mutations.fetch_add(1, Ordering::Relaxed);
            }
            stop.store(true, Ordering::Relaxed);
        });
        for (t, p) in probers.iter().enumerate() {
            let (stop, probes, verified, mismatches, errors) =
                (&stop, &probes, &verified, &mismatches, &errors);
            s.spawn(move || {
                let mut rng = Rng(0x1234_5678 + t as u64);
                let mut buf = vec![0u8; 2 * ps()];
                let readable = p.guarantee() == Guarantee::Readable;
                for _ in 0..MAX_ITERATIONS {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Mostly short reads inside one page, sometimes two pages.
                    let len = if rng.below(4) == 0 {
                        1 + rng.below(2 * ps())
                    } else {
                        1 + rng.below(256)
                    };
                    let off = rng.below(len_of_region() - len + 1);
                    let addr = base + off;
                    let got = if readable {
                        p.read(addr, &mut buf[..len])
                    } else {
                        p.check(addr, len)
                    };
                    probes.fetch_add(1, Ordering::Relaxed);
                    match got {
                        Ok(true) if readable => {
                            let ok = (0..len).all(|k| {
                                let o = off + k;
                                buf[k] == pat(o / ps(), o % ps())
                            });
                            if ok {
                                verified.fetch_add(1, Ordering::Relaxed);
                            } else {
                                mismatches.fetch_add(1, Ordering::Relaxed);
                                eprintln!("{}: read of {len} bytes at +{off:#x} returned bytes the region never held", p.backend());
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("{}: {e}", p.backend());
                        }
                    }
                }
            });
        }
    });
    let lost = lost_pages.load(Ordering::Relaxed);
    assert_eq!(
        mismatches.load(Ordering::Relaxed),
        0,
        "reads returned wrong bytes"
    );
    assert_eq!(errors.load(Ordering::Relaxed), 0, "probes returned errors");
    assert!(
        lost <= PAGES / 2,
        "{lost} pages lost to other mappings: the test proves little"
    );
    figure("concurrency.prober_threads", probers.len());
    figure("concurrency.probes", probes.load(Ordering::Relaxed));
    figure(
        "concurrency.verified_reads",
        verified.load(Ordering::Relaxed),
    );
    figure("concurrency.mutations", mutations.load(Ordering::Relaxed));
    figure("concurrency.wrong_bytes", 0);
    figure("concurrency.holes_taken_by_others", lost);
}

fn len_of_region() -> usize {
    PAGES * ps()
}

/// Eight threads (one per backend) probe a region while another thread keeps `munmap`ing,
/// `mmap`ing and `mprotect`ing its pages. Nothing crashes or hangs, and every `read` that
/// answers yes returned exactly the bytes the page holds whenever it is readable (the pages
/// are mappings of a memfd, so a remapped page holds the same bytes as before).
#[test]
fn eight_threads_probe_a_region_being_remapped() {
    if is_child("eight_threads_probe_a_region_being_remapped") {
        return child_mutating_region();
    }
    expect_ok("eight_threads_probe_a_region_being_remapped");
}

// ---------------------------------------------------------------------------------------
// Probing from signal handlers.

static PROBERS: OnceLock<Vec<Prober>> = OnceLock::new();
/// [readable page of pattern 0][PROT_NONE page]
static FIXTURE: AtomicUsize = AtomicUsize::new(0);
static SIGNALS: AtomicUsize = AtomicUsize::new(0);
static HANDLER_PROBES: AtomicUsize = AtomicUsize::new(0);
static HANDLER_WRONG: AtomicUsize = AtomicUsize::new(0);
static ERRNO_CLOBBERED: AtomicUsize = AtomicUsize::new(0);
/// Index + 1 of the backend whose probe the interrupted thread is inside, 0 if none.
static IN_PROBE: AtomicUsize = AtomicUsize::new(0);
static NESTED: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];

/// Probes the fixture with `p` and counts wrong answers. Async-signal-safe.
fn probe_fixture(p: &Prober, salt: usize) -> usize {
    let base = FIXTURE.load(Ordering::Relaxed);
    let mut wrong = 0;
    let g = p.guarantee();
    let off = salt % (ps() - 64);
    if p.check(base + off, 64) != Ok(true) {
        wrong += 1;
    }
    let none_says = matches!(g, Guarantee::Mapped | Guarantee::Unsound);
    if p.check(base + ps() + off, 8) != Ok(none_says) {
        wrong += 1;
    }
    if g == Guarantee::Readable {
        let mut buf = [0u8; 64];
        let same =
            p.read(base + off, &mut buf) == Ok(true) && (0..64).all(|k| buf[k] == pat(0, off + k));
        wrong += usize::from(!same);
    }
    wrong
}

extern "C" fn on_sigprof(_sig: libc::c_int) {
    let n = SIGNALS.fetch_add(1, Ordering::Relaxed);
    let Some(probers) = PROBERS.get() else { return };
    let before = support::errno();
    support::set_errno(0x5a5a);
    let inside = IN_PROBE.load(Ordering::Relaxed);
    let p = if inside > 0 {
        // Reentrancy: the same backend as the probe this signal interrupted.
        NESTED[inside - 1].fetch_add(1, Ordering::Relaxed);
        &probers[inside - 1]
    } else {
        &probers[n % probers.len()]
    };
    HANDLER_WRONG.fetch_add(probe_fixture(p, n.wrapping_mul(7919)), Ordering::Relaxed);
    HANDLER_PROBES.fetch_add(1, Ordering::Relaxed);
    if support::errno() != 0x5a5a {
        ERRNO_CLOBBERED.fetch_add(1, Ordering::Relaxed);
    }
    support::set_errno(before);
}

fn setup_signal_fixture() {
    let r = support::Region::anon(2);
    let bytes: Vec<u8> = (0..ps()).map(|i| pat(0, i)).collect();
    r.fill(0, &bytes);
    r.protect(1, libc::PROT_NONE);
    FIXTURE.store(r.addr, Ordering::Relaxed);
    std::mem::forget(r); // lives as long as the child
    let mut probers = support::all_probers();
    // ADDRPROBE_ONLY=name,name narrows a run down to some backends (for investigation).
    if let Ok(only) = std::env::var("ADDRPROBE_ONLY") {
        probers.retain(|p| only.split(',').any(|n| n == p.backend().name()));
    }
    PROBERS.set(probers).ok().unwrap();
    // SAFETY: an ordinary handler; it only probes, counts and saves/restores errno.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = on_sigprof as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGPROF, &sa, core::ptr::null_mut()),
            0
        );
    }
}

/// A timer that sends SIGPROF to the calling thread every `period_ns`.
struct ThreadTimer(libc::timer_t);

impl ThreadTimer {
    fn start(period_ns: i64) -> ThreadTimer {
        // SAFETY: timer_create/settime with valid structs; the signal goes to this thread.
        unsafe {
            let mut sev: libc::sigevent = core::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = libc::SIGPROF;
            sev.sigev_notify_thread_id = libc::gettid();
            let mut id: libc::timer_t = core::ptr::null_mut();
            assert_eq!(
                libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut id),
                0
            );
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: period_ns,
                },
                it_value: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: period_ns,
                },
            };
            assert_eq!(libc::timer_settime(id, 0, &spec, core::ptr::null_mut()), 0);
            ThreadTimer(id)
        }
    }
}

impl Drop for ThreadTimer {
    fn drop(&mut self) {
        // SAFETY: deleting our own timer.
        unsafe { libc::timer_delete(self.0) };
    }
}

const SIGPROF_THREADS: usize = 4;
const SIGPROF_RUN: Duration = Duration::from_secs(2);

fn child_sigprof() {
    setup_signal_fixture();
    let probers = PROBERS.get().unwrap();
    let wrong = AtomicUsize::new(0);
    let main_probes = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..SIGPROF_THREADS {
            let (wrong, main_probes) = (&wrong, &main_probes);
            s.spawn(move || {
                let _timer = ThreadTimer::start(100_000); // 10 kHz
                let start = Instant::now();
                let mut k = t;
                while start.elapsed() < SIGPROF_RUN && k < MAX_ITERATIONS {
                    let p = &probers[k % probers.len()];
                    wrong.fetch_add(probe_fixture(p, k), Ordering::Relaxed);
                    main_probes.fetch_add(1, Ordering::Relaxed);
                    k += 1;
                }
            });
        }
    });
    let signals = SIGNALS.load(Ordering::Relaxed);
    assert_eq!(
        wrong.load(Ordering::Relaxed),
        0,
        "wrong answers outside the handler"
    );
    assert_eq!(
        HANDLER_WRONG.load(Ordering::Relaxed),
        0,
        "wrong answers inside the handler"
    );
    assert_eq!(
        ERRNO_CLOBBERED.load(Ordering::Relaxed),
        0,
        "a probe changed errno"
    );
    assert!(
        signals >= SIGPROF_THREADS * 100,
        "only {signals} SIGPROF were delivered"
    );
    figure("sigprof.threads", SIGPROF_THREADS);
    figure("sigprof.signals_delivered", signals);
    figure(
        "sigprof.probes_in_handler",
        HANDLER_PROBES.load(Ordering::Relaxed),
    );
    figure(
        "sigprof.probes_outside_handler",
        main_probes.load(Ordering::Relaxed),
    );
    figure("sigprof.wrong_answers", 0);
    figure("sigprof.errno_clobbered", 0);
}

/// A SIGPROF handler probes with every backend, 10,000 times a second on each of four
/// threads, for two seconds, while the threads themselves probe. Every answer is checked
/// against the fixture, and `errno` must survive every probe.
#[test]
fn sigprof_handlers_probe_at_10khz() {
    if is_child("sigprof_handlers_probe_at_10khz") {
        return child_sigprof();
    }
    expect_ok("sigprof_handlers_probe_at_10khz");
}

/// Large reads (16 pages) with each backend on one thread while a 10 kHz timer interrupts
/// them; the handler probes with the *same* backend. The pipe backend must not mix the
/// bytes of the two probes.
fn child_reentrancy() {
    setup_signal_fixture();
    let probers = PROBERS.get().unwrap();
    let big = support::Region::anon(16);
    for i in 0..16 {
        let bytes: Vec<u8> = (0..ps()).map(|k| pat(i + 1, k)).collect();
        big.fill(i, &bytes);
    }
    let mut buf = vec![0u8; 16 * ps()];
    let mut outer_wrong = 0;
    let mut outer = 0;
    let _timer = ThreadTimer::start(100_000);
    // 250 ms per backend; on a slow (emulated) CPU, up to ADDRPROBE_TIMEOUT_SCALE times as
    // long while no signal has landed inside one of its probes yet (the loop's own checking
    // of the bytes can take most of the time there).
    let slice = Duration::from_millis(250);
    let max = slice * support::timeout_scale();
    for (b, p) in probers.iter().enumerate() {
        let start = Instant::now();
        let mut n = 0;
        while n < 100_000 && {
            let t = start.elapsed();
            t < slice || (t < max && NESTED[b].load(Ordering::Relaxed) == 0)
        } {
            IN_PROBE.store(b + 1, Ordering::Relaxed);
            let got = if p.guarantee() == Guarantee::Readable {
                p.read(big.addr, &mut buf)
            } else {
                p.check(big.addr, buf.len())
            };
            IN_PROBE.store(0, Ordering::Relaxed);
            let ok = got == Ok(true)
                && (p.guarantee() != Guarantee::Readable
                    || buf
                        .iter()
                        .enumerate()
                        .all(|(o, &v)| v == pat(o / ps() + 1, o % ps())));
            outer_wrong += usize::from(!ok);
            if p.guarantee() == Guarantee::Readable {
                buf.fill(0);
            }
            n += 1;
            outer += 1;
        }
    }
    drop(_timer);
    assert_eq!(
        outer_wrong, 0,
        "interrupted probes gave wrong answers or bytes"
    );
    assert_eq!(
        HANDLER_WRONG.load(Ordering::Relaxed),
        0,
        "nested probes gave wrong answers"
    );
    assert_eq!(ERRNO_CLOBBERED.load(Ordering::Relaxed), 0);
    let mut nested_total = 0;
    for (b, p) in probers.iter().enumerate() {
        let nested = NESTED[b].load(Ordering::Relaxed);
        println!(
            "{}: {nested} probes nested inside a probe of the same backend",
            p.backend()
        );
        if p.backend() == Backend::Pipe {
            assert!(
                nested > 0,
                "no signal landed inside a pipe probe: nothing was tested"
            );
        }
        nested_total += nested;
    }
    figure("reentrancy.outer_probes", outer);
    figure("reentrancy.nested_probes", nested_total);
    figure("reentrancy.wrong_answers", 0);
}

#[test]
fn probe_in_handler_interrupts_probe_of_same_backend() {
    if is_child("probe_in_handler_interrupts_probe_of_same_backend") {
        return child_reentrancy();
    }
    expect_ok("probe_in_handler_interrupts_probe_of_same_backend");
}
