//! Hooks and helpers for the crate's own tests; not part of the API (hidden from the docs).
//! (Integration tests, benches and fuzz targets use the lab's `addrprobe_lab::fixtures` for
//! memory; unit tests cannot, since the lab links the non-test build of this crate.)

/// Makes this process notice new processes with `getpid`, as on kernels without
/// `MADV_WIPEONFORK`. Takes effect only if called before the first `Prober` is created.
pub fn use_getpid_fallback() {
    crate::backend::process::FORCE_FALLBACK.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// Whether the kernel zeroes the crate's per-process page in child processes
/// (`MADV_WIPEONFORK` accepted); meaningful once a `Prober` exists.
pub fn wipes_on_fork() -> bool {
    crate::backend::process::wipes_on_fork()
}

#[cfg(test)]
use std::io;

/// Maps `len` bytes of private anonymous read-write memory at a kernel-chosen address. The
/// caller owns (and unmaps) the mapping.
#[cfg(test)]
pub(crate) fn map_anonymous(len: usize) -> io::Result<usize> {
    // SAFETY: a fresh mapping at a kernel-chosen address aliases nothing.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p as usize)
}
