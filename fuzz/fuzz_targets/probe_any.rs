//! `probe_any`: an arbitrary backend, address and length. Nothing may crash, hang or panic,
//! `errno` must survive every probe, and for addresses inside a fixture map built at start
//! every answer must match the constructed truth under the backend's guarantee.
//!
//! The map (8 pages, in a quiet part of the address space so that its hole stays a hole):
//!
//! | page | what | mapped | region readable | readable |
//! | --- | --- | --- | --- | --- |
//! | 0, 1 | anonymous, pattern | yes | yes | yes |
//! | 2 | `PROT_NONE` | yes | no | no |
//! | 3 | unmapped hole | no | no | no |
//! | 4 | anonymous, pattern | yes | yes | yes |
//! | 5 | `MAP_SHARED` memfd page, pattern | yes | yes | yes |
//! | 6 | the same mapping beyond the memfd's end (SIGBUS) | yes | yes | no |
//! | 7 | `PROT_WRITE` only, pattern | yes | no | yes on x86_64 (the hardware cannot refuse reads) |
//!
//! Input: byte 0 picks the backend, byte 1 the mode (below 192: inside the map), then
//! offset and length (2 bytes each inside the map, 8 bytes each outside it), then one byte
//! choosing `check` or `read`.

#![no_main]

use std::sync::OnceLock;

use addrprobe::range::{Classified, classify};
use addrprobe::{Backend, Error, Guarantee, Prober};
use addrprobe_lab::fixtures::{WRITE_ONLY, known_false_negative};
use libfuzzer_sys::fuzz_target;

const PAGES: usize = 8;
/// Longest probe outside the map, in pages: keeps every input fast.
const MAX_WILD_PAGES: usize = 64;

#[derive(Clone, Copy)]
struct Truth {
    mapped: bool,
    region: bool,
    readable: bool,
}

const R: Truth = Truth {
    mapped: true,
    region: true,
    readable: true,
};

struct World {
    base: usize,
    ps: usize,
    truth: [Truth; PAGES],
    /// The bytes of every page (meaningful where readable).
    bytes: Vec<u8>,
    probers: Vec<Prober>,
    buf: std::sync::Mutex<Vec<u8>>,
}

fn pattern(page: usize, i: usize) -> u8 {
    ((i as u8).wrapping_mul(29) ^ (page as u8).wrapping_mul(83)).wrapping_add(3) | 1
}

/// The crate's quiet region (`fixtures::map_quiet`): below the program, out of the way of the
/// top-down allocator that libFuzzer's own allocations use.
fn map_quiet(len: usize) -> usize {
    // Where ASan reserves the quiet region for its shadow, this falls back to a kernel-chosen
    // address; the hole is then re-checked against /proc/self/maps before a mismatch counts.
    addrprobe_lab::fixtures::map_quiet(
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    )
    .expect("mmap of the fixture map")
}

fn build() -> World {
    let ps = addrprobe::range::page_size();
    let base = map_quiet(PAGES * ps);
    let page = |i: usize| base + i * ps;
    let mut bytes = vec![0u8; PAGES * ps];
    for (o, b) in bytes.iter_mut().enumerate() {
        *b = pattern(o / ps, o % ps);
    }
    // SAFETY: everything below acts on our own fresh mapping (and memfd) only.
    unsafe {
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), base as *mut u8, bytes.len());
        assert_eq!(libc::mprotect(page(2) as *mut _, ps, libc::PROT_NONE), 0);
        assert_eq!(libc::munmap(page(3) as *mut _, ps), 0);
        let fd = libc::memfd_create(c"probe_any".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0);
        let n = libc::pwrite(fd, bytes[5 * ps..].as_ptr().cast(), ps, 0);
        assert_eq!(n as usize, ps);
        let p = libc::mmap(
            page(5) as *mut _,
            2 * ps,
            libc::PROT_READ,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd,
            0,
        );
        assert_eq!(p as usize, page(5));
        libc::close(fd);
        assert_eq!(libc::mprotect(page(7) as *mut _, ps, libc::PROT_WRITE), 0);
    }
    let none = Truth {
        mapped: true,
        region: false,
        readable: false,
    };
    let hole = Truth {
        mapped: false,
        region: false,
        readable: false,
    };
    let beyond_eof = Truth {
        mapped: true,
        region: true,
        readable: false,
    };
    let write_only = Truth {
        mapped: true,
        region: false,
        readable: cfg!(target_arch = "x86_64"),
    };
    let mut probers = Vec::new();
    for b in Backend::ALL {
        match Prober::new(b) {
            Ok(p) => probers.push(p),
            Err(e) => eprintln!("probe_any: {b} is unavailable here: {e}"),
        }
    }
    World {
        base,
        ps,
        truth: [R, R, none, hole, R, R, beyond_eof, write_only],
        bytes,
        probers,
        buf: std::sync::Mutex::new(vec![0u8; MAX_WILD_PAGES * ps]),
    }
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(build)
}

