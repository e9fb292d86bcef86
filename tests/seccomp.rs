//! Under a seccomp filter that forbids a backend's syscall, that backend is "unavailable"
//! (never "unreadable") and `auto()` picks another one. Each filter is installed in a
//! child process: a filter cannot be removed.
//!
//! The filters are plain classic BPF (`prctl(PR_SET_NO_NEW_PRIVS)` +
//! `seccomp(SECCOMP_SET_MODE_FILTER)`); they check the architecture first and allow every
//! syscall of another ABI unchanged.

mod support;

use addrprobe::{Backend, Error, Prober};
use support::{AUDIT_ARCH, Region, SIGNAL_GUARD_ARCH, figure, is_child, page_pattern, run_child};

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LO: u32 = 16;

use support::{bpf_jump as jump, bpf_stmt as stmt};

/// Installs a filter that makes `process_vm_readv` fail with `errno`, and, if
/// `block_sigprocmask_probe`, `rt_sigprocmask` with the invalid `how` of -1 too.
fn install_filter(errno: i32, block_sigprocmask_probe: bool) {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let deny = libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA);
    let allow = libc::SECCOMP_RET_ALLOW;
    let mut prog = vec![
        stmt(BPF_LD | BPF_W | BPF_ABS, OFF_ARCH),
        jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET | BPF_K, allow),
        stmt(BPF_LD | BPF_W | BPF_ABS, OFF_NR),
        jump(
            BPF_JMP | BPF_JEQ | BPF_K,
            libc::SYS_process_vm_readv as u32,
            0,
            1,
        ),
        stmt(BPF_RET | BPF_K, deny),
    ];
    if block_sigprocmask_probe {
        prog.extend([
            jump(
                BPF_JMP | BPF_JEQ | BPF_K,
                libc::SYS_rt_sigprocmask as u32,
                0,
                3,
            ),
            stmt(BPF_LD | BPF_W | BPF_ABS, OFF_ARG0_LO),
            jump(BPF_JMP | BPF_JEQ | BPF_K, u32::MAX, 0, 1),
            stmt(BPF_RET | BPF_K, deny),
        ]);
    }
    prog.push(stmt(BPF_RET | BPF_K, allow));
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: prctl and seccomp with valid arguments; the filter only returns ALLOW or ERRNO.
    unsafe {
        assert_eq!(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            0,
            "PR_SET_NO_NEW_PRIVS"
        );
        let r = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        );
        assert_eq!(
            r,
            0,
            "seccomp(SECCOMP_SET_MODE_FILTER): errno {}",
            support::errno()
        );
    }
}

/// The filter works: the raw syscall now fails with `errno`.
fn assert_filtered(errno: i32) {
    let mut buf = [0u8; 8];
    let src = [1u8; 8];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: 8,
    };
    let remote = libc::iovec {
        iov_base: src.as_ptr() as *mut _,
        iov_len: 8,
    };
    // SAFETY: a process_vm_readv of our own buffers.
    let r = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    assert_eq!(
        (r, support::errno()),
        (-1, errno),
        "the filter is not in force"
    );
}

/// Correct answers from `p` on a readable page and a PROT_NONE page.
fn assert_answers(p: &Prober) {
    let r = Region::anon(2);
    let bytes = page_pattern(0, 3);
    r.fill(0, &bytes);
    r.protect(1, libc::PROT_NONE);
    assert_eq!(p.check(r.page(0), 4096), Ok(true));
    assert_eq!(p.check(r.page(1), 8), Ok(false));
    let mut buf = vec![0u8; bytes.len()];
    assert_eq!(p.read(r.page(0), &mut buf), Ok(true));
    assert_eq!(buf, bytes);
}

fn child(errno: i32, block_sigprocmask_probe: bool) {
    install_filter(errno, block_sigprocmask_probe);
    assert_filtered(errno);
    match Prober::new(Backend::ProcessVmReadv) {
        Err(Error::Unavailable {
            backend: Backend::ProcessVmReadv,
            errno: Some(e),
            ..
        }) if e == errno => {}
        other => panic!("ProcessVmReadv under a filter returning errno {errno}: {other:?}"),
    }
    if block_sigprocmask_probe {
        match Prober::new(Backend::SigprocMask) {
            Err(Error::Unavailable {
                backend: Backend::SigprocMask,
                ..
            }) => {}
            other => panic!("SigprocMask under a filter returning errno {errno}: {other:?}"),
        }
    }
    let p = Prober::auto().expect("auto() under the filter");
    assert_ne!(p.backend(), Backend::ProcessVmReadv);
    if block_sigprocmask_probe {
        assert_eq!(
            p.backend(),
            Backend::Pipe,
            "the only Readable backend left without a handler"
        );
    }
    assert_answers(&p);
    let with_handler = addrprobe::AutoOptions::new()
        .allow_signal_handler(true)
        .build()
        .expect("auto with handler");
    // Without the guarded load, allowing a handler changes nothing.
    let expected = if SIGNAL_GUARD_ARCH {
        Backend::SignalGuard
    } else {
        p.backend()
    };
    assert_eq!(with_handler.backend(), expected);
    assert_answers(&with_handler);
    println!("auto picked {}", p.backend());
}

fn parent(test: &str) {
    if let Err(why) = support::seccomp_filters() {
        println!("skipped: {test}: {why}");
        return;
    }
    let out = run_child(test);
    out.assert_success();
    figure(&format!("seccomp.{test}"), "passed");
}

#[test]
fn seccomp_process_vm_readv_eperm() {
    if is_child("seccomp_process_vm_readv_eperm") {
        return child(libc::EPERM, false);
    }
    parent("seccomp_process_vm_readv_eperm");
}

#[test]
fn seccomp_process_vm_readv_enosys() {
    if is_child("seccomp_process_vm_readv_enosys") {
        return child(libc::ENOSYS, false);
    }
    parent("seccomp_process_vm_readv_enosys");
}

/// With both faster syscall backends forbidden, `auto()` falls back to the pipe.
#[test]
fn seccomp_process_vm_readv_and_sigprocmask_probe_eperm() {
    if is_child("seccomp_process_vm_readv_and_sigprocmask_probe_eperm") {
        return child(libc::EPERM, true);
    }
    parent("seccomp_process_vm_readv_and_sigprocmask_probe_eperm");
}
