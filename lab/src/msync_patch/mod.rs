//! Benchmark-only emulation of the 2012 `msync(MS_ASYNC)` writeback patch, and the three
//! workloads that measure what it would cost unwinders and profilers.
//!
//! This module exists for the study in `docs/msync-patch.md`. It is **not** a probing API:
//! nothing here changes what [`Prober`] or [`Backend::Msync`] do. It lives in the lab, which
//! is not published, and is always built there (`addrprobe msync-patch`,
//! `cargo bench --bench msync_patch`).
//!
//! # What is emulated
//!
//! In June 2012 Paolo Bonzini proposed two msync changes: **(A)** `MS_ASYNC` would start
//! writeback of the dirty pages at once (since about 2.6.19 it does no I/O at all), and
//! **(B)** msync would honour its `[start, len)` range instead of the whole file. (A) was
//! never merged; the range part landed for `MS_SYNC` only, in 3.16. The three [`Mode`]s are:
//!
//! - [`Mode::Stock`]: the crate's own msync backend, as on any kernel since 2.6.19;
//! - [`Mode::AAlone`]: the msync, then `sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)` —
//!   start writeback of the *whole file* — for every `MAP_SHARED` file mapping that the
//!   probed range touches;
//! - [`Mode::AB`]: the msync, then `sync_file_range(SYNC_FILE_RANGE_WRITE)` over only the
//!   file offsets that the probed pages map.
//!
//! `SYNC_FILE_RANGE_WRITE` starts writeback of dirty pages that are not already under
//! writeback and does not wait for it (`WB_SYNC_NONE`, like `filemap_flush`). A patch that
//! calls `filemap_fdatawrite_range`, as the 2012 one did, uses `WB_SYNC_ALL`, which also
//! waits for pages already under writeback and writes them again;
//! [`EmulatedMsync::with_wait_before`] approximates that by adding
//! `SYNC_FILE_RANGE_WAIT_BEFORE` (wait for writeback in flight, then start it; still no wait
//! for the new I/O). The real-kernel measurement (`kernels/`) has both variants.
//!
//! # How the file behind an address is found
//!
//! [`FileMappings`] reads `/proc/self/maps` once, keeps the shared file-backed mappings, and
//! opens each one's file through `/proc/self/map_files/<start>-<end>` (falling back to the
//! path in `maps`, accepted only if its device and inode match). That happens outside the
//! timed path; [`EmulatedMsync::check`] then only scans the cached table and makes the
//! syscalls, and stays async-signal-safe: no allocation, no locks, `errno` preserved. The
//! table is a snapshot: map everything you will probe before building it.

pub mod workloads;

use core::fmt;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use addrprobe::range;
use addrprobe::{Backend, Error, Prober};

/// Which msync behaviour to emulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Today's kernels: `MS_ASYNC` does no I/O.
    Stock,
    /// Patch (A) as posted in 2012: writeback of the whole file behind every shared file
    /// mapping the range touches.
    AAlone,
    /// Patches (A) and (B): writeback of only the file offsets that the range covers.
    AB,
}

impl Mode {
    /// All three modes, stock first.
    pub const ALL: [Mode; 3] = [Mode::Stock, Mode::AAlone, Mode::AB];

    /// Short machine-readable name: `stock`, `a-alone`, `a+b`.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Stock => "stock",
            Mode::AAlone => "a-alone",
            Mode::AB => "a+b",
        }
    }

    /// Parses [`name`](Self::name).
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == s)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a mapping's file was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenedVia {
    /// `/proc/self/map_files/<start>-<end>` (needs `CAP_CHECKPOINT_RESTORE` or
    /// `CAP_SYS_ADMIN` on most kernels).
    MapFiles,
    /// The path shown in `/proc/self/maps`, accepted because device and inode matched.
    Path,
}

/// One `MAP_SHARED` file-backed mapping, with its file open.
#[derive(Debug)]
pub struct FileMapping {
    /// First byte of the mapping.
    pub start: usize,
    /// One past its last byte.
    pub end: usize,
    /// File offset that `start` maps.
    pub offset: u64,
    /// Device of the file, as `st_dev`.
    pub dev: u64,
    /// Inode of the file.
    pub ino: u64,
    /// The path `/proc/self/maps` shows (may end in ` (deleted)`).
    pub path: String,
    /// How [`fd`](Self::fd) was opened.
    pub opened_via: OpenedVia,
    fd: OwnedFd,
}

impl FileMapping {
    /// The descriptor of the mapping's file (read-only; `sync_file_range` needs no more).
    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// The shared file mappings of this process, each file opened once.
#[derive(Debug, Default)]
pub struct FileMappings {
    maps: Vec<FileMapping>,
}

/// One parsed line of `/proc/self/maps`.
#[derive(Debug, PartialEq, Eq)]
struct MapsLine<'a> {
    start: usize,
    end: usize,
    shared: bool,
    offset: u64,
    dev_major: u32,
    dev_minor: u32,
    ino: u64,
    path: &'a str,
}

