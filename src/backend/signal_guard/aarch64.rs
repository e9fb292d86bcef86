//! The arm64 guarded loads, their exception table and what the handler needs of the
//! architecture (see the parent module).
//!
//! The same design as x86_64's: each load is one instruction inlined at the call site, its PC
//! and continuation (the next instruction, 4 bytes on) recorded in the table; the flag
//! register is `x9`, zero before the load, set to 1 by the handler on a fault. A pair is one
//! `ldp`. The handler is installed with a restorer of its own (`mov x8, #139; svc #0`, the
//! vDSO trampoline's instructions), as musl installs every handler on arm64.

use super::extable::Table;
use super::handler::Installed;

/// The exception table's section: its name says the architecture and the protocol (`v1`: the
/// flag register `x9` is zero before the load; on a fault the handler sets it to 1 and resumes
/// at the continuation). A different protocol gets a different name.
macro_rules! section {
    () => {
        "addrprobe_extable_aarch64_v1"
    };
}

/// The `asm!` lines that record a load at local label `$load` whose continuation is local
/// label `$cont` in the exception table (see [`extable`](super::extable)).
macro_rules! extable_entry {
    ($load:literal, $cont:literal) => {
        concat!(
            ".pushsection ",
            section!(),
            ",\"aR\",%progbits\n",
            ".balign 4\n",
            ".long ",
            $load,
            "b - .\n",
            ".long ",
            $cont,
            "b - .\n",
            ".popsection",
        )
    };
}

/// The `asm!` lines that make the linked object holding this load register its table with
/// the handler at load time (see `handler::register_table`): a constructor in `.init_array` (`bti c` first: the loader calls it indirectly),
/// its code, and a 24-byte node for the handler's list, all in one COMDAT group per crate
/// version. The linker keeps the group of one object file per executable or shared object;
/// inside that object file every `asm!` instance appended its own constructor and node, and
/// all but the first find the table listed. The `asm!` must pass
/// `register = sym super::handler::register_table`.
macro_rules! registration {
    () => {
        concat!(
            ".hidden __start_",
            section!(),
            "\n.hidden __stop_",
            section!(),
            "\n.pushsection .text.addrprobe_register_aarch64_v1,\"axG\",%progbits,",
            "addrprobe_register_aarch64_v1_",
            env!("CARGO_PKG_VERSION"),
            ",comdat\n",
            ".balign 4\n",
            "8:\n",
            "hint #34\n",
            "adrp x0, __start_",
            section!(),
            "\nadd x0, x0, :lo12:__start_",
            section!(),
            "\nadrp x1, __stop_",
            section!(),
            "\nadd x1, x1, :lo12:__stop_",
            section!(),
            "\nadrp x2, 7f\n",
            "add x2, x2, :lo12:7f\n",
            "b {register}\n",
            ".popsection\n",
            ".pushsection .data.addrprobe_register_aarch64_v1,\"awG\",%progbits,",
            "addrprobe_register_aarch64_v1_",
            env!("CARGO_PKG_VERSION"),
            ",comdat\n",
            ".balign 8\n",
            "7:\n",
            ".quad 0, 0, 0\n",
            ".popsection\n",
            ".pushsection .init_array,\"awG\",%init_array,",
            "addrprobe_register_aarch64_v1_",
            env!("CARGO_PKG_VERSION"),
            ",comdat\n",
            ".balign 8\n",
            ".quad 8b\n",
            ".popsection",
        )
    };
}

/// Every arm64 instruction is 4 bytes: a continuation further than this from its load is not
/// a load's.
pub(super) const MAX_INSN: usize = 4;

