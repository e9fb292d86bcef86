//! The conformance suite: every backend against fixtures built with mmap, mprotect, munmap,
//! madvise and files, judged against the constructed truth under the backend's guarantee.
//! A false positive always fails; a false negative fails unless it is a documented one.

mod support;

use addrprobe::{AutoOptions, Backend, Error, Guarantee, Prober};
use addrprobe_lab::fixtures::{self, Expect, FixtureSet};
use support::SIGNAL_GUARD_ARCH;

/// Backends that need nothing but plain syscalls and must work on any supported kernel
/// (`SignalGuard` on the architectures that have its guarded load).
const ALWAYS_AVAILABLE: [Backend; 4] = [
    Backend::Msync,
    Backend::Mincore,
    Backend::SigprocMask,
    Backend::SignalGuard,
];

fn prober(backend: Backend) -> Option<Prober> {
    match Prober::new(backend) {
        Ok(p) => Some(p),
        Err(e @ Error::Unavailable { .. })
            if !ALWAYS_AVAILABLE.contains(&backend)
                || (backend == Backend::SignalGuard && !SIGNAL_GUARD_ARCH) =>
        {
            eprintln!("skipping {backend}: {e}");
            None
        }
        Err(e) => panic!("{backend} must be usable here: {e}"),
    }
}

fn page() -> usize {
    addrprobe::range::page_size()
}

