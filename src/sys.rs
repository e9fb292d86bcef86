//! Small async-signal-safe helpers over raw syscalls: `errno` preservation, syscall result
//! decoding, the process-wide descriptors that some backends hold, and the per-process page
//! that tells a child process from its parent.
//!
//! # Descriptors the crate holds
//!
//! Three backends need a file descriptor: `DevNull` (`/dev/null`), `Pipe` (a pool of four
//! pipes) and `ProcmapQuery` (`/proc/self/maps`); `SigprocMask` also uses the pipe pool, for
//! `read` only. They are process-wide, opened with `O_CLOEXEC`, reference-counted by the
//! [`Prober`](crate::Prober)s that use them and closed when the last one is dropped.
//!
//! **Where they sit.** Each is moved, right after it is opened, to the lowest free number at
//! or above `min(1024, RLIMIT_NOFILE - 16)` (`F_DUPFD_CLOEXEC`, then the original, which is
//! the crate's, is closed): at 1024 or above when the soft limit exceeds 1040 (then `select`'s
//! `FD_SETSIZE` range is left to the application), in the top 16 numbers the limit allows
//! below that (from 1008 up with the common limit of 1024). Where the limit is below 19, or no
//! number is free there, the descriptor stays where `open` put it. The pipes that a probe
//! makes for itself when all four pooled ones are busy are not moved: they live for one probe
//! and moving them would cost two syscalls more. Because `open`, `pipe`, `socket`, `dup` and
//! `accept` return the lowest free number, an application's new descriptor lands on a number
//! the crate uses only if every number below it is in use, or if the application names the
//! number itself (`dup2`, `dup3`, `F_DUPFD` with a high minimum).
//!
//! **The identity check.** An application may close *any* descriptor (`close_range(3, ~0)` is
//! common before `exec`). So every use of a held descriptor is preceded by an identity check:
//! `fstat` must report the device and inode recorded when the crate opened it. A mismatch, or
//! `EBADF`, makes the probe return [`Error::Unavailable`](crate::Error::Unavailable) instead of
//! touching the file, and the crate never closes a number that no longer holds its own file.
//! The check costs one `fstat` per probe call (not per page); the benchmarks report it.
//!
//! **The window that remains.** The check and the use are two syscalls. If another thread
//! closes the crate's number and puts a file of its own there (by one of the two routes above)
//! after the `fstat` and before the probe's last syscall on that number, the probe uses the
//! application's file:
//! - `dev-null` passes one byte per probed page (the probe point, a byte of the probed memory)
//!   to the file: up to 64 per `writev`, at most one per page of the range in all.
//! - `pipe` `check`: the same one byte per page is written to the file, and up to as many
//!   bytes are read from it (consumed, and the file offset moved).
//! - `pipe` and `sigprocmask` `read`: the whole probed range is written to the file, and up to
//!   as many bytes are read from it; if exactly that many come back, the read answers `Ok(true)`
//!   with the file's bytes. A pooled pipe found holding more bytes than the probe wrote (what a
//!   lost race leaves behind) is drained and the answer dropped (`Unavailable`).
//! - `procmap-query`: one `ioctl` with `PROCMAP_QUERY`'s number on the file (other file types
//!   answer `ENOTTY`, which is reported as `Unavailable`).
//!
//! An application that itself opens `/dev/null` or `/proc/self/maps` at the very number the
//! crate held cannot be told apart by the check: `DevNull` then writes into that `/dev/null`
//! (which discards everything) and `ProcmapQuery` queries through it.
//!
//! # New processes
//!
//! A child made by `fork()`, by glibc's `_Fork()` or by a raw `clone` without `CLONE_VM`
//! inherits the crate's memory and descriptors, but its pipes would be shared with the parent,
//! its `/proc/self/maps` describes the parent, and `process_vm_readv` with the parent's pid
//! reads the parent. `_Fork()` and `clone` run no `pthread_atfork` handler, so the crate does
//! not rely on one. Instead, what must be this process's own is recorded in a page mapped with
//! `MADV_WIPEONFORK` (Linux 4.14+; [`ProcPage`]): the kernel gives every child that page
//! zero-filled, however the child was made, and zero means "not this process's yet". A probe
//! reads its word (no syscall) and, in a new process, first makes the state its own: the pid
//! (`getpid`), fresh pooled pipes under the same numbers, a fresh `/proc/self/maps` under the
//! same number. That repair uses raw syscalls only, takes no lock, allocates nothing and never
//! waits, so it is safe in a signal handler of a `_Fork()` child; a probe that finds another
//! thread repairing answers `Unavailable`. A probe also checks, after its syscalls, that the
//! process did not change while it ran (a fork in a signal handler that interrupted it) and
//! drops its answer if it did. The counting `Mutex`es (users of a descriptor, of the pipe pool)
//! are never taken by a probe, so a child of a multi-threaded parent never blocks on one a
//! parent thread held at the fork; `Prober::new` and dropping a `Prober` do take them (they are
//! not async-signal-safe anyway).
//!
//! Where `MADV_WIPEONFORK` is refused (kernels before 4.14, `EINVAL`), the page is an ordinary
//! one that records the pid of its owner, and the probes that use per-process state
//! (`process-vm-readv`, `procmap-query`, `pipe`, `sigprocmask`'s `read`) compare it with
//! `getpid` on every call (two `getpid`s per probe); a different pid resets the page as the
//! kernel would have. That fallback is keyed on the pid number alone.
//!
//! What remains: a probe that is interrupted by a signal handler which makes a child with
//! `_Fork()` or `clone` and then *returns* into the probe in the child runs the rest of that one
//! probe in both processes; the child's answer is dropped, but if the probe was using a pipe,
//! the parent's copy of it may get the child's bytes. Children that share the parent's memory
//! (`vfork`, `clone` with `CLONE_VM`) share the page too and are not told apart from the
//! parent: probing from them is not supported.

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
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

