//! Benchmark support: the memory the benchmarks probe, the bare syscalls the backends are
//! compared against, a small timer, the SIGPROF profiler workload and the scaling run.
//!
//! **Not part of the probe API.** This module exists so that `benches/*.rs`, the examples and
//! `addrprobe bench` measure exactly the same things; its items may change in any release.
//! Nothing here is needed to use a [`Prober`](addrprobe::Prober). Building an [`Arena`] or
//! [`Floors`] allocates, maps memory and opens descriptors: it is set-up code. The functions
//! that are timed ([`Floors::bare`], [`volatile_load`], [`getppid`]) are single syscalls or
//! loads.

use std::hint::black_box;
use std::io;
use std::time::{Duration, Instant};

use addrprobe::Backend;

use crate::fixtures::Mapping;

#[cfg(feature = "bench")]
pub mod peers;
pub mod profiler;
pub mod scaling;

/// A kernel address: never readable from user space (the start of the x86_64 kernel text
/// mapping; above [`range::USER_SPACE_LIMIT`](addrprobe::range::USER_SPACE_LIMIT) on every
/// supported architecture).
pub const KERNEL_ADDR: usize = 0xffff_ffff_8100_0000;

/// The largest probed length, in pages.
pub const MAX_PAGES: usize = 256;

/// What kind of memory a benchmark probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Case {
    /// Anonymous read-write memory that has been written (resident).
    Resident,
    /// Anonymous read-write memory that was never touched (reset with `MADV_DONTNEED`).
    Untouched,
    /// A `PROT_NONE` mapping.
    ProtNone,
    /// A hole: mapped, then unmapped.
    Unmapped,
    /// [`KERNEL_ADDR`].
    Kernel,
}

impl Case {
    /// All five cases.
    pub const ALL: [Case; 5] = [
        Case::Resident,
        Case::Untouched,
        Case::ProtNone,
        Case::Unmapped,
        Case::Kernel,
    ];

    /// Short name used in tables and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Case::Resident => "valid-resident",
            Case::Untouched => "valid-untouched",
            Case::ProtNone => "prot-none",
            Case::Unmapped => "unmapped",
            Case::Kernel => "kernel",
        }
    }

    /// Whether the memory is readable (the truth every backend is judged by).
    pub const fn readable(self) -> bool {
        matches!(self, Case::Resident | Case::Untouched)
    }
}

/// The four probed lengths: 8 bytes, 1 page, 16 pages and 256 pages.
pub fn lengths() -> [usize; 4] {
    let ps = addrprobe::range::page_size();
    [8, ps, 16 * ps, MAX_PAGES * ps]
}

/// A length as a table label: "8 B", "1 page", "16 pages", "256 pages".
pub fn len_label(len: usize) -> String {
    let ps = addrprobe::range::page_size();
    match len {
        l if l < ps => format!("{l} B"),
        l if l == ps => "1 page".to_owned(),
        l => format!("{} pages", l / ps),
    }
}

/// The memory of every [`Case`], each [`MAX_PAGES`] pages long, in the quiet region (see
/// [`map_quiet`](crate::fixtures::map_quiet)), so that the hole stays a hole while a churn
/// thread maps and unmaps.
pub struct Arena {
    resident: Mapping,
    untouched: Mapping,
    prot_none: Mapping,
    /// A `PROT_NONE` reservation with the hole punched out of its middle, so that the hole is
    /// bounded by `PROT_NONE` pages; dropping it never unmaps the hole, which by then may hold
    /// another thread's mapping.
    hole_fence: Mapping,
}

impl Arena {
    /// Maps the arena: resident memory is written, untouched memory is not, the hole is
    /// made by unmapping the middle of a `PROT_NONE` reservation.
    pub fn new() -> io::Result<Arena> {
        let ps = addrprobe::range::page_size();
        let len = MAX_PAGES * ps;
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let resident = Mapping::anon(len, rw, 0)?;
        resident.fill(0, &vec![0x5a; len]);
        let untouched = Mapping::anon(len, rw, 0)?;
        let prot_none = Mapping::anon(len, libc::PROT_NONE, 0)?;
        let mut hole_fence = Mapping::anon(len + 2 * ps, libc::PROT_NONE, 0)?;
        hole_fence.punch(ps, len);
        Ok(Arena {
            resident,
            untouched,
            prot_none,
            hole_fence,
        })
    }

