//! A Rust `dylib` that re-exports addrprobe and probes with it from its own code.

pub use addrprobe;

use addrprobe::Prober;

/// The three probes of an unreadable address made from the dylib's own code, and one of a
/// readable one: `(check(0, 1), guarded().load_u64(0), read(8, ..), check(readable, 8))`.
#[inline(never)]
pub fn probes_here(p: &Prober, readable: usize) -> (bool, bool, bool, bool) {
    let mut buf = [0u8; 8];
    (
        p.check(0, 1) == Ok(false),
        p.guarded().map(|g| g.load_u64(0)) == Some(None),
        p.read(8, &mut buf) == Ok(false),
        p.check(readable, 8) == Ok(true),
    )
}
