//! 1-byte `write()` per page into a pipe: proves the **kernel could copy** the bytes.
//!
//! `pipe_write()` (`fs/pipe.c`) copies the caller's buffer with `copy_page_from_iter()`, which
//! takes the same page-fault path as a user load (`handle_mm_fault` refuses a VMA without
//! read, write or exec permission, and a fault beyond the end of a shared file's mapping). A
//! fault makes the write return `EFAULT`, or a short count once some bytes were copied. So a
//! successful write of one byte per page proves that the kernel could read every page at that
//! moment. The one-byte writes of up to 64 pages go into a single `writev` (one iovec per page;
//! a short count names the first page that faulted), and the bytes are then read back to keep
//! the pipe empty. `read` copies the bytes themselves: `write` the range into the pipe page
//! by page, and `read` them straight into the destination.
//!
//! # Concurrency, reentrancy and descriptors
//!
//! Bytes of two probes must never mix, so each probe owns a pipe while it runs: a pool of
//! `SLOTS` process-wide pipes, each taken with one compare-and-swap. When every slot is busy
//! (many threads, or a signal handler interrupting a probe on the same thread) the probe makes
//! a private pipe with `pipe2` and closes it afterwards. It never waits, so it cannot
//! deadlock in a signal handler, and nothing is left behind when a thread exits.
//!
//! Each pooled pipe is one descriptor opened `O_RDWR` through `/proc/self/fd` (a pipe opened
//! like a FIFO), moved above the lowest free numbers, so one `fstat` verifies it before use
//! (see the crate's descriptor rules in `sys::fd`); without `/proc` the slot keeps both ends and
//! verifies both. `read_out` asks for one byte more than the probe wrote: a pipe holding more
//! than that held someone else's bytes, which are drained and the answer dropped.
//!
//! Whether a slot is free, taken, or not yet this process's is its word in the per-process
//! page (`process::ProcPage`), which the kernel zeroes in every child (`MADV_WIPEONFORK`). The first
//! probe in a child made by `fork`, `_Fork` or `clone` finds the words zeroed (stale), puts fresh
//! pipes under the inherited numbers (`dup3`) before it uses one, and does the same for the
//! other stale slots, so parent and child never share a pipe; no `pthread_atfork` handler is
//! involved. A slot a parent thread held at the fork is free in the child.
//!
//! # The empty-slot bug of kernels 5.5–6.14
//!
//! On those kernels a faulting `pipe_write` has already reserved a ring slot and leaves it
//! empty; after 16 faults the ring is full and every write returns `EAGAIN`. A read releases
//! empty slots, so on `EAGAIN` the probe drains the pipe and retries, and if that fails it
//! replaces the pipe. Test `pipe_survives_many_faults` makes 1,000 faulting probes in a row.

use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use super::IOVECS;
use super::process::{self, BUSY, FREE, NOT_CURRENT, PROCESS_CHANGED, Proc, SLOTS, STALE};
use crate::backend_kind::Backend;
use crate::error::Error;
use crate::range::PageRange;
use crate::sys::{self, FD_REPLACED};

