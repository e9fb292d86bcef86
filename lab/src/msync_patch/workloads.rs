//! The three workloads of the msync-patch study, each runnable in every [`Mode`], on the
//! host (emulated modes) and inside a guest kernel (stock mode on a stock or patched kernel).
//!
//! 1. [`unwind`] with [`StackKind::Anonymous`]: a 64-frame frame-pointer walk over an
//!    ordinary anonymous stack, every frame record validated with msync before it is read.
//!    No file mapping is involved, so the patch should change nothing.
//! 2. [`unwind`] with [`StackKind::FileCodeCache`]: the same walk, but the frames and the
//!    code their return addresses point into live in one `MAP_SHARED` file on the chosen
//!    directory, as in a JIT that maps its code cache from a file. Before every walk the
//!    "JIT" rewrites the frames and emits code into a few code pages, dirtying them.
//! 3. [`profile`]: an application that dirties random pages of a 64 MiB `MAP_SHARED` file
//!    mapping at a steady rate (a fixed amount of computation per store, like a database),
//!    while a 1 kHz `SIGPROF` sampler validates, with msync, the last few pointers the
//!    application wrote through. It reports the probe cost, the application's throughput
//!    and the bytes written to disk.
//!
//! Every run takes fixed iteration counts (never a wall-clock duration), so a run under
//! QEMU with `-icount` executes the same instructions every time.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::{EmulatedMsync, FileMappings, Mode};
use crate::fixtures::Mapping;
use addrprobe::unwind::{Frame, Stop, Walk, walk_chain};

/// Nanoseconds of `CLOCK_MONOTONIC` (under QEMU `-icount shift=0`: guest instructions).
#[inline]
pub fn now_ns() -> u64 {
    crate::bench::clock_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time of the calling thread in nanoseconds (user + system, signal handlers included).
pub fn thread_cpu_ns() -> u64 {
    crate::bench::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// What kind of file system a directory is on, as far as writeback is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsKind {
    /// ext4: has writeback.
    Ext4,
    /// tmpfs (and memfd): no writeback, `sync_file_range` does nothing.
    Tmpfs,
    /// Anything else, by `statfs` magic number.
    Other(i64),
}

impl FsKind {
    /// The file system of `dir`.
    #[allow(clippy::unnecessary_cast)] // f_type is not i64 on every target
    pub fn of(dir: &Path) -> io::Result<FsKind> {
        let c = cstring(dir)?;
        let mut st = core::mem::MaybeUninit::<libc::statfs>::uninit();
        // SAFETY: statfs writes one struct into the buffer; the path is NUL-terminated.
        if unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: statfs succeeded.
        let magic = unsafe { st.assume_init() }.f_type as i64;
        Ok(match magic {
            m if m == libc::EXT4_SUPER_MAGIC as i64 => FsKind::Ext4,
            m if m == libc::TMPFS_MAGIC as i64 => FsKind::Tmpfs,
            m => FsKind::Other(m),
        })
    }

    /// `ext4`, `tmpfs` or `fs-0x…`.
    pub fn name(self) -> String {
        match self {
            FsKind::Ext4 => "ext4".into(),
            FsKind::Tmpfs => "tmpfs".into(),
            FsKind::Other(m) => format!("fs-{m:#x}"),
        }
    }
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// A memory region the workloads build: anonymous, or a `MAP_SHARED` view of a file they
/// created (which is unlinked when the region is dropped).
#[derive(Debug)]
pub struct Region {
    /// Declared first: unmapped before the file is closed and unlinked.
    mapping: Mapping,
    file: Option<TempFile>,
}

/// A file the workloads created: closed and unlinked on drop.
#[derive(Debug)]
struct TempFile {
    fd: OwnedFd,
    path: PathBuf,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Region {
    /// `len` bytes (whole pages) of private anonymous memory, like a thread stack.
    pub fn anonymous(len: usize) -> io::Result<Region> {
        Ok(Region {
            mapping: Mapping::anywhere(
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
            )?,
            file: None,
        })
    }

    /// A new `len`-byte file in `dir`, filled with zeros by `write` calls of `fill_chunk`
    /// bytes and `fdatasync`ed (so its blocks are allocated and its pages clean, like a
    /// database file or a code cache that already exists), mapped `MAP_SHARED` read-write.
    ///
    /// `fill_chunk` sets the page-cache granularity on kernels with large folios (ext4 since
    /// 6.16 sizes the folio a `write` creates after that write): one page gives order-0
    /// folios as on 6.1, where every dirtied page is written back alone; a large chunk gives
    /// large folios, where one dirtied byte makes writeback write the whole folio.
    pub fn shared_file(
        dir: &Path,
        name: &str,
        len: usize,
        fill_chunk: usize,
    ) -> io::Result<Region> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let path = dir.join(format!(
            "addrprobe-msync-{name}-{}-{}.dat",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let c = cstring(&path)?;
        // SAFETY: a NUL-terminated path; open has no other preconditions.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", path.display()),
            ));
        }
        let file = TempFile {
            // SAFETY: `fd` was just opened and is ours alone.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path,
        };
        let zeros = vec![0u8; fill_chunk.clamp(1, 1 << 21)];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len());
            // SAFETY: writes `n` bytes from a buffer of at least `n` bytes.
            let w = unsafe { libc::write(fd, zeros.as_ptr().cast(), n) };
            if w <= 0 {
                return Err(io::Error::last_os_error());
            }
            done += w as usize;
        }
        // SAFETY: plain syscall on our descriptor.
        if unsafe { libc::fdatasync(fd) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mapping = Mapping::anywhere(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
        )?;
        Ok(Region {
            mapping,
            file: Some(file),
        })
    }

    /// First byte.
    pub fn addr(&self) -> usize {
        self.mapping.addr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.mapping.len()
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.mapping.is_empty()
    }

    /// Writes back every dirty page of a file region and waits (`fdatasync`): the state
    /// between two measured runs. Does nothing for anonymous memory.
    pub fn settle(&self) -> io::Result<()> {
        if let Some(TempFile { fd, .. }) = &self.file {
            // SAFETY: plain syscall on our descriptor.
            if unsafe { libc::fdatasync(fd.as_raw_fd()) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Waits until writeback already started on the file has finished (no new writeback).
    fn wait_writeback(&self) {
        if let Some(TempFile { fd, .. }) = &self.file {
            // SAFETY: plain syscall on our descriptor.
            unsafe {
                libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WAIT_BEFORE)
            };
        }
    }

    /// The block device statistics file of the file's device, if it has one.
    fn device_stat_path(&self) -> Option<PathBuf> {
        let fd = &self.file.as_ref()?.fd;
        let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes one struct.
        if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: fstat succeeded.
        let dev = unsafe { st.assume_init() }.st_dev;
        let (maj, min) = (libc::major(dev), libc::minor(dev));
        if maj == 0 {
            return None;
        }
        let p = PathBuf::from(format!("/sys/dev/block/{maj}:{min}/stat"));
        p.exists().then_some(p)
    }
}

/// Sectors (512 B) written according to a block device's `stat` file (field 7).
fn sectors_written(stat: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(stat).ok()?;
    text.split_whitespace().nth(6)?.parse().ok()
}

/// `write_bytes` of `/proc/self/io`: bytes this process caused to be dirtied in the page cache
/// of file systems with writeback (accounted when a clean page becomes dirty).
fn proc_write_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
}

/// Minor page faults of the calling thread so far.
fn thread_minflt() -> u64 {
    let mut ru = core::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one struct.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr()) };
    // SAFETY: zero-initialised and filled by getrusage.
    unsafe { ru.assume_init() }.ru_minflt as u64
}

