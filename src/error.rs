//! [`Error`]: everything that can go wrong. (The error of parsing a backend name,
//! [`UnknownBackend`](crate::UnknownBackend), lives beside the [`Backend`] it parses.)

use core::fmt;

use crate::backend_kind::Backend;

/// Everything that can go wrong. An error is never an answer: it never means "unreadable".
///
/// The type is `Copy` and holds no heap data, so probe paths can return it from a signal
/// handler.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The backend cannot work here: the kernel lacks the technique (`ENOSYS`, `ENOTTY`), a
    /// seccomp filter or policy forbids it (`EPERM`), the technique rejected its argument
    /// (`EINVAL`), a descriptor could not be opened (`EMFILE`), or a held descriptor was closed
    /// or replaced by the application.
    Unavailable {
        /// The backend.
        backend: Backend,
        /// The errno that showed it, if one did.
        errno: Option<i32>,
        /// What was attempted and why that makes the backend unusable.
        reason: &'static str,
    },
    /// The backend cannot perform this operation, e.g. [`Prober::read`](crate::Prober::read) on a backend whose
    /// guarantee is not [`Guarantee::Readable`](crate::Guarantee::Readable).
    Unsupported {
        /// The backend.
        backend: Backend,
        /// The operation and why it is refused.
        operation: &'static str,
    },
    /// `addr + len` overflows `usize`.
    InvalidRange {
        /// Start of the range.
        addr: usize,
        /// Its length.
        len: usize,
    },
    /// The technique answered with an errno that means neither yes, no nor unavailable
    /// (e.g. `ENOMEM` for the kernel's own allocation, `EAGAIN` that persisted).
    Failed {
        /// The backend.
        backend: Backend,
        /// The errno.
        errno: i32,
        /// The syscall that failed.
        during: &'static str,
    },
    /// [`Prober::new`](crate::Prober::new)'s self-test got an answer that contradicts the backend's guarantee.
    SelfTestFailed {
        /// The backend.
        backend: Backend,
        /// The fixture the self-test built.
        fixture: &'static str,
        /// The answer the guarantee requires.
        expected: bool,
        /// The answer the backend gave.
        got: bool,
    },
    /// [`Prober::auto`](crate::Prober::auto) found no backend with [`Guarantee::Readable`](crate::Guarantee::Readable) that passed its
    /// self-test here. `last` is why the last candidate was rejected.
    NoSoundBackend {
        /// The last candidate's error, if it had one.
        last: Option<Backend>,
        /// The errno of that error, if any.
        errno: Option<i32>,
    },
}

impl Error {
    /// The errno behind this error, if any.
    pub fn errno(&self) -> Option<i32> {
        match *self {
            Error::Unavailable { errno, .. } | Error::NoSoundBackend { errno, .. } => errno,
            Error::Failed { errno, .. } => Some(errno),
            _ => None,
        }
    }

    /// Whether this error says the backend cannot be used here at all.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// Classifies an errno that a technique returned where it can mean neither yes nor no.
    pub(crate) fn from_errno(backend: Backend, errno: i32, during: &'static str) -> Error {
        match errno {
            libc::EPERM | libc::ENOSYS | libc::ENOTTY | libc::EINVAL | libc::EACCES => {
                Error::Unavailable {
                    backend,
                    errno: Some(errno),
                    reason: during,
                }
            }
            libc::EMFILE | libc::ENFILE => Error::Unavailable {
                backend,
                errno: Some(errno),
                reason: "no file descriptor could be opened",
            },
            _ => Error::Failed {
                backend,
                errno,
                during,
            },
        }
    }
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSYS => "ENOSYS",
        _ => "errno",
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Unavailable {
                backend,
                errno,
                reason,
            } => {
                write!(f, "backend {backend} is unavailable here: {reason}")?;
                if let Some(e) = errno {
                    write!(f, " ({} {e})", errno_name(e))?;
                }
                Ok(())
            }
            Error::Unsupported { backend, operation } => {
                write!(f, "backend {backend} does not support {operation}")
            }
            Error::InvalidRange { addr, len } => write!(
                f,
                "invalid range: {addr:#x} + {len:#x} wraps past the end of the address space"
            ),
            Error::Failed {
                backend,
                errno,
                during,
            } => write!(
                f,
                "backend {backend}: {during} failed with {} {errno}, which is neither a yes nor a no",
                errno_name(errno)
            ),
            Error::SelfTestFailed {
                backend,
                fixture,
                expected,
                got,
            } => write!(
                f,
                "backend {backend} failed its self-test: on {fixture} it answered {got}, but its guarantee ({}) requires {expected}",
                backend.guarantee()
            ),
            Error::NoSoundBackend { last, errno } => {
                write!(f, "no backend with the `readable` guarantee works here")?;
                if let Some(b) = last {
                    write!(f, " (last tried: {b}")?;
                    if let Some(e) = errno {
                        write!(f, ", {} {e}", errno_name(e))?;
                    }
                    write!(f, ")")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}
