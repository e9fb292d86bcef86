//! One thin function per syscall that the crate's own bookkeeping makes (descriptors, the
//! process id); the probing techniques make theirs in their own modules. Each is
//! async-signal-safe: a raw syscall (or the libc function that is one), no allocation, no lock.
//! Errors come back as `Err(errno)`; `errno` itself is left set, as by any libc call.
//!
//! # Safety argument, once for the module
//!
//! Each wrapper hands the kernel integers, a NUL-terminated `&CStr`, or a pointer to a local of
//! its own that the kernel writes at most one value of that type into. None of them reads or
//! writes memory the caller can name, so each is sound for every argument as far as memory is
//! concerned: a number that is no descriptor gives `EBADF`. [`close`] and [`dup3_cloexec`] act on
//! whatever file a number holds: the crate calls them only on numbers that hold its own file
//! (the callers verify that first; see [`super::fd`]).

use core::ffi::CStr;

use super::errno::last_errno;

/// `getpid`, from the kernel (no cache).
#[inline]
pub(crate) fn getpid() -> i32 {
    // SAFETY: see the module docs; getpid takes no argument.
    unsafe { libc::syscall(libc::SYS_getpid) as i32 }
}

/// `open(path, flags | O_CLOEXEC)`: the new descriptor.
#[inline]
pub(crate) fn open_cloexec(path: &CStr, flags: i32) -> Result<i32, i32> {
    // SAFETY: see the module docs; `path` is NUL-terminated.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 { Err(last_errno()) } else { Ok(fd) }
}

/// `close(fd)`, ignoring the result (the number is free afterwards either way on Linux).
#[inline]
pub(crate) fn close(fd: i32) {
    // SAFETY: see the module docs; callers pass only numbers that hold the crate's own file.
    unsafe { libc::close(fd) };
}

/// `dup3(old, new, O_CLOEXEC)`: puts `old`'s file under the number `new` (closing what `new`
/// held), atomically.
#[inline]
pub(crate) fn dup3_cloexec(old: i32, new: i32) -> Result<(), i32> {
    // SAFETY: see the module docs; callers pass a `new` that holds the crate's own file.
    let ret = unsafe { libc::dup3(old, new, libc::O_CLOEXEC) };
    if ret == new {
        Ok(())
    } else {
        Err(last_errno())
    }
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, min)`: a copy of `fd` at the lowest free number `>= min`.
#[inline]
pub(crate) fn dupfd_cloexec(fd: i32, min: i32) -> Result<i32, i32> {
    // SAFETY: see the module docs; integers only.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fcntl,
            fd as libc::c_long,
            libc::F_DUPFD_CLOEXEC as libc::c_long,
            min as libc::c_long,
        )
    };
    if ret < 0 {
        Err(last_errno())
    } else {
        Ok(ret as i32)
    }
}

/// `fstat(fd)`.
#[inline]
pub(crate) fn fstat(fd: i32) -> Result<libc::stat, i32> {
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // The raw syscall: glibc's fstat goes through fstatat(fd, "", AT_EMPTY_PATH), which costs
    // an extra path lookup on older kernels. x86_64's kernel `struct stat` is libc's.
    #[cfg(target_arch = "x86_64")]
    // SAFETY: see the module docs; fstat writes at most one `struct stat` into `st`.
    let ret = unsafe { libc::syscall(libc::SYS_fstat, fd, st.as_mut_ptr()) };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: see the module docs; fstat writes at most one `struct stat` into `st`.
    let ret = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if ret != 0 {
        return Err(last_errno());
    }
    // SAFETY: fstat succeeded, so it initialised the whole struct.
    Ok(unsafe { st.assume_init() })
}

/// `prlimit64(0, RLIMIT_NOFILE, NULL, &old)`: this process's descriptor limit, soft and hard.
#[inline]
pub(crate) fn nofile_limit() -> Result<libc::rlimit64, i32> {
    let mut lim = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: see the module docs; prlimit64 on this process (pid 0) with no new limit only
    // writes the old one into `lim`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0 as libc::c_long,
            libc::RLIMIT_NOFILE as libc::c_long,
            core::ptr::null::<libc::rlimit64>(),
            &mut lim as *mut libc::rlimit64,
        )
    };
    if ret != 0 { Err(last_errno()) } else { Ok(lim) }
}