/// I/O counters around a measured window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Io {
    /// Bytes written to the file's block device during the window (all processes), if the
    /// file has one; writeback started in the window is waited for before reading it.
    pub device_bytes: Option<u64>,
    /// Growth of `/proc/self/io` `write_bytes`: pages this process turned from clean to
    /// dirty, times the page size. Each such page is written to disk once, sooner (patched)
    /// or later (stock: after `dirty_expire_centisecs`, 30 s by default).
    pub dirtied_bytes: Option<u64>,
    /// Minor page faults of the measuring thread (write-protect faults on pages that
    /// writeback cleaned show up here).
    pub minor_faults: u64,
}

struct IoProbe {
    dev: Option<(PathBuf, u64)>,
    wb: Option<u64>,
    flt: u64,
}

impl IoProbe {
    fn start(region: &Region) -> IoProbe {
        let dev = region
            .device_stat_path()
            .and_then(|p| sectors_written(&p).map(|s| (p, s)));
        IoProbe {
            dev,
            wb: proc_write_bytes(),
            flt: thread_minflt(),
        }
    }

    fn finish(self, region: &Region) -> Io {
        let flt = thread_minflt() - self.flt;
        region.wait_writeback();
        Io {
            device_bytes: self
                .dev
                .and_then(|(p, s0)| sectors_written(&p).map(|s1| s1.saturating_sub(s0) * 512)),
            dirtied_bytes: self
                .wb
                .and_then(|w0| proc_write_bytes().map(|w1| w1.saturating_sub(w0))),
            minor_faults: flt,
        }
    }
}

/// Frame records of the unwinder workloads: `(saved frame pointer, return address)`, the
/// x86_64 and AArch64 frame-pointer layout.
pub const FRAME_RECORD: usize = 2 * core::mem::size_of::<usize>();

/// Writes a chain of `frames` frame records, `stride` bytes apart, starting at `base`
/// (the innermost frame) and growing upwards like a real stack. Return addresses are
/// `ret_base + i * ret_stride`. The outermost record's saved frame pointer is 0. Returns the
/// innermost frame pointer.
///
/// # Safety
///
/// `[base, base + frames * stride)` must be writable memory that nothing else uses, and
/// `stride >= FRAME_RECORD`, `base` aligned to `usize`.
pub unsafe fn write_chain(
    base: usize,
    frames: usize,
    stride: usize,
    ret_base: usize,
    ret_stride: usize,
) -> usize {
    for i in 0..frames {
        let fp = base + i * stride;
        let next = if i + 1 < frames { fp + stride } else { 0 };
        // SAFETY: the caller guarantees the range is writable and ours.
        unsafe {
            core::ptr::write_volatile(fp as *mut usize, next);
            core::ptr::write_volatile((fp + 8) as *mut usize, ret_base + i * ret_stride);
        }
    }
    base
}

