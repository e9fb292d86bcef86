//! The self-test that `Prober::new` runs before handing out a prober. It probes through the
//! prober's `check`, handed in as a function, so that it needs nothing above the backends.
//!
//! It builds four pages itself — a readable anonymous page, a `PROT_NONE` page, an unmapped
//! page, and a `MAP_SHARED` page beyond the end of a one-page memfd (or temp file) — and
//! requires each answer to match the backend's guarantee. A backend that a seccomp filter,
//! an old kernel or an emulator makes lie (for example one where `rt_sigprocmask` returns
//! `EINVAL` before copying) is rejected here instead of answering wrongly later.
//!
//! # Owning only what it owns
//!
//! The unmapped page is made by unmapping the last page of the self-test's own mapping. From
//! that moment the page is no longer the self-test's: another thread's `mmap` may get it.
//! So the mapping's record shrinks when the page is unmapped, and the cleanup unmaps only the
//! pages the self-test still owns. The fixtures are placed in a quiet part of the address
//! space ([`mmap_quiet`]) where other threads' `mmap`s do not land, but that part
//! may already be taken (by ASan's shadow memory, a JVM heap), and then the kernel places them
//! next to everybody else's mappings.
//!
//! # A reused hole is not a lie
//!
//! If the backend calls the hole mapped or readable, the self-test asks the kernel whether
//! the hole is still a hole (`msync(MS_ASYNC)` fails with `ENOMEM` on an unmapped page). If
//! another thread's mapping took it, the attempt proves nothing and is repeated with fresh
//! pages. Only a wrong answer about a page that is verifiably still unmapped counts against
//! the backend, and [`LIES`] of them fail it. After [`OWN_HOLES`] holes taken in a row (a
//! thread that maps single pages without pause), the remaining attempts probe the page at
//! address `page_size` instead, once `msync` confirms it is unmapped: it lies below
//! `vm.mmap_min_addr` on every common configuration, where the kernel never places a mapping
//! it chooses itself.

use crate::backend_kind::Backend;
use crate::error::Error;
use crate::guarantee::Guarantee;

/// Attempts before the self-test gives up on finding an unmapped page that stays unmapped.
const ATTEMPTS: usize = 8;
/// Attempts with a hole of the self-test's own making, before it turns to the low page.
const OWN_HOLES: usize = 4;
/// Wrong answers about a verified hole that fail the backend.
const LIES: usize = 2;

/// A mapping the self-test made: `[addr, addr + len)` is the part it still owns, with the
/// descriptor of the file behind it, if any.
struct Owned {
    addr: usize,
    len: usize,
    fd: i32,
}

impl Owned {
    fn map(len: usize, prot: i32, flags: i32, fd: i32) -> Option<Owned> {
        let addr = mmap_quiet(len, prot, flags, fd)?;
        Some(Owned { addr, len, fd })
    }

    /// Unmaps the last page and gives it up: from now on it may be anybody's.
    fn give_up_last_page(&mut self, ps: usize) -> bool {
        let last = self.addr + self.len - ps;
        // SAFETY: the last page of the mapping is still ours; unmapping it touches nothing
        // that Rust references. The record shrinks first-thing afterwards, so no path can
        // unmap it again.
        let ok = unsafe { libc::munmap(last as *mut libc::c_void, ps) } == 0;
        if ok {
            self.len -= ps;
        }
        ok
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: exactly the pages this record still owns, and its own descriptor.
        unsafe {
            if self.len > 0 {
                libc::munmap(self.addr as *mut libc::c_void, self.len);
            }
            if self.fd >= 0 {
                libc::close(self.fd);
            }
        }
    }
}

/// Whether `addr`'s page is unmapped right now: `Some(true)` a hole, `Some(false)` mapped,
/// `None` unknown (`msync` itself is unavailable).
fn is_hole(addr: usize) -> Option<bool> {
    let ps = crate::range::page_size();
    // SAFETY: msync(MS_ASYNC) only looks the range up in the address space.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_msync,
            addr & !(ps - 1),
            ps,
            libc::MS_ASYNC as libc::c_long,
        )
    };
    match ret {
        0 => Some(false),
        _ if crate::sys::last_errno() == libc::ENOMEM => Some(true),
        _ => None,
    }
}

