//! `mincore()`: proves the pages are **mapped**, nothing more.
//!
//! `mincore(2)` reports page-cache residency for every page of a range and fails with
//! `ENOMEM` when part of the range is not mapped (`mm/mincore.c`: `find_vma` finds no VMA
//! covering the address). The residency bits are ignored here: a never-touched page is just
//! as mapped. Like msync it says "yes" for `PROT_NONE`, guard and past-EOF pages.
//!
//! The vector is a 256-byte array on the stack (safe on an 8 KiB signal stack), so ranges of
//! more than 256 pages take one call per 256 pages.

use crate::backend_kind::Backend;
use crate::error::Error;
use crate::range::PageRange;
use crate::sys;

/// Pages per `mincore` call: the size of the stack vector.
const CHUNK_PAGES: usize = 256;
/// How often a transient `EAGAIN` is retried before it becomes an error.
const EAGAIN_RETRIES: usize = 3;

/// Probes the pages of `r` with `mincore`, 256 pages per call.
#[inline]
pub fn check(r: &PageRange) -> Result<bool, Error> {
    let mut vec = [0u8; CHUNK_PAGES];
    let mut page = r.first_page();
    let mut remaining = r.pages();
    let mut retries = 0;
    while remaining > 0 {
        let n = remaining.min(CHUNK_PAGES);
        // SAFETY: `vec` has room for `n <= CHUNK_PAGES` residency bytes; mincore only reads
        // the page tables of the range.
        let ret =
            unsafe { libc::syscall(libc::SYS_mincore, page, n * r.page_size(), vec.as_mut_ptr()) };
        if let Err(errno) = sys::check(ret) {
            match errno {
                libc::ENOMEM => return Ok(false),
                libc::EAGAIN if retries < EAGAIN_RETRIES => {
                    retries += 1;
                    continue;
                }
                e => return Err(Error::from_errno(Backend::Mincore, e, "mincore")),
            }
        }
        page += n * r.page_size();
        remaining -= n;
    }
    Ok(true)
}