/// Walks the frame-pointer chain from `fp` with [`addrprobe::unwind::walk_chain`] (the crate's
/// unwinder), validating each frame record with `probe` before loading it: the
/// check-then-load pattern of [`Unwinder::check_then_load`](addrprobe::unwind::Unwinder::check_then_load)
/// (libunwind's `validate_mem`), with the emulated msync in place of the [`Prober`](addrprobe::Prober).
/// Returns the walk; `out` holds the frames.
///
/// # Safety
///
/// msync proves "mapped", not "readable": every frame pointer the walk can reach must point
/// into memory that stays readable for the walk, as the chains that [`write_chain`] builds in
/// read-write memory the caller owns do.
#[inline]
pub unsafe fn walk(probe: &EmulatedMsync, fp: usize, out: &mut [Frame]) -> Walk {
    walk_chain(fp, 0, out, 0, |fp| {
        if !probe.check(fp, FRAME_RECORD)? {
            return Ok(None);
        }
        let p = fp as *const usize;
        // SAFETY: `walk_chain` only passes word-aligned frame pointers; the record is mapped
        // (msync said so) and the caller vouched that mapped records are readable.
        Ok(Some(unsafe {
            [
                core::ptr::read_volatile(p),
                core::ptr::read_volatile(p.add(1)),
            ]
        }))
    })
}

/// Where the unwinder workload's stack lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackKind {
    /// Private anonymous memory: an ordinary thread stack.
    Anonymous,
    /// A `MAP_SHARED` file mapping that also holds the code cache.
    FileCodeCache,
}

impl StackKind {
    /// `unwind-anon-stack` or `unwind-file-code-cache`.
    pub const fn workload_name(self) -> &'static str {
        match self {
            StackKind::Anonymous => "unwind-anon-stack",
            StackKind::FileCodeCache => "unwind-file-code-cache",
        }
    }
}

/// Parameters of the unwinder workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnwindConfig {
    /// Frames per walk (64 in the study).
    pub frames: usize,
    /// Bytes between frames (256: 64 frames span 4 pages).
    pub stride: usize,
    /// Pages of code cache after the stack (256 = 1 MiB).
    pub code_pages: usize,
    /// Code pages the "JIT" writes to before each walk.
    pub code_pages_written_per_walk: usize,
    /// Walks to time.
    pub walks: usize,
    /// `write` size used to fill the file (see [`Region::shared_file`]); 0 = page size.
    pub fill_chunk: usize,
    /// Emulate `WB_SYNC_ALL` (see [`EmulatedMsync::with_wait_before`]).
    pub wait_before: bool,
}

impl UnwindConfig {
    /// The study's configuration with `walks` walks.
    pub const fn study(walks: usize) -> UnwindConfig {
        UnwindConfig {
            frames: 64,
            stride: 256,
            code_pages: 256,
            code_pages_written_per_walk: 8,
            walks,
            fill_chunk: 0,
            wait_before: false,
        }
    }
}

/// Result of one unwinder run.
#[derive(Clone, Debug, PartialEq)]
pub struct UnwindResult {
    /// `unwind-anon-stack` or `unwind-file-code-cache`.
    pub workload: &'static str,
    /// File system of the file mapping (`anon` for the anonymous stack).
    pub fs: String,
    /// Emulated behaviour.
    pub mode: Mode,
    /// Frames found per walk (always `frames` when the walk works).
    pub frames: usize,
    /// Walks timed.
    pub walks: usize,
    /// msync probes per walk.
    pub probes_per_walk: usize,
    /// Median time of one walk, ns.
    pub walk_ns_median: f64,
    /// Mean time of one walk, ns.
    pub walk_ns_mean: f64,
    /// `walk_ns_median / probes_per_walk`: what one validated frame costs (the median over
    /// rounds when aggregated).
    pub ns_per_probe: f64,
    /// Smallest and largest `ns_per_probe` of the rounds.
    pub ns_per_probe_range: (f64, f64),
    /// Rounds aggregated into this result.
    pub rounds: usize,
    /// Mean time of the application's rewrite before each walk (frames + emitted code), ns:
    /// grows when writeback write-protected the pages it writes.
    pub rewrite_ns_mean: f64,
    /// Whole iterations (rewrite + walk) per second.
    pub iterations_per_s: f64,
    /// I/O during the timed loop.
    pub io: Io,
}

fn median(v: &mut [u64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m] as f64
    } else {
        (v[m - 1] + v[m]) as f64 / 2.0
    }
}

/// A built unwinder workload, reusable across modes and walks.
#[derive(Debug)]
pub struct UnwindSetup {
    kind: StackKind,
    cfg: UnwindConfig,
    region: Region,
    fs: String,
    code_cursor: usize,
}

impl UnwindSetup {
    /// Builds the stack (anonymous, or a shared file in `dir`).
    pub fn new(kind: StackKind, cfg: UnwindConfig, dir: &Path) -> io::Result<UnwindSetup> {
        let ps = addrprobe::range::page_size();
        let stack_len = (cfg.frames * cfg.stride).div_ceil(ps) * ps;
        let (region, fs) = match kind {
            StackKind::Anonymous => (Region::anonymous(stack_len)?, "anon".to_owned()),
            StackKind::FileCodeCache => (
                Region::shared_file(
                    dir,
                    "code-cache",
                    stack_len + cfg.code_pages * ps,
                    if cfg.fill_chunk == 0 {
                        ps
                    } else {
                        cfg.fill_chunk
                    },
                )?,
                FsKind::of(dir)?.name(),
            ),
        };
        Ok(UnwindSetup {
            kind,
            cfg,
            region,
            fs,
            code_cursor: 0,
        })
    }

