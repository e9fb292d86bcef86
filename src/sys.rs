//! Small async-signal-safe helpers over raw syscalls: `errno` preservation, syscall result
//! decoding, and the process-wide descriptors that some backends hold.
//!
//! # Descriptors the crate holds
//!
//! Three backends need a file descriptor: `DevNull` (`/dev/null`), `Pipe` (a small pool of
//! pipes) and `ProcmapQuery` (`/proc/self/maps`); `SigprocMask` also uses the pipe pool, for
//! `read` only. They are process-wide, opened with
//! `O_CLOEXEC`, reference-counted by the [`Prober`](crate::Prober)s that use them and closed
//! when the last one is dropped.
//!
//! An application may close *any* descriptor (`close_range(3, ~0)` is common before `exec`)
//! and its next `open` may get the same number. Writing probe bytes into that file, or
//! reading from it, would corrupt or steal the application's data. So every use of a held
//! descriptor is preceded by an identity check: `fstat` must report the device and inode
//! recorded when the crate opened it. A mismatch, or `EBADF`, makes the probe return
//! [`Error::Unavailable`](crate::Error::Unavailable) instead of touching the file, and the
//! crate never closes a number that no longer holds its own file. The check costs one `fstat`
//! per probe call (not per page); the benchmarks report it.
//!
//! After `fork()` a `pthread_atfork` child handler gives the child its own pipes and its own
//! `/proc/self/maps` (an inherited one keeps describing the parent), and records the child's
//! pid for `process_vm_readv`.

use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, Once};

/// Saves `errno` when created and restores it when dropped, so that every probe leaves the
/// caller's `errno` as it found it (a signal handler that clobbers `errno` breaks the code it
/// interrupted).
pub(crate) struct ErrnoGuard(i32);

impl ErrnoGuard {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        // SAFETY: __errno_location returns a valid pointer to this thread's errno.
        Self(unsafe { *libc::__errno_location() })
    }
}

impl Drop for ErrnoGuard {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: as in `new`; writing this thread's own errno is always allowed.
        unsafe { *libc::__errno_location() = self.0 }
    }
}

/// The `errno` of the last failed libc call on this thread.
#[inline(always)]
pub(crate) fn last_errno() -> i32 {
    // SAFETY: __errno_location returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Decodes a `libc::syscall`-style return: `-1` means "see errno".
#[inline(always)]
pub(crate) fn check(ret: libc::c_long) -> Result<libc::c_long, i32> {
    if ret == -1 {
        Err(last_errno())
    } else {
        Ok(ret)
    }
}

/// `(st_dev, st_ino)` of a descriptor, or the errno of `fstat`.
#[inline]
pub(crate) fn identity(fd: i32) -> Result<(u64, u64), i32> {
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // The raw syscall: glibc's fstat goes through fstatat(fd, "", AT_EMPTY_PATH), which costs
    // an extra path lookup on older kernels. x86_64's kernel `struct stat` is libc's.
    #[cfg(target_arch = "x86_64")]
    // SAFETY: fstat writes at most one `struct stat` into the buffer we pass.
    let ret = unsafe { libc::syscall(libc::SYS_fstat, fd, st.as_mut_ptr()) };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: fstat writes at most one `struct stat` into the buffer we pass.
    let ret = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if ret != 0 {
        return Err(last_errno());
    }
    // SAFETY: fstat succeeded, so it initialised the whole struct.
    let st = unsafe { st.assume_init() };
    Ok((st.st_dev, st.st_ino))
}

/// Closes `fd`, ignoring the result (the descriptor is gone either way on Linux).
pub(crate) fn close(fd: i32) {
    // SAFETY: closing a descriptor number has no memory-safety preconditions; callers only
    // pass numbers they verified to hold the crate's own file.
    unsafe { libc::close(fd) };
}

/// One process-wide descriptor with the identity recorded when the crate opened it.
pub(crate) struct SharedFd {
    fd: AtomicI32,
    dev: AtomicU64,
    ino: AtomicU64,
    users: Mutex<usize>,
    path: &'static core::ffi::CStr,
    flags: i32,
    reopen_in_child: bool,
}

/// Why a held descriptor cannot be used right now.
pub(crate) const FD_REPLACED: &str = "the application closed or replaced the descriptor this backend holds; nothing was read or written through it";

impl SharedFd {
    pub(crate) const fn new(
        path: &'static core::ffi::CStr,
        flags: i32,
        reopen_in_child: bool,
    ) -> Self {
        Self {
            fd: AtomicI32::new(-1),
            dev: AtomicU64::new(0),
            ino: AtomicU64::new(0),
            users: Mutex::new(0),
            path,
            flags,
            reopen_in_child,
        }
    }

    fn open_raw(&self) -> Result<i32, i32> {
        // SAFETY: `path` is a NUL-terminated string; open has no other preconditions.
        let fd = unsafe { libc::open(self.path.as_ptr(), self.flags | libc::O_CLOEXEC) };
        if fd < 0 { Err(last_errno()) } else { Ok(fd) }
    }

    /// Registers one more user, opening the file if this is the first. Not signal-safe.
    pub(crate) fn acquire(&self) -> Result<(), i32> {
        register_atfork();
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if *users == 0 || self.verified().is_none() {
            let fd = self.open_raw()?;
            let (dev, ino) = match identity(fd) {
                Ok(id) => id,
                Err(e) => {
                    close(fd);
                    return Err(e);
                }
            };
            self.dev.store(dev, Ordering::Relaxed);
            self.ino.store(ino, Ordering::Relaxed);
            let old = self.fd.swap(fd, Ordering::AcqRel);
            // An old number that no longer holds our file is the application's: leave it.
            if old >= 0 && *users == 0 {
                close(old);
            }
        }
        *users += 1;
        Ok(())
    }

    /// Drops one user, closing the file after the last one if the number still holds it.
    pub(crate) fn release(&self) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        *users = users.saturating_sub(1);
        if *users == 0 {
            if let Some(fd) = self.verified() {
                close(fd);
            }
            self.fd.store(-1, Ordering::Release);
        }
    }

    /// The descriptor, if it still holds the crate's file. Async-signal-safe (one `fstat`).
    #[inline]
    pub(crate) fn verified(&self) -> Option<i32> {
        let fd = self.fd.load(Ordering::Acquire);
        if fd < 0 {
            return None;
        }
        match identity(fd) {
            Ok((dev, ino))
                if dev == self.dev.load(Ordering::Relaxed)
                    && ino == self.ino.load(Ordering::Relaxed) =>
            {
                Some(fd)
            }
            _ => None,
        }
    }

    /// In a fork child: give the child its own open file under the same number.
    fn reopen_after_fork(&self) {
        if !self.reopen_in_child {
            return;
        }
        let Some(old) = self.verified() else {
            return;
        };
        let Ok(new) = self.open_raw() else {
            // Leave nothing that answers for the parent.
            close(old);
            self.fd.store(-1, Ordering::Release);
            return;
        };
        if let Ok((dev, ino)) = identity(new) {
            // SAFETY: dup3 atomically replaces `old` (our own file) with `new`.
            if unsafe { libc::dup3(new, old, libc::O_CLOEXEC) } == old {
                self.dev.store(dev, Ordering::Relaxed);
                self.ino.store(ino, Ordering::Relaxed);
            }
        }
        close(new);
    }
}

