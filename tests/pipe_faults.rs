//! The pipe backend after many faulting writes.
//!
//! On kernels 5.5–6.14 every faulting `pipe_write` leaves an empty ring slot behind, and
//! after 16 of them a plain pipe answers `EAGAIN` to every write. The backend must drain or
//! replace its pipe so that the next valid probe still says yes and copies the right bytes.
//! These tests make 1,000 faulting probes in a row, through the pooled pipes and through
//! the private pipes used when the pool is busy, and then valid ones. They need no special
//! privilege and run as they are inside a QEMU guest:
//! `cargo test --test pipe_faults -- --nocapture`.

mod support;

use addrprobe::{Backend, Error, Prober};
use support::{Region, figure, page_pattern, ps};

const FAULTS: usize = 1_000;

/// [readable pattern page][PROT_NONE page][unmapped page]
fn fixture() -> (Region, Vec<u8>) {
    let r = Region::anon(3);
    let bytes = page_pattern(0, 42);
    r.fill(0, &bytes);
    r.protect(1, libc::PROT_NONE);
    r.unmap(2);
    (r, bytes)
}

fn survive(prober: &Prober, r: &Region, bytes: &[u8]) -> usize {
    let mut buf = vec![0u8; ps()];
    let mut survived = 0;
    for i in 0..FAULTS {
        // Alternate PROT_NONE and unmapped pages, check and read, 1 and 8 bytes.
        let addr = r.page(1 + i % 2);
        let got = if i % 4 < 2 {
            prober.check(addr, 1 + 7 * (i % 2))
        } else {
            prober.read(addr, &mut buf[..8])
        };
        assert_eq!(
            got,
            Ok(false),
            "{}: faulting probe {i} of {addr:#x}",
            prober.backend()
        );
        survived += 1;
    }
    assert_eq!(
        prober.check(r.page(0), ps()),
        Ok(true),
        "{}: valid check after {FAULTS} faults",
        prober.backend()
    );
    buf.fill(0);
    assert_eq!(
        prober.read(r.page(0), &mut buf),
        Ok(true),
        "{}: valid read after {FAULTS} faults",
        prober.backend()
    );
    assert_eq!(
        buf,
        bytes,
        "{}: read after {FAULTS} faults returned other bytes",
        prober.backend()
    );
    // A straddle: the readable page then the PROT_NONE one is still a no.
    assert_eq!(prober.check(r.page(1) - 4, 8), Ok(false));
    survived
}

/// The test that the pipe module docs name: 1,000 faulting probes, then valid ones.
#[test]
fn pipe_survives_many_faults() {
    let (r, bytes) = fixture();
    let pipe = Prober::new(Backend::Pipe).expect("pipe backend");
    let n = survive(&pipe, &r, &bytes);
    figure("faults_survived.pipe", n);
}

/// `SigprocMask::read` copies through the same pipe pool.
#[test]
fn sigprocmask_read_survives_many_faults() {
    let (r, bytes) = fixture();
    let p = Prober::new(Backend::SigprocMask).expect("sigprocmask backend");
    let n = survive(&p, &r, &bytes);
    figure("faults_survived.sigprocmask", n);
}

/// Every other backend makes the same 1,000 faulting probes: none may crash or stop
/// answering. (Mapped and RegionReadable backends answer for their own property.)
#[test]
fn every_backend_survives_many_faults() {
    let (r, bytes) = fixture();
    let mut total = 0;
    for b in [Backend::ProcessVmReadv, Backend::SignalGuard] {
        if b == Backend::SignalGuard && support::no_signal_guard_here("signal-guard faults") {
            continue;
        }
        let p = Prober::new(b).expect("readable backend");
        total += survive(&p, &r, &bytes);
    }
    for b in [
        Backend::Msync,
        Backend::Mincore,
        Backend::ProcmapQuery,
        Backend::DevNull,
    ] {
        let p = match Prober::new(b) {
            Ok(p) => p,
            Err(Error::Unavailable { .. }) if b == Backend::ProcmapQuery => continue,
            Err(e) => panic!("{b}: {e}"),
        };
        for _ in 0..FAULTS {
            // The unmapped page is "no" for every property (DevNull cannot see it: unsound).
            let got = p.check(r.page(2), 8);
            if b != Backend::DevNull {
                assert_eq!(got, Ok(false), "{b} on the unmapped page");
            } else {
                assert!(got.is_ok(), "{b}: {got:?}");
            }
            total += 1;
        }
        assert_eq!(p.check(r.page(0), ps()), Ok(true), "{b}: readable page");
    }
    figure("faults_survived.other_backends", total);
}

/// The private pipes that a probe makes when all pooled pipes are busy see the faults too:
/// 16 threads (more than the pool's slots) fault 1,000 times each, then read valid bytes.
#[test]
fn private_pipes_survive_many_faults() {
    let (r, bytes) = fixture();
    let pipe = Prober::new(Backend::Pipe).expect("pipe backend");
    let before = support::fd_count();
    let survived = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                let n = survive(&pipe, &r, &bytes);
                survived.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            });
        }
    });
    figure("faults_survived.pipe_threads", survived.into_inner());
    // Other tests of this binary may hold descriptors meanwhile; the pool itself must not grow.
    let after = support::fd_count();
    assert!(
        after <= before + 8,
        "descriptors grew from {before} to {after}"
    );
}
