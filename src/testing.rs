//! Helpers for the crate's own unit tests. (Integration tests, benches and fuzz targets use
//! the lab's `addrprobe_lab::fixtures`; unit tests cannot, since the lab links the non-test
//! build of this crate.)

use std::io;

/// Maps `len` bytes of private anonymous read-write memory at a kernel-chosen address. The
/// caller owns (and unmaps) the mapping.
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
