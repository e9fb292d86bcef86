//! Architectures without an exception table yet: `SignalGuard` is unavailable, and no
//! [`Installed`] proof can exist, so no guarded load is ever made.

use crate::{Backend, Error};

/// Never made here: a guarded load needs this architecture's `asm!` and its table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Installed(core::convert::Infallible);

/// This architecture has no guarded load yet.
pub(crate) fn install() -> Result<Installed, Error> {
    Err(Error::Unavailable {
        backend: Backend::SignalGuard,
        errno: Some(libc::ENOSYS),
        reason: "no guarded load is implemented for this architecture",
    })
}

#[inline(always)]
pub(crate) fn load_u8(proof: Installed, _addr: usize) -> Option<u8> {
    match proof.0 {}
}

#[inline(always)]
pub(crate) fn load_u16(proof: Installed, _addr: usize) -> Option<u16> {
    match proof.0 {}
}

#[inline(always)]
pub(crate) fn load_u32(proof: Installed, _addr: usize) -> Option<u32> {
    match proof.0 {}
}

#[inline(always)]
pub(crate) fn load_u64(proof: Installed, _addr: usize) -> Option<u64> {
    match proof.0 {}
}

#[inline(always)]
pub(crate) fn load_u64_pair(proof: Installed, _addr: usize) -> Option<[u64; 2]> {
    match proof.0 {}
}