    /// The start of `case`'s memory.
    pub fn addr(&self, case: Case) -> usize {
        match case {
            Case::Resident => self.resident.addr(),
            Case::Untouched => self.untouched.addr(),
            Case::ProtNone => self.prot_none.addr(),
            Case::Unmapped => self.hole_fence.addr() + addrprobe::range::page_size(),
            Case::Kernel => KERNEL_ADDR,
        }
    }

    /// Drops the pages of the untouched mapping again (`MADV_DONTNEED`), so that the next
    /// probe finds them never touched.
    pub fn reset_untouched(&self, len: usize) {
        let ps = addrprobe::range::page_size();
        let len = len.div_ceil(ps) * ps;
        // SAFETY: our own private anonymous mapping, no longer than it; DONTNEED only
        // discards its contents (which nothing references).
        unsafe {
            libc::madvise(
                self.untouched.addr() as *mut libc::c_void,
                len.min(self.untouched.len()),
                libc::MADV_DONTNEED,
            )
        };
    }
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("resident", &self.resident.addr())
            .field("untouched", &self.untouched.addr())
            .field("prot_none", &self.prot_none.addr())
            .field("hole", &self.addr(Case::Unmapped))
            .finish()
    }
}

/// `PROCMAP_QUERY`: `_IOWR(PROCFS_IOCTL_MAGIC = 'f', 17, struct procmap_query)`
/// (`include/uapi/linux/fs.h`, Linux 6.11+).
pub const PROCMAP_QUERY: libc::c_ulong = (3 << 30)
    | ((core::mem::size_of::<linux_raw_sys::general::procmap_query>() as libc::c_ulong) << 16)
    | ((b'f' as libc::c_ulong) << 8)
    | 17;

/// The bare syscalls behind each syscall backend, on descriptors of their own, without the
/// crate's range handling, `errno` preservation or descriptor identity check.
#[derive(Debug)]
pub struct Floors {
    dev_null: i32,
    pipe_r: i32,
    pipe_w: i32,
    maps: i32,
    pid: i32,
}

