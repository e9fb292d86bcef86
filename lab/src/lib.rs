//! The addrprobe lab: everything that measures, demonstrates or checks the `addrprobe`
//! library from the outside, using only its public API.
//!
//! - [`fixtures`]: memory built with `mmap`, `mprotect`, `munmap`, `madvise` and files, each
//!   with the truth that follows from how it was built; the conformance matrix judged
//!   against it. Used by the tests, the fuzz targets and `addrprobe report`.
//! - [`bench`](mod@bench): what the benchmarks probe and compare against (the arena, the bare syscalls,
//!   the peer crates with feature `bench`), a timer, the SIGPROF profiler workload and the
//!   scaling run.
//! - [`fast_path_bench`]: the measurements behind the stack-bounds fast path's targets.
//! - [`msync_patch`]: the emulation of the 2012 `msync(MS_ASYNC)` writeback patch and the
//!   workloads of the study in `docs/msync-patch.md`.
//!
//! The `addrprobe` command-line tool (`src/bin/addrprobe`) and the flame-graph example
//! (`examples/profile.rs`) are built from this package. Nothing here is published: its items
//! may change at any time, and none of it is needed to use a `Prober`.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod bench;
pub mod fast_path_bench;
pub mod fixtures;
pub mod msync_patch;
mod sys;