/// A pooled pipe's descriptors and identity. Whether it is this process's and who uses it is
/// in the slot's word of the per-process page (`process::ProcPage::slots`).
struct Slot {
    /// Read end; equal to `wfd` when the slot holds one `O_RDWR` descriptor.
    rfd: AtomicI32,
    wfd: AtomicI32,
    dev: AtomicU64,
    ino: AtomicU64,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            rfd: AtomicI32::new(-1),
            wfd: AtomicI32::new(-1),
            dev: AtomicU64::new(0),
            ino: AtomicU64::new(0),
        }
    }

    /// Both ends, if they still hold this slot's pipe.
    #[inline]
    fn verified(&self) -> Option<Fds> {
        let rfd = self.rfd.load(Ordering::Acquire);
        let wfd = self.wfd.load(Ordering::Acquire);
        if rfd < 0 || wfd < 0 {
            return None;
        }
        let want = (
            self.dev.load(Ordering::Relaxed),
            self.ino.load(Ordering::Relaxed),
        );
        if sys::identity(wfd).ok()? != want {
            return None;
        }
        if rfd != wfd && sys::identity(rfd).ok()? != want {
            return None;
        }
        Some(Fds { rfd, wfd })
    }

    /// Puts a new pipe into the slot. When the slot's numbers still hold its old pipe, the new
    /// pipe is `dup3`ed onto them, so the numbers a probe already loaded stay valid.
    /// Async-signal-safe (raw syscalls only): a probe calls it to replace a full pipe, and the
    /// first probe in a new process to replace inherited ones.
    fn fill(&self) -> Result<(), i32> {
        let ours = self.verified();
        let fresh = new_pipe(true)?;
        let id = match sys::identity(fresh.wfd) {
            Ok(id) => id,
            Err(e) => {
                fresh.close();
                return Err(e);
            }
        };
        let (old_r, old_w) = (
            self.rfd.load(Ordering::Acquire),
            self.wfd.load(Ordering::Acquire),
        );
        let same_shape = (old_r == old_w) == (fresh.rfd == fresh.wfd);
        if ours.is_some() && same_shape {
            // SAFETY: the old numbers hold this slot's own pipe (callers verified them);
            // dup3 atomically replaces them with the fresh pipe.
            unsafe {
                libc::dup3(fresh.wfd, old_w, libc::O_CLOEXEC);
                if old_r != old_w {
                    libc::dup3(fresh.rfd, old_r, libc::O_CLOEXEC);
                }
            }
            fresh.close();
        } else {
            self.rfd.store(fresh.rfd, Ordering::Release);
            self.wfd.store(fresh.wfd, Ordering::Release);
            // Numbers that no longer hold our pipe are the application's: never close them.
            if let Some(old) = ours {
                old.close();
            }
        }
        self.dev.store(id.0, Ordering::Relaxed);
        self.ino.store(id.1, Ordering::Relaxed);
        Ok(())
    }

    /// Closes the slot's pipe if its numbers still hold it.
    fn empty(&self) {
        if let Some(fds) = self.verified() {
            fds.close();
        }
        self.rfd.store(-1, Ordering::Release);
        self.wfd.store(-1, Ordering::Release);
    }
}

static POOL: [Slot; SLOTS] = [Slot::new(), Slot::new(), Slot::new(), Slot::new()];
static USERS: Mutex<usize> = Mutex::new(0);

#[derive(Clone, Copy)]
struct Fds {
    rfd: i32,
    wfd: i32,
}

impl Fds {
    fn close(self) {
        sys::close(self.wfd);
        if self.rfd != self.wfd {
            sys::close(self.rfd);
        }
    }
}

