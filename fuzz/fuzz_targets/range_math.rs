//! `range_math`: the crate's address arithmetic (`addrprobe::range`) against a naive
//! reference model computed in `u128`, for any address, length and power-of-two page size.
//!
//! Input: 8 bytes address, 8 bytes length, 1 byte page-size shift, 2 bytes window width,
//! 1 byte mode (bit 0: shrink the length so that the page walk is compared in full).

#![no_main]

use addrprobe::range::{Classified, USER_SPACE_LIMIT, classify, window_in_page};
use libfuzzer_sys::fuzz_target;

/// Page walks longer than this are compared on their first pages only.
const FULL_WALK: u128 = 4096;

fn u64_at(d: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, v) in b.iter_mut().enumerate() {
        *v = d.get(i + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let addr = u64_at(data, 0) as usize;
    let mut len = u64_at(data, 8) as usize;
    let shift = 12 + (data.get(16).copied().unwrap_or(0) % 10) as u32; // 4 KiB .. 2 MiB
    let ps = 1usize << shift;
    let width = 1
        + (u16::from_le_bytes([
            data.get(17).copied().unwrap_or(0),
            data.get(18).copied().unwrap_or(0),
        ]) as usize)
            % ps.min(4096);
    let mode = data.get(19).copied().unwrap_or(0);
    if mode & 1 != 0 {
        len %= 64 * ps;
    }

    // A fixed-width window around any point (any address at all) stays in the point's page.
    let check_window = |point: usize| {
        let w = window_in_page(point, width, ps) as u128;
        let (pt, page) = (point as u128, point as u128 / ps as u128 * ps as u128);
        assert!(
            w >= page && w + width as u128 <= page + ps as u128,
            "window in page"
        );
        assert!(
            w <= pt && pt < w + width as u128,
            "window contains the point"
        );
    };
    check_window(addr);

    // The reference model.
    let (a, l, p) = (addr as u128, len as u128, ps as u128);
    let got = classify(addr, len, ps);
    if l == 0 {
        assert_eq!(got, Ok(Classified::Empty));
        return;
    }
    let last = a + l - 1;
    // The end `addr + len` must be representable (so the very last byte of the address space
    // cannot be part of a valid range).
    if a + l > usize::MAX as u128 {
        assert!(
            matches!(got, Err(addrprobe::Error::InvalidRange { .. })),
            "{addr:#x}+{len:#x}: {got:?}"
        );
        return;
    }
    if last >= USER_SPACE_LIMIT as u128 {
        assert_eq!(got, Ok(Classified::OutsideUserSpace), "{addr:#x}+{len:#x}");
        return;
    }
    let Ok(Classified::Probe(r)) = got else {
        panic!("{addr:#x}+{len:#x} with page size {ps:#x}: {got:?}");
    };
    let first_page = a / p * p;
    let last_page = last / p * p;
    let pages = (last_page - first_page) / p + 1;
    assert_eq!((r.addr() as u128, r.last() as u128), (a, last));
    assert_eq!(
        (r.first_page() as u128, r.last_page() as u128),
        (first_page, last_page)
    );
    assert_eq!(r.page_size(), ps);
    assert_eq!(r.pages() as u128, pages);
    assert_eq!(r.span() as u128, last_page - first_page + p);

    // Probe points: `addr`, then the start of every later page.
    let expected_point = |k: u128| if k == 0 { a } else { first_page + k * p };
    let limit = pages.min(FULL_WALK);
    let mut n = 0u128;
    for (k, point) in r.probe_points().take(limit as usize).enumerate() {
        assert_eq!(point as u128, expected_point(k as u128), "probe point {k}");
        n += 1;
    }
    assert_eq!(n, limit);
    if pages <= FULL_WALK {
        assert_eq!(
            r.probe_points().count() as u128,
            pages,
            "one probe point per page"
        );
    }

    // Page chunks: contiguous, each inside one page, covering the range exactly.
    let mut next = a;
    let mut total = 0u128;
    let mut count = 0u128;
    for (start, clen) in r.page_chunks().take(limit as usize) {
        let (s, c) = (start as u128, clen as u128);
        assert_eq!(s, next, "chunks are contiguous");
        assert!(
            c >= 1 && s / p == (s + c - 1) / p,
            "chunk {s:#x}+{c:#x} inside one page"
        );
        next = s + c;
        total += c;
        count += 1;
    }
    if pages <= FULL_WALK {
        assert_eq!(count, pages);
        assert_eq!(total, l, "chunks cover exactly `len` bytes");
        assert_eq!(next, last + 1);
    }

    for point in [r.last(), (addr / 2).saturating_add(r.last() / 2)] {
        check_window(point);
    }
});
