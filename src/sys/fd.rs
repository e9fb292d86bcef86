//! The crate's descriptors: where they sit ([`move_high`]), how each use is preceded by an
//! identity check ([`identity`], [`SharedFd::verified`]), and what remains.
//!
//! # Descriptors the crate holds
//!
//! Three backends need a file descriptor: `DevNull` (`/dev/null`), `Pipe` (a pool of four
//! pipes) and `ProcmapQuery` (`/proc/self/maps`); `SigprocMask` also uses the pipe pool, for
//! `read` only. They are process-wide, opened with `O_CLOEXEC`, reference-counted by the
//! `Prober`s that use them and closed when the last one is dropped. This module holds what a
//! single descriptor needs ([`SharedFd`]: open, move, verify, replace, close); the counting of
//! users and the replacement in a new process are the backend layer's (`backend::process`
//! for `/dev/null` and `/proc/self/maps`, `backend::pipe` for the pool).
//!
//! **Where they sit.** Each is moved, right after it is opened, to the lowest free number at
//! or above `min(1024, RLIMIT_NOFILE - 16)` (`F_DUPFD_CLOEXEC`, then the original, which is
//! the crate's, is closed): at 1024 or above when the soft limit exceeds 1040 (then `select`'s
//! `FD_SETSIZE` range is left to the application), in the top 16 numbers the limit allows
//! below that (from 1008 up with the common limit of 1024). Where the limit is below 19, or no
//! number is free there, the descriptor stays where `open` put it. The pipes that a probe
//! makes for itself when all four pooled ones are busy are not moved: they live for one probe
//! and moving them would cost two syscalls more. Because `open`, `pipe`, `socket`, `dup` and
//! `accept` return the lowest free number, an application's new descriptor lands on a number
//! the crate uses only if every number below it is in use, or if the application names the
//! number itself (`dup2`, `dup3`, `F_DUPFD` with a high minimum).
//!
//! **The identity check.** An application may close *any* descriptor (`close_range(3, ~0)` is
//! common before `exec`). So every use of a held descriptor is preceded by an identity check:
//! `fstat` must report the device and inode recorded when the crate opened it. A mismatch, or
//! `EBADF`, makes the probe return
//! [`Error::Unavailable`](crate::error::Error::Unavailable) instead of touching the file, and
//! the crate never closes a number that no longer holds its own file.
//! The check costs one `fstat` per probe call (not per page); the benchmarks report it.
//!
//! **The window that remains.** The check and the use are two syscalls. If another thread
//! closes the crate's number and puts a file of its own there (by one of the two routes above)
//! after the `fstat` and before the probe's last syscall on that number, the probe uses the
//! application's file:
//! - `dev-null` passes one byte per probed page (the probe point, a byte of the probed memory)
//!   to the file: up to 64 per `writev`, at most one per page of the range in all.
//! - `pipe` `check`: the same one byte per page is written to the file, and up to as many
//!   bytes are read from it (consumed, and the file offset moved).
//! - `pipe` and `sigprocmask` `read`: the whole probed range is written to the file, and up to
//!   as many bytes are read from it; if exactly that many come back, the read answers `Ok(true)`
//!   with the file's bytes. A pooled pipe found holding more bytes than the probe wrote (what a
//!   lost race leaves behind) is drained and the answer dropped (`Unavailable`).
//! - `procmap-query`: one `ioctl` with `PROCMAP_QUERY`'s number on the file (other file types
//!   answer `ENOTTY`, which is reported as `Unavailable`).
//!
//! An application that itself opens `/dev/null` or `/proc/self/maps` at the very number the
//! crate held cannot be told apart by the check: `DevNull` then writes into that `/dev/null`
//! (which discards everything) and `ProcmapQuery` queries through it.

use core::ffi::CStr;
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use super::raw::{self, close};

/// `(st_dev, st_ino)` of a descriptor, or the errno of `fstat`.
#[inline]
pub(crate) fn identity(fd: i32) -> Result<(u64, u64), i32> {
    raw::fstat(fd).map(|st| (st.st_dev, st.st_ino))
}

/// The crate's descriptors go to the lowest free number at or above
/// `min(HIGH_FD, RLIMIT_NOFILE - TOP_MARGIN)`.
pub(crate) const HIGH_FD: u64 = 1024;
/// With a limit of `HIGH_FD + TOP_MARGIN` or less, the crate's descriptors go to the top
/// `TOP_MARGIN` numbers the limit allows (the crate holds six at most).
pub(crate) const TOP_MARGIN: u64 = 16;

