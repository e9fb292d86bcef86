//! The exception table: where each guarded load instruction is, and where it continues.
//!
//! Every guarded load is an inline `asm!` block at its call site. Next to the instruction it
//! records one [`Entry`] in a dedicated linker section, the way the Linux kernel records its
//! user-access instructions (`arch/x86/include/asm/extable.h`):
//!
//! ```text
//! 2:  mov   rax, qword ptr [rdi]       ; the guarded load
//! 3:                                   ; its continuation: the next instruction
//!     .pushsection <section>,"aR",@progbits
//!     .balign 4
//!     .long 2b - .                     ; Entry::load, relative to itself
//!     .long 3b - .                     ; Entry::cont, relative to itself
//!     .popsection
//! ```
//!
//! Offsets relative to the entry (not absolute addresses) need no dynamic relocation, so the
//! table stays read-only in a position-independent executable or a shared object. The `R`
//! flag (`SHF_GNU_RETAIN`) keeps the section under `--gc-sections` (lld no longer keeps a
//! section merely because `__start_`/`__stop_` name it).
//!
//! The linker bounds the section with `__start_<section>` and `__stop_<section>`. The crate
//! refers to them only from `asm!`, after `.hidden`: every linked object (the executable, each
//! shared object) resolves them to its *own* table, and none exports them. So
//!
//! - in a `cdylib`, the library's handler sees the library's loads, and a host that links the
//!   crate too has its own table and its own handler; each handler takes the faults of the
//!   loads of its own object and chains every other fault, which reaches the other handler;
//! - two copies of the crate in *one* linked object (two major versions) share one table,
//!   since both use the same section name: either handler resolves either copy's loads. That
//!   is correct because every entry carries its own continuation, and because the section
//!   name also names the protocol (`v1`: the handler sets the flag register and jumps to the
//!   continuation). A future copy with another protocol must use another section name, so
//!   that no handler ever resumes a load it does not understand.
//!
//! The handler looks the faulting PC up *exactly* (a linear scan: one entry per inlined load,
//! a few hundred at most, against a signal delivery of microseconds). An entry whose
//! continuation does not lie after its load, at most one instruction's length away, is never
//! taken: that is how the table's anchor entry (see the architecture modules), and anything
//! else that is not a load's entry, is kept out.

/// One load: its instruction and its continuation, each as a signed offset from the field
/// that holds it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    load: i32,
    cont: i32,
}

impl Entry {
    /// The PCs of the load and of its continuation, for an entry that lies at `at`.
    #[inline(always)]
    fn pcs(self, at: usize) -> (usize, usize) {
        (
            at.wrapping_add(self.load as isize as usize),
            (at + 4).wrapping_add(self.cont as isize as usize),
        )
    }
}

/// A table: the entries between `start` and `stop`, as the linker bounds the section.
#[derive(Clone, Copy, Debug)]
pub(super) struct Table {
    start: usize,
    stop: usize,
}

impl Table {
    /// # Safety
    /// `[start, stop)` must be readable for the life of the process and hold `Entry`s at
    /// 4-byte aligned addresses (a linker-bounded section of them).
    #[inline(always)]
    pub(super) unsafe fn new(start: usize, stop: usize) -> Table {
        Table { start, stop }
    }

    /// Its first byte: the same for every instance of the table in one linked object.
    #[inline(always)]
    pub(super) fn start(self) -> usize {
        self.start
    }

    /// How many entries the table has.
    #[cfg(test)]
    pub(super) fn len(self) -> usize {
        self.stop.saturating_sub(self.start) / core::mem::size_of::<Entry>()
    }

    /// The `i`th entry's load and continuation PCs, if it is a load's entry: its continuation
    /// lies after its load, at most `max_insn` bytes away.
    #[cfg(test)]
    pub(super) fn get(self, i: usize, max_insn: usize) -> Option<(usize, usize)> {
        if i >= self.len() {
            return None;
        }
        let at = self.start + i * core::mem::size_of::<Entry>();
        // SAFETY: `at` lies in the table, which `new`'s caller vouched for; entries are
        // 4-byte aligned and `Entry` has alignment 4.
        let entry = unsafe { core::ptr::read(at as *const Entry) };
        let (load, cont) = entry.pcs(at);
        (cont > load && cont - load <= max_insn).then_some((load, cont))
    }

