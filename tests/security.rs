//! Security: probes never write to the memory they probe, and every descriptor the crate
//! opens is close-on-exec.

mod support;

use addrprobe::Guarantee;
use support::{fd_list, figure, is_child, new_fds, ps, run_child};

fn checksum(bytes: &[u8]) -> u64 {
    // FNV-1a
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Probes `[addr, addr + len)` with every backend, `check` and `read`, many ways.
fn probe_everything(addr: usize, len: usize) -> usize {
    let probers = support::all_probers();
    let mut buf = vec![0u8; len];
    let mut n = 0;
    for p in &probers {
        for (off, l) in [
            (0, len),
            (0, 1),
            (len - 1, 1),
            (ps() - 4, 8),
            (17, len - 17),
        ] {
            assert!(p.check(addr + off, l).is_ok(), "{}", p.backend());
            if p.guarantee() == Guarantee::Readable {
                assert_eq!(
                    p.read(addr + off, &mut buf[..l]),
                    Ok(true),
                    "{}",
                    p.backend()
                );
            }
            n += 1;
        }
    }
    n
}

/// Soft-dirty bits of the pages of `[addr, addr + len)` (bit 55 of /proc/self/pagemap), or
/// `None` where the kernel does not track them.
fn soft_dirty(addr: usize, pages: usize) -> Option<Vec<bool>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap").ok()?;
    let mut v = Vec::new();
    for i in 0..pages {
        let mut e = [0u8; 8];
        f.read_exact_at(&mut e, ((addr / ps() + i) * 8) as u64)
            .ok()?;
        v.push(u64::from_ne_bytes(e) & (1 << 55) != 0);
    }
    Some(v)
}

fn clear_soft_dirty() -> bool {
    std::fs::write("/proc/self/clear_refs", "4").is_ok()
}

fn child_never_write() {
    let pages = 4;
    let len = pages * ps();
    // A read-only private anonymous region with a pattern.
    let ro = support::Region::anon(pages);
    for i in 0..pages {
        ro.fill(i, &support::page_pattern(i, 5));
    }
    for i in 0..pages {
        ro.protect(i, libc::PROT_READ);
    }
    // A writable MAP_SHARED mapping of a file: a write would succeed and reach the file.
    let path = std::env::temp_dir().join(format!("addrprobe-security-{}", std::process::id()));
    let content: Vec<u8> = (0..pages)
        .flat_map(|i| support::page_pattern(i, 9))
        .collect();
    std::fs::write(&path, &content).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let shared = support::mmap_quiet(
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
        std::os::fd::AsRawFd::as_raw_fd(&file),
    );
    // SAFETY: both ranges are our own live mappings; no Rust reference aliases them mutably.
    let (ro_bytes, sh_bytes) = unsafe {
        (
            core::slice::from_raw_parts(ro.addr as *const u8, len),
            core::slice::from_raw_parts(shared as *const u8, len),
        )
    };
    let (ro_sum, sh_sum) = (checksum(ro_bytes), checksum(sh_bytes));
    // Fault the pages in, then clear the soft-dirty bits: any write from now on sets them.
    let tracked = clear_soft_dirty();
    let n = probe_everything(ro.addr, len) + probe_everything(shared, len);
    assert_eq!(checksum(ro_bytes), ro_sum, "a read-only page changed");
    assert_eq!(checksum(sh_bytes), sh_sum, "a MAP_SHARED page changed");
    // SAFETY: msync of our own mapping, then reading the file back.
    unsafe { libc::msync(shared as *mut libc::c_void, len, libc::MS_SYNC) };
    let on_disk = std::fs::read(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&file)
    ))
    .unwrap();
    assert_eq!(on_disk, content, "the file changed");
    if tracked && let Some(bits) = soft_dirty(shared, pages) {
        assert!(
            bits.iter().all(|&d| !d),
            "a probe wrote to the MAP_SHARED page: soft-dirty {bits:?}"
        );
        println!("soft-dirty bits stayed clear on the shared pages");
        figure("security.soft_dirty_checked", 1);
    }
    figure("security.probes_of_readonly_and_shared_pages", n);
    figure("security.bytes_changed", 0);
}

/// Read-only pages keep their checksum, and a writable MAP_SHARED file mapping keeps its
/// checksum, its file content and (where the kernel tracks them) clear soft-dirty bits,
/// after every backend probed them. Runs in a child because clearing soft-dirty bits is
/// process-wide.
#[test]
fn probes_never_write_to_probed_memory() {
    if is_child("probes_never_write_to_probed_memory") {
        return child_never_write();
    }
    let out = run_child("probes_never_write_to_probed_memory");
    out.assert_success();
    out.forward_figures();
}

fn child_cloexec() {
    let before = fd_list();
    let probers = support::all_probers();
    let ours = new_fds(&before, &fd_list());
    assert!(
        ours.len() >= 3,
        "expected the pipe pool, /dev/null and /proc/self/maps: {ours:?}"
    );
    for (n, t) in &ours {
        // SAFETY: F_GETFD on a descriptor the crate holds.
        let flags = unsafe { libc::fcntl(*n, libc::F_GETFD) };
        assert!(
            flags >= 0 && flags & libc::FD_CLOEXEC != 0,
            "fd {n} ({t}) is not FD_CLOEXEC"
        );
    }
    // exec a shell that lists its descriptors.
    let out = std::process::Command::new("/bin/sh")
        .args([
            "-c",
            r#"for f in /proc/self/fd/*; do echo "FD ${f##*/} $(readlink "$f")"; done"#,
        ])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("FD 0 "), "no listing: {listing}");
    for line in listing
        .lines()
        .filter_map(|l| l.find("FD ").map(|i| &l[i..]))
    {
        let mut it = line.splitn(3, ' ');
        let (n, t) = (
            it.nth(1).unwrap().parse::<i32>().unwrap(),
            it.next().unwrap_or(""),
        );
        assert!(
            !ours.iter().any(|(m, u)| *m == n && u == t),
            "fd {n} ({t}) of the crate survived exec"
        );
    }
    drop(probers);
    figure("security.crate_fds_checked_cloexec", ours.len());
    figure("security.crate_fds_inherited_by_exec", 0);
}

/// Every descriptor the crate opens is close-on-exec: an exec'd program sees none of them.
#[test]
fn crate_fds_are_cloexec() {
    if is_child("crate_fds_are_cloexec") {
        return child_cloexec();
    }
    let out = run_child("crate_fds_are_cloexec");
    out.assert_success();
    out.forward_figures();
}