/// A guarded load: the instruction `$insn` at label `2`, the continuation at `3`, the flag in
/// `x9`. `$value` is `{v}` of the width `$insn` writes.
macro_rules! guarded_load {
    ($insn:literal, $addr:expr, $ty:ty) => {{
        let value: $ty;
        let faulted: u64;
        // The handler is installed (the caller holds `Installed`), and the load's PC
        // and continuation are in this object's exception table (the lines after it). A load
        // that faults is resumed at the continuation with `x9 = 1`; the value register then
        // holds whatever it held, which the caller ignores. Nothing else changes: the handler
        // writes only `pc` and `x9` in the interrupted context, and the kernel restores the
        // rest, flags included, on `rt_sigreturn`. The asm reads memory and writes none.
        // SAFETY: as just said, a fault resumes at the continuation; nothing else changes.
        unsafe {
            core::arch::asm!(
                "2:",
                $insn,
                "3:",
                extable_entry!("2", "3"),
                registration!(),
                a = in(reg) $addr,
                v = lateout(reg) value,
                inout("x9") 0u64 => faulted,
                register = sym super::handler::register_table,
                options(nostack, readonly, preserves_flags),
            );
        }
        if faulted == 0 { Some(value) } else { None }
    }};
}

/// One guarded byte load.
#[inline(always)]
pub(crate) fn load_u8(_: Installed, addr: usize) -> Option<u8> {
    guarded_load!("ldrb {v:w}, [{a}]", addr, u32).map(|v| v as u8)
}

/// One guarded 2-byte load (any alignment on normal memory).
#[inline(always)]
pub(crate) fn load_u16(_: Installed, addr: usize) -> Option<u16> {
    guarded_load!("ldrh {v:w}, [{a}]", addr, u32).map(|v| v as u16)
}

/// One guarded 4-byte load (any alignment on normal memory).
#[inline(always)]
pub(crate) fn load_u32(_: Installed, addr: usize) -> Option<u32> {
    guarded_load!("ldr {v:w}, [{a}]", addr, u32)
}

/// One guarded 8-byte load (any alignment on normal memory).
#[inline(always)]
pub(crate) fn load_u64(_: Installed, addr: usize) -> Option<u64> {
    guarded_load!("ldr {v}, [{a}]", addr, u64)
}

/// One guarded `ldp` of the 16 bytes at `addr`: two `u64`s, one instruction, one flag.
#[inline(always)]
pub(crate) fn load_u64_pair(_: Installed, addr: usize) -> Option<[u64; 2]> {
    let (first, second): (u64, u64);
    let faulted: u64;
    // SAFETY: as in `guarded_load!`. The two outputs get distinct registers (an `ldp` into one
    // register twice is unpredictable); either may share the address register, which `ldp`
    // without writeback allows.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldp {v0}, {v1}, [{a}]",
            "3:",
            extable_entry!("2", "3"),
            registration!(),
            a = in(reg) addr,
            v0 = lateout(reg) first,
            v1 = lateout(reg) second,
            inout("x9") 0u64 => faulted,
            register = sym super::handler::register_table,
            options(nostack, readonly, preserves_flags),
        );
    }
    if faulted == 0 {
        Some([first, second])
    } else {
        None
    }
}

