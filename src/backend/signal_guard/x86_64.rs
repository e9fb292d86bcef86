//! The x86_64 guarded loads, their exception table and what the handler needs of the
//! architecture (see the parent module).

use super::extable::Table;
use super::handler::Installed;

/// The exception table's section: its name says the architecture and the protocol (`v1`: the
/// flag register `rcx` is zero before the load; on a fault the handler sets it to 1 and
/// resumes at the continuation). Copies of the crate that share a table must share the
/// protocol; a different protocol gets a different name.
macro_rules! section {
    () => {
        "addrprobe_extable_x86_64_v1"
    };
}

/// The `asm!` lines that record a load at local label `$load` whose continuation is local
/// label `$cont` in the exception table (see [`extable`](super::extable)).
macro_rules! extable_entry {
    ($load:literal, $cont:literal) => {
        concat!(
            ".pushsection ",
            section!(),
            ",\"aR\",@progbits\n",
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
/// the handler at load time (see `handler::register_table`): a constructor in `.init_array` (`endbr64` first: the loader calls it indirectly),
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
            "\n.pushsection .text.addrprobe_register_x86_64_v1,\"axG\",@progbits,",
            "addrprobe_register_x86_64_v1_",
            env!("CARGO_PKG_VERSION"),
            ",comdat\n",
            ".balign 16\n",
            "8:\n",
            "endbr64\n",
            "lea rdi, [rip + __start_",
            section!(),
            "]\n",
            "lea rsi, [rip + __stop_",
            section!(),
            "]\n",
            "lea rdx, [rip + 7f]\n",
            "jmp {register}\n",
            ".popsection\n",
            ".pushsection .data.addrprobe_register_x86_64_v1,\"awG\",@progbits,",
            "addrprobe_register_x86_64_v1_",
            env!("CARGO_PKG_VERSION"),
            ",comdat\n",
            ".balign 8\n",
            "7:\n",
            ".quad 0, 0, 0\n",
            ".popsection\n",
            ".pushsection .init_array,\"awG\",@init_array,",
            "addrprobe_register_x86_64_v1_",
            env!("CARGO_PKG_VERSION"),
            ",comdat\n",
            ".balign 8\n",
            ".quad 8b\n",
            ".popsection",
        )
    };
}

/// The longest x86_64 instruction: a continuation further than this from its load is not a
/// load's.
pub(super) const MAX_INSN: usize = 15;