fn errno() -> i32 {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() }
}

fn set_errno(v: i32) {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() = v }
}

/// Whether page 3 is still a hole, according to the kernel's own /proc/self/maps.
fn hole_still_unmapped(w: &World) -> bool {
    let (lo, hi) = (w.base + 3 * w.ps, w.base + 4 * w.ps);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    !maps.lines().any(|l| {
        let r = l.split_whitespace().next().unwrap_or("");
        let (a, b) = r.split_once('-').unwrap_or(("0", "0"));
        let (a, b) = (
            usize::from_str_radix(a, 16).unwrap_or(0),
            usize::from_str_radix(b, 16).unwrap_or(0),
        );
        a < hi && lo < b
    })
}

fn u_at(d: &[u8], i: usize, n: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, v) in b.iter_mut().enumerate().take(n) {
        *v = d.get(i + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    if w.probers.is_empty() {
        return;
    }
    let p = &w.probers[data.first().copied().unwrap_or(0) as usize % w.probers.len()];
    let backend = p.backend();
    let mode = data.get(1).copied().unwrap_or(0);
    let inside = mode < 192;
    let (addr, len, op) = if inside {
        let span = PAGES * w.ps;
        let off = u_at(data, 2, 2) as usize % span;
        let len = (u_at(data, 4, 2) as usize % (3 * w.ps)).min(span - off);
        (w.base + off, len, data.get(6).copied().unwrap_or(0))
    } else {
        let addr = u_at(data, 2, 8) as usize;
        let mut len = u_at(data, 10, 8) as usize;
        // Keep wild probes short, except lengths that classify answers without probing.
        if let Ok(Classified::Probe(r)) = classify(addr, len, w.ps)
            && r.pages() > MAX_WILD_PAGES
        {
            len = (mode as usize % 4 + 1) * w.ps / 2;
        }
        (addr, len, data.get(18).copied().unwrap_or(0))
    };
    let want_read = op & 1 == 1 && p.guarantee() == Guarantee::Readable;

    let mut buf = w.buf.lock().unwrap();
    let can_copy = len <= buf.len();
    set_errno(0x1357);
    let got = if want_read && can_copy {
        p.read(addr, &mut buf[..len])
    } else {
        p.check(addr, len)
    };
    assert_eq!(errno(), 0x1357, "{backend} changed errno");

    // Rules that hold for every address.
    match classify(addr, len, w.ps) {
        Ok(Classified::Empty) => assert_eq!(got, Ok(true), "{backend}: len 0"),
        Ok(Classified::OutsideUserSpace) => assert_eq!(
            got,
            Ok(false),
            "{backend}: {addr:#x}+{len:#x} outside user space"
        ),
        Err(_) => assert!(
            matches!(got, Err(Error::InvalidRange { .. })),
            "{backend}: {addr:#x}+{len:#x} wraps: {got:?}"
        ),
        Ok(Classified::Probe(_)) => {}
    }
    if !inside || len == 0 {
        return;
    }

    // Inside the map: the truth for the pages the range touches.
    let first = (addr - w.base) / w.ps;
    let last = (addr + len - 1 - w.base) / w.ps;
    let pages = first..=last;
    let all = |f: fn(&Truth) -> bool| pages.clone().all(|i| f(&w.truth[i]));
    let (mapped, region, readable) = (all(|t| t.mapped), all(|t| t.region), all(|t| t.readable));
    let answer = match got {
        Ok(a) => a,
        Err(e) => {
            panic!("{backend}: {addr:#x}+{len:#x} (pages {first}..={last}) gave an error: {e}")
        }
    };
    let want = match p.guarantee() {
        Guarantee::Mapped => Some(mapped),
        Guarantee::RegionReadable => Some(region),
        Guarantee::Readable => Some(readable),
        _ => None,
    };
    let touches_hole = pages.contains(&3);
    match want {
        Some(want) if want != answer => {
            let known = !answer
                && pages.contains(&7)
                && known_false_negative(backend, WRITE_ONLY).is_some();
            if !known {
                if touches_hole && !hole_still_unmapped(w) {
                    eprintln!("probe_any: the hole was mapped by someone else; skipping");
                    return;
                }
                panic!(
                    "{backend}: {addr:#x}+{len:#x} (pages {first}..={last}) answered {answer}, the truth is {want}"
                );
            }
        }
        None if !answer && readable => {
            panic!("{backend} (unsound) said no to readable pages {first}..={last}")
        }
        _ => {}
    }
    if want_read && can_copy && answer {
        let off = addr - w.base;
        assert!(
            buf[..len] == w.bytes[off..off + len],
            "{backend}: read returned other bytes at +{off:#x}"
        );
    }
});