/// `/dev/null`, for the `DevNull` backend.
pub(crate) static DEV_NULL: SharedFd = SharedFd::new(c"/dev/null", libc::O_WRONLY, false);
/// `/proc/self/maps`, for the `ProcmapQuery` backend. Reopened in fork children.
pub(crate) static PROC_MAPS: SharedFd = SharedFd::new(c"/proc/self/maps", libc::O_RDONLY, true);

/// This process's pid, kept current across `fork()` by the atfork child handler.
static PID: AtomicI32 = AtomicI32::new(0);

/// The calling process's pid without a syscall (valid once any `Prober` exists).
#[inline]
pub(crate) fn pid() -> i32 {
    PID.load(Ordering::Relaxed)
}

static ATFORK: Once = Once::new();

/// Registers the fork child handler once. Not signal-safe (called from `Prober::new`).
pub(crate) fn register_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: getpid has no preconditions.
        PID.store(unsafe { libc::getpid() }, Ordering::Relaxed);
        // SAFETY: `after_fork_child` is an `extern "C" fn()` that only makes
        // async-signal-safe syscalls, as POSIX requires of atfork child handlers.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_child)) };
    });
}

extern "C" fn after_fork_child() {
    // SAFETY: getpid has no preconditions.
    PID.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    PROC_MAPS.reopen_after_fork();
    DEV_NULL.reopen_after_fork();
    crate::backend::pipe::after_fork_child();
}

/// Maps `len` bytes in a quiet part of the address space: below the program, where the
/// kernel's top-down `mmap` allocator does not reach while there is room above. A page that a
/// fixture or self-test unmaps there stays a hole even while other threads call `mmap`, so the
/// constructed truth "unmapped" cannot be invalidated by a concurrent allocation. Falls back to
/// a kernel-chosen address. Not a probe path.
pub(crate) fn mmap_quiet(len: usize, prot: i32, flags: i32, fd: i32) -> Option<usize> {
    use core::sync::atomic::AtomicUsize;
    // 16 GiB upward in 64 MiB steps; the cursor spreads concurrent callers apart.
    static CURSOR: AtomicUsize = AtomicUsize::new(0);
    const BASE: usize = 0x4_0000_0000;
    const STEP: usize = 64 << 20;
    for _ in 0..64 {
        let slot = CURSOR.fetch_add(1, Ordering::Relaxed) % 1024;
        let hint = BASE + slot * STEP;
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; it fails instead.
        let p = unsafe {
            libc::mmap(
                hint as *mut libc::c_void,
                len,
                prot,
                flags | libc::MAP_FIXED_NOREPLACE,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            continue;
        }
        if p as usize == hint {
            return Some(hint);
        }
        // Kernels before 4.17 treat the flag as a hint: not what we asked for.
        // SAFETY: unmapping the mapping we just made.
        unsafe { libc::munmap(p, len) };
    }
    // SAFETY: a fresh mapping at a kernel-chosen address.
    let p = unsafe { libc::mmap(core::ptr::null_mut(), len, prot, flags, fd, 0) };
    (p != libc::MAP_FAILED).then_some(p as usize)
}
