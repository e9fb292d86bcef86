//! Batched reads: copy the longest readable prefix of a window in as few probes as possible,
//! so that an unwinder can fetch several frames with one syscall.
//!
//! A frame-pointer chain is a linked list, so the address of frame *n + 1* is only known once
//! frame *n* is read. What can be batched is the *memory* around it: frames of one stack lie
//! close together, usually a few dozen to a few hundred bytes apart. [`read_prefix`] copies a
//! whole window starting at the current frame, and the unwinder serves every following frame
//! that falls inside the copy from it, without another probe.
//!
//! | backend | how a window is read | syscalls per window |
//! | --- | --- | --- |
//! | `ProcessVmReadv` | one `process_vm_readv`, one remote iovec per page; a short count gives the readable prefix | 1 (per 64 pages) |
//! | `Pipe`, `SigprocMask` | [`Prober::read`] per page-sized piece (a pipe `write` + `read` of the piece) | ~3 per page |
//! | `SignalGuard` | guarded loads, one per word | 0 |
//!
//! The copy is a snapshot, which is exactly what an unwinder of a suspended or interrupted
//! stack wants. Whether batching pays off is measured by `addrprobe bench` (see
//! `docs/results/`): it trades one larger copy for the syscalls of the frames it covers.

use crate::error::Error;
use crate::guarantee::Guarantee;
use crate::prober::Prober;
use crate::range::{self, Classified};
use crate::sys;

/// Copies the longest readable prefix of `[addr, addr + dst.len())` into `dst` and returns its
/// length: every byte before the returned count was readable and is copied; the byte at the
/// count (if any) lies in a page that was not readable at that moment. The prefix ends at a
/// page boundary unless it is the whole window.
///
/// Only backends with [`Guarantee::Readable`] can read; others return
/// [`Error::Unsupported`]. Async-signal-safe, allocation-free and lock-free; `errno` is
/// preserved.
pub fn read_prefix(prober: &Prober, addr: usize, dst: &mut [u8]) -> Result<usize, Error> {
    let _errno = sys::ErrnoGuard::new();
    if prober.guarantee() != Guarantee::Readable {
        return Err(Error::Unsupported {
            backend: prober.backend(),
            operation: "read_prefix: only backends with the `readable` guarantee copy bytes",
        });
    }
    // A window may run past the top of user space (a corrupt frame pointer near it): only
    // the part below the limit can be readable.
    if addr >= range::USER_SPACE_LIMIT {
        return Ok(0);
    }
    let len = dst.len().min(range::USER_SPACE_LIMIT - addr);
    let dst = &mut dst[..len];
    let r = match range::classify(addr, len, range::page_size())? {
        Classified::Probe(r) => r,
        Classified::Empty | Classified::OutsideUserSpace => return Ok(0),
    };
    prober.state.read_prefix(&r, dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend_kind::Backend;

    /// Three pages: readable (filled with a pattern), readable, PROT_NONE.
    struct Fixture {
        base: usize,
        ps: usize,
    }

    impl Fixture {
        fn new() -> Fixture {
            let ps = range::page_size();
            // SAFETY: a fresh private anonymous mapping.
            let p = unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    3 * ps,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            let base = p as usize;
            for i in 0..2 * ps {
                // SAFETY: inside the two writable pages we just mapped.
                unsafe { *((base + i) as *mut u8) = (i % 251) as u8 };
            }
            assert_eq!(
                // SAFETY: the third page is ours.
                unsafe { libc::mprotect((base + 2 * ps) as *mut _, ps, libc::PROT_NONE) },
                0
            );
            Fixture { base, ps }
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            // SAFETY: our own mapping.
            unsafe { libc::munmap(self.base as *mut _, 3 * self.ps) };
        }
    }

    #[test]
    fn prefix_stops_at_the_first_unreadable_page() {
        let f = Fixture::new();
        for backend in [Backend::ProcessVmReadv, Backend::SigprocMask, Backend::Pipe] {
            let Ok(p) = Prober::new(backend) else {
                continue;
            };
            let start = f.base + f.ps - 100;
            let mut buf = vec![0u8; 2 * f.ps];
            let got = read_prefix(&p, start, &mut buf).unwrap();
            // 100 bytes of page 0, all of page 1, then PROT_NONE.
            assert_eq!(got, 100 + f.ps, "{backend}");
            for (i, b) in buf[..got].iter().enumerate() {
                assert_eq!(*b, ((f.ps - 100 + i) % 251) as u8, "{backend} byte {i}");
            }
            let mut small = [0u8; 16];
            assert_eq!(read_prefix(&p, f.base + 8, &mut small).unwrap(), 16);
            assert_eq!(small[0], 8);
            assert_eq!(
                read_prefix(&p, f.base + 2 * f.ps, &mut small).unwrap(),
                0,
                "{backend}"
            );
            assert_eq!(read_prefix(&p, 0, &mut small).unwrap(), 0, "{backend}");
            let kernel = usize::MAX - 8;
            assert_eq!(read_prefix(&p, kernel, &mut small).unwrap(), 0, "{backend}");
        }
    }

    #[test]
    fn mapped_backends_cannot_read() {
        let p = Prober::new(Backend::Msync).unwrap();
        let x = 5u64;
        let mut buf = [0u8; 8];
        assert!(matches!(
            read_prefix(&p, &x as *const u64 as usize, &mut buf),
            Err(Error::Unsupported { .. })
        ));
    }
}
