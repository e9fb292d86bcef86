//! `GuardedLoads` (`Prober::guarded`) and the inline one-load path of `Prober::check` and
//! `Prober::read`, against memory the tests build: every width at every offset around page
//! boundaries (readable on both sides, and readable next to PROT_NONE), every small length,
//! the limits of user space, SIGBUS pages and several threads at once. SignalGuard installs a
//! process-wide handler, so every case runs in a child process.

mod support;

use addrprobe::range::USER_SPACE_LIMIT;
use addrprobe::{Backend, Error, GuardedLoads, Prober};
use support::{Region, is_child, ps, run_child};

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn guard() -> Prober {
    Prober::new(Backend::SignalGuard).expect("signal-guard")
}

/// What the bytes `[addr, addr + n)` must read as: `Some(bytes)` if all lie in `readable`
/// (a list of `[start, end)` with their contents), else `None`.
fn expected(addr: usize, n: usize, readable: &[(usize, &[u8])]) -> Option<Vec<u8>> {
    (0..n)
        .map(|k| {
            let a = addr + k;
            readable
                .iter()
                .find(|(start, bytes)| a >= *start && a < start + bytes.len())
                .map(|(start, bytes)| bytes[a - start])
        })
        .collect()
}

/// Every load width (the pair as 16 bytes), every `check`/`read` length 1..=16, at every
/// offset from 24 bytes before to 24 bytes after the boundary at `boundary`. Returns the wrong
/// answers.
fn sweep(
    p: &Prober,
    g: GuardedLoads<'_>,
    boundary: usize,
    readable: &[(usize, &[u8])],
) -> Vec<String> {
    let mut wrong = Vec::new();
    for addr in boundary - 24..boundary + 24 {
        let want = |n| expected(addr, n, readable);
        let got8 = g.load_u8(addr).map(|v| v.to_ne_bytes().to_vec());
        let got32 = g.load_u32(addr).map(|v| v.to_ne_bytes().to_vec());
        let got64 = g.load_u64(addr).map(|v| v.to_ne_bytes().to_vec());
        let got128 = g
            .load_u64_pair(addr)
            .map(|[lo, hi]| [lo.to_ne_bytes(), hi.to_ne_bytes()].concat());
        for (n, got) in [(1, got8), (4, got32), (8, got64), (16, got128)] {
            if got != want(n) {
                wrong.push(format!(
                    "load of {n} at {addr:#x}: {got:?}, want {:?}",
                    want(n)
                ));
            }
        }
        for len in 1..=16 {
            let readable_all = want(len).is_some();
            let c = p.check(addr, len);
            if c != Ok(readable_all) {
                wrong.push(format!(
                    "check({addr:#x}, {len}): {c:?}, want {readable_all}"
                ));
            }
            let mut buf = vec![0u8; len];
            let r = p.read(addr, &mut buf);
            if r != Ok(readable_all) || (readable_all && Some(&buf) != want(len).as_ref()) {
                wrong.push(format!(
                    "read({addr:#x}, {len}): {r:?} {buf:?}, want {:?}",
                    want(len)
                ));
            }
        }
    }
    wrong
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[test]
fn every_width_and_length_around_page_boundaries() {
    const NAME: &str = "every_width_and_length_around_page_boundaries";
    if is_child(NAME) {
        let p = guard();
        let g = p.guarded().expect("a SignalGuard prober has guarded loads");
        // Pages 0 and 1 readable (distinct patterns), page 2 PROT_NONE, page 3 unmapped.
        let r = Region::anon(4);
        let (p0, p1) = (support::page_pattern(0, 3), support::page_pattern(1, 3));
        r.fill(0, &p0);
        r.fill(1, &p1);
        r.protect(2, libc::PROT_NONE);
        r.unmap(3);
        let readable: [(usize, &[u8]); 2] = [(r.page(0), &p0), (r.page(1), &p1)];
        let mut wrong = Vec::new();
        // Readable on both sides: loads and reads that cross it succeed, with the right bytes.
        wrong.extend(sweep(&p, g, r.page(1), &readable));
        // Readable, then PROT_NONE; PROT_NONE, then unmapped.
        wrong.extend(sweep(&p, g, r.page(2), &readable));
        wrong.extend(sweep(&p, g, r.page(3), &readable));
        // Inside a page, away from its ends: 4 KiB blocks and 8-byte alignment do not matter.
        wrong.extend(sweep(&p, g, r.page(0) + ps() / 2, &readable));
        assert!(
            wrong.is_empty(),
            "{} wrong answers:\n{}",
            wrong.len(),
            wrong[..wrong.len().min(40)].join("\n")
        );
        println!("CHILD OK");
        return;
    }
    let out = run_child(NAME);
    out.assert_success();
    assert!(out.stdout.contains("CHILD OK"), "{out:?}");
}

/// Addresses at and above the top of user space are "no" without a load (as `check` answers
/// them), whatever the CPU would do there: the vsyscall page (readable under
/// `vsyscall=emulate`), non-canonical addresses (a general-protection fault, `SI_KERNEL`),
/// kernel addresses, the end of the address space. Below the limit, a non-canonical address
/// with 4-level paging is a general-protection fault the handler takes.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[test]
fn limits_of_user_space() {
    const NAME: &str = "limits_of_user_space";
    if is_child(NAME) {
        let p = guard();
        let g = p.guarded().unwrap();
        for addr in [
            0,
            1,
            USER_SPACE_LIMIT - 8,
            USER_SPACE_LIMIT - 7,
            USER_SPACE_LIMIT - 1,
            USER_SPACE_LIMIT,
            1 << 63,
            0xffff_8000_0000_0000,
            0xffff_ffff_ff60_0000, // vsyscall
            usize::MAX - 7,
            usize::MAX - 3,
            usize::MAX,
        ] {
            assert_eq!(g.load_u8(addr), None, "load_u8 {addr:#x}");
            assert_eq!(g.load_u32(addr), None, "load_u32 {addr:#x}");
            assert_eq!(g.load_u64(addr), None, "load_u64 {addr:#x}");
            assert_eq!(g.load_u64_pair(addr), None, "load_u64_pair {addr:#x}");
            if addr.checked_add(8).is_some() {
                assert_eq!(p.check(addr, 8), Ok(false), "check {addr:#x}");
                assert_eq!(p.read(addr, &mut [0u8; 8]), Ok(false), "read {addr:#x}");
            }
        }
        // Non-canonical with 4-level paging, mapped nowhere with 5-level paging: "no" either way.
        for addr in [1usize << 47, (1 << 47) - 4, (1 << 55) + 12345] {
            assert_eq!(g.load_u64(addr), None, "load_u64 {addr:#x}");
            assert_eq!(g.load_u64_pair(addr), None, "load_u64_pair {addr:#x}");
            assert_eq!(p.check(addr, 8), Ok(false), "check {addr:#x}");
        }
        assert!(matches!(
            p.check(usize::MAX - 3, 8),
            Err(Error::InvalidRange { .. })
        ));
        println!("CHILD OK");
        return;
    }
    let out = run_child(NAME);
    out.assert_success();
    assert!(out.stdout.contains("CHILD OK"), "{out:?}");
}

/// A page of a `MAP_SHARED` mapping beyond the end of its file: the load gets SIGBUS, which
/// the handler takes as it takes SIGSEGV.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[test]
fn beyond_end_of_file_is_sigbus_and_no() {
    const NAME: &str = "beyond_end_of_file_is_sigbus_and_no";
    if is_child(NAME) {
        let p = guard();
        let g = p.guarded().unwrap();
        // SAFETY: memfd_create with a static name; sizing and mapping our own memfd.
        let base = unsafe {
            let fd = libc::memfd_create(c"guarded-loads".as_ptr(), libc::MFD_CLOEXEC);
            assert!(fd >= 0);
            assert_eq!(libc::ftruncate(fd, ps() as libc::off_t), 0);
            let m = libc::mmap(
                core::ptr::null_mut(),
                2 * ps(),
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            );
            assert_ne!(m, libc::MAP_FAILED);
            m as usize
        };
        let eof = base + ps();
        assert_eq!(g.load_u64(base), Some(0));
        assert_eq!(g.load_u64(eof - 8), Some(0));
        assert_eq!(g.load_u64(eof - 4), None, "crosses into the SIGBUS page");
        assert_eq!(g.load_u8(eof), None);
        assert_eq!(g.load_u32(eof + 100), None);
        assert_eq!(p.check(eof, 1), Ok(false));
        assert_eq!(p.read(eof - 2, &mut [0u8; 4]), Ok(false));
        assert_eq!(p.read(eof - 4, &mut [1u8; 4]), Ok(true));
        println!("CHILD OK");
        return;
    }
    let out = run_child(NAME);
    out.assert_success();
    assert!(out.stdout.contains("CHILD OK"), "{out:?}");
}

/// Four threads load readable and PROT_NONE bytes at once: every answer is right.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[test]
fn threads_load_at_once() {
    const NAME: &str = "threads_load_at_once";
    if is_child(NAME) {
        let p = guard();
        let r = Region::anon(2);
        r.fill(0, &[0x5au8; 64]);
        r.protect(1, libc::PROT_NONE);
        let (good, bad) = (r.page(0), r.page(1));
        let wrong = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..4 {
                let (p, wrong) = (&p, &wrong);
                s.spawn(move || {
                    let g = p.guarded().unwrap();
                    for i in 0..2_000 {
                        let ok = g.load_u64(good + (i + t) % 56) == Some(0x5a5a_5a5a_5a5a_5a5a)
                            && g.load_u64(bad + (i % 64)).is_none()
                            && g.load_u64(bad - 4).is_none()
                            && g.load_u64_pair(bad - 12).is_none()
                            && g.load_u64_pair(good + 8) == Some([0x5a5a_5a5a_5a5a_5a5a; 2])
                            && p.check(good, 8) == Ok(true)
                            && p.check(bad, 8) == Ok(false);
                        if !ok {
                            wrong.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(wrong.into_inner(), 0);
        println!("CHILD OK");
        return;
    }
    let out = run_child(NAME);
    out.assert_success();
    assert!(out.stdout.contains("CHILD OK"), "{out:?}");
}

/// Only a SignalGuard prober has guarded loads. (On architectures without an exception
/// table, SignalGuard itself is unavailable.)
#[test]
fn only_signal_guard_has_guarded_loads() {
    const NAME: &str = "only_signal_guard_has_guarded_loads";
    if is_child(NAME) {
        for b in [
            Backend::SigprocMask,
            Backend::Msync,
            Backend::ProcessVmReadv,
        ] {
            assert!(Prober::new(b).unwrap().guarded().is_none(), "{b}");
        }
        let with_table = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));
        match Prober::new(Backend::SignalGuard) {
            Ok(p) => assert!(with_table && p.guarded().is_some()),
            Err(e) => assert!(!with_table && e.is_unavailable(), "{e}"),
        }
        println!("CHILD OK");
        return;
    }
    let out = run_child(NAME);
    out.assert_success();
    assert!(out.stdout.contains("CHILD OK"), "{out:?}");
}