    /// The region holding the stack (and the code cache).
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The shared file mappings the probe must know about (none for the anonymous stack).
    pub fn mappings(&self) -> io::Result<FileMappings> {
        match self.kind {
            StackKind::Anonymous => Ok(FileMappings::default()),
            StackKind::FileCodeCache => FileMappings::overlapping(
                self.region.addr(),
                self.region.addr() + self.region.len(),
            ),
        }
    }

    /// What the application does before each walk: push the frames again and, for the code
    /// cache, emit 64 bytes of "code" into the next few code pages. Returns the innermost fp.
    pub fn rewrite(&mut self) -> usize {
        let ps = addrprobe::range::page_size();
        let base = self.region.addr();
        let stack_len = (self.cfg.frames * self.cfg.stride).div_ceil(ps) * ps;
        let code_base = base + stack_len;
        let ret_base = match self.kind {
            StackKind::Anonymous => now_ns as fn() -> u64 as usize,
            StackKind::FileCodeCache => code_base + 16,
        };
        // SAFETY: the stack part of the region is ours, writable, and `stride >= 16`.
        let fp = unsafe { write_chain(base, self.cfg.frames, self.cfg.stride, ret_base, 64) };
        if self.kind == StackKind::FileCodeCache && self.cfg.code_pages > 0 {
            for _ in 0..self.cfg.code_pages_written_per_walk {
                let page = code_base + (self.code_cursor % self.cfg.code_pages) * ps;
                self.code_cursor += 1;
                for w in 0..8 {
                    // SAFETY: inside the code part of our writable mapping.
                    unsafe {
                        core::ptr::write_volatile((page + w * 8) as *mut u64, 0xcc_u64 + w as u64)
                    };
                }
            }
        }
        fp
    }

    /// One walk from `fp` (as [`rewrite`](Self::rewrite) returned it) with `probe`: the
    /// number of frames found, or the probe's error.
    #[inline]
    pub fn walk(
        &self,
        probe: &EmulatedMsync,
        fp: usize,
        out: &mut [Frame],
    ) -> Result<usize, addrprobe::Error> {
        let n = self.cfg.frames.min(out.len());
        // SAFETY: `fp` and every frame it links to lie in this setup's read-write region
        // (`rewrite` built them there), so every mapped record is readable.
        let w = unsafe { walk(probe, fp, &mut out[..n]) };
        match w.stop {
            Stop::Error(e) => Err(e),
            _ => Ok(w.depth),
        }
    }

    /// The probe for `mode`, with the workload brought to that mode's steady state (see
    /// below). Call before timing [`rewrite`](Self::rewrite) + [`walk`](Self::walk) loops.
    pub fn prepare(&mut self, mode: Mode) -> Result<EmulatedMsync, String> {
        let maps = self
            .mappings()
            .map_err(|e| format!("finding the file mappings: {e}"))?;
        let probe = EmulatedMsync::new(mode, maps)
            .map_err(|e| e.to_string())?
            .with_wait_before(self.cfg.wait_before);
        let mut out = vec![Frame::default(); self.cfg.frames];
        // Untimed warm-up: enough iterations to write every code page once. Each mode then
        // starts from its own steady state: on a stock kernel the pages stay dirty (and
        // writable); with A + B only the probed stack pages are written back (the first walk
        // does that); A alone writes back the whole file, so it starts clean.
        let warmup = self.cfg.code_pages / self.cfg.code_pages_written_per_walk.max(1) + 1;
        for _ in 0..warmup {
            let fp = self.rewrite();
            self.walk(&probe, fp, &mut out).map_err(|e| e.to_string())?;
        }
        // A alone writes back the whole file at the first probe of every walk, so its steady
        // state is "all clean"; get there without waiting for the walks to do it.
        if mode == Mode::AAlone {
            self.region
                .settle()
                .map_err(|e| format!("fdatasync: {e}"))?;
        }
        self.region.wait_writeback();
        Ok(probe)
    }

    /// Times `cfg.walks` rewrite+walk iterations in `mode`.
    pub fn run(&mut self, mode: Mode) -> Result<UnwindResult, String> {
        let probe = self.prepare(mode)?;
        let mut out = vec![Frame::default(); self.cfg.frames];
        let mut walk_ns = Vec::with_capacity(self.cfg.walks);
        let mut rewrite_total = 0u64;
        let mut frames = usize::MAX;
        let io = IoProbe::start(&self.region);
        let t_start = now_ns();
        for _ in 0..self.cfg.walks {
            let t0 = now_ns();
            let fp = self.rewrite();
            let t1 = now_ns();
            let n = self.walk(&probe, fp, &mut out).map_err(|e| e.to_string())?;
            let t2 = now_ns();
            frames = frames.min(n);
            rewrite_total += t1 - t0;
            walk_ns.push(t2 - t1);
        }
        let total = now_ns() - t_start;
        let io = io.finish(&self.region);
        let walks = self.cfg.walks.max(1);
        let walk_ns_mean = walk_ns.iter().sum::<u64>() as f64 / walks as f64;
        let walk_ns_median = median(&mut walk_ns);
        let probes_per_walk = self.cfg.frames;
        if frames != self.cfg.frames {
            return Err(format!(
                "the walk found {frames} of {} frames: the chain is broken",
                self.cfg.frames
            ));
        }
        Ok(UnwindResult {
            workload: self.kind.workload_name(),
            fs: self.fs.clone(),
            mode,
            frames,
            walks: self.cfg.walks,
            probes_per_walk,
            walk_ns_median,
            walk_ns_mean,
            ns_per_probe: walk_ns_median / probes_per_walk as f64,
            ns_per_probe_range: (
                walk_ns_median / probes_per_walk as f64,
                walk_ns_median / probes_per_walk as f64,
            ),
            rounds: 1,
            rewrite_ns_mean: rewrite_total as f64 / walks as f64,
            iterations_per_s: walks as f64 * 1e9 / total.max(1) as f64,
            io,
        })
    }
}

