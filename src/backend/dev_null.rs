//! `write()` to `/dev/null`: **unsound**, kept to show why.
//!
//! `vfs_write()` (`fs/read_write.c`) checks only `access_ok(buf, count)`, i.e. that the range
//! lies below the top of user space, and then calls the file's `write` method. For
//! `/dev/null` that is `write_null()` in `drivers/char/mem.c`, whose whole body is
//! `return count;`: the buffer is never read, so no page fault can ever occur and every
//! user-space address, mapped or not, "succeeds". A "yes" therefore proves nothing; only a
//! "no" (an `EFAULT` from `access_ok`, i.e. a kernel or non-canonical address) means
//! something, and this crate already answers those ranges without a syscall.
//!
//! The backend passes one byte per page to the kernel, [`IOVECS`] one-byte iovecs per
//! `writev` (the probe points of the other backends). The answer is the same as for a write of
//! the whole range, since the kernel reads none of it; but if the descriptor is replaced by
//! another file between the identity check and the `writev` (see `sys`), that file receives
//! at most one byte per page instead of the whole range.

use crate::backend_kind::Backend;
use crate::error::Error;
use crate::range::PageRange;
use crate::sys::{self, DEV_NULL, FD_REPLACED};

/// One-byte iovecs per `writev`: 64 pages per syscall, a 1 KiB array on the stack.
pub const IOVECS: usize = 64;

const EMPTY_IOV: libc::iovec = libc::iovec {
    iov_base: core::ptr::null_mut(),
    iov_len: 0,
};

/// A registered user of the process-wide `/dev/null` descriptor.
#[derive(Debug)]
pub struct DevNull(());

impl DevNull {
    pub(crate) fn open() -> Result<DevNull, Error> {
        DEV_NULL.acquire().map_err(|e| Error::Unavailable {
            backend: Backend::DevNull,
            errno: Some(e),
            reason: "open(\"/dev/null\") failed",
        })?;
        Ok(DevNull(()))
    }

    /// One byte per page of the range, written to `/dev/null` with `writev`.
    #[inline]
    pub fn check(&self, r: &PageRange) -> Result<bool, Error> {
        let fd = DEV_NULL.verified().ok_or(Error::Unavailable {
            backend: Backend::DevNull,
            errno: Some(libc::EBADF),
            reason: FD_REPLACED,
        })?;
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
                // SAFETY: the descriptor was verified to be our /dev/null, whose write method
                // never reads the buffers; the kernel validates each iovec's base itself.
                // (The raw syscall: sanitizers' `writev` interceptors would inspect them.)
                let ret = unsafe { libc::syscall(libc::SYS_writev, fd, iov.as_ptr(), n) };
                match sys::check(ret) {
                    Ok(_) => {}
                    Err(libc::EFAULT) => return Ok(false),
                    Err(e) => {
                        return Err(Error::from_errno(Backend::DevNull, e, "writev(/dev/null)"));
                    }
                }
                n = 0;
            }
        }
        Ok(true)
    }
}

impl Drop for DevNull {
    fn drop(&mut self) {
        DEV_NULL.release();
    }
}
