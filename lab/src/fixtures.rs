//! Conformance fixtures: memory built with `mmap`, `mprotect`, `munmap`, `madvise` and files,
//! each with the truth that follows from how it was built.
//!
//! The conformance suite (`tests/`), the `addrprobe report` matrix and the fuzz targets probe
//! these fixtures with every backend and compare each answer with the constructed truth under
//! the backend's [`Guarantee`]. The truth is never derived from a probe: a resident anonymous
//! page is readable because it was mapped `PROT_READ | PROT_WRITE` and written; a page beyond
//! the end of a `MAP_SHARED` file is mapped, lies in a readable region, and is not readable
//! because a load there raises SIGBUS. The one exception is the vsyscall page, whose
//! readability depends on the kernel's `vsyscall=` mode: its truth is read from the kernel's
//! own `/proc/self/maps` permissions.
//!
//! Building fixtures allocates and makes syscalls; it is test and report code, not a probe
//! path.

use std::io;

use addrprobe::{Backend, Error, Guarantee, Prober};

/// The three properties a backend may claim about a range, as constructed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truth {
    /// Every page is mapped, whatever its protection.
    pub mapped: bool,
    /// Every page lies in a mapping with read permission.
    pub region_readable: bool,
    /// Every byte can be loaded.
    pub readable: bool,
}

impl Truth {
    const READABLE: Truth = Truth {
        mapped: true,
        region_readable: true,
        readable: true,
    };
    const UNMAPPED: Truth = Truth {
        mapped: false,
        region_readable: false,
        readable: false,
    };
    const MAPPED_ONLY: Truth = Truth {
        mapped: true,
        region_readable: false,
        readable: false,
    };
    const REGION_ONLY: Truth = Truth {
        mapped: true,
        region_readable: true,
        readable: false,
    };

    /// The property a backend with guarantee `g` answers for (`None` for `Unsound`).
    pub fn under(&self, g: Guarantee) -> Option<bool> {
        match g {
            Guarantee::Mapped => Some(self.mapped),
            Guarantee::RegionReadable => Some(self.region_readable),
            Guarantee::Readable => Some(self.readable),
            _ => None,
        }
    }
}

/// What a probe of a fixture must return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// An answer judged against this truth.
    Answer(Truth),
    /// [`Error::InvalidRange`].
    InvalidRange,
}

/// One range to probe and what it is.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// Short name, stable across runs (used in reports and in the known-false-negative list).
    pub name: &'static str,
    /// Start of the range.
    pub addr: usize,
    /// Length of the range.
    pub len: usize,
    /// The constructed truth.
    pub expect: Expect,
    /// The bytes the range holds, for fixtures that are readable (checked against `read`).
    pub contents: Option<Vec<u8>>,
}

/// How an answer compares with the truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The answer matches the truth under the backend's guarantee.
    Correct,
    /// `Ok(true)` where the guaranteed property is false. Always a failure.
    FalsePositive,
    /// `Ok(false)` where the property is true, and not a known limitation. A failure.
    FalseNegative,
    /// `Ok(false)` where the property is true, for a documented reason.
    KnownFalseNegative(&'static str),
    /// An `Unsound` backend said yes: it proves nothing, as documented.
    UnsoundYes,
    /// The backend is unavailable here.
    Unavailable,
    /// Any other mismatch: an error where an answer was due, or an answer where
    /// [`Error::InvalidRange`] was due.
    WrongResult,
}

impl Verdict {
    /// Whether this verdict fails the conformance suite.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Verdict::FalsePositive | Verdict::FalseNegative | Verdict::WrongResult
        )
    }

    /// One-character mark for tables: ✓ correct, ✗ failure, ~ known limitation or unsound yes,
    /// - unavailable.
    pub fn mark(&self) -> &'static str {
        match self {
            Verdict::Correct => "✓",
            Verdict::KnownFalseNegative(_) | Verdict::UnsoundYes => "~",
            Verdict::Unavailable => "-",
            _ => "✗",
        }
    }

    /// Kebab-case name for JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Correct => "ok",
            Verdict::FalsePositive => "false-positive",
            Verdict::FalseNegative => "false-negative",
            Verdict::KnownFalseNegative(_) => "known-false-negative",
            Verdict::UnsoundYes => "unsound-yes",
            Verdict::Unavailable => "unavailable",
            Verdict::WrongResult => "wrong-result",
        }
    }
}

