//! Memory tagging (arm64 MTE): in a process that enabled synchronous tag checks, a load through
//! a pointer whose tag differs from the memory's faults with SIGSEGV / `SEGV_MTESERR` at the
//! load instruction. For `SignalGuard` that is a load's fault like any other: the probe answers
//! "no" and the process lives on. The library only takes untagged addresses (a tag in the top
//! byte puts an address above `USER_SPACE_LIMIT`), so the case is an untagged pointer (tag 0)
//! to a granule tagged 3, next to a granule left at tag 0.
//!
//! Runs in a child (it changes the process's tag-check mode); skipped, saying so, where the CPU
//! or kernel has no MTE (`HWCAP2_MTE`). The kernel-copy backends' answers on the mismatching
//! granule are printed, not asserted: whether a kernel copy checks tags is the kernel's
//! business, and `process_vm_readv` does not (it reads through the kernel's own mapping).

#![cfg(target_arch = "aarch64")]

mod support;

use addrprobe::{Backend, Prober};
use support::{is_child, run_child};

const HWCAP2_MTE: libc::c_ulong = 1 << 18;
const PR_SET_TAGGED_ADDR_CTRL: libc::c_int = 55;
const PR_TAGGED_ADDR_ENABLE: libc::c_ulong = 1;
const PR_MTE_TCF_SYNC: libc::c_ulong = 1 << 1;
const PR_MTE_TAG_SHIFT: libc::c_ulong = 3;
const PROT_MTE: libc::c_int = 0x20;

fn has_mte() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_HWCAP2) & HWCAP2_MTE != 0 }
}

/// Sets the allocation tag of the 16-byte granule at `addr` to `tag`.
///
/// # Safety
///
/// `addr` must be 16-byte aligned and lie in a mapping of this process made with `PROT_MTE`.
unsafe fn set_tag(addr: usize, tag: usize) {
    let tagged = addr | (tag << 56);
    // SAFETY: the caller guarantees a PROT_MTE granule of ours; stg writes only its tag.
    unsafe {
        core::arch::asm!(
            ".arch_extension memtag",
            "stg {p}, [{p}]",
            p = in(reg) tagged,
            options(nostack)
        )
    };
}

/// The allocation tag of the granule at `addr`.
///
/// # Safety
///
/// As for [`set_tag`].
unsafe fn get_tag(addr: usize) -> usize {
    let mut v = addr;
    // SAFETY: ldg reads only the granule's tag.
    unsafe {
        core::arch::asm!(
            ".arch_extension memtag",
            "ldg {v}, [{a}]",
            v = inout(reg) v,
            a = in(reg) addr,
            options(nostack, readonly)
        )
    };
    (v >> 56) & 0xf
}

/// Turns on synchronous tag checks for this process and maps one fresh `PROT_MTE` page (every
/// granule's tag 0); its address. Only in a disposable child.
fn sync_mte_page() -> usize {
    // SAFETY: a process-wide mode change in this disposable child.
    let r = unsafe {
        libc::prctl(
            PR_SET_TAGGED_ADDR_CTRL,
            PR_TAGGED_ADDR_ENABLE | PR_MTE_TCF_SYNC | (0xfffe << PR_MTE_TAG_SHIFT),
            0,
            0,
            0,
        )
    };
    assert_eq!(r, 0, "PR_SET_TAGGED_ADDR_CTRL (sync tag checks)");
    let ps = support::ps();
    // SAFETY: a fresh anonymous mapping, unmapped at the end.
    let base = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            ps,
            libc::PROT_READ | libc::PROT_WRITE | PROT_MTE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED, "mmap PROT_MTE");
    base as usize
}

/// Runs `body` in a child process (it changes the process's tag-check mode) when the CPU and
/// kernel have MTE, and checks that the child got to its end; says "skipped" otherwise.
fn mte_case(case: &str, body: fn()) {
    if !has_mte() {
        eprintln!("skipped: {case}: no MTE on this CPU or kernel (HWCAP2_MTE)");
        return;
    }
    if is_child(case) {
        body();
        println!("CHILD DONE");
        return;
    }
    let out = run_child(case);
    out.assert_success();
    assert!(out.stdout.contains("CHILD DONE"), "{}", out.stdout);
    print!("{}", out.stdout);
}