fn parse_maps_line(line: &str) -> Option<MapsLine<'_>> {
    let mut it = line.splitn(6, ' ');
    let (range, perms, offset, dev, ino) =
        (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
    let path = it.next().unwrap_or("").trim_start();
    let (start, end) = range.split_once('-')?;
    let (maj, min) = dev.split_once(':')?;
    Some(MapsLine {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        shared: perms.as_bytes().get(3) == Some(&b's'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev_major: u32::from_str_radix(maj, 16).ok()?,
        dev_minor: u32::from_str_radix(min, 16).ok()?,
        ino: ino.parse().ok()?,
        path,
    })
}

fn open_ro(path: &str) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated path; open has no other preconditions.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor we just opened and own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Why one scan of `/proc/self/maps` failed.
enum Scan {
    /// A listed mapping was gone when its file was opened: scan again.
    Vanished(io::Error),
    /// Anything else.
    Failed(io::Error),
}

impl FileMappings {
    /// Every `MAP_SHARED` file-backed mapping that overlaps `[start, end)`, files opened.
    ///
    /// Mappings whose file cannot be opened (neither through `map_files` nor a path whose
    /// device and inode match) are an error: the emulation would otherwise silently skip
    /// the writeback it is meant to measure. A mapping that another thread unmapped between
    /// the read of `/proc/self/maps` and the open (its `map_files` entry is gone) makes the
    /// scan start again, up to four times.
    pub fn overlapping(start: usize, end: usize) -> io::Result<FileMappings> {
        let mut tries = 0;
        loop {
            match Self::scan(start, end) {
                Err(Scan::Vanished(_)) if tries < 3 => tries += 1,
                Err(Scan::Vanished(e) | Scan::Failed(e)) => return Err(e),
                Ok(maps) => return Ok(maps),
            }
        }
    }

    fn scan(start: usize, end: usize) -> Result<FileMappings, Scan> {
        let text = std::fs::read_to_string("/proc/self/maps").map_err(Scan::Failed)?;
        let mut maps = Vec::new();
        for line in text.lines() {
            let Some(l) = parse_maps_line(line) else {
                continue;
            };
            if !l.shared || l.ino == 0 || l.end <= start || l.start >= end {
                continue;
            }
            let want_dev = libc::makedev(l.dev_major, l.dev_minor);
            let via_map_files = open_ro(&format!("/proc/self/map_files/{:x}-{:x}", l.start, l.end));
            let (fd, via) = match via_map_files {
                Ok(fd) => (fd, OpenedVia::MapFiles),
                Err(e1) => {
                    let path = l.path.strip_suffix(" (deleted)").unwrap_or(l.path);
                    let fd = open_ro(path).map_err(|e2| {
                        let e = io::Error::other(format!(
                            "cannot open the file behind {:#x}-{:#x}: map_files: {e1}; {path:?}: {e2}",
                            l.start, l.end
                        ));
                        if e1.raw_os_error() == Some(libc::ENOENT) {
                            Scan::Vanished(e)
                        } else {
                            Scan::Failed(e)
                        }
                    })?;
                    (fd, OpenedVia::Path)
                }
            };
            let (dev, ino) = crate::sys::identity(fd.as_raw_fd())
                .map_err(|e| Scan::Failed(io::Error::from_raw_os_error(e)))?;
            if ino != l.ino || dev != want_dev {
                return Err(Scan::Failed(io::Error::other(format!(
                    "the file opened for {:#x}-{:#x} is not the mapped one (dev/inode {dev:#x}/{ino}, maps says {want_dev:#x}/{})",
                    l.start, l.end, l.ino
                ))));
            }
            maps.push(FileMapping {
                start: l.start,
                end: l.end,
                offset: l.offset,
                dev,
                ino,
                path: l.path.to_owned(),
                opened_via: via,
                fd,
            });
        }
        maps.sort_by_key(|m| m.start);
        Ok(FileMappings { maps })
    }

    /// Every `MAP_SHARED` file-backed mapping of the process.
    pub fn all() -> io::Result<FileMappings> {
        Self::overlapping(0, usize::MAX)
    }

    /// The cached mappings, by address.
    pub fn iter(&self) -> impl Iterator<Item = &FileMapping> {
        self.maps.iter()
    }

    /// Number of cached mappings.
    pub fn len(&self) -> usize {
        self.maps.len()
    }

    /// Whether no mapping is cached.
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }
}

/// A msync probe that behaves like a stock or an emulated patched kernel.
///
/// [`check`](Self::check) answers exactly as [`Backend::Msync`] does (it calls it) and then,
/// in the patched modes, starts the writeback that the patched kernel would have started.
#[derive(Debug)]
pub struct EmulatedMsync {
    prober: Prober,
    mode: Mode,
    maps: FileMappings,
    flags: libc::c_uint,
}

impl EmulatedMsync {
    /// A probe in `mode` that knows the shared file mappings in `maps`. Runs the msync
    /// backend's self-test first ([`Prober::new`]), so it fails where the backend would.
    pub fn new(mode: Mode, maps: FileMappings) -> Result<EmulatedMsync, Error> {
        Ok(EmulatedMsync {
            prober: Prober::new(Backend::Msync)?,
            mode,
            maps,
            flags: libc::SYNC_FILE_RANGE_WRITE,
        })
    }