/// Fixture name of the vsyscall page.
pub const VSYSCALL: &str = "vsyscall page";
/// Fixture name of the write-only page.
pub const WRITE_ONLY: &str = "PROT_WRITE-only";

/// The documented false negatives of [`Guarantee::Readable`] backends, by fixture name.
pub fn known_false_negative(backend: Backend, fixture: &str) -> Option<&'static str> {
    match (backend, fixture) {
        (Backend::ProcessVmReadv, WRITE_ONLY) => Some(
            "process_vm_readv pins pages with GUP, which requires VM_READ; the CPU can load a write-only page on x86",
        ),
        (_, VSYSCALL) => Some(
            "the vsyscall page lies above user space: no VMA covers it and access_ok() refuses it; only the CPU can judge it",
        ),
        _ => None,
    }
}

/// Judges `answer` for `fixture` under `backend`'s guarantee.
pub fn judge(backend: Backend, fixture: &Fixture, answer: Result<bool, Error>) -> Verdict {
    match (fixture.expect, answer) {
        (_, Err(Error::Unavailable { .. })) => Verdict::Unavailable,
        (Expect::InvalidRange, Err(Error::InvalidRange { .. })) => Verdict::Correct,
        (Expect::InvalidRange, _) | (Expect::Answer(_), Err(_)) => Verdict::WrongResult,
        (Expect::Answer(truth), Ok(got)) => match truth.under(backend.guarantee()) {
            None if got && !truth.readable => Verdict::UnsoundYes,
            None if !got && truth.readable => Verdict::FalseNegative,
            None => Verdict::Correct,
            Some(want) if want == got => Verdict::Correct,
            Some(_) if got => Verdict::FalsePositive,
            Some(_) => match known_false_negative(backend, fixture.name) {
                Some(why) => Verdict::KnownFalseNegative(why),
                None => Verdict::FalseNegative,
            },
        },
    }
}

/// An `mmap`ed region that this value owns: unmapped on drop, except for the pages punched
/// out of it, which may belong to someone else by then. The one mapping guard of the lab
/// (fixtures, the benchmark arena, the msync-patch workloads, `addrprobe report`).
///
/// It records the protection of every page it set, so that [`fill`](Self::fill) can refuse
/// to write where a write would fault. Code that changes the mapping behind its back (raw
/// `mprotect`, `madvise(MADV_GUARD_INSTALL)`) must not `fill` the pages it changed.
#[derive(Debug)]
pub struct Mapping {
    addr: usize,
    /// The protection of each page; `None` for pages punched out.
    pages: Vec<Option<i32>>,
    /// Private anonymous memory (a write to a `PROT_WRITE` page cannot raise SIGBUS).
    anonymous: bool,
}

impl Mapping {
    /// Private anonymous memory of `len` bytes (rounded up to whole pages) in the quiet region
    /// (see [`map_quiet`]), with `extra_flags` (e.g. `MAP_NORESERVE`).
    pub fn anon(len: usize, prot: i32, extra_flags: i32) -> io::Result<Mapping> {
        Self::quiet(
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
            -1,
        )
    }

    /// `len` bytes (rounded up to whole pages) of `fd` (or anonymous memory) with `prot` and
    /// `flags`, in the quiet region (see [`map_quiet`]), so that the holes punched in it stay
    /// holes while other threads call `mmap`.
    pub fn quiet(len: usize, prot: i32, flags: i32, fd: i32) -> io::Result<Mapping> {
        let len = page_round(len);
        let addr = map_quiet(len, prot, flags, fd)?;
        Ok(Self::owned(addr, len, prot, flags))
    }