/// This linked object's exception table.
///
/// The bounds are taken in `asm!` after `.hidden`: whatever visibility the linker gives
/// `__start_`/`__stop_` symbols by default, each executable and shared object binds them to
/// its own section and exports neither. The same block records an anchor entry (a
/// continuation equal to its load, which no lookup takes), so the section, and with it both
/// symbols, exists in every object that contains the handler, even one without a load.
#[inline(always)]
pub(super) fn table() -> Table {
    let (start, stop): (usize, usize);
    // SAFETY: only computes two addresses (and records the anchor entry).
    unsafe {
        core::arch::asm!(
            concat!(".pushsection ", section!(), ",\"aR\",%progbits"),
            ".balign 4",
            ".long 0",
            ".long -4",
            ".popsection",
            concat!(".hidden __start_", section!()),
            concat!(".hidden __stop_", section!()),
            concat!("adrp {s}, __start_", section!()),
            concat!("add {s}, {s}, :lo12:__start_", section!()),
            concat!("adrp {e}, __stop_", section!()),
            concat!("add {e}, {e}, :lo12:__stop_", section!()),
            s = out(reg) start,
            e = out(reg) stop,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    // SAFETY: the linker bounds the section, which holds 4-byte aligned entries only (every
    // `.pushsection` of it aligns and emits two `.long`s) and is mapped read-only for as long
    // as this code is.
    unsafe { Table::new(start, stop) }
}

/// `SA_RESTORER`: the handler names its own restorer (as musl does on arm64), so that its entry
/// can tell a kernel delivery of our action from a call by a later handler (see `entry`).
pub(super) const RESTORER_FLAGS: u64 = 0x0400_0000;

/// The restorer the kernel makes a handler return to: `mov x8, #139` (`rt_sigreturn`);
/// `svc #0`, the instructions of the vDSO's `__kernel_rt_sigreturn`, which gdb and libgcc's
/// unwinder recognise as a signal frame by these bytes.
///
/// # Safety
/// Never called; the kernel returns to it from a signal handler.
#[unsafe(naked)]
unsafe extern "C" fn restore_rt() {
    core::arch::naked_asm!("mov x8, #139", "svc #0")
}

/// The restorer to install with the handler.
pub(super) fn restorer() -> usize {
    restore_rt as *const () as usize
}

/// The handler's entry, as installed: it passes the kernel's three arguments on unchanged and
/// adds a fourth, whether it was entered by a kernel delivery of our action (its return
/// address, `x30`, is our restorer, which only such a delivery returns to) rather than called
/// by a handler installed later. `bti c` first: the kernel enters a handler as an indirect
/// call, which a BTI-guarded page requires to land on one.
///
/// # Safety
/// Only the kernel, or a handler chaining a SIGSEGV/SIGBUS with its own arguments, calls it.
#[unsafe(naked)]
unsafe extern "C" fn entry_naked() {
    core::arch::naked_asm!(
        "hint #34",
        "adrp x9, {restorer}",
        "add x9, x9, :lo12:{restorer}",
        "cmp x30, x9",
        "cset x3, eq",
        "b {handler}",
        restorer = sym restore_rt,
        handler = sym super::handler::handler,
    )
}

/// Whether the program runs under valgrind: its `RUNNING_ON_VALGRIND` client request (the
/// request's number in the first word of a 6-word block whose address is in `x4`, the answer
/// in `x3`, which keeps its value, 0, on a real CPU). The four rotations of `x12` add up to
/// 128 bits and the `orr` is of `x10` with itself: natively the sequence changes nothing;
/// valgrind's translator recognises it.
pub(super) fn under_valgrind() -> bool {
    /// `VG_USERREQ__RUNNING_ON_VALGRIND`.
    const RUNNING_ON_VALGRIND: u64 = 0x1001;
    let args = [RUNNING_ON_VALGRIND, 0, 0, 0, 0, 0];
    let answer: u64;
    // SAFETY: rotations of x12 by 128 bits in all and an `orr` of x10 with itself leave every
    // register as it was; valgrind reads the six words at `x4` and writes `x3` only.
    unsafe {
        core::arch::asm!(
            "ror x12, x12, #3",
            "ror x12, x12, #13",
            "ror x12, x12, #51",
            "ror x12, x12, #61",
            "orr x10, x10, x10",
            in("x4") args.as_ptr(),
            inout("x3") 0u64 => answer,
            options(nostack, readonly, preserves_flags),
        );
    }
    answer != 0
}

/// The address installed as the handler.
pub(super) fn entry() -> usize {
    entry_naked as *const () as usize
}

/// What a guarded load accesses, decoded from its instruction: its base register `Xn` and
/// its width. Only the forms the guarded loads use are recognised: `LDRB`, `LDRH`, `LDR` of
/// `w` or `x` (unsigned offset 0) and `LDP` of two `x` (signed offset 0).
fn decode(insn: u32) -> Option<(usize, usize)> {
    let width = match insn & 0xffff_fc00 {
        0x3940_0000 => 1,
        0x7940_0000 => 2,
        0xb940_0000 => 4,
        0xf940_0000 => 8,
        _ if insn & 0xffff_8000 == 0xa940_0000 => 16,
        _ => return None,
    };
    let n = ((insn >> 5) & 31) as usize;
    // 31 is `sp`, which no guarded load uses as its address.
    (n < 31).then_some((n, width))
}

/// The top byte (a tag with TBI, set in `si_addr` only under `SA_EXPOSE_TAGBITS`) and the MTE
/// tag bits are not part of the address a guarded load accessed (those stay below 2^52).
const ADDRESS_BITS: usize = (1 << 56) - 1;

/// Whether the signal proves that the load at `pc` (an entry of the table) faulted: the
/// address the kernel reports (`si_addr`, tag bits aside) lies in the bytes that load
/// accesses. A sent signal with a fault's `si_code` (a child's `exit_signal` arrives with
/// `CLD_EXITED`, 1, as `SEGV_MAPERR`) carries a pid and a uid there instead.
///
/// # Safety
/// `info` and `ctx` must be the kernel's siginfo and ucontext for the signal, and `pc` the
/// load PC of an entry of this object's table.
#[inline(always)]
pub(super) unsafe fn faulted_in_load(
    info: *const libc::siginfo_t,
    ctx: *const libc::c_void,
    pc: usize,
) -> bool {
    // SAFETY: `pc` is a guarded load's instruction, in mapped code.
    let insn = unsafe { core::ptr::read(pc as *const u32) };
    let Some((n, width)) = decode(insn) else {
        return false;
    };
    // SAFETY: the caller vouches for `ctx` and `info`.
    let (base, addr) = unsafe {
        (
            (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.regs[n] as usize,
            (*info).si_addr() as usize & ADDRESS_BITS,
        )
    };
    // SAFETY: the caller vouches for `info`.
    let lsb = unsafe { super::handler::mce_addr_lsb(info) };
    super::handler::in_access(addr, lsb, base, width)
}

/// Whether the kernel forced the signal on the thread (a fault of the interrupted
/// instruction) rather than sending it, so that `SIG_IGN` does not apply. `si_code > 0` alone
/// does not prove it (a child's `exit_signal` arrives with `CLD_EXITED`, and a process may
/// send itself any code); the kernel's fault record in the signal frame does: the
/// `fault_address` it saved with the fault is `si_addr`, or the signal is `SI_KERNEL` (a
/// signal frame the kernel could not build). Without a ucontext (a later handler called us
/// without it), `si_code > 0` is all there is.
///
/// # Safety
/// `info` and `ctx` must each be null or the kernel's siginfo and ucontext for the signal.
pub(super) unsafe fn is_forced(
    sig: libc::c_int,
    info: *const libc::siginfo_t,
    ctx: *const libc::c_void,
) -> bool {
    if info.is_null() {
        return false;
    }
    // SAFETY: the caller vouches for `info`.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code <= 0
        || (sig == libc::SIGBUS && code == libc::BUS_MCEERR_AO)
        || (sig == libc::SIGSEGV && code == SEGV_MTEAERR)
    {
        return false;
    }
    if code == libc::SI_KERNEL || ctx.is_null() {
        return true;
    }
    // SAFETY: the caller vouches for `ctx`.
    let far = unsafe { (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.fault_address as usize };
    far & ADDRESS_BITS == addr & ADDRESS_BITS
}

/// A raw syscall: no libc wrapper (a sanitizer may intercept those), no `errno` written.
///
/// # Safety
/// The arguments must be valid for syscall `nr`.
#[inline(always)]
pub(super) unsafe fn syscall4(nr: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the arguments; `svc 0` preserves every register but x0,
    // and the kernel may read and write the memory the arguments point to.
    unsafe {
        core::arch::asm!(
            "svc 0",
            inlateout("x0") a as isize => ret,
            in("x1") b,
            in("x2") c,
            in("x3") d,
            in("x8") nr,
            options(nostack),
        );
    }
    ret
}

/// `SEGV_MTEAERR`: an asynchronous tag-check fault, reported after the instruction.
const SEGV_MTEAERR: libc::c_int = 8;

/// Whether a signal with this `si_code` is a fault of the instruction at the interrupted PC,
/// so that at a load's PC it is the load's fault.
///
/// Sent signals (`si_code <= 0`: `kill`, `tgkill`, `sigqueue`) never are; nor is `SI_KERNEL`
/// (arm64 reports every data abort with its own code; the kernel uses `SI_KERNEL` for a signal
/// frame it could not build), an asynchronous machine-check report (`BUS_MCEERR_AO`) or an
/// asynchronous tag-check fault (`SEGV_MTEAERR`).
#[inline(always)]
fn is_fault(sig: libc::c_int, code: libc::c_int) -> bool {
    code > 0
        && code != libc::SI_KERNEL
        && !(sig == libc::SIGBUS && code == libc::BUS_MCEERR_AO)
        && !(sig == libc::SIGSEGV && code == SEGV_MTEAERR)
}

/// Whether the signal is a fault of the instruction at the interrupted PC (see `is_fault`).
///
/// # Safety
/// `info` must be the kernel's siginfo for the signal.
#[inline(always)]
pub(super) unsafe fn is_instruction_fault(
    sig: libc::c_int,
    info: *const libc::siginfo_t,
    _ctx: *const libc::c_void,
) -> bool {
    // SAFETY: the caller vouches for `info`.
    is_fault(sig, unsafe { (*info).si_code })
}

/// The interrupted PC.
///
/// # Safety
/// `ctx` must be the kernel's ucontext for the signal.
#[inline(always)]
pub(super) unsafe fn pc(ctx: *const libc::c_void) -> usize {
    // SAFETY: the caller vouches for `ctx`.
    unsafe { (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.pc as usize }
}

/// Makes the interrupted guarded load resume at `cont` with the flag (`x9`) set.
///
/// # Safety
/// `ctx` must be the kernel's ucontext for the signal, interrupted at a guarded load whose
/// continuation is `cont`.
#[inline(always)]
pub(super) unsafe fn resume_faulted(ctx: *mut libc::c_void, cont: usize) {
    // SAFETY: the caller vouches for `ctx`; `x9` is the load's flag, an output of its asm.
    unsafe {
        let mc = &mut (*ctx.cast::<libc::ucontext_t>()).uc_mcontext;
        mc.regs[9] = 1;
        mc.pc = cont as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the handler takes for a load's own fault.
    #[test]
    fn only_instruction_faults_count() {
        use libc::{SIGBUS, SIGSEGV};
        for code in [
            libc::SI_USER,
            libc::SI_TKILL,
            libc::SI_QUEUE,
            libc::SI_TIMER,
            libc::SI_KERNEL,
        ] {
            assert!(!is_fault(SIGSEGV, code), "{code}");
        }
        assert!(is_fault(SIGSEGV, 1 /* SEGV_MAPERR */));
        assert!(is_fault(SIGSEGV, 2 /* SEGV_ACCERR */));
        assert!(is_fault(SIGSEGV, 9 /* SEGV_MTESERR */));
        assert!(!is_fault(SIGSEGV, SEGV_MTEAERR));
        assert!(is_fault(SIGBUS, libc::BUS_ADRERR));
        assert!(is_fault(SIGBUS, libc::BUS_ADRALN));
        assert!(is_fault(SIGBUS, libc::BUS_MCEERR_AR));
        assert!(!is_fault(SIGBUS, libc::BUS_MCEERR_AO));
    }

    /// Every entry of this object's table is a load instruction of the guarded forms with the
    /// next instruction as its continuation; the anchor is the only one not taken.
    #[test]
    fn table_entries_are_loads_and_their_next_instruction() {
        type Load<T> = fn(Installed, usize) -> Option<T>;
        core::hint::black_box((
            load_u8 as Load<u8>,
            load_u16 as Load<u16>,
            load_u32 as Load<u32>,
            load_u64 as Load<u64>,
            load_u64_pair as Load<[u64; 2]>,
        ));
        let t = table();
        let (mut loads, mut skipped) = (0, 0);
        for i in 0..t.len() {
            let Some((load, cont)) = t.get(i, MAX_INSN) else {
                skipped += 1;
                continue;
            };
            loads += 1;
            assert_eq!(cont, load + 4, "entry {i}");
            // SAFETY: `load` lies in this object's text, mapped readable and executable.
            let insn = unsafe { core::ptr::read(load as *const u32) };
            // LDRB/LDR (immediate, unsigned offset 0) of w or x, or LDP of x (signed offset 0).
            let ldr = matches!(
                insn & 0xffff_fc00,
                0x3940_0000 | 0x7940_0000 | 0xb940_0000 | 0xf940_0000
            );
            let ldp = insn & 0xffff_8000 == 0xa940_0000;
            assert!(ldr || ldp, "entry {i}: {insn:#010x} at {load:#x}");
            assert!(
                decode(insn).is_some(),
                "entry {i}: {insn:#010x} not decoded"
            );
        }
        assert!(loads >= 4, "{loads} loads in the table");
        assert!(skipped >= 1, "no anchor entry");
    }
}