/// A non-blocking, close-on-exec pipe, as one `O_RDWR` descriptor when `/proc` allows; with
/// `high`, moved above the lowest free numbers (`sys::move_high`). Async-signal-safe.
fn new_pipe(high: bool) -> Result<Fds, i32> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(sys::last_errno());
    }
    let pair = Fds {
        rfd: fds[0],
        wfd: fds[1],
    };
    let mut path = *b"/proc/self/fd/\0\0\0\0\0\0\0\0\0\0\0\0";
    let mut n = fds[0] as u32;
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    path[14..14 + digits.len() - i].copy_from_slice(&digits[i..]);
    // SAFETY: `path` is NUL-terminated (the array is zero-filled past the digits).
    let rdwr = unsafe {
        libc::open(
            path.as_ptr().cast(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if rdwr < 0 {
        if !high {
            return Ok(pair);
        }
        return Ok(Fds {
            rfd: sys::move_high(pair.rfd),
            wfd: sys::move_high(pair.wfd),
        });
    }
    pair.close();
    let fd = if high { sys::move_high(rdwr) } else { rdwr };
    Ok(Fds { rfd: fd, wfd: fd })
}

/// A registered user of the pipe pool; the pool is closed when the last user drops.
#[derive(Debug)]
pub struct PipeUser(());

impl PipeUser {
    pub(crate) fn open(backend: Backend) -> Result<PipeUser, Error> {
        process::init();
        let mut users = USERS.lock().unwrap_or_else(|e| e.into_inner());
        let proc = process::current_waiting().ok_or(Error::Unavailable {
            backend,
            errno: None,
            reason: NOT_CURRENT,
        })?;
        for (i, slot) in POOL.iter().enumerate() {
            let w = &proc.page.slots[i];
            // A slot a probe holds right now is left to it.
            let Some(was) = take(w) else { continue };
            let result = if was == FREE && slot.verified().is_some() {
                Ok(())
            } else {
                slot.fill()
            };
            match result {
                Ok(()) => w.store(FREE, Ordering::Release),
                Err(e) => {
                    w.store(was, Ordering::Release);
                    if *users == 0 {
                        empty_all(&proc);
                    }
                    return Err(Error::from_errno(
                        backend,
                        e,
                        "pipe2 for the probe pipe pool",
                    ));
                }
            }
        }
        *users += 1;
        Ok(PipeUser(()))
    }
}

/// Takes a slot word that no probe holds (`FREE` or `STALE` to `BUSY`); returns what it was.
fn take(w: &AtomicU32) -> Option<u32> {
    [FREE, STALE].into_iter().find(|&was| {
        w.compare_exchange(was, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    })
}

/// Closes every slot's pipe that no probe holds (after the last user).
fn empty_all(proc: &Proc) {
    for (i, slot) in POOL.iter().enumerate() {
        let w = &proc.page.slots[i];
        // A slot still busy belongs to a probe of another (dropped) prober on another
        // thread, which cannot exist in safe code; leave such a slot alone.
        if take(w).is_some() {
            slot.empty();
            w.store(STALE, Ordering::Release);
        }
    }
}

impl Drop for PipeUser {
    fn drop(&mut self) {
        let mut users = USERS.lock().unwrap_or_else(|e| e.into_inner());
        *users = users.saturating_sub(1);
        if *users == 0
            && let Some(proc) = process::current_waiting()
        {
            empty_all(&proc);
        }
    }
}

/// Makes every other stale slot's pipe this process's (a new process's first probe).
#[cold]
fn renew_stale(proc: &Proc, except: usize) {
    for (i, slot) in POOL.iter().enumerate() {
        let w = &proc.page.slots[i];
        if i != except
            && w.compare_exchange(STALE, BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            let now = if slot.fill().is_ok() { FREE } else { STALE };
            w.store(now, Ordering::Release);
        }
    }
}

/// Runs `f` with a pipe that no other probe uses right now.
///
/// A slot is taken with one compare-and-swap of its word in the per-process page. In a new
/// process every word reads `STALE` (the kernel zeroed the page): the first probe there
/// replaces the inherited pipes with pipes of its own (under the same numbers) before using
/// one, so parent and child never share a pipe. The answer is dropped if the process changed
/// while the probe ran.
#[inline]
fn with_pipe<R>(
    backend: Backend,
    f: impl FnOnce(Fds, &dyn Fn() -> Result<(), i32>) -> Result<R, Error>,
) -> Result<R, Error> {
    let proc = process::current().ok_or(Error::Unavailable {
        backend,
        errno: None,
        reason: NOT_CURRENT,
    })?;
    for (i, slot) in POOL.iter().enumerate() {
        let w = &proc.page.slots[i];
        match w.compare_exchange(FREE, BUSY, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return run_slot(backend, &proc, slot, w, f),
            Err(STALE) => {
                if w.compare_exchange(STALE, BUSY, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    if slot.fill().is_err() {
                        w.store(STALE, Ordering::Release);
                        continue;
                    }
                    renew_stale(&proc, i);
                    return run_slot(backend, &proc, slot, w, f);
                }
            }
            Err(_) => {}
        }
    }
    // Every pooled pipe is in use: a private one, closed afterwards. It is not moved above
    // the lowest free numbers (two more syscalls for a pipe that lives for one probe).
    let fds = new_pipe(false).map_err(|e| Error::from_errno(backend, e, "pipe2"))?;
    let result = f(fds, &|| Err(libc::EAGAIN));
    fds.close();
    if !proc.still_current() {
        return Err(changed(backend));
    }
    result
}

fn changed(backend: Backend) -> Error {
    Error::Unavailable {
        backend,
        errno: None,
        reason: PROCESS_CHANGED,
    }
}

/// Runs `f` on a slot this probe took (`w` is `BUSY`), then frees it.
#[inline]
fn run_slot<R>(
    backend: Backend,
    proc: &Proc,
    slot: &Slot,
    w: &AtomicU32,
    f: impl FnOnce(Fds, &dyn Fn() -> Result<(), i32>) -> Result<R, Error>,
) -> Result<R, Error> {
    let result = match slot.verified() {
        Some(fds) => f(fds, &|| slot.fill()),
        None => Err(Error::Unavailable {
            backend,
            errno: Some(libc::EBADF),
            reason: FD_REPLACED,
        }),
    };
    let same = proc.still_current();
    // In a process made during the probe the word is no longer BUSY (the kernel zeroed it):
    // leave it for that process to renew.
    let freed = w
        .compare_exchange(BUSY, FREE, Ordering::Release, Ordering::Relaxed)
        .is_ok();
    if !(same && freed) {
        return Err(changed(backend));
    }
    result
}

/// Reads everything the pipe holds, releasing the empty ring slots that faulting writes
/// leave on 5.5–6.14.
fn drain(fds: Fds) {
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: `buf` is a valid 64-byte buffer; the descriptor is our verified pipe.
        let n = unsafe { libc::syscall(libc::SYS_read, fds.rfd, buf.as_mut_ptr(), buf.len()) };
        if n <= 0 {
            break;
        }
    }
}

/// Writes the bytes that `iov` describes (`len` in all, at most `PIPE_BUF`) into the pipe
/// with one `writev`. `Ok(true)`: all copied; `Ok(false)`: a fault. On `EAGAIN` it drains and
/// retries, then replaces the pipe (`refill`) and retries once more.
#[inline]
fn write_in(
    backend: Backend,
    fds: Fds,
    refill: &dyn Fn() -> Result<(), i32>,
    iov: &[libc::iovec],
    len: usize,
) -> Result<bool, Error> {
    let mut attempt = 0;
    loop {
        // SAFETY: the kernel validates every iovec's base; a fault is reported as EFAULT or
        // as a short count (writes of at most PIPE_BUF bytes into a pipe are otherwise whole).
        // (The raw syscall: sanitizers' `writev` interceptors would inspect the probed memory.)
        let n = unsafe { libc::syscall(libc::SYS_writev, fds.wfd, iov.as_ptr(), iov.len()) };
        if n == len as libc::c_long {
            return Ok(true);
        }
        if n >= 0 {
            drain(fds);
            return Ok(false);
        }
        match sys::last_errno() {
            libc::EFAULT => return Ok(false),
            libc::EAGAIN if attempt == 0 => drain(fds),
            libc::EAGAIN if attempt == 1 => {
                refill().map_err(|e| Error::from_errno(backend, e, "replacing a full pipe"))?
            }
            e => return Err(Error::from_errno(backend, e, "write to the probe pipe")),
        }
        attempt += 1;
    }
}

/// Reads exactly `len` bytes back out of the pipe into `dst`. The read asks for one byte
/// more: the pipe holds exactly what this probe wrote, so a surplus means that bytes which are
/// not this probe's were in it (its descriptor was replaced by another file during the probe,
/// or bytes of an earlier such probe were left behind). The pipe is then drained and the
/// answer dropped.
#[inline]
fn read_out(backend: Backend, fds: Fds, dst: *mut u8, len: usize) -> Result<(), Error> {
    let mut spare = [0u8; 1];
    let iov = [
        libc::iovec {
            iov_base: dst.cast(),
            iov_len: len,
        },
        libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: 1,
        },
    ];
    // SAFETY: `dst` points to `len` writable bytes owned by the caller, `spare` to one of ours.
    let n = unsafe { libc::syscall(libc::SYS_readv, fds.rfd, iov.as_ptr(), 2) };
    if n == len as libc::c_long {
        Ok(())
    } else if n < 0 {
        Err(Error::from_errno(
            backend,
            sys::last_errno(),
            "read from the probe pipe",
        ))
    } else if n > len as libc::c_long {
        drain(fds);
        Err(Error::Unavailable {
            backend,
            errno: None,
            reason: "the probe pipe held bytes that this probe did not write (its descriptor was replaced during the probe); they were discarded",
        })
    } else {
        drain(fds);
        Err(Error::Failed {
            backend,
            errno: libc::EIO,
            during: "read from the probe pipe returned fewer bytes than were written",
        })
    }
}

/// One byte per page of `r` through a pipe: one `writev` of up to [`IOVECS`] one-byte
/// iovecs, then one `read` to drain the bytes.
#[inline]
pub(crate) fn check(backend: Backend, r: &PageRange) -> Result<bool, Error> {
    with_pipe(backend, |fds, refill| {
        let mut sink = [0u8; IOVECS];
        super::for_each_probe_batch(r, |iov| {
            if !write_in(backend, fds, refill, iov, iov.len())? {
                return Ok(false);
            }
            read_out(backend, fds, sink.as_mut_ptr(), iov.len())?;
            Ok(true)
        })
    })
}

/// Copies `r` into `dst` through a pipe, one page-sized piece at a time.
#[inline]
pub(crate) fn read(backend: Backend, r: &PageRange, dst: &mut [u8]) -> Result<bool, Error> {
    with_pipe(backend, |fds, refill| {
        let mut off = 0;
        for (start, len) in r.page_chunks() {
            let iov = [libc::iovec {
                iov_base: start as *mut libc::c_void,
                iov_len: len,
            }];
            if !write_in(backend, fds, refill, &iov, len)? {
                return Ok(false);
            }
            read_out(backend, fds, dst[off..off + len].as_mut_ptr(), len)?;
            off += len;
        }
        Ok(true)
    })
}
