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
//! The backend writes the whole range in one call (the kernel reads none of it).

use crate::backend_kind::Backend;
use crate::error::Error;
use crate::range::PageRange;
use crate::sys::{self, DEV_NULL, FD_REPLACED};

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

    /// One `write()` of the whole range to `/dev/null`.
    #[inline]
    pub fn check(&self, r: &PageRange) -> Result<bool, Error> {
        let fd = DEV_NULL.verified().ok_or(Error::Unavailable {
            backend: Backend::DevNull,
            errno: Some(libc::EBADF),
            reason: FD_REPLACED,
        })?;
        let len = r.last() - r.addr() + 1;
        // SAFETY: the descriptor was verified to be our /dev/null, whose write method never
        // reads the buffer; the kernel validates the pointer itself.
        // (The raw syscall: sanitizers' `write` interceptors would inspect the buffer.)
        let ret = unsafe { libc::syscall(libc::SYS_write, fd, r.addr(), len) };
        match sys::check(ret) {
            Ok(_) => Ok(true),
            Err(libc::EFAULT) => Ok(false),
            Err(e) => Err(Error::from_errno(Backend::DevNull, e, "write(/dev/null)")),
        }
    }
}

impl Drop for DevNull {
    fn drop(&mut self) {
        DEV_NULL.release();
    }
}
