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

/// An anonymous or file mapping, unmapped on drop, except for the pages we punched out of it:
/// those may belong to someone else by then.
#[derive(Debug)]
struct Mapping {
    addr: usize,
    len: usize,
    /// `(offset, len)` pieces already unmapped, in increasing order.
    holes: Vec<(usize, usize)>,
}

impl Mapping {
    fn anon(len: usize, prot: i32, extra_flags: i32) -> io::Result<Mapping> {
        Self::map(
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
            -1,
        )
    }

    fn map(len: usize, prot: i32, flags: i32, fd: i32) -> io::Result<Mapping> {
        // A quiet region keeps the holes we punch from being reused by concurrent mmaps.
        let addr = map_quiet(len, prot, flags, fd)?;
        Ok(Mapping {
            addr,
            len,
            holes: Vec::new(),
        })
    }

    /// Unmaps `[offset, offset + len)`, making a hole the fixtures call "unmapped".
    fn punch(&mut self, offset: usize, len: usize) {
        // SAFETY: unmapping a piece of our own mapping; nothing of Rust's points into it.
        unsafe { libc::munmap((self.addr + offset) as *mut libc::c_void, len) };
        self.holes.push((offset, len));
        self.holes.sort_unstable();
    }

    fn protect(&self, offset: usize, len: usize, prot: i32) -> io::Result<()> {
        // SAFETY: the range lies inside our own mapping; no Rust reference points into it.
        let ret = unsafe { libc::mprotect((self.addr + offset) as *mut libc::c_void, len, prot) };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn fill(&self, offset: usize, bytes: &[u8]) {
        // SAFETY: the range lies inside our writable mapping.
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
        let mut start = 0;
        for &(offset, len) in self.holes.iter().chain([(self.len, 0)].iter()) {
            if offset > start {
                // SAFETY: `[start, offset)` is a piece of our mapping that we still own.
                unsafe { libc::munmap((self.addr + start) as *mut libc::c_void, offset - start) };
            }
            start = start.max(offset + len);
        }
    }
}

/// Maps `len` bytes of private anonymous read-write memory at a kernel-chosen address.
/// Test and benchmark helper; the caller owns (and unmaps) the mapping.
pub fn map_anonymous(len: usize) -> io::Result<usize> {
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

/// Maps `len` bytes below the program, where the kernel's top-down allocator does not reach,
/// so that a page unmapped there stays a hole while other threads call `mmap` (the fixtures'
/// own "unmapped" truths rely on it). Falls back to a kernel-chosen address. Test and
/// benchmark helper; the caller owns the mapping.
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
            return Ok(hint);
        }
        // Kernels before 4.17 treat the flag as a hint: not what we asked for.
        // SAFETY: unmapping the mapping we just made, which nothing else knows of.
        unsafe { libc::munmap(p, len) };
    }
    // SAFETY: a fresh mapping at a kernel-chosen address aliases nothing.
    let p = unsafe { libc::mmap(core::ptr::null_mut(), len, prot, flags, fd, 0) };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p as usize)
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

