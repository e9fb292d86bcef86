//! [`Guarantee`]: what a backend's "yes" proves.

use core::fmt;

/// What an `Ok(true)` answer proves. `Ok(false)` always means "not so" for the property in
/// question, except for [`Unsound`](Guarantee::Unsound) backends.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarantee {
    /// `Ok(true)` ⇒ every page of the range is mapped, whatever its protection.
    Mapped,
    /// `Ok(true)` ⇒ every page lies in a mapping that has read permission.
    RegionReadable,
    /// `Ok(true)` ⇒ every byte could be read at the moment of the check.
    Readable,
    /// `Ok(true)` proves nothing. (`Ok(false)` still means "not readable".)
    Unsound,
}

impl Guarantee {
    /// Kebab-case name, as in the report.
    pub const fn name(self) -> &'static str {
        match self {
            Guarantee::Mapped => "mapped",
            Guarantee::RegionReadable => "region-readable",
            Guarantee::Readable => "readable",
            Guarantee::Unsound => "unsound",
        }
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