impl Floors {
    /// Opens `/dev/null`, a non-blocking pipe and `/proc/self/maps`.
    pub fn open() -> io::Result<Floors> {
        let open = |path: &core::ffi::CStr, flags| {
            // SAFETY: a NUL-terminated path.
            let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
            if fd < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(fd)
            }
        };
        let dev_null = open(c"/dev/null", libc::O_WRONLY)?;
        let maps = open(c"/proc/self/maps", libc::O_RDONLY)?;
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Floors {
            dev_null,
            pipe_r: fds[0],
            pipe_w: fds[1],
            maps,
            // SAFETY: getpid has no preconditions.
            pid: unsafe { libc::getpid() },
        })
    }

    /// The backends that make a syscall per probe (all but [`Backend::SignalGuard`]).
    pub fn has_bare(backend: Backend) -> bool {
        backend != Backend::SignalGuard
    }

    /// The syscall(s) `backend` makes to probe 8 bytes at `addr`, called directly: `msync` /
    /// `mincore` of one page, `write` of 8 bytes to `/dev/null`, a 1-byte pipe `writev` plus
    /// the `read` that drains it, `rt_sigprocmask(-1, addr, NULL, 8)`, a 1-byte
    /// `process_vm_readv`, one `PROCMAP_QUERY` ioctl. Returns the raw result (`None` for
    /// [`Backend::SignalGuard`], which makes no syscall: compare it with [`volatile_load`]).
    #[inline]
    pub fn bare(&self, backend: Backend, addr: usize) -> Option<isize> {
        let ps = addrprobe::range::page_size();
        let page = addr & !(ps - 1);
        // SAFETY: in every arm the syscall only reads (or, for mincore and the pipe read,
        // writes into our own stack buffers) and validates `addr` itself, reporting faults as
        // errors; the descriptors are our own.
        let r = unsafe {
            match backend {
                Backend::Msync => {
                    libc::msync(page as *mut libc::c_void, ps, libc::MS_ASYNC) as isize
                }
                Backend::Mincore => {
                    let mut v = [0u8; 1];
                    libc::mincore(page as *mut libc::c_void, ps, v.as_mut_ptr()) as isize
                }
                Backend::DevNull => libc::write(self.dev_null, addr as *const libc::c_void, 8),
                Backend::Pipe => {
                    // The backend writes its one-byte-per-page iovecs with writev.
                    let iov = libc::iovec {
                        iov_base: addr as *mut libc::c_void,
                        iov_len: 1,
                    };
                    let n = libc::writev(self.pipe_w, &iov, 1);
                    if n == 1 {
                        let mut b = 0u8;
                        libc::read(self.pipe_r, (&mut b as *mut u8).cast(), 1);
                    }
                    n
                }
                Backend::SigprocMask => {
                    libc::syscall(libc::SYS_rt_sigprocmask, -1i64, addr, 0usize, 8usize) as isize
                }
                Backend::ProcessVmReadv => {
                    let mut b = 0u8;
                    self.readv(addr, core::slice::from_mut(&mut b)) as isize
                }
                Backend::ProcmapQuery => {
                    use linux_raw_sys::general::procmap_query;
                    let mut q: procmap_query = core::mem::zeroed();
                    q.size = core::mem::size_of::<procmap_query>() as u64;
                    q.query_addr = addr as u64;
                    libc::ioctl(self.maps, PROCMAP_QUERY as _, &mut q as *mut procmap_query)
                        as isize
                }
                _ => return None,
            }
        };
        Some(black_box(r))
    }

    /// One bare `process_vm_readv` of `buf.len()` bytes at `addr` (this process) into `buf`:
    /// the syscall's return value.
    fn readv(&self, addr: usize, buf: &mut [u8]) -> libc::c_long {
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: the kernel validates the remote range; `local` is our own buffer.
        unsafe {
            libc::syscall(
                libc::SYS_process_vm_readv,
                self.pid as libc::c_long,
                &local as *const libc::iovec,
                1usize,
                &remote as *const libc::iovec,
                1usize,
                0usize,
            )
        }
    }

    /// Whether [`full_copy`](Self::full_copy) is defined for `backend`: the three Readable
    /// syscall backends.
    pub fn has_full_copy(backend: Backend) -> bool {
        matches!(
            backend,
            Backend::Pipe | Backend::SigprocMask | Backend::ProcessVmReadv
        )
    }

    /// Copies all of `[addr, addr + buf.len())` through `backend`'s syscall, the naive way
    /// the crate avoids: the whole range through the pipe (64 KiB at a time, drained into
    /// `buf`), one `process_vm_readv` of the whole range into `buf`, or `rt_sigprocmask` on
    /// every 8-byte word. Returns whether every byte was copied.
    pub fn full_copy(&self, backend: Backend, addr: usize, buf: &mut [u8]) -> bool {
        let len = buf.len();
        match backend {
            Backend::Pipe => {
                let mut off = 0;
                while off < len {
                    let n = (len - off).min(64 * 1024);
                    // SAFETY: the kernel validates the source; `buf[off..off+n]` is ours.
                    let w =
                        unsafe { libc::write(self.pipe_w, (addr + off) as *const libc::c_void, n) };
                    if w <= 0 {
                        return false;
                    }
                    // SAFETY: reads at most `w` bytes into our own buffer.
                    let r = unsafe {
                        libc::read(self.pipe_r, buf[off..].as_mut_ptr().cast(), w as usize)
                    };
                    if r != w {
                        return false;
                    }
                    off += w as usize;
                }
                true
            }
            Backend::ProcessVmReadv => self.readv(addr, buf) == len as libc::c_long,
            Backend::SigprocMask => (0..len / 8).all(|i| {
                // SAFETY: the kernel copies 8 bytes from the address (validating it) and
                // rejects the invalid `how` without changing anything.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_rt_sigprocmask,
                        -1i64,
                        addr + 8 * i,
                        0usize,
                        8usize,
                    )
                };
                r == -1 && crate::sys::last_errno() == libc::EINVAL
            }),
            _ => false,
        }
    }
}

impl Drop for Floors {
    fn drop(&mut self) {
        for fd in [self.dev_null, self.pipe_r, self.pipe_w, self.maps] {
            // SAFETY: our own descriptors, closed once.
            unsafe { libc::close(fd) };
        }
    }
}

/// `syscall(SYS_getppid)`: the cheapest real syscall, the floor of every syscall backend.
#[inline]
pub fn getppid() -> i64 {
    // SAFETY: getppid has no arguments and no side effects.
    black_box(unsafe { libc::syscall(libc::SYS_getppid) })
}

/// One plain volatile 8-byte load from `addr`, the floor of [`Backend::SignalGuard`].
///
/// # Safety
///
/// `addr` must be readable and 8-byte aligned.
#[inline]
pub unsafe fn volatile_load(addr: usize) -> u64 {
    // SAFETY: the caller guarantees `addr` is readable and aligned.
    black_box(unsafe { core::ptr::read_volatile(addr as *const u64) })
}