/// Builds [`UnwindSetup`] and runs `rounds` rounds of every mode, interleaved (stock, A,
/// A + B, stock, …, so that a disturbance of the machine hits every mode alike). Returns
/// one result per mode: medians over the rounds for times and rates, sums for counts and I/O.
pub fn unwind(
    kind: StackKind,
    cfg: UnwindConfig,
    dir: &Path,
    modes: &[Mode],
    rounds: usize,
) -> Result<Vec<UnwindResult>, String> {
    let mut setup = UnwindSetup::new(kind, cfg, dir)
        .map_err(|e| format!("building the {} workload: {e}", kind.workload_name()))?;
    let mut per_mode: Vec<Vec<UnwindResult>> = modes.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds.max(1) {
        for (i, &m) in modes.iter().enumerate() {
            per_mode[i].push(setup.run(m)?);
        }
    }
    Ok(per_mode.into_iter().map(merge_unwind).collect())
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn range_f(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    (
        v.clone().fold(f64::INFINITY, f64::min),
        v.fold(f64::NEG_INFINITY, f64::max),
    )
}

fn sum_io(v: impl Iterator<Item = Io>) -> Io {
    let mut t = Io {
        device_bytes: Some(0),
        dirtied_bytes: Some(0),
        minor_faults: 0,
    };
    for io in v {
        t.device_bytes = t.device_bytes.zip(io.device_bytes).map(|(a, b)| a + b);
        t.dirtied_bytes = t.dirtied_bytes.zip(io.dirtied_bytes).map(|(a, b)| a + b);
        t.minor_faults += io.minor_faults;
    }
    t
}

fn merge_unwind(v: Vec<UnwindResult>) -> UnwindResult {
    let mut out = v[0].clone();
    out.rounds = v.len();
    out.walks = v.iter().map(|r| r.walks).sum();
    out.walk_ns_median = median_f(v.iter().map(|r| r.walk_ns_median).collect());
    out.walk_ns_mean = median_f(v.iter().map(|r| r.walk_ns_mean).collect());
    out.ns_per_probe = median_f(v.iter().map(|r| r.ns_per_probe).collect());
    out.ns_per_probe_range = range_f(v.iter().map(|r| r.ns_per_probe));
    out.rewrite_ns_mean = median_f(v.iter().map(|r| r.rewrite_ns_mean).collect());
    out.iterations_per_s = median_f(v.iter().map(|r| r.iterations_per_s).collect());
    out.io = sum_io(v.iter().map(|r| r.io));
    out
}

/// Parameters of the profiler workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProfilerConfig {
    /// Size of the shared file mapping (64 MiB in the study).
    pub file_bytes: usize,
    /// Application operations (one 64-byte record store into a random page each).
    pub ops: u64,
    /// Iterations of integer work between two stores: sets the steady dirtying rate.
    pub work_per_op: u32,
    /// Pointers the sampler validates per sample (the most recent records).
    pub pointers_per_sample: usize,
    /// Sampling frequency in Hz (see [`ProfilerResult::sampler_clock`]).
    pub hz: u32,
    /// `write` size used to fill the file (see [`Region::shared_file`]); 0 = page size.
    pub fill_chunk: usize,
    /// Emulate `WB_SYNC_ALL` (see [`EmulatedMsync::with_wait_before`]).
    pub wait_before: bool,
}

impl ProfilerConfig {
    /// The study's configuration with `ops` operations.
    pub const fn study(ops: u64) -> ProfilerConfig {
        ProfilerConfig {
            file_bytes: 64 << 20,
            ops,
            work_per_op: 20000,
            pointers_per_sample: 4,
            hz: 1000,
            fill_chunk: 0,
            wait_before: false,
        }
    }
}