    /// With `true`, the patched modes wait for writeback already in flight on the range
    /// before starting it (`SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE`): the
    /// userspace approximation of `WB_SYNC_ALL` (`filemap_fdatawrite_range`). Default
    /// `false`: `WB_SYNC_NONE`, pages under writeback are skipped.
    pub fn with_wait_before(mut self, wait: bool) -> Self {
        self.flags = if wait {
            libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE
        } else {
            libc::SYNC_FILE_RANGE_WRITE
        };
        self
    }

    /// Whether [`with_wait_before`](Self::with_wait_before) is on.
    pub fn waits_before(&self) -> bool {
        self.flags & libc::SYNC_FILE_RANGE_WAIT_BEFORE != 0
    }

    /// The emulated behaviour.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The cached file mappings.
    pub fn mappings(&self) -> &FileMappings {
        &self.maps
    }

    /// `msync(MS_ASYNC)` over the pages of `[addr, addr + len)`, then the emulated writeback.
    ///
    /// Answers as [`Prober::check`] with [`Backend::Msync`] does (`Ok(true)`: every page is
    /// mapped). A `sync_file_range` failure is [`Error::Failed`]. Async-signal-safe,
    /// allocation-free and lock-free; `errno` is preserved.
    #[inline]
    pub fn check(&self, addr: usize, len: usize) -> Result<bool, Error> {
        // The answer is the msync backend's own: `Prober::check` validates the range, makes
        // the one msync and preserves errno.
        let answer = self.prober.check(addr, len)?;
        if self.mode == Mode::Stock {
            return Ok(answer);
        }
        let Some((lo, hi)) = msync_pages(addr, len) else {
            // Empty, or outside user space: no msync was made, so the patched kernel would
            // start no writeback either.
            return Ok(answer);
        };
        let _errno = crate::sys::ErrnoGuard::new();
        for m in self.maps.maps.iter() {
            if m.start >= hi {
                break;
            }
            if m.end <= lo {
                continue;
            }
            let (off, nbytes) = match self.mode {
                // Whole file: offset 0, nbytes 0 means "to the end of the file".
                Mode::AAlone => (0u64, 0u64),
                _ => {
                    let s = lo.max(m.start);
                    let e = hi.min(m.end);
                    (m.offset + (s - m.start) as u64, (e - s) as u64)
                }
            };
            // SAFETY: sync_file_range only takes integers; the descriptor is ours and open
            // for the life of `self`.
            let ret = unsafe {
                libc::sync_file_range(
                    m.fd.as_raw_fd(),
                    off as libc::off64_t,
                    nbytes as libc::off64_t,
                    self.flags,
                )
            };
            if ret != 0 {
                return Err(Error::Failed {
                    backend: Backend::Msync,
                    errno: crate::sys::last_errno(),
                    during: "sync_file_range of the msync-patch emulation",
                });
            }
        }
        Ok(answer)
    }
}

/// The pages `msync(MS_ASYNC)` looks at for `[addr, addr + len)`: `[first page, end of the
/// last page)`, or `None` when [`Prober::check`] makes no syscall (empty range, or a range
/// that reaches [`USER_SPACE_LIMIT`](range::USER_SPACE_LIMIT) or wraps).
fn msync_pages(addr: usize, len: usize) -> Option<(usize, usize)> {
    let last = addr.checked_add(len)?.checked_sub(1)?;
    if len == 0 || last >= range::USER_SPACE_LIMIT {
        return None;
    }
    let mask = !(range::page_size() - 1);
    Some((addr & mask, (last & mask) + range::page_size()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let l = parse_maps_line(
            "7f0000000000-7f0000004000 rw-s 00002000 fd:01 1234                       /tmp/x (deleted)",
        )
        .unwrap();
        assert_eq!(
            l,
            MapsLine {
                start: 0x7f00_0000_0000,
                end: 0x7f00_0000_4000,
                shared: true,
                offset: 0x2000,
                dev_major: 0xfd,
                dev_minor: 1,
                ino: 1234,
                path: "/tmp/x (deleted)",
            }
        );
        let anon = parse_maps_line("55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0").unwrap();
        assert!(!anon.shared);
        assert_eq!(anon.path, "");
        assert!(parse_maps_line("garbage").is_none());
    }

    #[test]
    fn msync_pages_are_the_whole_pages_of_the_range() {
        let ps = range::page_size();
        assert_eq!(msync_pages(ps + 5, 1), Some((ps, 2 * ps)));
        assert_eq!(msync_pages(2 * ps - 4, 8), Some((ps, 3 * ps)));
        assert_eq!(msync_pages(ps, ps), Some((ps, 2 * ps)));
        assert_eq!(msync_pages(ps, 0), None);
        assert_eq!(msync_pages(usize::MAX - 8, 8), None);
        assert_eq!(msync_pages(ps, usize::MAX), None);
    }
}
