//! What SignalGuard adds to a fault that is not a probe's: a host's own SIGSEGV, handled by
//! the host's handler, which skips the faulting instruction (a JVM's implicit null check
//! works this way). Each handler kind is timed without the crate and with a SignalGuard
//! prober created after the handler (the crate's handler is in front and chains), in the same
//! process and run: ns per fault, median of the rounds, and the difference.
//!
//! The rounds alternate between the host's handler alone and the crate's in front of it (see
//! `child`); the ratio is the median of the rounds' ratios.
//!
//! Handler kinds:
//! - `hotspot-like`: `SA_SIGINFO | SA_RESTART`, `sa_mask` full but the synchronous signals
//!   (HotSpot's); the crate's action adopts that mask, so chaining sets no mask;
//! - `empty-mask`: `SA_SIGINFO | SA_ONSTACK` with an empty `sa_mask` (Rust std's); the crate
//!   keeps its full mask and sets the handler's with one `rt_sigprocmask`.
//!
//! Since the crate cannot be uninstalled, each kind runs in a child process of its own.
//! `cargo bench --bench foreign_fault [-- ROUNDS]`; `--test` (what `cargo bench -- --test`
//! passes) runs one short round. `-- --syscalls KIND with|without N` makes only `N` faults,
//! for `strace -c -f` to count the syscalls each fault costs.

use std::time::Instant;

use addrprobe::{Backend, Prober};

/// A load of the byte at `addr` whose length the handler knows: 3 bytes on x86_64
/// (`movzx eax, byte ptr [rdi]`), 4 on arm64 (`ldrb w0, [x0]`).
///
/// # Safety
/// `addr` must be readable, or the installed handler must skip the load.
#[unsafe(naked)]
unsafe extern "C" fn load_byte(addr: usize) -> u32 {
    #[cfg(target_arch = "x86_64")]
    core::arch::naked_asm!("movzx eax, byte ptr [rdi]", "ret");
    #[cfg(target_arch = "aarch64")]
    core::arch::naked_asm!("ldrb w0, [x0]", "ret");
}

const LOAD_LEN: usize = if cfg!(target_arch = "x86_64") { 3 } else { 4 };

/// The host's handler: skips the faulting load (which then returns whatever the result
/// register held).
extern "C" fn skip(_: libc::c_int, _: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel's ucontext of an SA_SIGINFO handler; only the PC changes.
    unsafe {
        let uc = ctx.cast::<libc::ucontext_t>();
        #[cfg(target_arch = "x86_64")]
        {
            (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] += LOAD_LEN as i64;
        }
        #[cfg(target_arch = "aarch64")]
        {
            (*uc).uc_mcontext.pc += LOAD_LEN as u64;
        }
    }
}

fn install(kind: &str) {
    // SAFETY: a handler that matches its flags, in this bench's child process.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = skip as *const () as usize;
        if kind == "hotspot-like" {
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigfillset(&mut sa.sa_mask);
            for s in [
                libc::SIGILL,
                libc::SIGBUS,
                libc::SIGFPE,
                libc::SIGSEGV,
                libc::SIGTRAP,
            ] {
                libc::sigdelset(&mut sa.sa_mask, s);
            }
        } else {
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
        }
        assert_eq!(
            libc::sigaction(libc::SIGSEGV, &sa, core::ptr::null_mut()),
            0
        );
    }
}

/// A fresh anonymous `PROT_NONE` page of this process's own.
fn prot_none_page() -> usize {
    // SAFETY: a fresh mapping at a kernel-chosen address aliases nothing.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap");
    p as usize
}

/// ns per fault over `n` faults at `page` (PROT_NONE).
fn round(page: usize, n: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: the page faults and the installed handler skips the load.
        core::hint::black_box(unsafe { load_byte(core::hint::black_box(page)) });
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The kernel's `struct sigaction` (x86_64 and arm64), read and written with the raw syscall
/// so that the crate's own restorer stays as it installed it (libc's `sigaction` would put
/// its own in).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

fn raw_sigaction(new: Option<&KernelSigaction>, old: Option<&mut KernelSigaction>) {
    let new = new.map_or(core::ptr::null(), |a| a as *const KernelSigaction);
    let old = old.map_or(core::ptr::null_mut(), |a| a as *mut KernelSigaction);
    // SAFETY: valid pointers (or null) to the kernel's 32-byte layout; an 8-byte sigset.
    let r = unsafe { libc::syscall(libc::SYS_rt_sigaction, libc::SIGSEGV, new, old, 8) };
    assert_eq!(r, 0, "rt_sigaction");
}

/// Rounds alternate between the host's handler alone (its action put back with the raw
/// syscall) and the crate's handler in front of it (the crate's action, read back after the
/// prober was made, put back the same way), so that each round's pair is measured under the
/// same conditions.
fn child(kind: &str, rounds: usize, n: usize) {
    install(kind);
    let page = prot_none_page();
    let mut host = KernelSigaction::default();
    raw_sigaction(None, Some(&mut host));
    let prober = Prober::new(Backend::SignalGuard).expect("signal-guard");
    let mut guard = KernelSigaction::default();
    raw_sigaction(None, Some(&mut guard));
    assert_ne!(
        guard.handler, host.handler,
        "the crate's handler is installed"
    );
    let (mut without, mut with, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..=rounds {
        raw_sigaction(Some(&host), None);
        let a = round(page, n);
        raw_sigaction(Some(&guard), None);
        let b = round(page, n);
        if i > 0 {
            without.push(a);
            with.push(b);
            ratio.push(b / a);
        }
    }
    assert_eq!(prober.check(page, 1), Ok(false));
    let (without, with) = (median(without), median(with));
    println!(
        "| {kind} | {without:.0} | {with:.0} | {:+.0} | {:.2} |",
        with - without,
        median(ratio)
    );
}

/// `--syscalls KIND with|without N`: only `N` faults, with or without the crate (its prober
/// made first), for counting the syscalls of each under `strace -c`.
fn syscalls_only(kind: &str, with: bool, n: usize) {
    install(kind);
    let page = prot_none_page();
    let _prober = with.then(|| Prober::new(Backend::SignalGuard).expect("signal-guard"));
    round(page, n);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--syscalls") {
        let n = args[i + 3].parse().unwrap();
        syscalls_only(&args[i + 1], args[i + 2] == "with", n);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let kind = args[i + 1].clone();
        let rounds: usize = args[i + 2].parse().unwrap();
        let n: usize = args[i + 3].parse().unwrap();
        child(&kind, rounds, n);
        return;
    }
    let quick = args.iter().any(|a| a == "--test");
    let rounds = if quick {
        1
    } else {
        args.iter().find_map(|a| a.parse().ok()).unwrap_or(15)
    };
    let n = if quick { 100 } else { 20_000 };
    println!(
        "\nforeign SIGSEGV, handled by the host's handler (ns per fault, median of {rounds} rounds of {n}):\n"
    );
    println!("| host handler | without the crate | with a SignalGuard prober | added | ratio |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for kind in ["hotspot-like", "empty-mask"] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--child", kind, &rounds.to_string(), &n.to_string()])
            .output()
            .expect("child");
        assert!(out.status.success(), "{kind}: {:?}", out);
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}