#[test]
fn tag_check_fault_of_a_guarded_load_is_a_no() {
    mte_case("tag_check_fault_of_a_guarded_load_is_a_no", || {
        let guard = Prober::new(Backend::SignalGuard).expect("signal-guard");
        let base = sync_mte_page();
        let ps = support::ps();
        // SAFETY: the first granule of our PROT_MTE page.
        unsafe { set_tag(base, 3) };
        // The tags as the CPU reports them (`ldg`): the granules to probe are chosen by them,
        // one with tag 0 (matching the pointer) and one with another tag.
        // SAFETY: granules of our PROT_MTE page.
        let tags: Vec<usize> = (0..ps / 16)
            .map(|g| unsafe { get_tag(base + 16 * g) })
            .collect();
        let tagged = tags.iter().position(|&t| t != 0).expect("a tagged granule") * 16 + base;
        let untouched = tags.iter().position(|&t| t == 0).expect("a tag-0 granule") * 16 + base;
        println!(
            "granules with a non-zero tag: {}",
            tags.iter().filter(|&&t| t != 0).count()
        );
        let base = tagged;
        let plain = Box::new(0x1234_5678_u64);
        let plain = &*plain as *const u64 as usize;
        let mut buf = [0u8; 8];
        let got = [
            guard.check(untouched, 8),
            guard.check(base, 8),
            guard.read(untouched, &mut buf),
            guard.read(base, &mut buf),
            guard.check(plain, 8),
        ];
        println!(
            "signal-guard: matching, mismatching, read matching, read mismatching, plain: {got:?}"
        );
        for b in [Backend::SigprocMask, Backend::Pipe, Backend::ProcessVmReadv] {
            let p = Prober::new(b).expect("kernel-copy backend");
            println!(
                "{b}: mismatching {:?}, matching {:?}",
                p.check(base, 8),
                p.check(untouched, 8)
            );
        }
        assert_eq!(got, [Ok(true), Ok(false), Ok(true), Ok(false), Ok(true)]);
        // SAFETY: our own mapping (the page holding both granules).
        unsafe { libc::munmap((untouched & !(ps - 1)) as *mut libc::c_void, ps) };
    });
}

/// A `read` of bytes inside one granule loads no byte of the next one: with synchronous tag
/// checks and the next granule tagged differently, a read of the last 4 (or 12) bytes of a
/// tag-0 granule through an untagged pointer is `Ok(true)`. A read that loaded an 8- or
/// 16-byte window would touch the next granule and answer `Ok(false)`.
#[test]
fn read_loads_no_byte_outside_the_range() {
    mte_case("read_loads_no_byte_outside_the_range", || {
        let guard = Prober::new(Backend::SignalGuard).expect("signal-guard");
        let base = sync_mte_page();
        // SAFETY: the second granule of our PROT_MTE page.
        unsafe { set_tag(base + 16, 5) };
        // SAFETY: granules of our PROT_MTE page.
        let tags = unsafe { (get_tag(base), get_tag(base + 16)) };
        assert_eq!(tags, (0, 5), "granule tags");
        let (mut four, mut twelve, mut two) = ([0u8; 4], [0u8; 12], [0u8; 2]);
        let got = [
            guard.read(base + 12, &mut four),
            guard.read(base + 4, &mut twelve),
            guard.read(base + 14, &mut two),
            guard.read(base + 16, &mut four),
            guard.read(base + 12, &mut [0u8; 8]),
        ];
        println!("read 12+4, 4+12, 14+2 (granule 0), 16+4 (granule 1), 12+8 (both): {got:?}");
        assert_eq!(got, [Ok(true), Ok(true), Ok(true), Ok(false), Ok(false)]);
    });
}