// ---------------------------------------------------------------------------------------------
// Descriptor numbers
// ---------------------------------------------------------------------------------------------

/// The crate's descriptors go to the lowest free number at or above
/// `min(HIGH_FD, RLIMIT_NOFILE - TOP_MARGIN)`.
pub(crate) const HIGH_FD: u64 = 1024;
/// With a limit of `HIGH_FD + TOP_MARGIN` or less, the crate's descriptors go to the top
/// `TOP_MARGIN` numbers the limit allows (the crate holds six at most).
pub(crate) const TOP_MARGIN: u64 = 16;

/// The lowest number the crate's long-lived descriptors may take, or `None` where the limit is
/// too low to leave room (the descriptor then stays where `open` put it). One `prlimit64`.
fn fd_floor() -> Option<i32> {
    let mut lim = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64 on this process (pid 0) only writes the old limit into `lim`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0 as libc::c_long,
            libc::RLIMIT_NOFILE as libc::c_long,
            core::ptr::null::<libc::rlimit64>(),
            &mut lim as *mut libc::rlimit64,
        )
    };
    if ret != 0 {
        return None;
    }
    let floor = HIGH_FD.min(lim.rlim_cur.saturating_sub(TOP_MARGIN));
    (floor > 2).then_some(floor as i32)
}

/// Moves a descriptor the crate just opened to the lowest free number at or above
/// [`fd_floor`] (`F_DUPFD_CLOEXEC`, then closes the original, which is ours) and returns its
/// number; where there is no such number, the original. Async-signal-safe (raw syscalls).
///
/// An application's `open`, `pipe`, `socket`, `dup`... take the lowest free number, so they
/// reach the crate's numbers only once every number below is in use: a number the
/// application closes by mistake (a double `close`, `close_range` in a thread) is not handed
/// back to the application's next `open` while it has fewer than about 1,000 descriptors.
pub(crate) fn move_high(fd: i32) -> i32 {
    let Some(floor) = fd_floor() else {
        return fd;
    };
    if fd >= floor {
        return fd;
    }
    // SAFETY: F_DUPFD_CLOEXEC duplicates our own descriptor; no memory is involved.
    let high = unsafe {
        libc::syscall(
            libc::SYS_fcntl,
            fd as libc::c_long,
            libc::F_DUPFD_CLOEXEC as libc::c_long,
            floor as libc::c_long,
        )
    };
    if high < 0 {
        return fd;
    }
    close(fd);
    high as i32
}

// ---------------------------------------------------------------------------------------------
// The per-process page
// ---------------------------------------------------------------------------------------------

