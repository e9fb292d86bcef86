//! The few raw-syscall helpers the lab needs (the library keeps its own private ones).

/// The `errno` of the last failed libc call on this thread.
#[inline(always)]
pub(crate) fn last_errno() -> i32 {
    // SAFETY: __errno_location returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Saves `errno` when created and restores it when dropped (for code that runs in signal
/// handlers and must leave the interrupted code's `errno` as it found it).
pub(crate) struct ErrnoGuard(i32);

impl ErrnoGuard {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Self(last_errno())
    }
}

impl Drop for ErrnoGuard {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: __errno_location returns a valid pointer to this thread's errno, which the
        // thread may always write.
        unsafe { *libc::__errno_location() = self.0 }
    }
}

/// `(st_dev, st_ino)` of a descriptor, or the errno of `fstat`.
pub(crate) fn identity(fd: i32) -> Result<(u64, u64), i32> {
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes at most one `struct stat` into the buffer we pass.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return Err(last_errno());
    }
    // SAFETY: fstat succeeded, so it initialised the whole struct.
    let st = unsafe { st.assume_init() };
    Ok((st.st_dev, st.st_ino))
}