/// Result of one profiler run.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfilerResult {
    /// `profiler`.
    pub workload: &'static str,
    /// What drove the sampler: `timer_create(CLOCK_MONOTONIC)` aimed at the application
    /// thread (high-resolution, so 1 kHz is 1 kHz), or `setitimer(ITIMER_PROF)` where POSIX
    /// timers are missing (tick-based: at most `CONFIG_HZ` samples per CPU-second).
    pub sampler_clock: &'static str,
    /// File system of the mapping.
    pub fs: String,
    /// Emulated behaviour.
    pub mode: Mode,
    /// Application operations done.
    pub ops: u64,
    /// Time the application took, ns.
    pub elapsed_ns: u64,
    /// Application throughput: operations per second of elapsed time.
    pub ops_per_s: f64,
    /// CPU time the application thread used in the window (its stores, its faults and the
    /// sampler's handler; not time spent waiting for I/O or for the CPU), ns.
    pub cpu_ns: u64,
    /// Operations per second of the thread's CPU time: the throughput without the time the
    /// thread was not running (on a shared machine, mostly other processes' load).
    pub ops_per_cpu_s: f64,
    /// Samples the sampler took.
    pub samples: u64,
    /// msync probes the sampler made.
    pub probes: u64,
    /// Probes that did not answer "mapped" (must be 0).
    pub probe_failures: u64,
    /// Mean cost of one probe inside the signal handler, ns (the median over rounds when
    /// aggregated).
    pub ns_per_probe: f64,
    /// Smallest and largest `ns_per_probe` of the rounds.
    pub ns_per_probe_range: (f64, f64),
    /// Rounds aggregated into this result.
    pub rounds: usize,
    /// I/O during the run.
    pub io: Io,
}

impl ProfilerResult {
    /// Device bytes written per second of application time, if known.
    pub fn device_bytes_per_s(&self) -> Option<f64> {
        self.io
            .device_bytes
            .map(|b| b as f64 * 1e9 / self.elapsed_ns.max(1) as f64)
    }

    /// Dirtied (to-be-written) bytes per second of application time, if known.
    pub fn dirtied_bytes_per_s(&self) -> Option<f64> {
        self.io
            .dirtied_bytes
            .map(|b| b as f64 * 1e9 / self.elapsed_ns.max(1) as f64)
    }
}

const MAX_POINTERS: usize = 16;

/// What the SIGPROF handler reads: set before the timer starts, cleared after it stops.
struct Sampler {
    probe: *const EmulatedMsync,
    k: usize,
    recent: [AtomicUsize; MAX_POINTERS],
    samples: AtomicU64,
    probes: AtomicU64,
    failures: AtomicU64,
    probe_ns: AtomicU64,
}

static SAMPLER: AtomicPtr<Sampler> = AtomicPtr::new(core::ptr::null_mut());
static PROFILER_BUSY: AtomicBool = AtomicBool::new(false);
/// Handlers currently between loading [`SAMPLER`] and their last use of it.
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigprof(_sig: libc::c_int) {
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    let p = SAMPLER.load(Ordering::SeqCst);
    if !p.is_null() {
        sample(p);
    }
    IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
}