/// A slot or descriptor word of the [`ProcPage`]: what it guards is not this process's yet.
/// Zero, so that a page the kernel wiped in a new process says so everywhere.
pub(crate) const STALE: u32 = 0;
/// A descriptor word: the descriptor is this process's and may be used.
pub(crate) const READY: u32 = 1;
/// A descriptor word: a thread of this process is replacing the descriptor; probes answer
/// `Unavailable` meanwhile (they never wait).
pub(crate) const REPAIRING: u32 = 2;
/// A pipe slot word: the slot's pipe is this process's and nobody uses it.
pub(crate) const FREE: u32 = 1;
/// A pipe slot word: a probe (or `PipeUser::open`/`drop`) owns the slot.
pub(crate) const BUSY: u32 = 2;

/// Index of `/proc/self/maps` in [`ProcPage::fds`].
pub(crate) const FD_PROC_MAPS: usize = 0;

/// The state of this process that must not be inherited by a child: it lives in a page
/// mapped with `MADV_WIPEONFORK` (Linux 4.14+), which the kernel hands to every child as
/// zeroes however the child was made (`fork`, `_Fork`, `clone` without `CLONE_VM`), with no
/// `pthread_atfork` handler involved. All-zero means "nothing here is this process's yet".
#[repr(C)]
pub(crate) struct ProcPage {
    /// This process's pid once a probe looked it up; 0 before; negative while a thread checks
    /// the value it is about to publish.
    pid: AtomicI32,
    /// Without `MADV_WIPEONFORK` only: the pid of the process whose state the page holds
    /// (negative while a thread of `-owner` resets it).
    owner: AtomicI32,
    /// Per process-wide descriptor that must be this process's own ([`FD_PROC_MAPS`]):
    /// [`STALE`], [`REPAIRING`] or [`READY`].
    pub(crate) fds: [AtomicU32; 1],
    /// Per pipe-pool slot: [`STALE`], [`FREE`] or [`BUSY`].
    pub(crate) slots: [AtomicU32; crate::backend::pipe::SLOTS],
}

impl ProcPage {
    const fn new() -> Self {
        ProcPage {
            pid: AtomicI32::new(0),
            owner: AtomicI32::new(0),
            fds: [const { AtomicU32::new(STALE) }; 1],
            slots: [const { AtomicU32::new(STALE) }; crate::backend::pipe::SLOTS],
        }
    }

    /// Zeroes what the kernel would have wiped (the fallback's reset).
    fn wipe(&self) {
        self.pid.store(0, Ordering::Relaxed);
        for w in self.fds.iter().chain(&self.slots) {
            w.store(STALE, Ordering::Relaxed);
        }
    }
}

const _: () = assert!(core::mem::size_of::<ProcPage>() <= 4096);

/// The page, once [`init`] ran.
static PAGE: AtomicPtr<ProcPage> = AtomicPtr::new(core::ptr::null_mut());
/// Whether the kernel wipes [`PAGE`] in children (`MADV_WIPEONFORK` accepted).
static WIPES: AtomicBool = AtomicBool::new(false);
/// The fallback's page where no page could be mapped.
static FALLBACK_PAGE: ProcPage = ProcPage::new();
/// Set by `testing::use_getpid_fallback` before the first `Prober`.
pub(crate) static FORCE_FALLBACK: AtomicBool = AtomicBool::new(false);
static INIT: Once = Once::new();

/// Maps the per-process page once. Not signal-safe (called from `Prober::new`).
pub(crate) fn init() {
    INIT.call_once(|| {
        let len = crate::range::page_size();
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
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
            let me = getpid();
            FALLBACK_PAGE.pid.store(me, Ordering::Relaxed);
            FALLBACK_PAGE.owner.store(me, Ordering::Relaxed);
            PAGE.store(
                &FALLBACK_PAGE as *const ProcPage as *mut ProcPage,
                Ordering::Release,
            );
            return;
        }
        let wipes = !FORCE_FALLBACK.load(Ordering::Relaxed)
            // SAFETY: advice on the page we just mapped, which holds nothing yet.
            && unsafe { libc::madvise(p, len, libc::MADV_WIPEONFORK) } == 0;
        WIPES.store(wipes, Ordering::Relaxed);
        // The mapping is zero-filled: a valid all-stale `ProcPage` (atomics of integers).
        // SAFETY: nothing else refers to the page yet.
        let page = unsafe { &*p.cast::<ProcPage>() };
        let me = getpid();
        page.pid.store(me, Ordering::Relaxed);
        page.owner.store(me, Ordering::Relaxed);
        PAGE.store(p.cast(), Ordering::Release);
    });
}