#[test]
fn every_backend_matches_the_constructed_truth() {
    let set = FixtureSet::build().expect("fixtures");
    let mut failures = Vec::new();
    for backend in Backend::ALL {
        let Some(p) = prober(backend) else { continue };
        assert_eq!(p.backend(), backend);
        assert_eq!(p.guarantee(), backend.guarantee());
        for cell in fixtures::run_matrix(&set, &p) {
            if cell.verdict.is_failure() {
                failures.push(format!(
                    "{backend} on {}: {:?} -> {:?}",
                    cell.fixture, cell.answer, cell.verdict
                ));
            }
            if cell.read_ok == Some(false) {
                failures.push(format!("{backend} read wrong bytes from {}", cell.fixture));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "conformance failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn readable_backends_read_every_readable_fixture() {
    let set = FixtureSet::build().expect("fixtures");
    for backend in Backend::ALL
        .into_iter()
        .filter(|b| b.guarantee() == Guarantee::Readable)
    {
        let Some(p) = prober(backend) else { continue };
        let mut read = 0;
        set.for_each(|fx| {
            let (Some(want), Expect::Answer(t)) = (&fx.contents, fx.expect) else {
                return;
            };
            if fixtures::known_false_negative(backend, fx.name).is_some() || !t.readable {
                return;
            }
            let mut buf = vec![0u8; want.len()];
            assert_eq!(
                p.read(fx.addr, &mut buf),
                Ok(true),
                "{backend} read of {}",
                fx.name
            );
            assert_eq!(&buf, want, "{backend} bytes of {}", fx.name);
            read += 1;
        });
        assert!(read >= 8, "{backend} read only {read} fixtures");
    }
}

/// `readable` pattern-filled readable pages followed by one page that is either given
/// `tail` protection or unmapped (`None`).
struct Layout {
    addr: usize,
    len: usize,
    pattern: Vec<u8>,
}

impl Layout {
    fn new(readable: usize, tail: Option<i32>) -> Layout {
        let ps = page();
        let len = (readable + 1) * ps;
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let addr = p as usize;
        let pattern = fixtures::pattern(readable * ps, 42);
        // SAFETY: writing into and reprotecting our own mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(pattern.as_ptr(), addr as *mut u8, pattern.len());
            let tail_addr = (addr + readable * ps) as *mut libc::c_void;
            match tail {
                Some(prot) => assert_eq!(libc::mprotect(tail_addr, ps, prot), 0),
                None => assert_eq!(libc::munmap(tail_addr, ps), 0),
            }
        }
        // Drop must never unmap the hole again: another thread's mmap may own it by then.
        let len = if tail.is_none() { len - ps } else { len };
        Layout { addr, len, pattern }
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

#[test]
fn read_refuses_ranges_that_run_into_unreadable_pages() {
    let ps = page();
    for tail in [None, Some(libc::PROT_NONE)] {
        let l = Layout::new(2, tail);
        for backend in Backend::ALL
            .into_iter()
            .filter(|b| b.guarantee() == Guarantee::Readable)
        {
            let Some(p) = prober(backend) else { continue };
            let mut buf = vec![0u8; ps];
            // Entirely readable, crossing the boundary between the two readable pages.
            assert_eq!(p.read(l.addr + ps / 2, &mut buf), Ok(true), "{backend}");
            assert_eq!(buf, l.pattern[ps / 2..ps / 2 + ps], "{backend}");
            // Runs one byte into the unreadable page.
            assert_eq!(
                p.read(l.addr + ps + 1, &mut buf),
                Ok(false),
                "{backend} {tail:?}"
            );
            assert_eq!(
                p.check(l.addr + 2 * ps - 1, 2),
                Ok(false),
                "{backend} {tail:?}"
            );
            assert_eq!(
                p.check(l.addr + 2 * ps - 1, 1),
                Ok(true),
                "{backend} {tail:?}"
            );
        }
    }
}

#[test]
fn mapped_and_region_backends_refuse_to_read() {
    let x = 7u64;
    let addr = &x as *const u64 as usize;
    for backend in [
        Backend::Msync,
        Backend::Mincore,
        Backend::DevNull,
        Backend::ProcmapQuery,
    ] {
        let Some(p) = prober(backend) else { continue };
        let mut buf = [0u8; 8];
        assert!(
            matches!(p.read(addr, &mut buf), Err(Error::Unsupported { .. })),
            "{backend} must not read"
        );
        assert_eq!(buf, [0u8; 8], "{backend} wrote into dst");
    }
}

#[test]
fn zero_length_is_yes_and_wrapping_is_an_error() {
    for backend in Backend::ALL {
        let Some(p) = prober(backend) else { continue };
        assert_eq!(p.check(0, 0), Ok(true), "{backend}");
        assert_eq!(p.check(usize::MAX, 0), Ok(true), "{backend}");
        for (addr, len) in [
            (1usize, usize::MAX),
            (usize::MAX, 1),
            (usize::MAX - 4095, 8192),
        ] {
            assert_eq!(
                p.check(addr, len),
                Err(Error::InvalidRange { addr, len }),
                "{backend} {addr:#x}+{len:#x}"
            );
        }
    }
}

#[test]
fn errno_is_preserved() {
    let l = Layout::new(1, None);
    for backend in Backend::ALL {
        let Some(p) = prober(backend) else { continue };
        for addr in [l.addr, l.addr + page(), 0] {
            // SAFETY: writing this thread's errno.
            unsafe { *libc::__errno_location() = 4321 };
            let _ = p.check(addr, 8);
            let mut buf = [0u8; 8];
            let _ = p.read(addr, &mut buf);
            assert_eq!(
                // SAFETY: reading this thread's errno.
                unsafe { *libc::__errno_location() },
                4321,
                "{backend} at {addr:#x}"
            );
        }
    }
}

#[test]
fn names_round_trip_and_guarantees_are_as_documented() {
    let names = [
        "msync",
        "mincore",
        "dev-null",
        "pipe",
        "sigprocmask",
        "process-vm-readv",
        "signal-guard",
        "procmap-query",
    ];
    assert_eq!(Backend::ALL.len(), 8);
    for (b, n) in Backend::ALL.into_iter().zip(names) {
        assert_eq!(b.to_string(), n);
        assert_eq!(n.parse::<Backend>(), Ok(b));
    }
    let err = "nope".parse::<Backend>().unwrap_err().to_string();
    assert!(err.contains("nope") && err.contains("sigprocmask"), "{err}");
    use Guarantee::*;
    let expected = [
        Mapped,
        Mapped,
        Unsound,
        Readable,
        Readable,
        Readable,
        Readable,
        RegionReadable,
    ];
    for (b, g) in Backend::ALL.into_iter().zip(expected) {
        assert_eq!(b.guarantee(), g, "{b}");
    }
}

#[test]
fn auto_picks_a_readable_backend_without_a_signal_handler() {
    let p = Prober::auto().expect("auto");
    assert_eq!(p.guarantee(), Guarantee::Readable);
    assert!(!p.backend().installs_signal_handler());
    assert_eq!(
        p.backend(),
        Backend::SigprocMask,
        "first candidate without a handler"
    );
    assert!(p.supports_read());
    for b in [
        Backend::Msync,
        Backend::Mincore,
        Backend::DevNull,
        Backend::ProcmapQuery,
    ] {
        assert!(!Prober::new(b).is_ok_and(|p| p.supports_read()), "{b}");
    }
    let with = AutoOptions::new()
        .allow_signal_handler(true)
        .build()
        .expect("auto with handler");
    // Without the guarded load, allowing a handler changes nothing.
    let expected = if SIGNAL_GUARD_ARCH {
        Backend::SignalGuard
    } else {
        Backend::SigprocMask
    };
    assert_eq!(with.backend(), expected);
}

#[test]
fn errors_say_what_went_wrong() {
    let e = Error::InvalidRange {
        addr: 0x10,
        len: usize::MAX,
    };
    assert!(e.to_string().contains("wraps"), "{e}");
    let p = Prober::new(Backend::Msync).unwrap();
    let err = p.read(0x1000, &mut [0u8; 4]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("msync") && text.contains("read"), "{text}");
    let e = Error::Unavailable {
        backend: Backend::ProcmapQuery,
        errno: Some(libc::ENOTTY),
        reason: "ioctl(PROCMAP_QUERY)",
    };
    assert!(
        e.to_string().contains("ENOTTY") && e.is_unavailable(),
        "{e}"
    );
}

#[test]
fn probes_never_write_to_probed_memory() {
    let l = Layout::new(3, Some(libc::PROT_READ));
    assert_eq!(
        // SAFETY: making the pattern pages read-only; the layout owns them.
        unsafe { libc::mprotect(l.addr as *mut libc::c_void, 3 * page(), libc::PROT_READ) },
        0
    );
    for backend in Backend::ALL {
        let Some(p) = prober(backend) else { continue };
        assert_eq!(p.check(l.addr, 4 * page()), Ok(true), "{backend}");
        if p.guarantee() == Guarantee::Readable {
            let mut buf = vec![0u8; 3 * page()];
            assert_eq!(p.read(l.addr, &mut buf), Ok(true), "{backend}");
            assert_eq!(buf, l.pattern, "{backend}");
        }
    }
    // SAFETY: the pages are mapped readable; reading them back.
    let after = unsafe { std::slice::from_raw_parts(l.addr as *const u8, 3 * page()) };
    assert_eq!(after, &l.pattern[..]);
}