    /// The continuation of the load whose instruction is at exactly `pc`, if the table has one.
    ///
    /// Async-signal-safe: reads the table only. Written as a plain loop with few locals: the
    /// handler may run nested on a small alternate signal stack (a probe that faults inside a
    /// chained handler), also in unoptimised builds.
    #[inline(always)]
    pub(super) fn continuation(self, pc: usize, max_insn: usize) -> Option<usize> {
        let mut at = self.start;
        while at < self.stop && self.stop - at >= core::mem::size_of::<Entry>() {
            // SAFETY: `at` lies in the table, which `new`'s caller vouched for; entries are
            // 4-byte aligned and `Entry` has alignment 4.
            let entry = unsafe { core::ptr::read(at as *const Entry) };
            let (load, cont) = entry.pcs(at);
            if load == pc && cont > load && cont - load <= max_insn {
                return Some(cont);
            }
            at += core::mem::size_of::<Entry>();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table in memory, its offsets computed as the assembler computes them.
    struct Built {
        words: Vec<i32>,
    }

    impl Built {
        /// A table for `pcs`, given as offsets from the table's own address (so that every
        /// offset fits in 32 bits, as in a linked object); returns it and that address.
        fn new(pcs: &[(isize, isize)]) -> (Built, usize) {
            let mut words = vec![0i32; pcs.len() * 2];
            let at = words.as_ptr() as usize;
            for (i, &(load, cont)) in pcs.iter().enumerate() {
                let e = (8 * i) as isize;
                words[2 * i] = (load - e) as i32;
                words[2 * i + 1] = (cont - (e + 4)) as i32;
            }
            (Built { words }, at)
        }

        fn table(&self) -> Table {
            let start = self.words.as_ptr() as usize;
            // SAFETY: the vector outlives every use in the test and holds aligned entries.
            unsafe { Table::new(start, start + 4 * self.words.len()) }
        }
    }

    fn pc(base: usize, off: isize) -> usize {
        base.wrapping_add(off as usize)
    }

    #[test]
    fn exact_lookup_only() {
        let (built, b) = Built::new(&[(0x100, 0x103), (-0x200, -0x1fc)]);
        let t = built.table();
        assert_eq!(t.len(), 2);
        assert_eq!(t.continuation(pc(b, 0x100), 15), Some(pc(b, 0x103)));
        assert_eq!(t.continuation(pc(b, -0x200), 15), Some(pc(b, -0x1fc)));
        for off in [0x101, 0xff, 0x103, -0x1ff, -0x201, -0x1fc, 0] {
            assert_eq!(t.continuation(pc(b, off), 15), None, "{off:#x}");
        }
        assert_eq!(t.continuation(0, 15), None);
    }

    #[test]
    fn entries_that_are_not_loads_are_never_taken() {
        // A continuation equal to the load (the anchor), before it, or too far after it.
        let pcs = [(0, 0), (0x10, 0x0c), (0x20, 0x20 + 16)];
        let (built, b) = Built::new(&pcs);
        let t = built.table();
        for &(load, _) in &pcs {
            assert_eq!(t.continuation(pc(b, load), 15), None, "{load:#x}");
        }
        assert_eq!(t.get(2, 16), Some((pc(b, 0x20), pc(b, 0x30))));
        assert_eq!(t.get(3, 16), None);
    }

    #[test]
    fn empty_and_reversed_bounds_are_empty() {
        // SAFETY: no entry is ever read from an empty table.
        let t = unsafe { Table::new(0x1000, 0x1000) };
        assert_eq!(t.len(), 0);
        assert_eq!(t.continuation(0x1000, 15), None);
        // SAFETY: as above.
        let t = unsafe { Table::new(0x2000, 0x1000) };
        assert_eq!(t.len(), 0);
        assert_eq!(t.continuation(0x1000, 15), None);
    }
}
