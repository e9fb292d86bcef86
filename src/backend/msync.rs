//! `msync(MS_ASYNC)`: proves the pages are **mapped**, nothing more.
//!
//! `msync(2)` walks the VMAs covering `[start, start + len)` and fails with `ENOMEM` when a
//! part of the range is not mapped (`mm/msync.c`: a gap sets `unmapped_error = -ENOMEM`). It
//! never touches the pages, so `PROT_NONE` pages, guard pages and `MAP_SHARED` pages beyond
//! the end of their file all answer "yes". Since about 2.6.19 `MS_ASYNC` starts no I/O, which
//! is why unwinders (libunwind among them) used it as a cheap "is it mapped?" probe; the
//! msync-patch study in `docs/` measures what happens to that cost if `MS_ASYNC` starts
//! writeback again, as a 2012 patch proposed.
//!
//! One syscall covers the whole range: `start` must be page-aligned, so the range is widened
//! to whole pages. Cost: one syscall whatever the length.

use crate::backend_kind::Backend;
use crate::error::Error;
use crate::range::PageRange;
use crate::sys;

/// Probes the pages of `r` with one `msync(MS_ASYNC)`.
#[inline]
pub fn check(r: &PageRange) -> Result<bool, Error> {
    // SAFETY: msync only looks up the VMAs of the range; it never dereferences it and with
    // MS_ASYNC (and no MS_INVALIDATE) changes nothing.
    let ret = unsafe { libc::syscall(libc::SYS_msync, r.first_page(), r.span(), libc::MS_ASYNC) };
    match sys::check(ret) {
        Ok(_) => Ok(true),
        Err(libc::ENOMEM) => Ok(false),
        Err(e) => Err(Error::from_errno(Backend::Msync, e, "msync(MS_ASYNC)")),
    }
}
