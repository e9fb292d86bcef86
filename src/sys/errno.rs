//! `errno`: keeping the caller's ([`ErrnoGuard`]) and reading the last one ([`last_errno`],
//! [`check`]).
//!
//! Safety argument, once for the module: `__errno_location` returns a valid, aligned pointer
//! to the calling thread's own `errno`, which lives as long as the thread; reading and writing
//! it has no other precondition.

/// Saves `errno` when created and restores it when dropped, so that every probe leaves the
/// caller's `errno` as it found it (a signal handler that clobbers `errno` breaks the code it
/// interrupted).
pub(crate) struct ErrnoGuard(i32);

impl ErrnoGuard {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        // SAFETY: see the module docs.
        Self(unsafe { *libc::__errno_location() })
    }
}

impl Drop for ErrnoGuard {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: see the module docs; writing this thread's own errno is always allowed.
        unsafe { *libc::__errno_location() = self.0 }
    }
}

/// The `errno` of the last failed libc call on this thread.
#[inline(always)]
pub(crate) fn last_errno() -> i32 {
    // SAFETY: see the module docs.
    unsafe { *libc::__errno_location() }
}

/// Decodes a `libc::syscall`-style return: `-1` means "see errno".
#[inline(always)]
pub(crate) fn check(ret: libc::c_long) -> Result<libc::c_long, i32> {
    if ret == -1 {
        Err(last_errno())
    } else {
        Ok(ret)
    }
}