/// The lowest number the crate's long-lived descriptors may take, or `None` where the limit is
/// too low to leave room (the descriptor then stays where `open` put it). One `prlimit64`.
fn fd_floor() -> Option<i32> {
    let lim = raw::nofile_limit().ok()?;
    let floor = HIGH_FD.min(lim.rlim_cur.saturating_sub(TOP_MARGIN));
    (floor > 2).then_some(floor as i32)
}

/// Moves a descriptor the crate just opened to the lowest free number at or above
/// [`fd_floor`] (`F_DUPFD_CLOEXEC`, then closes the original, which is ours) and returns its
/// number; where there is no such number, the original. Async-signal-safe (raw syscalls).
///
/// An application's `open`, `pipe`, `socket`, `dup`... take the lowest free number, so they
/// reach the crate's numbers only once every number below is in use: a number the
/// application closes by mistake (a double `close`, `close_range` in a thread) is not handed
/// back to the application's next `open` while it has fewer than about 1,000 descriptors.
pub(crate) fn move_high(fd: i32) -> i32 {
    let Some(floor) = fd_floor() else {
        return fd;
    };
    if fd >= floor {
        return fd;
    }
    let Ok(high) = raw::dupfd_cloexec(fd, floor) else {
        return fd;
    };
    close(fd);
    high
}

/// Why a held descriptor cannot be used right now.
pub(crate) const FD_REPLACED: &str = "the application closed or replaced the descriptor this backend holds; nothing was read or written through it";

/// One process-wide descriptor with the identity recorded when the crate opened it. Every
/// method is async-signal-safe (raw syscalls, atomics; no lock, no allocation). Who uses it,
/// and whether it is this process's, is for the layer above to track.
pub(crate) struct SharedFd {
    fd: AtomicI32,
    dev: AtomicU64,
    ino: AtomicU64,
    path: &'static CStr,
    flags: i32,
}

impl SharedFd {
    /// `path`, opened with `flags | O_CLOEXEC`; nothing is opened yet.
    pub(crate) const fn new(path: &'static CStr, flags: i32) -> Self {
        Self {
            fd: AtomicI32::new(-1),
            dev: AtomicU64::new(0),
            ino: AtomicU64::new(0),
            path,
            flags,
        }
    }

    /// Opens the file and moves it above the lowest free numbers.
    fn open_raw(&self) -> Result<i32, i32> {
        raw::open_cloexec(self.path, self.flags).map(move_high)
    }

    /// Opens the file afresh and publishes it with its identity. Returns the number held
    /// before (`-1` if none), which is left open: it may be the application's by now.
    pub(crate) fn open_fresh(&self) -> Result<i32, i32> {
        let fd = self.open_raw()?;
        let (dev, ino) = match identity(fd) {
            Ok(id) => id,
            Err(e) => {
                close(fd);
                return Err(e);
            }
        };
        // A probe that loads the new number with the old identity (or the reverse) answers
        // Unavailable; never a wrong file.
        self.dev.store(dev, Ordering::Relaxed);
        self.ino.store(ino, Ordering::Relaxed);
        Ok(self.fd.swap(fd, Ordering::AcqRel))
    }

    /// Closes the descriptor if the number still holds the crate's file, and forgets it.
    pub(crate) fn close(&self) {
        if let Some(fd) = self.verified() {
            close(fd);
        }
        self.fd.store(-1, Ordering::Release);
    }

    /// The descriptor, if it still holds the crate's file. One `fstat`.
    #[inline]
    pub(crate) fn verified(&self) -> Option<i32> {
        let fd = self.fd.load(Ordering::Acquire);
        if fd < 0 {
            return None;
        }
        match identity(fd) {
            Ok((dev, ino))
                if dev == self.dev.load(Ordering::Relaxed)
                    && ino == self.ino.load(Ordering::Relaxed) =>
            {
                Some(fd)
            }
            _ => None,
        }
    }

    /// Opens the file anew; when the number still holds the crate's (inherited) file, the new
    /// one replaces it under the same number (`dup3`), else it is kept under its own number.
    /// `false` if it could not be opened (the inherited one is then closed: it answers for
    /// another process). Raw syscalls only: `fstat`, `open`, `fcntl`, `dup3`, `close`.
    pub(crate) fn reopen(&self) -> bool {
        let old = self.verified();
        let Ok(new) = self.open_raw() else {
            if let Some(old) = old {
                close(old);
                self.fd.store(-1, Ordering::Release);
            }
            return false;
        };
        let Ok((dev, ino)) = identity(new) else {
            close(new);
            return false;
        };
        match old {
            // dup3 atomically replaces `old` (which holds our own file) with `new`.
            Some(old) if raw::dup3_cloexec(new, old).is_ok() => close(new),
            _ => self.fd.store(new, Ordering::Release),
        }
        self.dev.store(dev, Ordering::Relaxed);
        self.ino.store(ino, Ordering::Relaxed);
        true
    }
}