impl FixtureSet {
    /// Builds every fixture. Fails only if the machine refuses plain `mmap` or a temp file.
    pub fn build() -> io::Result<FixtureSet> {
        let ps = addrprobe::range::page_size();
        let mut fx = Vec::new();
        let mut maps = Vec::new();

        // Anonymous memory: [resident][resident][PROT_NONE][hole][write-only]
        let mut anon = Mapping::anon(5 * ps, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let bytes = pattern(2 * ps, 7);
        anon.fill(0, &bytes);
        let wo_bytes = pattern(ps, 11);
        anon.fill(4 * ps, &wo_bytes);
        anon.protect(2 * ps, ps, libc::PROT_NONE)?;
        anon.protect(4 * ps, ps, libc::PROT_WRITE)?;
        anon.punch(3 * ps, ps);
        let a = anon.addr;
        fx.push(with_contents(
            fixture("resident anonymous", a + 16, 64, Truth::READABLE),
            bytes[16..80].to_vec(),
        ));
        fx.push(with_contents(
            fixture(
                "unaligned across two pages",
                a + ps - 12,
                24,
                Truth::READABLE,
            ),
            bytes[ps - 12..ps + 12].to_vec(),
        ));
        fx.push(with_contents(
            fixture("two whole pages", a, 2 * ps, Truth::READABLE),
            bytes.clone(),
        ));
        fx.push(fixture("PROT_NONE", a + 2 * ps, 8, Truth::MAPPED_ONLY));
        fx.push(fixture("unmapped hole", a + 3 * ps, 8, Truth::UNMAPPED));
        fx.push(fixture(
            "straddle readable→PROT_NONE",
            a + 2 * ps - 4,
            8,
            Truth::MAPPED_ONLY,
        ));
        fx.push(fixture(
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
        fx.push(wo);
        maps.push(anon);

        // [readable][unmapped]: a straddle into a hole.
        let mut pair = Mapping::anon(2 * ps, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        pair.fill(0, &pattern(ps, 3));
        pair.punch(ps, ps);
        fx.push(fixture(
            "straddle readable→unmapped",
            pair.addr + ps - 4,
            8,
            Truth::UNMAPPED,
        ));
        fx.push(fixture(
            "wrapping length",
            pair.addr,
            usize::MAX,
            Truth::UNMAPPED,
        ));
        fx.last_mut().unwrap().expect = Expect::InvalidRange;
        fx.push(fixture("zero length at NULL", 0, 0, Truth::READABLE));
        maps.push(pair);

        let untouched = Mapping::anon(4 * ps, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        fx.push(with_contents(
            fixture(
                "never-touched anonymous",
                untouched.addr + ps,
                8,
                Truth::READABLE,
            ),
            vec![0; 8],
        ));
        maps.push(untouched);
        let noreserve = Mapping::anon(
            16 * ps,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_NORESERVE,
        )?;
        fx.push(with_contents(
            fixture(
                "MAP_NORESERVE anonymous, 16 pages",
                noreserve.addr,
                16 * ps,
                Truth::READABLE,
            ),
            vec![0; 16 * ps],
        ));
        maps.push(noreserve);

        // Program text: this function's own code.
        let text = FixtureSet::build as *const () as usize;
        // SAFETY: our own code is mapped readable and executable for the life of the process.
        let text_bytes = unsafe { core::slice::from_raw_parts(text as *const u8, 16) }.to_vec();
        fx.push(with_contents(
            fixture("program text", text, 16, Truth::READABLE),
            text_bytes,
        ));

        // A read-only private file mapping.
        let (file, file_bytes) = temp_file(2 * ps, 5)?;
        let ro = Mapping::map(
            2 * ps,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&file),
        )?;
        fx.push(with_contents(
            fixture(
                "read-only private file mapping",
                ro.addr + 100,
                2 * ps - 200,
                Truth::READABLE,
            ),
            file_bytes[100..2 * ps - 100].to_vec(),
        ));
        maps.push(ro);
        drop(file);

        // MAP_SHARED file of one page, mapped over two: the second page is beyond EOF.
        let (file, file_bytes) = temp_file(ps, 9)?;
        let shared = Mapping::map(
            2 * ps,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&file),
        )?;
        fx.push(with_contents(
            fixture("MAP_SHARED file page", shared.addr, 32, Truth::READABLE),
            file_bytes[..32].to_vec(),
        ));
        fx.push(fixture(
            "MAP_SHARED file page beyond EOF",
            shared.addr + ps,
            8,
            Truth::REGION_ONLY,
        ));
        maps.push(shared);
        drop(file);

        // MADV_GUARD_INSTALL (6.13+): the VMA stays readable, the page faults.
        let guarded = Mapping::anon(2 * ps, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        // SAFETY: advising our own mapping; the guard makes the second page fault on access.
        let ret = unsafe {
            libc::madvise(
                (guarded.addr + ps) as *mut libc::c_void,
                ps,
                MADV_GUARD_INSTALL,
            )
        };
        if ret == 0 {
            fx.push(fixture(
                "MADV_GUARD_INSTALL page",
                guarded.addr + ps,
                8,
                Truth::REGION_ONLY,
            ));
        }
        maps.push(guarded);

        // Addresses nobody maps.
        fx.push(fixture("NULL", 0, 8, Truth::UNMAPPED));
        fx.push(fixture("0x1000", 0x1000, 8, Truth::UNMAPPED));
        fx.push(fixture(
            "kernel address",
            0xffff_8880_0000_0000,
            8,
            Truth::UNMAPPED,
        ));
        fx.push(fixture(
            "non-canonical 0x8000_0000_0000_0000",
            0x8000_0000_0000_0000,
            8,
            Truth::UNMAPPED,
        ));
        fx.push(fixture(
            "2^47 (non-canonical with 4-level paging)",
            0x0000_8000_0000_0000,
            8,
            Truth::UNMAPPED,
        ));
        fx.push(fixture(
            "top of user space (2^47)",
            0x0000_8000_0000_0000 - 8,
            16,
            Truth::UNMAPPED,
        ));
        fx.push(fixture(
            "end of the address space",
            usize::MAX - 8,
            8,
            Truth::UNMAPPED,
        ));
        let vsyscall = if vsyscall_readable() {
            Truth::READABLE
        } else {
            Truth::UNMAPPED
        };
        fx.push(fixture(VSYSCALL, 0xffff_ffff_ff60_0000, 8, vsyscall));

        Ok(FixtureSet {
            fixtures: fx,
            _mappings: maps,
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
