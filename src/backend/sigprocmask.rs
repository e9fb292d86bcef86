//! `rt_sigprocmask(invalid how, addr, NULL, 8)`: proves the **kernel could copy** the bytes.
//!
//! In `kernel/signal.c`, `rt_sigprocmask` first copies the new set from user memory with
//! `copy_from_user(&new_set, nset, sizeof(sigset_t))` and returns `EFAULT` if that faults; only
//! then does `sigprocmask()` reject the invalid `how` with `EINVAL`, before changing anything.
//! So `EINVAL` means "these 8 bytes were copied", `EFAULT` means "they could not be", and the
//! signal mask is never touched. No descriptor is needed and one syscall probes one page,
//! which makes this the fastest sound backend without a signal handler.
//!
//! The kernel always copies 8 bytes, so each probe's 8-byte window is placed inside the page
//! being proven ([`window_in_page`]): a window spilling into an unreadable next page would
//! turn a readable page into a "no".
//!
//! `rt_sigprocmask` cannot hand the bytes back, so [`SigprocMask::read`] copies them through
//! the pipe pool (the same `copy_from_user` semantics). If no pipe could be opened, `read`
//! returns [`Error::Unavailable`] while `check` keeps working.

use crate::backend::pipe;
use crate::backend_kind::Backend;
use crate::error::Error;
use crate::range::{PageRange, window_in_page};
use crate::sys;

/// `how` values 0, 1 and 2 are SIG_BLOCK, SIG_UNBLOCK and SIG_SETMASK; -1 is none of them.
const INVALID_HOW: libc::c_long = -1;
/// The kernel's `sizeof(sigset_t)` on Linux (64 signals).
const KERNEL_SIGSET_SIZE: libc::c_long = 8;

/// State of a `SigprocMask` prober: the pipe pool used by `read`, if it could be opened.
#[derive(Debug)]
pub struct SigprocMask {
    pipes: Option<pipe::PipeUser>,
}

impl SigprocMask {
    pub(crate) fn open() -> SigprocMask {
        SigprocMask {
            pipes: pipe::PipeUser::open(Backend::SigprocMask).ok(),
        }
    }

    /// Whether the pipe pool that `read` copies through could be opened.
    pub(crate) fn can_read(&self) -> bool {
        self.pipes.is_some()
    }

    /// Copies the range through the pipe pool.
    #[inline]
    pub fn read(&self, r: &PageRange, dst: &mut [u8]) -> Result<bool, Error> {
        if self.pipes.is_none() {
            return Err(Error::Unavailable {
                backend: Backend::SigprocMask,
                errno: None,
                reason: "read() copies through a pipe (rt_sigprocmask cannot return the bytes) and no pipe could be opened",
            });
        }
        pipe::read(Backend::SigprocMask, r, dst)
    }
}

/// One `rt_sigprocmask` per page of `r`.
#[inline]
pub fn check(r: &PageRange) -> Result<bool, Error> {
    for point in r.probe_points() {
        // A NULL `nset` means "no new set" and succeeds, so page 0 is probed at offset 8.
        let window = window_in_page(point, KERNEL_SIGSET_SIZE as usize, r.page_size()).max(8);
        // SAFETY: with an invalid `how` the kernel copies 8 bytes from `window` (validating
        // the pointer itself), rejects `how` and changes no state; `oset` is NULL.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                INVALID_HOW,
                window,
                0usize,
                KERNEL_SIGSET_SIZE,
            )
        };
        match sys::check(ret) {
            Err(libc::EINVAL) => continue,
            Err(libc::EFAULT) => return Ok(false),
            Err(e) => return Err(Error::from_errno(Backend::SigprocMask, e, "rt_sigprocmask")),
            Ok(_) => {
                return Err(Error::Unavailable {
                    backend: Backend::SigprocMask,
                    errno: None,
                    reason: "rt_sigprocmask accepted an invalid `how`, so EINVAL cannot prove a copy",
                });
            }
        }
    }
    Ok(true)
}
