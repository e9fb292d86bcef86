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
//! The backend passes one byte per page to the kernel, [`IOVECS`](super::IOVECS) one-byte iovecs per
//! `writev` (the probe points of the other backends). The answer is the same as for a write of
//! the whole range, since the kernel reads none of it; but if the descriptor is replaced by
//! another file between the identity check and the `writev` (see `sys::fd`), that file receives
//! at most one byte per page instead of the whole range.

use super::process::DEV_NULL;
use crate::backend_kind::Backend;
use crate::error::Error;
use crate::range::PageRange;
use crate::sys::{self, FD_REPLACED};

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
        super::for_each_probe_batch(r, |iov| {
            // SAFETY: the descriptor was verified to be our /dev/null, whose write method
            // never reads the buffers; the kernel validates each iovec's base itself.
            // (The raw syscall: sanitizers' `writev` interceptors would inspect them.)
            let ret = unsafe { libc::syscall(libc::SYS_writev, fd, iov.as_ptr(), iov.len()) };
            match sys::check(ret) {
                Ok(_) => Ok(true),
                Err(libc::EFAULT) => Ok(false),
                Err(e) => Err(Error::from_errno(Backend::DevNull, e, "writev(/dev/null)")),
            }
        })
    }
}

impl Drop for DevNull {
    fn drop(&mut self) {
        DEV_NULL.release();
    }
}
