//! The self-test that [`Prober::new`](crate::Prober::new) runs before handing out a prober.
//!
//! It builds four pages itself — a readable anonymous page, a `PROT_NONE` page, an unmapped
//! page, and a `MAP_SHARED` page beyond the end of a one-page memfd (or temp file) — and
//! requires each answer to match the backend's guarantee. A backend that a seccomp filter,
//! an old kernel or an emulator makes lie (for example one where `rt_sigprocmask` returns
//! `EINVAL` before copying) is rejected here instead of answering wrongly later. If the
//! unmapped page was reused by another thread's `mmap` in between, the test is retried once.

use crate::{Error, Guarantee, Prober};

struct Pages {
    addr: usize,
    len: usize,
    fd: i32,
}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: we own the mapping and the descriptor.
        unsafe {
            libc::munmap(self.addr as *mut libc::c_void, self.len);
            if self.fd >= 0 {
                libc::close(self.fd);
            }
        }
    }
}

/// `(name, addr, mapped, region_readable, readable)`
type Case = (&'static str, usize, bool, bool, bool);

fn map(len: usize, prot: i32, flags: i32, fd: i32) -> Option<usize> {
    crate::sys::mmap_quiet(len, prot, flags, fd)
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
        // SAFETY: as above.
        unsafe { libc::unlink(c.as_ptr()) };
        if fd < 0 {
            return None;
        }
    }
    // SAFETY: resizing our own file.
    if unsafe { libc::ftruncate(fd, ps as libc::off_t) } != 0 {
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        return None;
    }
    Some(fd)
}

fn attempt(prober: &Prober) -> Result<Result<(), Error>, ()> {
    let ps = crate::range::page_size();
    let Some(addr) = map(
        3 * ps,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    ) else {
        return Ok(Ok(())); // Nothing can be tested without memory; the backend is not at fault.
    };
    let anon = Pages {
        addr,
        len: 3 * ps,
        fd: -1,
    };
    // SAFETY: writing and re-protecting pages of our own fresh mapping.
    unsafe {
        (addr as *mut u8).write_volatile(0xa5);
        libc::mprotect((addr + ps) as *mut libc::c_void, ps, libc::PROT_NONE);
        libc::munmap((addr + 2 * ps) as *mut libc::c_void, ps);
    }
    let mut cases: Vec<Case> = vec![
        ("a readable anonymous page", addr, true, true, true),
        ("a PROT_NONE page", addr + ps, true, false, false),
        ("an unmapped page", addr + 2 * ps, false, false, false),
    ];
    let shared = one_page_file(ps).and_then(|fd| {
        let Some(a) = map(2 * ps, libc::PROT_READ, libc::MAP_SHARED, fd) else {
            // SAFETY: our own descriptor.
            unsafe { libc::close(fd) };
            return None;
        };
        Some(Pages {
            addr: a,
            len: 2 * ps,
            fd,
        })
    });
    if let Some(s) = &shared {
        cases.push((
            "a MAP_SHARED page beyond EOF",
            s.addr + ps,
            true,
            true,
            false,
        ));
    }
    let guarantee = prober.guarantee();
    for (fixture, addr, mapped, region, readable) in cases {
        let got = match prober.check(addr, 8) {
            Ok(got) => got,
            Err(e) => return Ok(Err(e)),
        };
        let expected = match guarantee {
            Guarantee::Mapped => mapped,
            Guarantee::RegionReadable => region,
            Guarantee::Readable => readable,
            // Unsound backends are only checked for availability.
            _ => continue,
        };
        if got != expected {
            if fixture == "an unmapped page" && got {
                return Err(()); // Possibly reused by a concurrent mmap: try again.
            }
            return Ok(Err(Error::SelfTestFailed {
                backend: prober.backend(),
                fixture,
                expected,
                got,
            }));
        }
    }
    drop(anon);
    Ok(Ok(()))
}

/// Runs the self-test, retrying once if the unmapped page was reused meanwhile.
pub(crate) fn run(prober: &Prober) -> Result<(), Error> {
    match attempt(prober) {
        Ok(r) => r,
        Err(()) => attempt(prober).unwrap_or(Err(Error::SelfTestFailed {
            backend: prober.backend(),
            fixture: "an unmapped page",
            expected: false,
            got: true,
        })),
    }
}
