//! What must be this process's own, and the process-wide descriptors the backends hold.
//!
//! - The per-process page ([`ProcPage`], [`current`], [`Proc`]): tells a new process (a child
//!   made by `fork`, `_Fork` or `clone`) from the one that set the state up. It holds the
//!   state words of the pipe pool (`backend::pipe`) and of `/proc/self/maps`.
//! - [`HeldFd`]: a [`SharedFd`] counted by the `Prober`s that use it, and, for a file that
//!   describes the process that opened it, replaced by a new process before its first use
//!   ([`DEV_NULL`], [`PROC_MAPS`]). Where the descriptors sit and how each use is verified is
//!   in [`crate::sys::fd`].
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

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, Ordering};
use std::sync::{Mutex, Once};

use crate::sys::raw::getpid;
use crate::sys::{FD_REPLACED, SharedFd, close};

/// Pipes in the process-wide pool (the pipe backend's), one state word each here.
pub(crate) const SLOTS: usize = 4;

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
    pub(crate) slots: [AtomicU32; SLOTS],
}

impl ProcPage {
    const fn new() -> Self {
        ProcPage {
            pid: AtomicI32::new(0),
            owner: AtomicI32::new(0),
            fds: [const { AtomicU32::new(STALE) }; 1],
            slots: [const { AtomicU32::new(STALE) }; SLOTS],
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

/// A process-wide descriptor held by the backends: a [`SharedFd`] with the number of
/// `Prober`s that use it, and, for a file that describes the process that opened it
/// (`/proc/self/maps`), the index of its word in [`ProcPage::fds`]: a new process replaces it
/// before its first use there.
pub(crate) struct HeldFd {
    file: SharedFd,
    /// Counts the `Prober`s that use it. Never taken by a probe: after a fork from a
    /// multi-threaded parent, a parent thread may have held it, and it stays held in the child.
    users: Mutex<usize>,
    /// For a file that describes the process that opened it: its index in [`ProcPage::fds`].
    per_process: Option<usize>,
}

impl HeldFd {
    pub(crate) const fn new(
        path: &'static core::ffi::CStr,
        flags: i32,
        per_process: Option<usize>,
    ) -> Self {
        Self {
            file: SharedFd::new(path, flags),
            users: Mutex::new(0),
            per_process,
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
        if users != 0 && self.file.verified().is_some() {
            return Ok(false);
        }
        let old = self.file.open_fresh()?;
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
            self.file.close();
            if let (Some(w), Some(Some(_))) = (word, locked) {
                w.store(STALE, Ordering::Release);
            }
        }
    }

    /// The descriptor, if it still holds the crate's file. Async-signal-safe (one `fstat`).
    #[inline]
    pub(crate) fn verified(&self) -> Option<i32> {
        self.file.verified()
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
        let done = self.file.reopen();
        w.store(if done { READY } else { STALE }, Ordering::Release);
        if done { Ok(()) } else { Err(NOT_CURRENT) }
    }
}

/// `/dev/null`, for the `DevNull` backend. A child may keep writing to its parent's: it
/// discards everything either way.
pub(crate) static DEV_NULL: HeldFd = HeldFd::new(c"/dev/null", libc::O_WRONLY, None);
/// `/proc/self/maps`, for the `ProcmapQuery` backend. Replaced in every new process before
/// its first use there.
pub(crate) static PROC_MAPS: HeldFd =
    HeldFd::new(c"/proc/self/maps", libc::O_RDONLY, Some(FD_PROC_MAPS));