/// Whether the kernel wipes the per-process page in children (else every probe of the
/// backends that keep per-process state calls `getpid`).
pub(crate) fn wipes_on_fork() -> bool {
    WIPES.load(Ordering::Relaxed)
}

/// This process's pid, from the kernel.
#[inline]
fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::syscall(libc::SYS_getpid) as i32 }
}

/// The per-process state of the calling process, with its pid. See [`current`].
#[derive(Clone, Copy)]
pub(crate) struct Proc {
    pub(crate) page: &'static ProcPage,
    pub(crate) pid: i32,
}

/// Why [`current`] has nothing to hand out.
pub(crate) const NOT_CURRENT: &str = "the probe state of this process is not ready: no Prober was created yet, or this is a new process (fork, _Fork, clone) and another of its threads is setting up the state that belongs to it";

/// Why a probe's answer was dropped.
pub(crate) const PROCESS_CHANGED: &str = "the process changed during the probe (a fork in a signal handler): the answer could be another process's";

/// The per-process page of the calling process, or `None` (answer `Unavailable`): no
/// `Prober` was ever created, or another thread of this new process is initialising it.
/// Async-signal-safe, lock-free, never waits.
///
/// With `MADV_WIPEONFORK` this costs three loads; a new process is noticed without a
/// syscall, because the kernel gave it a zeroed page. The first call in each process looks
/// the pid up (two `getpid`s: one to learn it, one to prove that no fork happened before it
/// was published). Without `MADV_WIPEONFORK` (kernels before 4.14) every call costs one
/// `getpid`, and a call in a process whose pid differs from the page's owner resets the
/// page first (the wipe the kernel would have done).
#[inline]
pub(crate) fn current() -> Option<Proc> {
    let p = PAGE.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: PAGE only ever holds a page that stays mapped for the life of the process (or
    // the static fallback), laid out as a `ProcPage`.
    let page = unsafe { &*p };
    if !WIPES.load(Ordering::Relaxed) {
        return current_by_getpid(page);
    }
    let pid = page.pid.load(Ordering::Acquire);
    if pid > 0 {
        return Some(Proc { page, pid });
    }
    if pid < 0 {
        // Another thread (or the code this signal handler interrupted) is publishing it.
        return None;
    }
    let me = getpid();
    if let Err(now) = page
        .pid
        .compare_exchange(0, -me, Ordering::AcqRel, Ordering::Relaxed)
    {
        // Another thread published it meanwhile (or is checking it).
        return (now > 0).then_some(Proc { page, pid: now });
    }
    // A fork between `getpid` and the store would have left the parent's pid in the child's
    // page: ask again before publishing.
    if getpid() != me {
        let _ = page
            .pid
            .compare_exchange(-me, 0, Ordering::AcqRel, Ordering::Relaxed);
        return None;
    }
    // A compare-and-swap, not a store: after a fork right here the child's page reads 0.
    page.pid
        .compare_exchange(-me, me, Ordering::AcqRel, Ordering::Relaxed)
        .ok()?;
    Some(Proc { page, pid: me })
}

#[cold]
fn current_by_getpid(page: &'static ProcPage) -> Option<Proc> {
    let me = getpid();
    let owner = page.owner.load(Ordering::Acquire);
    if owner == me {
        return Some(Proc { page, pid: me });
    }
    if owner == -me {
        return None;
    }
    // The page is another process's (our parent's, inherited): take it over.
    if page
        .owner
        .compare_exchange(owner, -me, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return None;
    }
    page.wipe();
    page.pid.store(me, Ordering::Relaxed);
    page.owner.store(me, Ordering::Release);
    Some(Proc { page, pid: me })
}

impl Proc {
    /// Whether this is still the process `self` was taken in: `false` after a fork that
    /// happened during the probe (possible only from a signal handler that interrupted it),
    /// whose answer must then be dropped. One load (one `getpid` without `MADV_WIPEONFORK`).
    #[inline]
    pub(crate) fn still_current(&self) -> bool {
        if WIPES.load(Ordering::Relaxed) {
            self.page.pid.load(Ordering::Acquire) == self.pid
        } else {
            getpid() == self.pid && self.page.owner.load(Ordering::Acquire) == self.pid
        }
    }
}

/// [`current`] for code that may wait (`Prober::new`, `Drop`): retries while another thread
/// initialises the page. Not signal-safe.
pub(crate) fn current_waiting() -> Option<Proc> {
    for _ in 0..10_000 {
        if let Some(p) = current() {
            return Some(p);
        }
        if PAGE.load(Ordering::Acquire).is_null() {
            return None;
        }
        std::thread::yield_now();
    }
    None
}

/// Takes a [`ProcPage::fds`] word for `acquire`/`release`: from any state but
/// [`REPAIRING`] to [`REPAIRING`], waiting (yielding) while a probe repairs. Returns the state
/// it found. Not signal-safe.
fn lock_word(w: &AtomicU32) -> Option<u32> {
    for _ in 0..10_000 {
        let s = w.load(Ordering::Acquire);
        if s != REPAIRING
            && w.compare_exchange(s, REPAIRING, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some(s);
        }
        std::thread::yield_now();
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Process-wide descriptors
// ---------------------------------------------------------------------------------------------

/// One process-wide descriptor with the identity recorded when the crate opened it.
pub(crate) struct SharedFd {
    fd: AtomicI32,
    dev: AtomicU64,
    ino: AtomicU64,
    /// Counts the `Prober`s that use it. Never taken by a probe: after a fork from a
    /// multi-threaded parent, a parent thread may have held it, and it stays held in the child.
    users: Mutex<usize>,
    path: &'static core::ffi::CStr,
    flags: i32,
    /// For a file that describes the process that opened it (`/proc/self/maps`): its index in
    /// [`ProcPage::fds`]; a new process replaces it before its first use.
    per_process: Option<usize>,
}

/// Why a held descriptor cannot be used right now.
pub(crate) const FD_REPLACED: &str = "the application closed or replaced the descriptor this backend holds; nothing was read or written through it";

impl SharedFd {
    pub(crate) const fn new(
        path: &'static core::ffi::CStr,
        flags: i32,
        per_process: Option<usize>,
    ) -> Self {
        Self {
            fd: AtomicI32::new(-1),
            dev: AtomicU64::new(0),
            ino: AtomicU64::new(0),
            users: Mutex::new(0),
            path,
            flags,
            per_process,
        }
    }

    /// Opens the file and moves it above the lowest free numbers. Async-signal-safe.
    fn open_raw(&self) -> Result<i32, i32> {
        // SAFETY: `path` is a NUL-terminated string; open has no other preconditions.
        let fd = unsafe { libc::open(self.path.as_ptr(), self.flags | libc::O_CLOEXEC) };
        if fd < 0 {
            Err(last_errno())
        } else {
            Ok(move_high(fd))
        }
    }

    /// The state word of a per-process descriptor.
    fn word(&self, proc: &Proc) -> Option<&'static AtomicU32> {
        let i = self.per_process?;
        Some(&proc.page.fds[i])
    }

    /// Registers one more user, opening the file if this is the first. Not signal-safe.
    pub(crate) fn acquire(&self) -> Result<(), i32> {
        init();
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let word = match self.per_process {
            Some(_) => Some(
                current_waiting()
                    .and_then(|p| self.word(&p))
                    .ok_or(libc::EAGAIN)?,
            ),
            None => None,
        };
        // Keep probes (which may be repairing in a new process) off while we replace it.
        let was = match word {
            Some(w) => Some(lock_word(w).ok_or(libc::EAGAIN)?),
            None => None,
        };
        let result = self.acquire_locked(*users);
        if let (Some(w), Some(was)) = (word, was) {
            let now = match result {
                Ok(true) => READY,
                Ok(false) => was,
                Err(_) if *users == 0 => STALE,
                Err(_) => was,
            };
            w.store(now, Ordering::Release);
        }
        result?;
        *users += 1;
        Ok(())
    }

    /// Opens the file if there are no users or the number no longer holds it; `Ok(true)` if
    /// it opened one (which is then this process's own).
    fn acquire_locked(&self, users: usize) -> Result<bool, i32> {
        if users != 0 && self.verified().is_some() {
            return Ok(false);
        }
        let fd = self.open_raw()?;
        let (dev, ino) = match identity(fd) {
            Ok(id) => id,
            Err(e) => {
                close(fd);
                return Err(e);
            }
        };
        // A probe that loads the new number with the old identity (or the reverse) answers
        // Unavailable; never a wrong file.
        self.dev.store(dev, Ordering::Relaxed);
        self.ino.store(ino, Ordering::Relaxed);
        let old = self.fd.swap(fd, Ordering::AcqRel);
        // An old number that no longer holds our file is the application's: leave it.
        if old >= 0 && users == 0 {
            close(old);
        }
        Ok(true)
    }

    /// Drops one user, closing the file after the last one if the number still holds it.
    pub(crate) fn release(&self) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        *users = users.saturating_sub(1);
        if *users == 0 {
            let word = current_waiting().and_then(|p| self.word(&p));
            let locked = word.map(lock_word);
            if let Some(fd) = self.verified() {
                close(fd);
            }
            self.fd.store(-1, Ordering::Release);
            if let (Some(w), Some(Some(_))) = (word, locked) {
                w.store(STALE, Ordering::Release);
            }
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

    /// For a probe: the descriptor, if it holds the crate's file and (for a per-process file)
    /// that file belongs to this process. In a new process the first probe opens this
    /// process's own file and puts it under the same number (`dup3`; the inherited one
    /// describes the parent). Async-signal-safe and lock-free; never waits: while another
    /// thread repairs, `Err(NOT_CURRENT)`.
    #[inline]
    pub(crate) fn for_probe(&self, proc: &Proc) -> Result<i32, &'static str> {
        if let Some(w) = self.word(proc) {
            match w.load(Ordering::Acquire) {
                READY => {}
                STALE => self.repair(w)?,
                _ => return Err(NOT_CURRENT),
            }
        }
        self.verified().ok_or(FD_REPLACED)
    }

    /// Replaces an inherited per-process file with this process's own. Async-signal-safe:
    /// raw syscalls only (`fstat`, `open`, `fcntl`, `dup3`, `close`), no lock, no allocation.
    #[cold]
    fn repair(&self, w: &AtomicU32) -> Result<(), &'static str> {
        if w.compare_exchange(STALE, REPAIRING, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return Err(NOT_CURRENT);
        }
        let done = self.reopen();
        w.store(if done { READY } else { STALE }, Ordering::Release);
        if done { Ok(()) } else { Err(NOT_CURRENT) }
    }

    /// Opens the file anew; when the number still holds the crate's (inherited) file, the new
    /// one replaces it under the same number, else it is kept under its own number. `false`
    /// if it could not be opened (the inherited one is then closed: it answers for another
    /// process).
    fn reopen(&self) -> bool {
        let old = self.verified();
        let Ok(new) = self.open_raw() else {
            if let Some(old) = old {
                close(old);
                self.fd.store(-1, Ordering::Release);
            }
            return false;
        };
        let Ok((dev, ino)) = identity(new) else {
            close(new);
            return false;
        };
        match old {
            // SAFETY: dup3 atomically replaces `old` (which holds our own file) with `new`.
            Some(old) if unsafe { libc::dup3(new, old, libc::O_CLOEXEC) } == old => close(new),
            _ => self.fd.store(new, Ordering::Release),
        }
        self.dev.store(dev, Ordering::Relaxed);
        self.ino.store(ino, Ordering::Relaxed);
        true
    }
}

/// `/dev/null`, for the `DevNull` backend. A child may keep writing to its parent's: it
/// discards everything either way.
pub(crate) static DEV_NULL: SharedFd = SharedFd::new(c"/dev/null", libc::O_WRONLY, None);
/// `/proc/self/maps`, for the `ProcmapQuery` backend. Replaced in every new process before
/// its first use there.
pub(crate) static PROC_MAPS: SharedFd =
    SharedFd::new(c"/proc/self/maps", libc::O_RDONLY, Some(FD_PROC_MAPS));

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
