//! The library only ever unmaps or closes what it still owns, and no dependency call on the
//! construction path can panic. Each case runs in a child process: it changes process-wide
//! state (the address space, descriptor limits, a seccomp filter).

mod support;

use addrprobe::{Backend, Prober};
use support::{AUDIT_ARCH, is_child, run_child};

const QUIET_BASE: usize = 0x4_0000_0000;
const QUIET_LEN: usize = 64 << 30;

/// Whether the page at `addr` is still mapped (`msync` fails with ENOMEM on a hole).
fn mapped(addr: usize) -> bool {
    // SAFETY: msync only inspects the mapping; it never touches the page's contents.
    unsafe { libc::msync(addr as *mut libc::c_void, support::ps(), libc::MS_ASYNC) == 0 }
}

/// `Prober::new`'s self-test maps pages at addresses the kernel chooses when the quiet window
/// is taken (by ASan's shadow, a JVM heap, ...). While it runs, another thread maps pages of
/// its own as fast as it can. The self-test must never unmap one of them: every page the
/// other thread mapped is still mapped at the end.
#[test]
fn selftest_never_unmaps_another_threads_pages() {
    const CASE: &str = "selftest_never_unmaps_another_threads_pages";
    if is_child(CASE) {
        let ps = support::ps();
        // Take the whole quiet window, so that the self-test falls back to kernel-chosen
        // addresses, right next to the other thread's fresh pages.
        // SAFETY: a fresh reservation that replaces nothing (MAP_FIXED_NOREPLACE).
        let r = unsafe {
            libc::mmap(
                QUIET_BASE as *mut libc::c_void,
                QUIET_LEN,
                libc::PROT_NONE,
                libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | libc::MAP_NORESERVE
                    | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        assert_eq!(r as usize, QUIET_BASE, "could not take the quiet window");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        // The other thread keeps its 64 newest pages and checks each one before it unmaps
        // it; a page that is gone by then was unmapped by somebody else.
        let mapper = std::thread::spawn(move || {
            let mut ring = [0usize; 64];
            let (mut made, mut vanished) = (0usize, 0usize);
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let slot = &mut ring[made % 64];
                if *slot != 0 {
                    if mapped(*slot) {
                        // SAFETY: our own page, verified still mapped just now.
                        unsafe { libc::munmap(*slot as *mut libc::c_void, ps) };
                    } else {
                        vanished += 1;
                    }
                }
                // SAFETY: a fresh private page at an address the kernel chooses.
                let p = unsafe {
                    libc::mmap(
                        core::ptr::null_mut(),
                        ps,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                assert_ne!(p, libc::MAP_FAILED);
                *slot = p as usize;
                made += 1;
            }
            vanished += ring.iter().filter(|&&p| p != 0 && !mapped(p)).count();
            (made, vanished)
        });
        // 5000 self-tests (under a second natively); an emulated CPU, where they can cost
        // hundreds of times more (5000 took over 420 s in an arm64 guest of Debian 6.1 under
        // QEMU/TCG), stops after a time budget well inside the child's timeout, but not
        // before 200.
        let budget = std::time::Duration::from_secs(4) * support::timeout_scale();
        let started = std::time::Instant::now();
        let mut errors = Vec::new();
        let mut runs = 0;
        while runs < 5000 && (runs < 200 || started.elapsed() < budget) {
            if let Err(e) = Prober::new(Backend::Mincore) {
                errors.push(e);
            }
            runs += 1;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (made, vanished) = mapper.join().unwrap();
        println!(
            "mapped {made} pages, {vanished} vanished; {} of {runs} Prober::new failed ({:?})",
            errors.len(),
            started.elapsed()
        );
        assert_eq!(vanished, 0, "the self-test unmapped another thread's pages");
        assert_eq!(errors, [], "a reused hole is not a failed self-test");
        return;
    }
    run_child(CASE).assert_success();
}

/// Makes `prctl(PR_GET_AUXV, ...)` fail with EINVAL, as on kernels before 6.4.
fn forbid_pr_get_auxv() {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    const PR_GET_AUXV: u32 = 0x4155_5856;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let allow = libc::SECCOMP_RET_ALLOW;
    let deny = libc::SECCOMP_RET_ERRNO | libc::EINVAL as u32;
    let prog = [
        stmt(BPF_LD | BPF_W | BPF_ABS, 4),
        jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET | BPF_K, allow),
        stmt(BPF_LD | BPF_W | BPF_ABS, 0),
        jump(BPF_JMP | BPF_JEQ | BPF_K, libc::SYS_prctl as u32, 0, 3),
        stmt(BPF_LD | BPF_W | BPF_ABS, 16),
        jump(BPF_JMP | BPF_JEQ | BPF_K, PR_GET_AUXV, 0, 1),
        stmt(BPF_RET | BPF_K, deny),
        stmt(BPF_RET | BPF_K, allow),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut _,
    };
    // SAFETY: plain prctl calls with a valid filter program that outlives them.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog
            ),
            0
        );
    }
}

/// On a kernel without `PR_GET_AUXV` (before 6.4), with no descriptor free, the first
/// `Prober::new` answers (a prober or an error) instead of panicking: the page size comes
/// from a source that cannot fail.
#[test]
fn first_prober_without_auxv_prctl_and_without_descriptors_does_not_panic() {
    const CASE: &str = "first_prober_without_auxv_prctl_and_without_descriptors_does_not_panic";
    if !is_child(CASE) {
        // the child makes PR_GET_AUXV fail with a seccomp filter
        if let Err(why) = support::seccomp_filters() {
            println!("skipped: {CASE}: {why}");
            return;
        }
    }
    if is_child(CASE) {
        forbid_pr_get_auxv();
        // Use up every descriptor.
        let mut held = Vec::new();
        loop {
            // SAFETY: dup of stdin's number; the copies are closed below.
            let fd = unsafe { libc::dup(0) };
            if fd < 0 {
                break;
            }
            held.push(fd);
        }
        let results: Vec<String> = Backend::ALL
            .iter()
            .map(|&b| match Prober::new(b) {
                Ok(p) => format!(
                    "{b}: ok ({})",
                    p.check(&held as *const _ as usize, 8).is_ok()
                ),
                Err(e) => format!("{b}: {e}"),
            })
            .collect();
        for fd in held {
            // SAFETY: our own duplicates.
            unsafe { libc::close(fd) };
        }
        for line in results {
            println!("{line}");
        }
        // And the answer is still right.
        let p = Prober::new(Backend::Mincore).expect("mincore needs no descriptor");
        let x = 5u64;
        assert_eq!(p.check(&x as *const u64 as usize, 8), Ok(true));
        assert_eq!(addrprobe::range::page_size(), support::ps());
        return;
    }
    let r = run_child(CASE);
    assert!(
        !r.stderr.contains("panicked"),
        "a dependency panicked: {}",
        r.stderr
    );
    r.assert_success();
}