/// A file of one page: a memfd, or an unlinked temp file where memfd is refused.
fn one_page_file(ps: usize) -> Option<i32> {
    // SAFETY: memfd_create with a static name.
    let mut fd = unsafe { libc::memfd_create(c"addrprobe-selftest".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        let path = std::env::temp_dir().join(format!("addrprobe-selftest-{}", std::process::id()));
        let c = std::ffi::CString::new(path.to_string_lossy().as_bytes()).ok()?;
        // SAFETY: a NUL-terminated path.
        fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: as above; the file was just created by us.
        unsafe { libc::unlink(c.as_ptr()) };
    }
    // SAFETY: resizing our own file.
    if unsafe { libc::ftruncate(fd, ps as libc::off_t) } != 0 {
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        return None;
    }
    Some(fd)
}

/// How one attempt ended.
enum Outcome {
    /// Every answer matched the guarantee (or nothing could be built).
    Passed,
    /// The backend failed or errored.
    Failed(Error),
    /// The hole was called mapped or readable although it was verifiably unmapped.
    Lied,
    /// The hole was taken by another mapping before it could be probed: nothing learned.
    Reused,
}

const UNMAPPED: &str = "an unmapped page";

fn attempt(
    backend: Backend,
    check: &impl Fn(usize, usize) -> Result<bool, Error>,
    own_hole: bool,
) -> Outcome {
    let ps = crate::range::page_size();
    let Some(mut anon) = Owned::map(
        3 * ps,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    ) else {
        return Outcome::Passed; // Nothing can be tested without memory; not the backend's fault.
    };
    let addr = anon.addr;
    // SAFETY: writing and re-protecting pages of our own fresh mapping.
    unsafe {
        (addr as *mut u8).write_volatile(0xa5);
        libc::mprotect((addr + ps) as *mut libc::c_void, ps, libc::PROT_NONE);
    }
    if !anon.give_up_last_page(ps) {
        return Outcome::Passed;
    }
    let hole = if own_hole { addr + 2 * ps } else { ps };
    if !own_hole && is_hole(hole) != Some(true) {
        return Outcome::Reused;
    }
    // (name, addr, mapped, region_readable, readable)
    let mut cases: [(&'static str, usize, bool, bool, bool); 5] = [
        ("a readable anonymous page", addr, true, true, true),
        ("a PROT_NONE page", addr + ps, true, false, false),
        (
            "8 bytes from a readable page into a PROT_NONE page",
            addr + ps - 4,
            true,
            false,
            false,
        ),
        (UNMAPPED, hole, false, false, false),
        ("", 0, false, false, false),
    ];
    let shared = one_page_file(ps).and_then(|fd| {
        let mapped = Owned::map(2 * ps, libc::PROT_READ, libc::MAP_SHARED, fd);
        if mapped.is_none() {
            // SAFETY: our own descriptor, which no mapping record took over.
            unsafe { libc::close(fd) };
        }
        mapped
    });
    let mut n = 4;
    if let Some(s) = &shared {
        cases[4] = (
            "a MAP_SHARED page beyond EOF",
            s.addr + ps,
            true,
            true,
            false,
        );
        n = 5;
    }
    for &(fixture, at, mapped, region, readable) in &cases[..n] {
        let got = match check(at, 8) {
            Ok(got) => got,
            Err(e) => return Outcome::Failed(e),
        };
        let expected = match backend.guarantee() {
            Guarantee::Mapped => mapped,
            Guarantee::RegionReadable => region,
            Guarantee::Readable => readable,
            // Unsound backends are only checked for availability.
            _ => continue,
        };
        if got == expected {
            continue;
        }
        if fixture == UNMAPPED && got {
            return match is_hole(hole) {
                Some(true) => Outcome::Lied,
                _ => Outcome::Reused,
            };
        }
        return Outcome::Failed(Error::SelfTestFailed {
            backend,
            fixture,
            expected,
            got,
        });
    }
    Outcome::Passed
}

/// Runs the self-test of `backend`, probing through `check` (the prober's
/// [`check`](crate::prober::Prober::check), which `Prober::new` passes in), and repeats the
/// attempts whose hole another mapping took.
pub(crate) fn run(
    backend: Backend,
    check: impl Fn(usize, usize) -> Result<bool, Error>,
) -> Result<(), Error> {
    let mut lies = 0;
    for i in 0..ATTEMPTS {
        match attempt(backend, &check, i < OWN_HOLES) {
            Outcome::Passed => return Ok(()),
            Outcome::Failed(e) => return Err(e),
            Outcome::Lied => {
                lies += 1;
                if lies >= LIES {
                    break;
                }
            }
            Outcome::Reused => {}
        }
    }
    Err(Error::SelfTestFailed {
        backend,
        fixture: if lies > 0 {
            UNMAPPED
        } else {
            "an unmapped page (every hole tried was taken by another mapping)"
        },
        expected: false,
        got: true,
    })
}

/// Maps `len` bytes in a quiet part of the address space: below the program, where the
/// kernel's top-down `mmap` allocator does not reach while there is room above. A page that a
/// fixture or self-test unmaps there stays a hole even while other threads call `mmap`, so the
/// constructed truth "unmapped" cannot be invalidated by a concurrent allocation. Falls back to
/// a kernel-chosen address. Not a probe path.
pub(crate) fn mmap_quiet(len: usize, prot: i32, flags: i32, fd: i32) -> Option<usize> {
    use core::sync::atomic::{AtomicUsize, Ordering};
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
