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

/// Sends `sig` to the calling thread with a `tgkill` made at the call site (a raw
/// `syscall`/`svc`, inlined), so that the signal is delivered as that instruction returns,
/// with the caller's own frame pointer in the interrupted context. `libc::raise` is
/// interrupted inside the libc, whose code may be built without frame pointers and use
/// `rbp`/`x29` for itself (musl's does), so a frame-pointer walk from there would not reach
/// the caller. Sending a signal is safe; what its disposition does is the caller's concern.
#[inline(always)]
pub fn raise_here(sig: i32) {
    // SAFETY: getpid and gettid have no preconditions.
    let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
    // SAFETY: tgkill to this thread; the syscall clobbers only what is declared and touches
    // no memory of ours.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_tgkill => _,
            in("rdi") pid,
            in("rsi") tid,
            in("rdx") sig,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!(
            "svc 0",
            inlateout("x0") pid as usize => _,
            in("x1") tid,
            in("x2") sig,
            in("x8") libc::SYS_tgkill,
            options(nostack),
        );
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        libc::syscall(libc::SYS_tgkill, pid, tid, sig);
    }
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
