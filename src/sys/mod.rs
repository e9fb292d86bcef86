//! The ground floor: small async-signal-safe helpers over raw syscalls. Depends on nothing
//! else in the crate.
//!
//! - [`errno`]: keeping the caller's `errno` ([`ErrnoGuard`]) and decoding syscall results
//!   ([`last_errno`], [`check`]).
//! - [`fd`]: the crate's descriptors: where they sit ([`move_high`]), the identity check
//!   before each use ([`identity`], [`SharedFd`]) and the window that remains.
//! - [`raw`]: one thin function per syscall of that bookkeeping, with the safety argument
//!   written once.
//!
//! What must be this process's own after a `fork` (the per-process page) is one floor up, in
//! `backend::process`: it holds the state of the pipe pool.

pub(crate) mod errno;
pub(crate) mod fd;
pub(crate) mod raw;

pub(crate) use errno::{ErrnoGuard, check, last_errno};
pub(crate) use fd::{FD_REPLACED, SharedFd, identity, move_high};
pub(crate) use raw::close;