/// The frame pointer and stack pointer of the caller, for benchmark baselines that walk
/// without validation (the unwinder's own helper).
pub use addrprobe::unwind::current_fp_sp;

/// Nanoseconds of `clock` (`CLOCK_MONOTONIC`, `CLOCK_THREAD_CPUTIME_ID`, ...); under QEMU
/// `-icount shift=0` the monotonic clock counts guest instructions. Async-signal-safe.
#[inline]
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime is async-signal-safe and writes only `ts`.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Recurses `depth` levels (each keeping its frame pointer) and runs `f` at the bottom: a
/// real stack of known depth for the unwinder and profiler workloads.
#[inline(never)]
pub fn recurse<R>(depth: usize, f: &mut dyn FnMut() -> R) -> R {
    let r = if depth == 0 {
        f()
    } else {
        recurse(depth - 1, f)
    };
    core::hint::black_box(depth);
    r
}

/// Loops `mmap` + touch + `munmap` of 64 KiB until `stop`, to contend for the mmap lock the
/// way a busy allocator does. Returns the number of cycles.
pub fn churn(stop: &core::sync::atomic::AtomicBool) -> u64 {
    let mut ops = 0;
    while !stop.load(core::sync::atomic::Ordering::Relaxed) {
        // SAFETY: a fresh anonymous mapping, touched and unmapped by us alone.
        unsafe {
            let p = libc::mmap(
                core::ptr::null_mut(),
                64 * 1024,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p != libc::MAP_FAILED {
                *(p as *mut u8) = 1;
                libc::munmap(p, 64 * 1024);
            }
        }
        ops += 1;
    }
    ops
}

/// How long to measure.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Time spent calibrating and per repetition.
    pub per_rep: Duration,
    /// Repetitions; the fastest is reported.
    pub reps: usize,
    /// At most this many calls per repetition (bounds the run under slow emulators).
    pub max_iters: u64,
}

impl Budget {
    /// For `addrprobe bench --quick` (also used inside QEMU/TCG guests).
    pub const QUICK: Budget = Budget {
        per_rep: Duration::from_millis(1),
        reps: 5,
        max_iters: 20_000,
    };
    /// For `addrprobe bench`.
    pub const FULL: Budget = Budget {
        per_rep: Duration::from_millis(4),
        reps: 9,
        max_iters: 1_000_000,
    };
}

/// Nanoseconds per call of `f`, the minimum over repetitions: calibrates how many calls fit
/// in `b.per_rep` (at least one, at most `b.max_iters`), then times `b.reps` repetitions of
/// that many calls and keeps the fastest (interference from other processes only adds time).
pub fn ns_per_call(b: Budget, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut iters = 0u64;
    while iters < b.max_iters.max(1) && (iters == 0 || start.elapsed() < b.per_rep) {
        f();
        iters += 1;
    }
    let samples: Vec<f64> = (0..b.reps.max(1))
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    // The minimum: on a shared machine other processes only ever add time.
    samples.into_iter().fold(f64::INFINITY, f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_cases_are_what_they_claim() {
        let arena = Arena::new().unwrap();
        let floors = Floors::open().unwrap();
        let len = 8;
        // Truth from construction, checked with the bare syscalls' own semantics.
        for case in Case::ALL {
            let addr = arena.addr(case);
            let r = floors.bare(Backend::ProcessVmReadv, addr).unwrap();
            assert_eq!(r == 1, case.readable(), "{case:?}");
            let m = floors.bare(Backend::Msync, addr).unwrap();
            let mapped = matches!(case, Case::Resident | Case::Untouched | Case::ProtNone);
            assert_eq!(m == 0, mapped, "{case:?}");
        }
        let mut buf = vec![0u8; 16 * addrprobe::range::page_size()];
        for b in [Backend::Pipe, Backend::ProcessVmReadv, Backend::SigprocMask] {
            assert!(
                floors.full_copy(b, arena.addr(Case::Resident), &mut buf),
                "{b}"
            );
            assert!(buf.iter().all(|&x| x == 0x5a), "{b}");
            assert!(
                !floors.full_copy(b, arena.addr(Case::ProtNone), &mut buf),
                "{b}"
            );
        }
        arena.reset_untouched(len);
        assert_eq!(
            floors.bare(Backend::SigprocMask, arena.addr(Case::Untouched)),
            Some(-1)
        );
        assert_eq!(crate::sys::last_errno(), libc::EINVAL);
    }
}