fn sample(p: *mut Sampler) {
    // SAFETY: `run_locked` publishes the sampler before arming the timer; before freeing it,
    // it clears the pointer and waits until no handler is between loading the pointer and
    // returning (IN_HANDLER), so the sampler and the probe it points to are alive here.
    let s = unsafe { &*p };
    // SAFETY: as above.
    let probe = unsafe { &*s.probe };
    let t0 = now_ns();
    let mut n = 0;
    for slot in &s.recent[..s.k] {
        let addr = slot.load(Ordering::Relaxed);
        if addr == 0 {
            continue;
        }
        n += 1;
        if !matches!(probe.check(addr, 8), Ok(true)) {
            s.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    let t1 = now_ns();
    if n > 0 {
        s.probe_ns.fetch_add(t1 - t0, Ordering::Relaxed);
        s.probes.fetch_add(n, Ordering::Relaxed);
    }
    s.samples.fetch_add(1, Ordering::Relaxed);
}

/// The timer that sends SIGPROF to the application thread.
enum SampleTimer {
    Posix(libc::timer_t),
    Itimer(libc::itimerval),
}

impl SampleTimer {
    fn start(hz: u32) -> SampleTimer {
        let period_ns = (1_000_000_000 / u64::from(hz.max(1))).max(1000);
        let ts = libc::timespec {
            tv_sec: (period_ns / 1_000_000_000) as _,
            tv_nsec: (period_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: a zeroed sigevent is a valid value to fill in.
        let mut sev: libc::sigevent = unsafe { core::mem::zeroed() };
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = libc::SIGPROF;
        // SAFETY: gettid has no preconditions.
        sev.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut id: libc::timer_t = core::ptr::null_mut();
        // SAFETY: valid pointers to a sigevent and a timer id.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut id) } == 0 {
            let its = libc::itimerspec {
                it_interval: ts,
                it_value: ts,
            };
            // SAFETY: `id` was just created; valid itimerspec pointer.
            unsafe { libc::timer_settime(id, 0, &its, core::ptr::null_mut()) };
            return SampleTimer::Posix(id);
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: (period_ns / 1000).min(999_999) as _,
        };
        let it = libc::itimerval {
            it_interval: tv,
            it_value: tv,
        };
        // SAFETY: a zeroed itimerval is valid.
        let mut old: libc::itimerval = unsafe { core::mem::zeroed() };
        // SAFETY: valid itimerval pointers.
        unsafe { libc::setitimer(libc::ITIMER_PROF, &it, &mut old) };
        SampleTimer::Itimer(old)
    }

    /// Disarms the timer (restoring a previous `ITIMER_PROF`) and says which clock it was.
    fn stop(self) -> &'static str {
        match self {
            SampleTimer::Posix(id) => {
                // SAFETY: `id` is our timer; deleting it disarms it.
                unsafe { libc::timer_delete(id) };
                "timer_create(CLOCK_MONOTONIC)"
            }
            SampleTimer::Itimer(old) => {
                // SAFETY: restores the previous timer; valid pointer.
                unsafe { libc::setitimer(libc::ITIMER_PROF, &old, core::ptr::null_mut()) };
                "setitimer(ITIMER_PROF)"
            }
        }
    }
}

/// A built profiler workload: the 64 MiB shared file mapping.
#[derive(Debug)]
pub struct ProfilerSetup {
    cfg: ProfilerConfig,
    region: Region,
    fs: String,
    /// The mode whose steady state the file is in (after a run in that mode).
    steady: Option<Mode>,
}

impl ProfilerSetup {
    /// Creates, fills and maps the file in `dir`.
    pub fn new(cfg: ProfilerConfig, dir: &Path) -> io::Result<ProfilerSetup> {
        let ps = addrprobe::range::page_size();
        let chunk = if cfg.fill_chunk == 0 {
            ps
        } else {
            cfg.fill_chunk
        };
        let region = Region::shared_file(dir, "profiler", cfg.file_bytes, chunk)?;
        Ok(ProfilerSetup {
            cfg,
            region,
            fs: FsKind::of(dir)?.name(),
            steady: None,
        })
    }

    /// Writes one word into every page of the mapping.
    fn touch_all(&self) {
        let ps = addrprobe::range::page_size();
        for page in (0..self.region.len()).step_by(ps) {
            // SAFETY: inside our read-write shared mapping.
            unsafe {
                core::ptr::write_volatile((self.region.addr() + page) as *mut u64, page as u64)
            };
        }
    }

    /// The application loop alone: `ops` record stores into random pages with
    /// `work_per_op` integer work between them, publishing each record's address in
    /// `recent`. Returns a value that depends on all the work (so it is not optimised away).
    fn app(&self, ops: u64, recent: &[AtomicUsize], seed: u64) -> u64 {
        let ps = addrprobe::range::page_size();
        let pages = (self.region.len() / ps) as u64;
        let mut x = seed | 1;
        let mut acc = 0u64;
        for op in 0..ops {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let page = (x % pages) as usize;
            let rec = self.region.addr() + page * ps + ((op as usize * 64) % ps);
            for w in 0..8 {
                // SAFETY: a 64-byte record inside our read-write shared mapping.
                unsafe { core::ptr::write_volatile((rec + w * 8) as *mut u64, acc ^ w as u64) };
            }
            if !recent.is_empty() {
                recent[op as usize % recent.len()].store(rec, Ordering::Relaxed);
            }
            for _ in 0..self.cfg.work_per_op {
                acc = core::hint::black_box(
                    acc.wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407),
                );
            }
        }
        acc
    }

    /// Runs the application for `cfg.ops` operations with the sampler probing in `mode`.
    /// Only one profiler run may be active in a process at a time.
    pub fn run(&mut self, mode: Mode) -> Result<ProfilerResult, String> {
        self.run_ops(mode, self.cfg.ops)
    }

    /// As [`run`](Self::run) with `ops` operations (criterion's `iter_custom` picks them).
    pub fn run_ops(&mut self, mode: Mode, ops: u64) -> Result<ProfilerResult, String> {
        if self.cfg.pointers_per_sample == 0
            || self.cfg.pointers_per_sample > MAX_POINTERS
            || self.cfg.hz == 0
        {
            return Err(format!(
                "pointers_per_sample must be 1..={MAX_POINTERS} and hz > 0"
            ));
        }
        if PROFILER_BUSY.swap(true, Ordering::Acquire) {
            return Err("another profiler run is active in this process".into());
        }
        let r = self.run_locked(mode, ops);
        PROFILER_BUSY.store(false, Ordering::Release);
        r
    }

    fn run_locked(&mut self, mode: Mode, ops: u64) -> Result<ProfilerResult, String> {
        let maps =
            FileMappings::overlapping(self.region.addr(), self.region.addr() + self.region.len())
                .map_err(|e| format!("finding the file mapping: {e}"))?;
        let probe = EmulatedMsync::new(mode, maps)
            .map_err(|e| e.to_string())?
            .with_wait_before(self.cfg.wait_before);
        // Each mode (and, inside a guest, each kernel) reaches its own steady state before
        // the window: every page is written once (so all are mapped and dirty), then the
        // application runs a quarter of `ops` (at least 500) with the sampler on, untimed, so
        // that whatever the msync does (nothing on a stock kernel; writeback of the whole file
        // with A alone, of the probed pages with A + B) has happened; writeback that this
        // started is waited for. The same steps run on the host and in a guest. A run in the
        // same mode as the previous one (criterion's repeated calls) starts where that one
        // ended, already in the steady state.
        let fresh = self.steady != Some(mode);
        self.steady = None;
        if fresh {
            self.touch_all();
        }
        let sampler = Box::new(Sampler {
            probe: &probe,
            k: self.cfg.pointers_per_sample,
            recent: [const { AtomicUsize::new(0) }; MAX_POINTERS],
            samples: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            probe_ns: AtomicU64::new(0),
        });
        let sampler_ptr = Box::into_raw(sampler);
        SAMPLER.store(sampler_ptr, Ordering::Release);

        // Install the handler; remember what was there (restored below).
        // SAFETY: zeroed sigaction is a valid "empty" value to fill in.
        let mut sa: libc::sigaction = unsafe { core::mem::zeroed() };
        sa.sa_sigaction = on_sigprof as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        // SAFETY: sa_mask is a valid sigset to empty.
        unsafe { libc::sigemptyset(&mut sa.sa_mask) };
        // SAFETY: as above.
        let mut old_sa: libc::sigaction = unsafe { core::mem::zeroed() };
        // SAFETY: valid pointers to two sigaction structs.
        if unsafe { libc::sigaction(libc::SIGPROF, &sa, &mut old_sa) } != 0 {
            SAMPLER.store(core::ptr::null_mut(), Ordering::Release);
            // SAFETY: the handler was not installed, nothing else has the pointer.
            drop(unsafe { Box::from_raw(sampler_ptr) });
            return Err(format!(
                "sigaction(SIGPROF): {}",
                io::Error::last_os_error()
            ));
        }
        // SAFETY: the sampler lives until it is freed below, after the handler is gone.
        let sampler_ref: &Sampler = unsafe { &*sampler_ptr };
        let recent = &sampler_ref.recent[..self.cfg.pointers_per_sample];
        if fresh {
            let warmup = (ops / 4).max(500);
            let timer = SampleTimer::start(self.cfg.hz);
            let acc0 = self.app(warmup, recent, 0x5851_f42d_4c95_7f2d ^ ops);
            timer.stop();
            core::hint::black_box(acc0);
        }
        self.region.wait_writeback();
        sampler_ref.samples.store(0, Ordering::SeqCst);
        sampler_ref.probes.store(0, Ordering::SeqCst);
        sampler_ref.failures.store(0, Ordering::SeqCst);
        sampler_ref.probe_ns.store(0, Ordering::SeqCst);

        let io = IoProbe::start(&self.region);
        let timer = SampleTimer::start(self.cfg.hz);
        let c0 = thread_cpu_ns();
        let t0 = now_ns();
        let acc = self.app(ops, recent, 0x9e37_79b9_7f4a_7c15 ^ ops);
        let elapsed = now_ns() - t0;
        let cpu = thread_cpu_ns() - c0;
        let sampler_clock = timer.stop();
        let io = io.finish(&self.region);
        core::hint::black_box(acc);

        // SAFETY: restores the previous disposition; valid pointer.
        unsafe { libc::sigaction(libc::SIGPROF, &old_sa, core::ptr::null_mut()) };
        SAMPLER.store(core::ptr::null_mut(), Ordering::SeqCst);
        // A SIGPROF delivered to another thread may still be inside the handler.
        while IN_HANDLER.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        // SAFETY: no handler can reach the sampler any more (null pointer, none in flight),
        // and it came from Box::into_raw above.
        let s = unsafe { Box::from_raw(sampler_ptr) };
        self.steady = Some(mode);
        let probes = s.probes.load(Ordering::Relaxed);
        let ns_per_probe = s.probe_ns.load(Ordering::Relaxed) as f64 / probes.max(1) as f64;
        Ok(ProfilerResult {
            workload: "profiler",
            sampler_clock,
            fs: self.fs.clone(),
            mode,
            ops,
            elapsed_ns: elapsed,
            ops_per_s: ops as f64 * 1e9 / elapsed.max(1) as f64,
            cpu_ns: cpu,
            ops_per_cpu_s: ops as f64 * 1e9 / cpu.max(1) as f64,
            samples: s.samples.load(Ordering::Relaxed),
            probes,
            probe_failures: s.failures.load(Ordering::Relaxed),
            ns_per_probe,
            ns_per_probe_range: (ns_per_probe, ns_per_probe),
            rounds: 1,
            io,
        })
    }
}

/// Builds [`ProfilerSetup`] and runs `rounds` rounds of every mode, interleaved. Returns one
/// result per mode: medians over the rounds for the probe cost and the throughput, sums for
/// counts, time and I/O (so bytes per second are over the whole time).
pub fn profile(
    cfg: ProfilerConfig,
    dir: &Path,
    modes: &[Mode],
    rounds: usize,
) -> Result<Vec<ProfilerResult>, String> {
    let mut setup = ProfilerSetup::new(cfg, dir)
        .map_err(|e| format!("building the profiler workload in {}: {e}", dir.display()))?;
    let mut per_mode: Vec<Vec<ProfilerResult>> = modes.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds.max(1) {
        for (i, &m) in modes.iter().enumerate() {
            per_mode[i].push(setup.run(m)?);
        }
    }
    Ok(per_mode
        .into_iter()
        .map(|v| {
            let mut out = v[0].clone();
            out.rounds = v.len();
            out.ops = v.iter().map(|r| r.ops).sum();
            out.elapsed_ns = v.iter().map(|r| r.elapsed_ns).sum();
            out.ops_per_s = median_f(v.iter().map(|r| r.ops_per_s).collect());
            out.cpu_ns = v.iter().map(|r| r.cpu_ns).sum();
            out.ops_per_cpu_s = median_f(v.iter().map(|r| r.ops_per_cpu_s).collect());
            out.samples = v.iter().map(|r| r.samples).sum();
            out.probes = v.iter().map(|r| r.probes).sum();
            out.probe_failures = v.iter().map(|r| r.probe_failures).sum();
            out.ns_per_probe = median_f(v.iter().map(|r| r.ns_per_probe).collect());
            out.ns_per_probe_range = range_f(v.iter().map(|r| r.ns_per_probe));
            out.io = sum_io(v.iter().map(|r| r.io));
            out
        })
        .collect())
}