/// A guarded load: the instruction `$insn` at label `2`, the continuation at `3`, the flag in
/// `ecx`. `$value` is `{v}` of the width `$insn` writes.
macro_rules! guarded_load {
    ($insn:literal, $addr:expr, $ty:ty) => {{
        let value: $ty;
        let faulted: u32;
        // The handler is installed (the caller holds `Installed`), and the load's PC
        // and continuation are in this object's exception table (the lines after it). A load
        // that faults is resumed at the continuation with `ecx = 1`; the value register then
        // holds whatever it held, which the caller ignores. Nothing else changes: the handler
        // writes only `rip` and `rcx` in the interrupted context, and the kernel restores the
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
                inout("ecx") 0u32 => faulted,
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
    guarded_load!("movzx {v:e}, byte ptr [{a}]", addr, u32).map(|v| v as u8)
}

/// One guarded 2-byte load (any alignment).
#[inline(always)]
pub(crate) fn load_u16(_: Installed, addr: usize) -> Option<u16> {
    guarded_load!("movzx {v:e}, word ptr [{a}]", addr, u32).map(|v| v as u16)
}

/// One guarded 4-byte load (any alignment).
#[inline(always)]
pub(crate) fn load_u32(_: Installed, addr: usize) -> Option<u32> {
    guarded_load!("mov {v:e}, dword ptr [{a}]", addr, u32)
}

/// One guarded 8-byte load (any alignment).
#[inline(always)]
pub(crate) fn load_u64(_: Installed, addr: usize) -> Option<u64> {
    guarded_load!("mov {v}, qword ptr [{a}]", addr, u64)
}

/// Two guarded 8-byte loads, of `addr` and `addr + 8` (any alignment), with one flag: a fault
/// of either resumes after both, so a pair costs one flag test. Both instructions are in the
/// table; the first's continuation is the end of the pair (the second's end), at most two
/// instructions' length away.
#[inline(always)]
pub(crate) fn load_u64_pair(_: Installed, addr: usize) -> Option<[u64; 2]> {
    let (first, second): (u64, u64);
    let faulted: u32;
    // SAFETY: as in `guarded_load!`. `first` is an early output: it is written while `addr`
    // is still needed, so it never shares its register.
    unsafe {
        core::arch::asm!(
            "2:",
            "mov {v0}, qword ptr [{a}]",
            "3:",
            "mov {v1}, qword ptr [{a} + 8]",
            "4:",
            extable_entry!("2", "4"),
            extable_entry!("3", "4"),
            registration!(),
            a = in(reg) addr,
            v0 = out(reg) first,
            v1 = lateout(reg) second,
            inout("ecx") 0u32 => faulted,
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
            concat!(".pushsection ", section!(), ",\"aR\",@progbits"),
            ".balign 4",
            ".long 0",
            ".long -4",
            ".popsection",
            concat!(".hidden __start_", section!()),
            concat!(".hidden __stop_", section!()),
            concat!("lea {s}, [rip + __start_", section!(), "]"),
            concat!("lea {e}, [rip + __stop_", section!(), "]"),
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

/// The restorer the kernel makes a handler return to (`rt_sigreturn`). Its bytes are glibc's
/// `__restore_rt`'s, which debuggers and unwinders recognise as a signal frame. Needed because
/// the handler is installed with the raw `rt_sigaction` syscall.
///
/// # Safety
/// Never called; the kernel returns to it from a signal handler.
#[unsafe(naked)]
unsafe extern "C" fn restore_rt() {
    // mov rax, 15 (rt_sigreturn); syscall
    core::arch::naked_asm!(".byte 0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00", "syscall",)
}

/// `SA_RESTORER` (not in every libc): `restorer` is valid. The handler is installed with the
/// raw `rt_sigaction`, so it names its restorer itself, as glibc does.
pub(super) const RESTORER_FLAGS: u64 = 0x0400_0000;

/// The restorer to install with the handler.
pub(super) fn restorer() -> usize {
    restore_rt as *const () as usize
}

/// The handler's entry, as installed: it passes the kernel's three arguments on unchanged and
/// adds a fourth, whether it was entered by a kernel delivery of our action (its return
/// address, at `[rsp]`, is our restorer, which only such a delivery returns to) rather than
/// called by a handler installed later.
///
/// # Safety
/// Only the kernel, or a handler chaining a SIGSEGV/SIGBUS with its own arguments, calls it.
#[unsafe(naked)]
unsafe extern "C" fn entry_naked() {
    core::arch::naked_asm!(
        // A landing pad for indirect branch tracking (a NOP without CET): the kernel enters a
        // handler as an indirect call.
        "endbr64",
        "lea rax, [rip + {restorer}]",
        "xor ecx, ecx",
        "cmp rax, qword ptr [rsp]",
        "sete cl",
        "jmp {handler}",
        restorer = sym restore_rt,
        handler = sym super::handler::handler,
    )
}

/// Whether the program runs under valgrind: its `RUNNING_ON_VALGRIND` client request (the
/// request's number in the first word of a 6-word block whose address is in `rax`, the answer
/// in `rdx`, which keeps its value, 0, on a real CPU). The four rotations of `rdi` add up to
/// 128 bits and the `xchg` is with itself: natively the sequence changes no register but the
/// flags (`rol` writes CF and OF); valgrind's translator recognises it.
pub(super) fn under_valgrind() -> bool {
    /// `VG_USERREQ__RUNNING_ON_VALGRIND`.
    const RUNNING_ON_VALGRIND: u64 = 0x1001;
    let args = [RUNNING_ON_VALGRIND, 0, 0, 0, 0, 0];
    let answer: u64;
    // SAFETY: rotations of rdi by 128 bits in all and an exchange of rbx with itself leave
    // every register as it was but the flags (not declared preserved); valgrind reads the six
    // words at `rax` and writes `rdx` only.
    unsafe {
        core::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") args.as_ptr(),
            inout("rdx") 0u64 => answer,
            inout("rdi") 0u64 => _,
            options(nostack, readonly),
        );
    }
    answer != 0
}

/// The address installed as the handler.
pub(super) fn entry() -> usize {
    entry_naked as *const () as usize
}

/// What a guarded load accesses, decoded from its bytes: its base register's number (x86
/// encoding, `REX.B` included), its displacement and its width. Only the forms the guarded
/// loads use are recognised (`movzx r32, byte/word ptr [r]`, `mov r32/r64, [r]`,
/// `mov r64, [r + 8]`, any base register).
fn decode(bytes: [u8; 8]) -> Option<(usize, usize, usize)> {
    let mut i = 0;
    let mut rex = 0;
    if bytes[0] & 0xf0 == 0x40 {
        rex = bytes[0];
        i = 1;
    }
    let width = match (bytes[i], bytes[i + 1]) {
        (0x0f, 0xb6) => {
            i += 2;
            1
        }
        (0x0f, 0xb7) => {
            i += 2;
            2
        }
        (0x8b, _) => {
            i += 1;
            if rex & 0x08 != 0 { 8 } else { 4 }
        }
        _ => return None,
    };
    let modrm = bytes[i];
    i += 1;
    let (md, mut rm) = (modrm >> 6, usize::from(modrm & 7));
    if rm == 4 {
        // A SIB byte: only `[base]` (no index) is a guarded load's.
        let sib = bytes[i];
        i += 1;
        if (sib >> 3) & 7 != 4 {
            return None;
        }
        rm = usize::from(sib & 7);
    }
    let disp = match md {
        0 if rm != 5 => 0,
        1 => usize::from(bytes[i]),
        _ => return None,
    };
    Some((rm | (usize::from(rex & 1) << 3), disp, width))
}

/// `uc_mcontext.gregs` index of each x86 register number (rax, rcx, rdx, rbx, rsp, rbp, rsi,
/// rdi, r8 .. r15).
const GREG: [libc::c_int; 16] = [
    libc::REG_RAX,
    libc::REG_RCX,
    libc::REG_RDX,
    libc::REG_RBX,
    libc::REG_RSP,
    libc::REG_RBP,
    libc::REG_RSI,
    libc::REG_RDI,
    libc::REG_R8,
    libc::REG_R9,
    libc::REG_R10,
    libc::REG_R11,
    libc::REG_R12,
    libc::REG_R13,
    libc::REG_R14,
    libc::REG_R15,
];

/// With 4-level paging, the first address that is not canonical: a load touching it is a
/// general-protection fault (`SI_KERNEL`, `si_addr` 0). With 5-level paging no guarded load
/// reaches a non-canonical address (they stay below `USER_SPACE_LIMIT`, 2^56).
const NON_CANONICAL: usize = 1 << 47;

/// Whether the signal proves that the load at `pc` (an entry of the table) faulted: the
/// address the kernel reports (`si_addr`) lies in the bytes that load accesses, or, for a
/// general-protection fault, those bytes reach a non-canonical address. A sent signal with a
/// fault's `si_code` (a child's `exit_signal` arrives with `CLD_EXITED`, 1, as `SEGV_MAPERR`)
/// carries a pid and a uid there instead.
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
    // SAFETY: `pc` starts a guarded load in mapped code; the 8 bytes from there are the load
    // (at most 5 bytes) and the code after it, in the same text.
    let bytes = unsafe { core::ptr::read_unaligned(pc as *const [u8; 8]) };
    let Some((reg, disp, width)) = decode(bytes) else {
        return false;
    };
    // SAFETY: the caller vouches for `ctx` and `info`.
    let (base, addr, code) = unsafe {
        (
            (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs[GREG[reg] as usize] as usize,
            (*info).si_addr() as usize,
            (*info).si_code,
        )
    };
    let start = base.wrapping_add(disp);
    if code == libc::SI_KERNEL {
        return start.wrapping_add(width - 1) >= NON_CANONICAL;
    }
    // SAFETY: the caller vouches for `info`.
    let lsb = unsafe { super::handler::mce_addr_lsb(info) };
    super::handler::in_access(addr, lsb, start, width)
}

/// The trap number of a page fault (`X86_TRAP_PF`) in `uc_mcontext.trapno`.
const TRAP_PF: i64 = 14;

/// Whether the kernel forced the signal on the thread (a fault of the interrupted
/// instruction) rather than sending it, so that `SIG_IGN` does not apply. `si_code > 0` alone
/// does not prove it (a child's `exit_signal` arrives with `CLD_EXITED`, and a process may
/// send itself any code); the kernel's fault record in the signal frame does: a page fault
/// (`trapno` 14) at exactly `si_addr` (`cr2`), a `SI_KERNEL` signal (general protection, or a
/// signal frame the kernel could not build), or another trap of an instruction (alignment
/// check, machine check, control protection). Without a ucontext (a later handler called us
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
    if code <= 0 || (sig == libc::SIGBUS && code == libc::BUS_MCEERR_AO) {
        return false;
    }
    if code == libc::SI_KERNEL || ctx.is_null() {
        return true;
    }
    // SAFETY: the caller vouches for `ctx`.
    let (trapno, cr2) = unsafe {
        let m = &(*ctx.cast::<libc::ucontext_t>()).uc_mcontext;
        (
            m.gregs[libc::REG_TRAPNO as usize],
            m.gregs[libc::REG_CR2 as usize] as usize,
        )
    };
    match trapno {
        TRAP_PF => cr2 == addr,
        // #AC (alignment check), #MC (machine check), #CP (control protection).
        17 | 18 | 21 => true,
        _ => false,
    }
}

/// The trap number of a general-protection fault (`X86_TRAP_GP`) in `uc_mcontext.trapno`.
const TRAP_GP: i64 = 13;

/// A raw syscall: no libc wrapper (a sanitizer may intercept those), no `errno` written.
///
/// # Safety
/// The arguments must be valid for syscall `nr`.
#[inline(always)]
pub(super) unsafe fn syscall4(nr: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the arguments; `syscall` clobbers rcx and r11 only, and
    // the kernel may read and write the memory the arguments point to.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            in("r10") d,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Whether a signal with this `si_code` (and trap number) is a fault of the instruction at
/// the interrupted PC, so that at a load's PC it is the load's fault.
///
/// Sent signals (`si_code <= 0`: `kill`, `tgkill`, `sigqueue`) never are. Neither is an
/// asynchronous machine-check report (`BUS_MCEERR_AO`), nor a `SI_KERNEL` SIGSEGV that is not
/// a general-protection fault (the kernel sends one when it cannot build the frame of another
/// signal, or for a broken `rseq` area). A load of a non-canonical address is a
/// general-protection fault: `SI_KERNEL` with trap number 13.
#[inline(always)]
fn is_fault(sig: libc::c_int, code: libc::c_int, trapno: i64) -> bool {
    if code <= 0 {
        return false;
    }
    if sig == libc::SIGBUS && code == libc::BUS_MCEERR_AO {
        return false;
    }
    if code == libc::SI_KERNEL {
        return trapno == TRAP_GP;
    }
    true
}

/// Whether the signal is a fault of the instruction at the interrupted PC (see `is_fault`).
///
/// # Safety
/// `info` and `ctx` must be the kernel's siginfo and ucontext for the signal.
#[inline(always)]
pub(super) unsafe fn is_instruction_fault(
    sig: libc::c_int,
    info: *const libc::siginfo_t,
    ctx: *const libc::c_void,
) -> bool {
    // SAFETY: the caller vouches for both pointers.
    unsafe {
        let trapno = (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_TRAPNO as usize];
        is_fault(sig, (*info).si_code, trapno)
    }
}

/// The interrupted PC.
///
/// # Safety
/// `ctx` must be the kernel's ucontext for the signal.
#[inline(always)]
pub(super) unsafe fn pc(ctx: *const libc::c_void) -> usize {
    // SAFETY: the caller vouches for `ctx`.
    unsafe { (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RIP as usize] as usize }
}

/// Makes the interrupted guarded load resume at `cont` with the flag (`rcx`) set.
///
/// # Safety
/// `ctx` must be the kernel's ucontext for the signal, interrupted at a guarded load whose
/// continuation is `cont`.
#[inline(always)]
pub(super) unsafe fn resume_faulted(ctx: *mut libc::c_void, cont: usize) {
    // SAFETY: the caller vouches for `ctx`; `rcx` is the load's flag, an output of its asm.
    unsafe {
        let gregs = &mut (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs;
        gregs[libc::REG_RCX as usize] = 1;
        gregs[libc::REG_RIP as usize] = cont as i64;
    }
}

#[cfg(test)]
mod tests {
    use super::super::handler::install;
    use super::*;
    use core::sync::atomic::Ordering;
    use std::os::unix::process::ExitStatusExt;

    const CHILD_ENV: &str = "ADDRPROBE_UNIT_CHILD";

    /// Re-runs this test binary for the single test `name` with `CHILD_ENV=name`; kills it
    /// after 10 s. Returns its status and stdout.
    fn run_child(name: &str) -> (std::process::ExitStatus, String) {
        use std::io::Read;
        let path = format!(
            "{}::{name}",
            module_path!().trim_start_matches("addrprobe::")
        );
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([path.as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, name)
            .env("RUST_BACKTRACE", "0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("child {name} hung and was killed");
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        (status, out)
    }

    fn is_child(name: &str) -> bool {
        std::env::var(CHILD_ENV).is_ok_and(|v| v == name)
    }

    /// Reads `N` bytes of our own code.
    fn bytes<const N: usize>(at: usize) -> [u8; N] {
        // SAFETY: `at` lies in this object's text, which is mapped readable and executable.
        unsafe { core::ptr::read(at as *const [u8; N]) }
    }

    /// The length of the load instruction at `pc` if it is one of the guarded loads' forms
    /// (`movzx r32, byte ptr [r]`, `mov r32, dword ptr [r]`, `mov r64, qword ptr [r]`, and
    /// `mov r64, qword ptr [r + 8]` as a pair's second, with the base register any of the
    /// sixteen), else `None`.
    fn load_len(pc: usize) -> Option<usize> {
        let b = bytes::<7>(pc);
        let mut i = 0;
        if b[i] & 0xf0 == 0x40 {
            i += 1; // REX
        }
        match b[i] {
            0x8b => i += 1,
            0x0f if b[i + 1] == 0xb6 || b[i + 1] == 0xb7 => i += 2,
            _ => return None,
        }
        let modrm = b[i];
        i += 1;
        let (md, rm) = (modrm >> 6, modrm & 7);
        if rm == 4 {
            i += 1; // SIB: rsp or r12 as the base
        }
        match md {
            0 if rm != 5 => Some(i),
            // A disp8: 8 for a pair's second load; 0 with rbp or r13 as the base.
            1 if b[i] == 0 || b[i] == 8 => Some(i + 1),
            _ => None,
        }
    }

    /// Every entry of this object's table (this test binary's: the crate's loads, inlined in
    /// the crate and its tests) records a load instruction of the guarded forms and the
    /// instruction right after it, or for the first load of a pair the instruction after the
    /// pair's second load. The anchor entry is the only one not taken.
    #[test]
    fn table_entries_are_loads_and_their_next_instruction() {
        // Out-of-line instances of every load, so that each form is in the table.
        type Load<T> = fn(Installed, usize) -> Option<T>;
        core::hint::black_box((
            load_u8 as Load<u8>,
            load_u16 as Load<u16>,
            load_u32 as Load<u32>,
            load_u64 as Load<u64>,
            load_u64_pair as Load<[u64; 2]>,
        ));
        let t = table();
        let mut loads = 0;
        let mut pairs = 0;
        let mut skipped = 0;
        for i in 0..t.len() {
            let Some((load, cont)) = t.get(i, MAX_INSN) else {
                skipped += 1;
                continue;
            };
            loads += 1;
            assert!(
                decode(bytes::<8>(load)).is_some(),
                "entry {i}: the handler cannot decode {:02x?}",
                bytes::<8>(load)
            );
            let len = load_len(load);
            let pair = len.and_then(|n| load_len(load + n).map(|m| n + m));
            pairs += usize::from(pair == Some(cont - load));
            assert!(
                len == Some(cont - load) || pair == Some(cont - load),
                "entry {i}: {:02x?} at {load:#x}, continuation +{}",
                bytes::<14>(load),
                cont - load
            );
        }
        assert!(loads >= 5, "{loads} loads in the table");
        assert!(pairs >= 1, "no pair in the table");
        assert!(skipped >= 1, "no anchor entry");
        assert_eq!(
            bytes::<9>(restore_rt as *const () as usize),
            [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05],
            "glibc's __restore_rt"
        );
    }

    /// `rax`: the value; `rdx`: the flag (SysV: a 16-byte struct of two INTEGERs).
    #[repr(C)]
    struct Loaded {
        value: u64,
        faulted: u64,
    }

    /// A guarded load as a function, with a REX-prefixed load (`48 8b 07`) right after a
    /// 2-byte `xor ecx, ecx`, so that its load PC is known (`+2`) and the next byte starts
    /// another load (`8b 07`, `mov eax, [rdi]`) that is *not* in the table.
    ///
    /// # Safety
    /// The handler must be installed if `addr` may fault.
    #[unsafe(naked)]
    unsafe extern "sysv64" fn naked_load(addr: usize) -> Loaded {
        core::arch::naked_asm!(
            "xor ecx, ecx",
            "2:",
            "mov rax, qword ptr [rdi]",
            "3:",
            extable_entry!("2", "3"),
            "mov edx, ecx",
            "ret",
        )
    }

    /// What the handler takes for a load's own fault.
    #[test]
    fn only_instruction_faults_count() {
        use libc::{SIGBUS, SIGSEGV};
        for code in [
            libc::SI_USER,
            libc::SI_TKILL,
            libc::SI_QUEUE,
            libc::SI_TIMER,
        ] {
            assert!(!is_fault(SIGSEGV, code, 14), "sent: {code}");
        }
        assert!(is_fault(SIGSEGV, 1 /* SEGV_MAPERR */, 14));
        assert!(is_fault(SIGSEGV, 2 /* SEGV_ACCERR */, 14));
        assert!(is_fault(SIGSEGV, libc::SI_KERNEL, TRAP_GP));
        assert!(!is_fault(SIGSEGV, libc::SI_KERNEL, 14));
        assert!(is_fault(SIGBUS, libc::BUS_ADRERR, 14));
        assert!(is_fault(SIGBUS, libc::BUS_MCEERR_AR, 18));
        assert!(!is_fault(SIGBUS, libc::BUS_MCEERR_AO, 18));
    }

    /// A made-up siginfo: `si_code`, and the 8 bytes at offset 16 (`si_addr` of a fault,
    /// `si_pid` and `si_uid` of a child's exit).
    fn siginfo(code: libc::c_int, word: u64) -> libc::siginfo_t {
        // SAFETY: an all-zero siginfo is valid; offset 16 is the union, 8 bytes fit.
        unsafe {
            let mut info: libc::siginfo_t = core::mem::zeroed();
            info.si_signo = libc::SIGSEGV;
            info.si_code = code;
            core::ptr::write_unaligned(
                (&mut info as *mut libc::siginfo_t)
                    .cast::<u8>()
                    .add(16)
                    .cast(),
                word,
            );
            info
        }
    }

    /// The decision on made-up frames: at a load's PC, only a fault at an address the load
    /// accesses is its fault; a child's exit signal (`CLD_EXITED` = 1, with a pid and uid where
    /// a fault has its address) is not, whatever the registers. And "forced" (which `SIG_IGN`
    /// does not stop) only with the kernel's fault record: trap 14 at `cr2 == si_addr`.
    #[test]
    fn sent_signal_at_a_load_is_not_its_fault() {
        let load = naked_load as *const () as usize + 2;
        // SAFETY: an all-zero ucontext is valid.
        let mut uc: libc::ucontext_t = unsafe { core::mem::zeroed() };
        let base = 0x7f00_1234_5678_usize;
        uc.uc_mcontext.gregs[libc::REG_RDI as usize] = base as i64;
        uc.uc_mcontext.gregs[libc::REG_RIP as usize] = load as i64;
        let ctx = &uc as *const libc::ucontext_t as *const libc::c_void;
        let at = |info: &libc::siginfo_t| {
            // SAFETY: made-up but valid siginfo and ucontext; `load` is a load of the table.
            unsafe { faulted_in_load(info, ctx, load) }
        };
        assert!(at(&siginfo(1, base as u64)));
        assert!(at(&siginfo(2, base as u64 + 7)));
        assert!(!at(&siginfo(1, base as u64 + 8)));
        assert!(!at(&siginfo(1, base as u64 - 1)));
        let pid_uid = 4242 | (1000 << 32);
        assert!(!at(&siginfo(libc::CLD_EXITED, pid_uid)));
        // A general-protection fault needs a non-canonical access.
        assert!(!at(&siginfo(libc::SI_KERNEL, 0)));
        uc.uc_mcontext.gregs[libc::REG_RDI as usize] = (NON_CANONICAL - 4) as i64;
        assert!(at(&siginfo(libc::SI_KERNEL, 0)));

        let mut forced = |info: &libc::siginfo_t, trapno: i64, cr2: u64| {
            uc.uc_mcontext.gregs[libc::REG_TRAPNO as usize] = trapno;
            uc.uc_mcontext.gregs[libc::REG_CR2 as usize] = cr2 as i64;
            let ctx = &uc as *const libc::ucontext_t as *const libc::c_void;
            // SAFETY: made-up but valid siginfo and ucontext.
            unsafe { is_forced(libc::SIGSEGV, info, ctx) }
        };
        assert!(forced(&siginfo(1, 0x1000), TRAP_PF, 0x1000));
        assert!(!forced(
            &siginfo(libc::CLD_EXITED, pid_uid),
            TRAP_PF,
            0x1000
        ));
        assert!(!forced(&siginfo(libc::SI_USER, 0x1000), TRAP_PF, 0x1000));
        assert!(forced(&siginfo(libc::SI_KERNEL, 0), TRAP_GP, 0));
    }

    static APP_PC: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

    extern "C" fn app_handler(_: libc::c_int, _: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the ucontext the kernel passed to this SA_SIGINFO handler.
        let pc =
            unsafe { (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RIP as usize] };
        let code = if pc as usize == APP_PC.load(Ordering::SeqCst) {
            42
        } else {
            43
        };
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(code) };
    }

    /// A fault at a load PC of the table is the load's (the flag comes back set); a fault one
    /// byte after it is not a probe's fault: it must be chained to the application's handler
    /// (with the faulting PC), not turned into "no".
    #[test]
    fn only_the_exact_load_pc_is_resumed() {
        const NAME: &str = "only_the_exact_load_pc_is_resumed";
        if is_child(NAME) {
            let entry = naked_load as *const () as usize;
            let load = entry + 2;
            assert_eq!(bytes::<2>(entry), [0x31, 0xc9], "xor ecx, ecx");
            assert_eq!(bytes::<3>(load), [0x48, 0x8b, 0x07], "mov rax, [rdi]");
            assert_eq!(table().continuation(load, MAX_INSN), Some(load + 3));
            assert_eq!(table().continuation(load + 1, MAX_INSN), None);
            APP_PC.store(load + 1, Ordering::SeqCst);
            // SAFETY: installing a handler with the matching signature in a disposable child.
            unsafe {
                let mut sa: libc::sigaction = core::mem::zeroed();
                sa.sa_sigaction = app_handler as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO;
                libc::sigemptyset(&mut sa.sa_mask);
                assert_eq!(
                    libc::sigaction(libc::SIGSEGV, &sa, core::ptr::null_mut()),
                    0
                );
            }
            install().unwrap();
            let page = crate::testing::map_anonymous(4096).unwrap();
            assert_eq!(
                // SAFETY: our own fresh mapping.
                unsafe { libc::mprotect(page as *mut libc::c_void, 4096, libc::PROT_NONE) },
                0
            );
            let v = 0x1122_3344_5566_7788_u64;
            // SAFETY: the handler is installed; `v` is readable.
            let got = unsafe { naked_load(&v as *const u64 as usize) };
            assert_eq!((got.value, got.faulted), (v, 0));
            // SAFETY: the handler is installed; the load's fault is resumed.
            let got = unsafe { naked_load(page) };
            assert_eq!(got.faulted, 1);
            // SAFETY: none: the call is meant to fault at `load + 1`, in a disposable child;
            // the code there is `mov eax, [rdi]; mov edx, ecx; ret`, which the sysv64 ABI of
            // `Loaded` accepts.
            let f: unsafe extern "sysv64" fn(usize) -> Loaded =
                unsafe { core::mem::transmute(load + 1) };
            println!("CHILD READY");
            // SAFETY: see above.
            let got = unsafe { f(page) };
            println!("SWALLOWED faulted={}", got.faulted);
            std::process::exit(0);
        }
        let (status, out) = run_child(NAME);
        assert!(out.contains("CHILD READY"), "{status:?} {out}");
        assert_eq!(
            status.code(),
            Some(42),
            "the fault at load+1 was not handed to the application's handler with its PC \
             (signal {:?}): {out}",
            status.signal()
        );
    }
}
