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
//! [`SLOTS`] process-wide pipes, each taken with one compare-and-swap. When every slot is busy
//! (many threads, or a signal handler interrupting a probe on the same thread) the probe makes
//! a private pipe with `pipe2` and closes it afterwards. It never waits, so it cannot
//! deadlock in a signal handler, and nothing is left behind when a thread exits.
//!
//! Each pooled pipe is one descriptor opened `O_RDWR` through `/proc/self/fd` (a pipe opened
//! like a FIFO), so one `fstat` verifies it before use (see the crate's descriptor rules in
//! `sys`); without `/proc` the slot keeps both ends and verifies both. A fork child gets fresh
//! pipes under the same numbers from the atfork handler, so parent and child never share one.
//!
//! # The empty-slot bug of kernels 5.5–6.14
//!
//! On those kernels a faulting `pipe_write` has already reserved a ring slot and leaves it
//! empty; after 16 faults the ring is full and every write returns `EAGAIN`. A read releases
//! empty slots, so on `EAGAIN` the probe drains the pipe and retries, and if that fails it
//! replaces the pipe. Test `pipe_survives_many_faults` makes 1,000 faulting probes in a row.

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::backend_kind::Backend;
use crate::error::Error;
use crate::range::PageRange;
use crate::sys::{self, FD_REPLACED};

/// Pipes in the process-wide pool.
pub const SLOTS: usize = 4;

struct Slot {
    /// Read end; equal to `wfd` when the slot holds one `O_RDWR` descriptor.
    rfd: AtomicI32,
    wfd: AtomicI32,
    dev: AtomicU64,
    ino: AtomicU64,
    busy: AtomicBool,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            rfd: AtomicI32::new(-1),
            wfd: AtomicI32::new(-1),
            dev: AtomicU64::new(0),
            ino: AtomicU64::new(0),
            busy: AtomicBool::new(false),
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
    fn fill(&self) -> Result<(), i32> {
        let ours = self.verified();
        let fresh = new_pipe()?;
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

/// A non-blocking, close-on-exec pipe, as one `O_RDWR` descriptor when `/proc` allows.
fn new_pipe() -> Result<Fds, i32> {
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
        return Ok(pair);
    }
    pair.close();
    Ok(Fds {
        rfd: rdwr,
        wfd: rdwr,
    })
}

/// A registered user of the pipe pool; the pool is closed when the last user drops.
#[derive(Debug)]
pub struct PipeUser(());

impl PipeUser {
    pub(crate) fn open(backend: Backend) -> Result<PipeUser, Error> {
        let mut users = USERS.lock().unwrap_or_else(|e| e.into_inner());
        for slot in &POOL {
            if slot.verified().is_none()
                && let Err(e) = slot.fill()
            {
                if *users == 0 {
                    POOL.iter().for_each(Slot::empty);
                }
                return Err(Error::from_errno(
                    backend,
                    e,
                    "pipe2 for the probe pipe pool",
                ));
            }
        }
        *users += 1;
        Ok(PipeUser(()))
    }
}

impl Drop for PipeUser {
    fn drop(&mut self) {
        let mut users = USERS.lock().unwrap_or_else(|e| e.into_inner());
        *users = users.saturating_sub(1);
        if *users == 0 {
            for slot in &POOL {
                // A slot still busy belongs to a probe of another (dropped) prober on another
                // thread, which cannot exist in safe code; leave such a slot alone.
                if !slot.busy.load(Ordering::Acquire) {
                    slot.empty();
                }
            }
        }
    }
}

/// Called in a fork child: fresh pipes under the same numbers, all slots free.
pub(crate) fn after_fork_child() {
    for slot in &POOL {
        if slot.verified().is_some() {
            if slot.fill().is_err() {
                slot.empty();
            }
        } else {
            slot.rfd.store(-1, Ordering::Release);
            slot.wfd.store(-1, Ordering::Release);
        }
        slot.busy.store(false, Ordering::Release);
    }
}

/// Runs `f` with a pipe that no other probe uses right now.
#[inline]
fn with_pipe<R>(
    backend: Backend,
    f: impl FnOnce(Fds, &dyn Fn() -> Result<(), i32>) -> Result<R, Error>,
) -> Result<R, Error> {
    for slot in &POOL {
        if slot
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            let result = match slot.verified() {
                Some(fds) => f(fds, &|| slot.fill()),
                None => Err(Error::Unavailable {
                    backend,
                    errno: Some(libc::EBADF),
                    reason: FD_REPLACED,
                }),
            };
            slot.busy.store(false, Ordering::Release);
            return result;
        }
    }
    // Every pooled pipe is in use: a private one, closed afterwards.
    let fds = new_pipe().map_err(|e| Error::from_errno(backend, e, "pipe2"))?;
    let result = f(fds, &|| Err(libc::EAGAIN));
    fds.close();
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

/// Reads exactly `len` bytes back out of the pipe into `dst`.
#[inline]
fn read_out(backend: Backend, fds: Fds, dst: *mut u8, len: usize) -> Result<(), Error> {
    // SAFETY: `dst` points to `len` writable bytes owned by the caller.
    let n = unsafe { libc::syscall(libc::SYS_read, fds.rfd, dst, len) };
    if n == len as libc::c_long {
        Ok(())
    } else if n < 0 {
        Err(Error::from_errno(
            backend,
            sys::last_errno(),
            "read from the probe pipe",
        ))
    } else {
        drain(fds);
        Err(Error::Failed {
            backend,
            errno: libc::EIO,
            during: "read from the probe pipe returned fewer bytes than were written",
        })
    }
}

/// One-byte iovecs per `writev`: 64 pages per syscall, a 1 KiB array on the stack.
const IOVECS: usize = 64;

const EMPTY_IOV: libc::iovec = libc::iovec {
    iov_base: core::ptr::null_mut(),
    iov_len: 0,
};

/// One byte per page of `r` through a pipe: one `writev` of up to [`IOVECS`] one-byte
/// iovecs, then one `read` to drain the bytes.
#[inline]
pub(crate) fn check(backend: Backend, r: &PageRange) -> Result<bool, Error> {
    with_pipe(backend, |fds, refill| {
        let mut sink = [0u8; IOVECS];
        let mut iov = [EMPTY_IOV; IOVECS];
        let mut n = 0;
        let mut points = r.probe_points().peekable();
        while let Some(point) = points.next() {
            iov[n] = libc::iovec {
                iov_base: point as *mut libc::c_void,
                iov_len: 1,
            };
            n += 1;
            if n == IOVECS || points.peek().is_none() {
                if !write_in(backend, fds, refill, &iov[..n], n)? {
                    return Ok(false);
                }
                read_out(backend, fds, sink.as_mut_ptr(), n)?;
                n = 0;
            }
        }
        Ok(true)
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