    /// Like [`quiet`](Self::quiet), at an address the kernel chooses.
    pub fn anywhere(len: usize, prot: i32, flags: i32, fd: i32) -> io::Result<Mapping> {
        let len = page_round(len);
        let addr = map_at_kernel_choice(len, prot, flags & !libc::MAP_FIXED, fd)?;
        Ok(Self::owned(addr, len, prot, flags))
    }

    fn owned(addr: usize, len: usize, prot: i32, flags: i32) -> Mapping {
        let anonymous = flags & (libc::MAP_ANONYMOUS | libc::MAP_PRIVATE)
            == libc::MAP_ANONYMOUS | libc::MAP_PRIVATE;
        Mapping {
            addr,
            pages: vec![Some(prot); len / addrprobe::range::page_size()],
            anonymous,
        }
    }

    /// The first byte.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// The length in bytes (whole pages, punched ones included).
    pub fn len(&self) -> usize {
        self.pages.len() * addrprobe::range::page_size()
    }

    /// Always `false`: a mapping has at least one page.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// The page indices of `[offset, offset + len)`, which must be whole pages of the mapping.
    fn page_span(&self, offset: usize, len: usize) -> core::ops::Range<usize> {
        let ps = addrprobe::range::page_size();
        assert!(
            offset.is_multiple_of(ps) && len.is_multiple_of(ps) && len > 0,
            "whole pages only: {offset:#x}+{len:#x}"
        );
        let (first, end) = (offset / ps, (offset + len) / ps);
        assert!(
            end <= self.pages.len(),
            "{offset:#x}+{len:#x} lies outside the mapping"
        );
        first..end
    }

    /// Unmaps `[offset, offset + len)` (whole pages), making a hole the fixtures call
    /// "unmapped". Drop leaves it alone.
    pub fn punch(&mut self, offset: usize, len: usize) {
        let span = self.page_span(offset, len);
        assert!(
            self.pages[span.clone()].iter().all(Option::is_some),
            "{offset:#x}+{len:#x} is already (partly) punched out"
        );
        // SAFETY: unmapping whole pages of our own mapping that are still ours (checked
        // above); no Rust reference points into it.
        unsafe { libc::munmap((self.addr + offset) as *mut libc::c_void, len) };
        self.pages[span].fill(None);
    }

    /// `mprotect`s `[offset, offset + len)` (whole pages, none punched out) to `prot`.
    pub fn protect(&mut self, offset: usize, len: usize, prot: i32) -> io::Result<()> {
        let span = self.page_span(offset, len);
        assert!(
            self.pages[span.clone()].iter().all(Option::is_some),
            "{offset:#x}+{len:#x} includes punched-out pages"
        );
        // SAFETY: the range is whole pages of our own mapping, still ours (checked above); no
        // Rust reference points into it.
        let ret = unsafe { libc::mprotect((self.addr + offset) as *mut libc::c_void, len, prot) };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        self.pages[span].fill(Some(prot));
        Ok(())
    }

    /// Copies `bytes` to `offset`. Panics unless the mapping is private anonymous memory and
    /// every page the bytes touch is still mapped with `PROT_WRITE`.
    pub fn fill(&self, offset: usize, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let ps = addrprobe::range::page_size();
        let end = offset
            .checked_add(bytes.len())
            .filter(|&e| e <= self.len())
            .expect("fill outside the mapping");
        let writable = self.pages[offset / ps..end.div_ceil(ps)]
            .iter()
            .all(|p| p.is_some_and(|prot| prot & libc::PROT_WRITE != 0));
        assert!(
            self.anonymous && writable,
            "fill of {offset:#x}+{:#x}: not writable anonymous memory",
            bytes.len()
        );
        // SAFETY: the destination lies inside our private anonymous mapping, in pages mapped
        // with PROT_WRITE (checked above), so the writes cannot fault; `bytes` is a separate
        // Rust slice, so the two do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                (self.addr + offset) as *mut u8,
                bytes.len(),
            )
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let ps = addrprobe::range::page_size();
        let mut i = 0;
        while i < self.pages.len() {
            if self.pages[i].is_none() {
                i += 1;
                continue;
            }
            let start = i;
            while i < self.pages.len() && self.pages[i].is_some() {
                i += 1;
            }
            // SAFETY: pages `start..i` are a run of our mapping that we still own (never
            // punched out); nothing of Rust's points into them any more.
            unsafe {
                libc::munmap(
                    (self.addr + start * ps) as *mut libc::c_void,
                    (i - start) * ps,
                )
            };
        }
    }
}

