//! The `PROCMAP_QUERY` ioctl (Linux 6.11+): proves every page lies in a **region with read
//! permission**.
//!
//! `do_procmap_query()` (`fs/proc/task_mmu.c`) looks up the VMA covering `query_addr` under
//! the mmap lock (or a per-VMA lock on newer kernels) and reports its bounds and flags;
//! `ENOENT` means no VMA covers the address. This backend walks the VMAs from `addr` until the
//! range is covered and requires `PROCMAP_QUERY_VMA_READABLE` on each. It judges the region,
//! not the page: a `MAP_SHARED` page beyond the end of its file, or a page marked by
//! `MADV_GUARD_INSTALL` (6.13+), lies in a readable VMA and still raises a fault when loaded.
//!
//! Kernels before 6.11 answer `ENOTTY`: the backend is then unavailable, never "unreadable".
//! The descriptor is `/proc/self/maps`, opened once per process. An inherited one keeps
//! describing the parent's address space, so the first probe in a new process (`fork`,
//! `_Fork`, `clone`; noticed through the per-process page, see `process`) opens the child's own
//! and puts it under the same number; other threads' probes answer `Unavailable` meanwhile.
//! An answer is dropped if the process changed while the probe ran.

use super::process::{self, NOT_CURRENT, PROC_MAPS, PROCESS_CHANGED};
use crate::backend_kind::Backend;
use crate::error::Error;
use crate::range::PageRange;
use crate::sys::{self, FD_REPLACED};
use linux_raw_sys::general::{procmap_query, procmap_query_flags};

/// `_IOWR('f', 17, struct procmap_query)` from `include/uapi/linux/fs.h`.
pub const PROCMAP_QUERY: libc::c_ulong = (3 << 30)
    | ((core::mem::size_of::<procmap_query>() as libc::c_ulong) << 16)
    | ((b'f' as libc::c_ulong) << 8)
    | 17;

/// A registered user of the process-wide `/proc/self/maps` descriptor.
#[derive(Debug)]
pub struct ProcMaps(());

impl ProcMaps {
    pub(crate) fn open() -> Result<ProcMaps, Error> {
        PROC_MAPS.acquire().map_err(|e| Error::Unavailable {
            backend: Backend::ProcmapQuery,
            errno: Some(e),
            reason: "open(\"/proc/self/maps\") failed",
        })?;
        Ok(ProcMaps(()))
    }

    /// Walks the VMAs covering `r`; each must be readable.
    #[inline]
    pub fn check(&self, r: &PageRange) -> Result<bool, Error> {
        let unavailable = |reason| Error::Unavailable {
            backend: Backend::ProcmapQuery,
            errno: (reason == FD_REPLACED).then_some(libc::EBADF),
            reason,
        };
        let proc = process::current().ok_or(unavailable(NOT_CURRENT))?;
        let fd = PROC_MAPS.for_probe(&proc).map_err(unavailable)?;
        let answer = Self::walk(fd, r);
        if !proc.still_current() {
            return Err(unavailable(PROCESS_CHANGED));
        }
        answer
    }

    #[inline]
    fn walk(fd: i32, r: &PageRange) -> Result<bool, Error> {
        let mut cur = r.addr();
        loop {
            // SAFETY: procmap_query is a plain C struct of integers; all-zero is valid.
            let mut q: procmap_query = unsafe { core::mem::zeroed() };
            q.size = core::mem::size_of::<procmap_query>() as u64;
            q.query_addr = cur as u64;
            // SAFETY: the descriptor is our verified /proc/self/maps; the ioctl reads and
            // writes exactly one `struct procmap_query` (name and build-id buffers are unset).
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_ioctl,
                    fd,
                    PROCMAP_QUERY,
                    &mut q as *mut procmap_query,
                )
            };
            if let Err(errno) = sys::check(ret) {
                return match errno {
                    libc::ENOENT => Ok(false),
                    e => Err(Error::from_errno(
                        Backend::ProcmapQuery,
                        e,
                        "ioctl(PROCMAP_QUERY)",
                    )),
                };
            }
            if q.vma_flags & procmap_query_flags::PROCMAP_QUERY_VMA_READABLE as u64 == 0 {
                return Ok(false);
            }
            if q.vma_end as usize <= cur {
                return Err(Error::Failed {
                    backend: Backend::ProcmapQuery,
                    errno: libc::EIO,
                    during: "ioctl(PROCMAP_QUERY) returned a VMA that does not cover the address",
                });
            }
            if q.vma_end as usize > r.last() {
                return Ok(true);
            }
            cur = q.vma_end as usize;
        }
    }
}

impl Drop for ProcMaps {
    fn drop(&mut self) {
        PROC_MAPS.release();
    }
}
