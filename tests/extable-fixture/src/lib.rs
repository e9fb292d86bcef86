//! The library side: a `cdylib` with its own copy of addrprobe, hence its own exception
//! table, whose loads its own handler must resolve (`tests/extable.rs`).

use std::sync::OnceLock;

use addrprobe::{Backend, Error, Prober};

static PROBER: OnceLock<Result<Prober, Error>> = OnceLock::new();

/// Probes with this library's SignalGuard prober (created at the first call): `valid` holds
/// `value` and is followed by the PROT_NONE page `prot_none`; `beyond_eof` is a page of a
/// shared mapping beyond the end of its file. Returns 0 if every answer is right, else a bit
/// per wrong answer; `u32::MAX` if the prober could not be created.
#[unsafe(no_mangle)]
pub extern "C" fn extable_fixture_probe(
    valid: usize,
    value: u64,
    prot_none: usize,
    beyond_eof: usize,
) -> u32 {
    let Ok(p) = PROBER.get_or_init(|| Prober::new(Backend::SignalGuard)) else {
        return u32::MAX;
    };
    let Some(g) = p.guarded() else {
        return u32::MAX - 1;
    };
    let mut buf = [0u8; 32];
    let answers = [
        p.check(valid, 8) == Ok(true),
        p.check(prot_none, 8) == Ok(false),
        p.check(beyond_eof, 8) == Ok(false),
        g.load_u64(valid) == Some(value),
        g.load_u64(prot_none).is_none(),
        g.load_u32(beyond_eof).is_none(),
        g.load_u8(prot_none - 1).is_some(),
        g.load_u64(prot_none - 4).is_none(),
        p.read(valid, &mut buf[..8]) == Ok(true) && buf[..8] == value.to_ne_bytes(),
        p.check(prot_none - 16, 32) == Ok(false),
        p.read(prot_none - 16, &mut buf) == Ok(false),
        p.check(0, 1) == Ok(false),
        g.load_u64_pair(valid).map(|[v, _]| v) == Some(value),
        g.load_u64_pair(prot_none - 8).is_none(),
        p.read(valid, &mut buf[..16]) == Ok(true) && buf[..8] == value.to_ne_bytes(),
    ];
    answers
        .iter()
        .enumerate()
        .fold(0, |wrong, (i, &ok)| if ok { wrong } else { wrong | 1 << i })
}

/// A stray byte load inside the library, not a probe: it must end as without the crate.
#[unsafe(no_mangle)]
pub extern "C" fn extable_fixture_stray_load(addr: usize) -> u8 {
    let v: u8;
    // SAFETY: not safe at all: this is the stray fault under test; the process is meant to die.
    unsafe {
        core::arch::asm!("mov {v}, byte ptr [{a}]", a = in(reg) addr, v = out(reg_byte) v, options(nostack, readonly))
    };
    v
}