/// `len` rounded up to whole pages (at least one).
fn page_round(len: usize) -> usize {
    len.max(1).next_multiple_of(addrprobe::range::page_size())
}

/// `mmap` at an address the kernel chooses (never `MAP_FIXED`).
fn map_at_kernel_choice(len: usize, prot: i32, flags: i32, fd: i32) -> io::Result<usize> {
    // SAFETY: without MAP_FIXED (masked out) the kernel picks an unused range, so the new
    // mapping aliases nothing.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            prot,
            flags & !libc::MAP_FIXED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p as usize)
}

/// Maps `len` bytes of private anonymous read-write memory at a kernel-chosen address.
/// Test and benchmark helper; the caller owns (and unmaps) the mapping.
pub fn map_anonymous(len: usize) -> io::Result<usize> {
    map_at_kernel_choice(
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    )
}

/// The end of the running kernel's user address space (its `TASK_SIZE`, rounded up to a power
/// of two): 2^47 on x86_64 with 4-level paging, 2^56 with 5-level paging (LA57); on arm64 2^48
/// with 48-bit virtual addresses, 2^52 with 52-bit ones (the kernel maps above 2^48 only on a
/// hint there, but the addresses are user space). Found once by mapping one page at
/// `L - 2 pages` with `MAP_FIXED_NOREPLACE` for each candidate `L` (2^47, 2^48, 2^52, 2^56, 2^57)
/// and keeping the largest that the kernel accepts (`EEXIST`, a page already there, counts as
/// accepted); the page is unmapped at once. (x86_64 keeps the last page below 2^47 out of user
/// space, hence two pages.) Every address at or above the result is outside user space on
/// this kernel; this is narrower than the library's architecture-wide
/// [`addrprobe::range::USER_SPACE_LIMIT`].
pub fn user_space_end() -> usize {
    static END: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *END.get_or_init(|| {
        let ps = addrprobe::range::page_size();
        let mut end = 1usize << 47;
        for bits in [47u32, 48, 52, 56, 57] {
            let at = (1usize << bits) - 2 * ps;
            // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; a page we get is
            // unmapped below and nothing else knows of it.
            let p = unsafe {
                libc::mmap(
                    at as *mut libc::c_void,
                    ps,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            let accepted = if p == libc::MAP_FAILED {
                io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST)
            } else {
                // SAFETY: the page we just mapped (at `at` or, on kernels before 4.17 that
                // treat the flag as a hint, wherever the kernel put it).
                unsafe { libc::munmap(p, ps) };
                p as usize == at
            };
            if accepted {
                end = 1usize << bits;
            }
        }
        end
    })
}

/// Maps `len` bytes below the program, where the kernel's top-down allocator does not reach,
/// so that a page unmapped there stays a hole while other threads call `mmap` (the fixtures'
/// own "unmapped" truths rely on it). Falls back to a kernel-chosen address; `MAP_FIXED` in
/// `flags` is ignored. Test and benchmark helper; the caller owns the mapping
/// ([`Mapping::quiet`] owns it for you).
pub fn map_quiet(len: usize, prot: i32, flags: i32, fd: i32) -> io::Result<usize> {
    use core::sync::atomic::{AtomicUsize, Ordering};
    // 16 GiB upward in 64 MiB steps; the cursor spreads concurrent callers apart. (The
    // library's self-test uses the same region; a slot that is taken is skipped.)
    static CURSOR: AtomicUsize = AtomicUsize::new(0);
    const BASE: usize = 0x4_0000_0000;
    const STEP: usize = 64 << 20;
    for _ in 0..64 {
        let slot = CURSOR.fetch_add(1, Ordering::Relaxed) % 1024;
        let hint = BASE + slot * STEP;
        // SAFETY: MAP_FIXED_NOREPLACE (without MAP_FIXED, masked out) never replaces an
        // existing mapping; it fails instead.
        let p = unsafe {
            libc::mmap(
                hint as *mut libc::c_void,
                len,
                prot,
                (flags & !libc::MAP_FIXED) | libc::MAP_FIXED_NOREPLACE,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            continue;
        }
        if p as usize == hint {
            return Ok(hint);
        }
        // Kernels before 4.17 treat the flag as a hint: not what we asked for.
        // SAFETY: unmapping the mapping we just made, which nothing else knows of.
        unsafe { libc::munmap(p, len) };
    }
    map_at_kernel_choice(len, prot, flags, fd)
}

/// A byte pattern that differs from page to page and from zero.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// A temporary file of `len` pattern bytes in the temp directory, already unlinked.
fn temp_file(len: usize, seed: u8) -> io::Result<(std::fs::File, Vec<u8>)> {
    use std::io::Write;
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        "addrprobe-fixture-{}-{}-{seed}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let _ = std::fs::remove_file(&path);
    let bytes = pattern(len, seed);
    file.write_all(&bytes)?;
    file.flush()?;
    Ok((file, bytes))
}

/// Whether the kernel shows a readable `[vsyscall]` mapping (`vsyscall=emulate`).
fn vsyscall_readable() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .map(|maps| {
            maps.lines().any(|l| {
                l.ends_with("[vsyscall]")
                    && l.split_whitespace()
                        .nth(1)
                        .is_some_and(|p| p.starts_with('r'))
            })
        })
        .unwrap_or(false)
}

/// `MADV_GUARD_INSTALL` (Linux 6.13+).
pub const MADV_GUARD_INSTALL: i32 = 102;

/// The set of fixtures, keeping their mappings alive.
#[derive(Debug)]
pub struct FixtureSet {
    fixtures: Vec<Fixture>,
    _mappings: Vec<Mapping>,
}

fn fixture(name: &'static str, addr: usize, len: usize, truth: Truth) -> Fixture {
    Fixture {
        name,
        addr,
        len,
        expect: Expect::Answer(truth),
        contents: None,
    }
}

fn with_contents(mut f: Fixture, contents: Vec<u8>) -> Fixture {
    f.contents = Some(contents);
    f
}

/// The fixtures and the mappings behind them, as [`FixtureSet::build`] makes them.
#[derive(Default)]
struct Builder {
    fx: Vec<Fixture>,
    maps: Vec<Mapping>,
}

impl Builder {
    /// Anonymous memory: [resident][resident][PROT_NONE][hole][write-only].
    fn anonymous(&mut self) -> io::Result<()> {
        let ps = addrprobe::range::page_size();
        let mut anon = Mapping::anon(5 * ps, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let bytes = pattern(2 * ps, 7);
        anon.fill(0, &bytes);
        let wo_bytes = pattern(ps, 11);
        anon.fill(4 * ps, &wo_bytes);
        anon.protect(2 * ps, ps, libc::PROT_NONE)?;
        anon.protect(4 * ps, ps, libc::PROT_WRITE)?;
        anon.punch(3 * ps, ps);
        let a = anon.addr();
        self.fx.push(with_contents(
            fixture("resident anonymous", a + 16, 64, Truth::READABLE),
            bytes[16..80].to_vec(),
        ));
        self.fx.push(with_contents(
            fixture(
                "unaligned across two pages",
                a + ps - 12,
                24,
                Truth::READABLE,
            ),
            bytes[ps - 12..ps + 12].to_vec(),
        ));
        self.fx.push(with_contents(
            fixture("two whole pages", a, 2 * ps, Truth::READABLE),
            bytes.clone(),
        ));
        self.fx
            .push(fixture("PROT_NONE", a + 2 * ps, 8, Truth::MAPPED_ONLY));
        self.fx
            .push(fixture("unmapped hole", a + 3 * ps, 8, Truth::UNMAPPED));
        self.fx.push(fixture(
            "straddle readable→PROT_NONE",
            a + 2 * ps - 4,
            8,
            Truth::MAPPED_ONLY,
        ));
        self.fx.push(fixture(
            "straddle PROT_NONE→unmapped",
            a + 3 * ps - 4,
            8,
            Truth::UNMAPPED,
        ));
        let write_only = Truth {
            mapped: true,
            region_readable: false,
            // x86 and arm64 page tables cannot express write-without-read.
            readable: cfg!(any(target_arch = "x86_64", target_arch = "aarch64")),
        };
        let mut wo = fixture(WRITE_ONLY, a + 4 * ps, 8, write_only);
        if write_only.readable {
            wo.contents = Some(wo_bytes[..8].to_vec());
        }
        self.fx.push(wo);
        self.maps.push(anon);
        Ok(())
    }

    /// [readable][unmapped]: a straddle into a hole; a wrapping length; a zero length.
    fn hole_after_readable(&mut self) -> io::Result<()> {
        let ps = addrprobe::range::page_size();
        let mut pair = Mapping::anon(2 * ps, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        pair.fill(0, &pattern(ps, 3));
        pair.punch(ps, ps);
        self.fx.push(fixture(
            "straddle readable→unmapped",
            pair.addr() + ps - 4,
            8,
            Truth::UNMAPPED,
        ));
        self.fx.push(fixture(
            "wrapping length",
            pair.addr(),
            usize::MAX,
            Truth::UNMAPPED,
        ));
        self.fx.last_mut().unwrap().expect = Expect::InvalidRange;
        self.fx
            .push(fixture("zero length at NULL", 0, 0, Truth::READABLE));
        self.maps.push(pair);
        Ok(())
    }

    /// Readable anonymous memory that was never touched, and a `MAP_NORESERVE` mapping.
    fn untouched(&mut self) -> io::Result<()> {
        let ps = addrprobe::range::page_size();
        let untouched = Mapping::anon(4 * ps, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        self.fx.push(with_contents(
            fixture(
                "never-touched anonymous",
                untouched.addr() + ps,
                8,
                Truth::READABLE,
            ),
            vec![0; 8],
        ));
        self.maps.push(untouched);
        let noreserve = Mapping::anon(
            16 * ps,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_NORESERVE,
        )?;
        self.fx.push(with_contents(
            fixture(
                "MAP_NORESERVE anonymous, 16 pages",
                noreserve.addr(),
                16 * ps,
                Truth::READABLE,
            ),
            vec![0; 16 * ps],
        ));
        self.maps.push(noreserve);
        Ok(())
    }

    /// Program text: the code of [`FixtureSet::build`].
    fn program_text(&mut self) {
        let text = FixtureSet::build as *const () as usize;
        // SAFETY: our own code is mapped readable and executable for the life of the process.
        let text_bytes = unsafe { core::slice::from_raw_parts(text as *const u8, 16) }.to_vec();
        self.fx.push(with_contents(
            fixture("program text", text, 16, Truth::READABLE),
            text_bytes,
        ));
    }

    /// A read-only private file mapping, and a `MAP_SHARED` file of one page mapped over two
    /// (the second page lies beyond the end of the file).
    fn files(&mut self) -> io::Result<()> {
        let ps = addrprobe::range::page_size();
        // A read-only private file mapping.
        let (file, file_bytes) = temp_file(2 * ps, 5)?;
        let ro = Mapping::quiet(
            2 * ps,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&file),
        )?;
        self.fx.push(with_contents(
            fixture(
                "read-only private file mapping",
                ro.addr() + 100,
                2 * ps - 200,
                Truth::READABLE,
            ),
            file_bytes[100..2 * ps - 100].to_vec(),
        ));
        self.maps.push(ro);
        drop(file);

        // MAP_SHARED file of one page, mapped over two: the second page is beyond EOF.
        let (file, file_bytes) = temp_file(ps, 9)?;
        let shared = Mapping::quiet(
            2 * ps,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&file),
        )?;
        self.fx.push(with_contents(
            fixture("MAP_SHARED file page", shared.addr(), 32, Truth::READABLE),
            file_bytes[..32].to_vec(),
        ));
        self.fx.push(fixture(
            "MAP_SHARED file page beyond EOF",
            shared.addr() + ps,
            8,
            Truth::REGION_ONLY,
        ));
        self.maps.push(shared);
        drop(file);
        Ok(())
    }

    /// `MADV_GUARD_INSTALL` (6.13+): the VMA stays readable, the page faults. Skipped where
    /// the kernel does not know the advice.
    fn guard_page(&mut self) -> io::Result<()> {
        let ps = addrprobe::range::page_size();
        let guarded = Mapping::anon(2 * ps, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        // SAFETY: advising our own mapping; the guard makes the second page fault on access.
        let ret = unsafe {
            libc::madvise(
                (guarded.addr() + ps) as *mut libc::c_void,
                ps,
                MADV_GUARD_INSTALL,
            )
        };
        if ret == 0 {
            self.fx.push(fixture(
                "MADV_GUARD_INSTALL page",
                guarded.addr() + ps,
                8,
                Truth::REGION_ONLY,
            ));
        }
        self.maps.push(guarded);
        Ok(())
    }

    /// Addresses nobody maps: NULL, low, kernel, non-canonical, the top of user space, the end
    /// of the address space, and on x86_64 the vsyscall page (whose truth the kernel's maps
    /// give).
    fn unmapped_addresses(&mut self) {
        self.fx.push(fixture("NULL", 0, 8, Truth::UNMAPPED));
        self.fx.push(fixture("0x1000", 0x1000, 8, Truth::UNMAPPED));
        self.fx.push(fixture(
            "kernel address",
            0xffff_8880_0000_0000,
            8,
            Truth::UNMAPPED,
        ));
        self.fx.push(fixture(
            // On aarch64 user addresses ignore their top byte (TBI): this one is NULL tagged 0x80.
            if cfg!(target_arch = "aarch64") {
                "top byte 0x80 (NULL with a tag)"
            } else {
                "non-canonical 0x8000_0000_0000_0000"
            },
            0x8000_0000_0000_0000,
            8,
            Truth::UNMAPPED,
        ));
        // The end of this kernel's user space (2^47, 2^48, 2^52 or 2^56): the first address
        // past it, and a range from inside user space that crosses it.
        let end = user_space_end();
        let bits = end.trailing_zeros();
        self.fx.push(fixture(
            if bits == 47 {
                "2^47 (non-canonical with 4-level paging)"
            } else {
                "first address past user space"
            },
            end,
            8,
            Truth::UNMAPPED,
        ));
        self.fx.push(fixture(
            "top of user space (crossing its end)",
            end - 8,
            16,
            Truth::UNMAPPED,
        ));
        self.fx.push(fixture(
            "end of the address space",
            usize::MAX - 8,
            8,
            Truth::UNMAPPED,
        ));
        // Only x86_64 has a vsyscall page; elsewhere its address is one more kernel address.
        if cfg!(target_arch = "x86_64") {
            let vsyscall = if vsyscall_readable() {
                Truth::READABLE
            } else {
                Truth::UNMAPPED
            };
            self.fx
                .push(fixture(VSYSCALL, 0xffff_ffff_ff60_0000, 8, vsyscall));
        }
    }
}

impl FixtureSet {
    /// Builds every fixture. Fails only if the machine refuses plain `mmap` or a temp file.
    pub fn build() -> io::Result<FixtureSet> {
        let mut b = Builder::default();
        b.anonymous()?;
        b.hole_after_readable()?;
        b.untouched()?;
        b.program_text();
        b.files()?;
        b.guard_page()?;
        b.unmapped_addresses();
        Ok(FixtureSet {
            fixtures: b.fx,
            _mappings: b.maps,
        })
    }

    /// The fixtures, without the stack one (see [`FixtureSet::for_each`]).
    pub fn fixtures(&self) -> &[Fixture] {
        &self.fixtures
    }

    /// Calls `f` for every fixture plus one on the current thread's stack (which must be
    /// probed while its frame is live, hence here).
    pub fn for_each(&self, mut f: impl FnMut(&Fixture)) {
        let local = [0x5au8; 64];
        let stack = with_contents(
            fixture(
                "current stack",
                core::hint::black_box(&local) as *const _ as usize,
                64,
                Truth::READABLE,
            ),
            local.to_vec(),
        );
        f(&stack);
        self.fixtures.iter().for_each(f);
        core::hint::black_box(&local);
    }
}

/// One cell of the conformance matrix.
#[derive(Clone, Debug)]
pub struct Cell {
    /// The fixture.
    pub fixture: &'static str,
    /// The backend.
    pub backend: Backend,
    /// What [`Prober::check`] returned.
    pub answer: Result<bool, Error>,
    /// How it compares with the truth.
    pub verdict: Verdict,
    /// For readable fixtures and Readable backends: whether [`Prober::read`] returned exactly
    /// the fixture's bytes (`None` when not applicable).
    pub read_ok: Option<bool>,
}

/// Probes every fixture with `prober` and judges each answer; `read` is checked too where
/// the backend can read and the fixture is readable.
pub fn run_matrix(set: &FixtureSet, prober: &Prober) -> Vec<Cell> {
    let backend = prober.backend();
    let mut cells = Vec::new();
    set.for_each(|fx| {
        let answer = prober.check(fx.addr, fx.len);
        let verdict = judge(backend, fx, answer);
        let read_ok = match (&fx.contents, prober.guarantee(), answer) {
            (Some(want), Guarantee::Readable, Ok(true)) => {
                let mut buf = vec![0u8; want.len()];
                Some(prober.read(fx.addr, &mut buf) == Ok(true) && &buf == want)
            }
            _ => None,
        };
        cells.push(Cell {
            fixture: fx.name,
            backend,
            answer,
            verdict,
            read_ok,
        });
    });
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    #[test]
    fn mapping_tracks_protection_and_holes() {
        let ps = addrprobe::range::page_size();
        let mincore = Prober::new(Backend::Mincore).unwrap();
        let mut m = Mapping::anon(3 * ps, libc::PROT_READ | libc::PROT_WRITE, 0).unwrap();
        assert_eq!(m.len(), 3 * ps);
        m.fill(ps - 2, &[1, 2, 3, 4]);
        m.protect(ps, ps, libc::PROT_NONE).unwrap();
        m.punch(2 * ps, ps);
        assert_eq!(mincore.check(m.addr(), 8), Ok(true));
        assert_eq!(mincore.check(m.addr() + ps, 8), Ok(true));
        // In the quiet region, the punched page stays a hole.
        assert_eq!(mincore.check(m.addr() + 2 * ps, 8), Ok(false));
        // SAFETY: a byte load from the first page of the mapping, which is readable.
        let first = unsafe { core::ptr::read_volatile((m.addr() + ps - 2) as *const u8) };
        assert_eq!(first, 1);
        // A fill that would fault is refused, before any byte is written.
        for (offset, len) in [(ps, 1), (ps - 1, 2), (2 * ps, 1), (3 * ps - 1, 2)] {
            let r = catch_unwind(AssertUnwindSafe(|| m.fill(offset, &vec![9; len])));
            assert!(r.is_err(), "fill of {offset:#x}+{len}");
        }
        let r = catch_unwind(AssertUnwindSafe(|| m.punch(2 * ps, ps)));
        assert!(r.is_err(), "punching a hole twice");
        let addr = m.addr();
        drop(m);
        assert_eq!(mincore.check(addr, 8), Ok(false));
    }

    #[test]
    fn shared_file_mappings_cannot_be_filled() {
        let ps = addrprobe::range::page_size();
        let (file, _) = temp_file(ps, 1).unwrap();
        let m = Mapping::quiet(
            2 * ps,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&file),
        )
        .unwrap();
        // The second page lies beyond the end of the file: a write there raises SIGBUS.
        let r = catch_unwind(AssertUnwindSafe(|| m.fill(ps, &[1])));
        assert!(r.is_err());
    }
}
