//! `process_vm_readv` on this process: proves the **kernel could copy** the bytes, with known
//! false negatives.
//!
//! `process_vm_rw_core()` (`mm/process_vm_access.c`) pins the remote pages with
//! `pin_user_pages_remote()` and copies from them. GUP is stricter than a load: it refuses
//! VMAs without `VM_READ` (so write-only and exec-only pages say "no" although the CPU could
//! read a write-only page on x86), and `VM_IO`/`VM_PFNMAP` and secretmem mappings. Those are
//! false negatives, never false positives. A partial transfer (the return value is smaller
//! than requested) means a later iovec faulted.
//!
//! One call carries up to [`IOVECS`] one-byte iovecs, one per page; a 256-page range takes 4
//! calls. The iovec arrays live on the stack (1 KiB).
//!
//! The pid is this process's, taken from the per-process page (`process::current`): a child made
//! by `fork`, `_Fork` or `clone` finds that page zeroed by the kernel (`MADV_WIPEONFORK`) and
//! looks its own pid up before its first probe, so it never reads its parent. An answer is
//! dropped (`Unavailable`) if the process changed while the probe ran. Without
//! `MADV_WIPEONFORK` (kernels before 4.14) every probe calls `getpid` twice instead.

use super::process::{self, NOT_CURRENT, PROCESS_CHANGED, Proc};
use crate::backend_kind::Backend;
use crate::error::Error;
use crate::range::PageRange;
use crate::sys;

// Remote iovecs per `process_vm_readv` call.
use super::IOVECS;

const EMPTY_IOV: libc::iovec = libc::iovec {
    iov_base: core::ptr::null_mut(),
    iov_len: 0,
};

/// This process, or `Unavailable` (no `Prober` yet, or a new process being set up).
#[inline]
fn this_process() -> Result<Proc, Error> {
    process::current().ok_or(Error::Unavailable {
        backend: Backend::ProcessVmReadv,
        errno: None,
        reason: NOT_CURRENT,
    })
}

/// `answer` if the process is still the one whose pid the probe used.
#[inline]
fn confirmed<T>(proc: &Proc, answer: T) -> Result<T, Error> {
    if proc.still_current() {
        Ok(answer)
    } else {
        Err(Error::Unavailable {
            backend: Backend::ProcessVmReadv,
            errno: None,
            reason: PROCESS_CHANGED,
        })
    }
}

/// Runs one `process_vm_readv` of `n` remote iovecs into `local`. `Ok(false)`: a fault.
#[inline]
fn readv(pid: i32, local: libc::iovec, remote: &[libc::iovec]) -> Result<bool, Error> {
    let want: usize = remote.iter().map(|v| v.iov_len).sum();
    Ok(readv_count(pid, local, remote)? == want)
}

/// Runs one `process_vm_readv` of `n` remote iovecs into `local` and returns the bytes
/// copied: fewer than requested (0 for `EFAULT`) means the byte after them faulted.
#[inline]
fn readv_count(pid: i32, local: libc::iovec, remote: &[libc::iovec]) -> Result<usize, Error> {
    // SAFETY: `local` describes a writable buffer of the caller's; the kernel validates the
    // remote addresses and reports faults as EFAULT or a short count.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_process_vm_readv,
            pid as libc::c_long,
            &local as *const libc::iovec,
            1 as libc::c_ulong,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    match sys::check(ret) {
        Ok(n) => Ok(n as usize),
        Err(libc::EFAULT) => Ok(0),
        Err(libc::ESRCH) => Err(Error::Unavailable {
            backend: Backend::ProcessVmReadv,
            errno: Some(libc::ESRCH),
            reason: "process_vm_readv found no process with the recorded pid",
        }),
        Err(e) => Err(Error::from_errno(
            Backend::ProcessVmReadv,
            e,
            "process_vm_readv",
        )),
    }
}

/// One byte per page of `r`, [`IOVECS`] pages per call.
#[inline]
pub fn check(r: &PageRange) -> Result<bool, Error> {
    let proc = this_process()?;
    let mut sink = [0u8; IOVECS];
    let answer = super::for_each_probe_batch(r, |remote| {
        let local = libc::iovec {
            iov_base: sink.as_mut_ptr().cast(),
            iov_len: remote.len(),
        };
        readv(proc.pid, local, remote)
    })?;
    confirmed(&proc, answer)
}

/// Copies `r` into `dst`, one iovec per page-sized piece, [`IOVECS`] pieces per call.
#[inline]
pub fn read(r: &PageRange, dst: &mut [u8]) -> Result<bool, Error> {
    Ok(read_prefix(r, dst)? == dst.len())
}

/// Copies the longest readable prefix of `r` into `dst` (one iovec per page-sized piece,
/// [`IOVECS`] pieces per call) and returns its length: the byte after it, if any, faulted.
/// `dst.len()` must be the length of `r`. Used by [`crate::batch::read_prefix`].
#[inline]
pub fn read_prefix(r: &PageRange, dst: &mut [u8]) -> Result<usize, Error> {
    let proc = this_process()?;
    let mut remote = [EMPTY_IOV; IOVECS];
    let mut n = 0;
    let mut batch_start = 0;
    let mut off = 0;
    let mut chunks = r.page_chunks().peekable();
    while let Some((start, len)) = chunks.next() {
        remote[n] = libc::iovec {
            iov_base: start as *mut libc::c_void,
            iov_len: len,
        };
        n += 1;
        off += len;
        if n == IOVECS || chunks.peek().is_none() {
            let want = off - batch_start;
            let local = libc::iovec {
                iov_base: dst[batch_start..off].as_mut_ptr().cast(),
                iov_len: want,
            };
            let got = readv_count(proc.pid, local, &remote[..n])?;
            if got < want {
                return confirmed(&proc, batch_start + got);
            }
            n = 0;
            batch_start = off;
        }
    }
    confirmed(&proc, off)
}
