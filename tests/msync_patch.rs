//! The msync-patch emulation (`addrprobe_lab::msync_patch`): the file-mapping cache finds the
//! file behind an address, each emulated mode starts exactly the writeback it claims (seen
//! as write-protect faults on the pages writeback cleaned), the workloads' walk finds the
//! frames it was given, and the profiler workload leaves no handler, timer, file or
//! descriptor behind.

mod support;

use std::os::fd::AsRawFd;

use addrprobe::unwind::Frame;
use addrprobe_lab::msync_patch::workloads::{
    self, FRAME_RECORD, FsKind, ProfilerConfig, Region, write_chain,
};
use addrprobe_lab::msync_patch::{EmulatedMsync, FileMappings, Mode, OpenedVia};
use support::{fd_list, is_child, new_fds, ps, run_child};

fn map(len: usize, prot: i32, flags: i32, fd: i32, off: usize) -> usize {
    // SAFETY: a fresh mapping at a kernel-chosen address.
    let p = unsafe { libc::mmap(core::ptr::null_mut(), len, prot, flags, fd, off as i64) };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    p as usize
}

fn unmap(addr: usize, len: usize) {
    // SAFETY: the tests unmap only mappings they made.
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
}

#[test]
fn file_mappings_find_only_shared_file_mappings_with_their_offset() {
    let ps = ps();
    let dir = std::env::temp_dir();
    let path = dir.join(format!("addrprobe-msync-test-maps-{}", std::process::id()));
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .expect("create the test file");
    let _ = std::fs::remove_file(&path); // the mapping keeps it alive; map_files still opens it
    file.set_len(4 * ps as u64).unwrap();
    let fd = file.as_raw_fd();
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let shared = map(2 * ps, rw, libc::MAP_SHARED, fd, ps);
    let private = map(ps, libc::PROT_READ, libc::MAP_PRIVATE, fd, 0);
    let anon = map(ps, rw, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0);

    let found = FileMappings::overlapping(shared + ps, shared + ps + 1).expect("overlapping");
    assert_eq!(found.len(), 1);
    let m = found.iter().next().unwrap();
    assert_eq!(
        (m.start, m.end, m.offset),
        (shared, shared + 2 * ps, ps as u64)
    );
    // SAFETY: fstat into a zeroed struct.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: valid descriptor and pointer.
    assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
    assert_eq!((m.dev, m.ino), (st.st_dev, st.st_ino));
    let mut st2: libc::stat = st;
    // SAFETY: the cached descriptor is open while `found` lives.
    assert_eq!(unsafe { libc::fstat(m.fd(), &mut st2) }, 0);
    assert_eq!(
        st2.st_ino, st.st_ino,
        "the cached descriptor is the mapped file"
    );

    assert!(
        FileMappings::overlapping(private, private + ps)
            .unwrap()
            .is_empty(),
        "a private file mapping is not shared"
    );
    // A shared anonymous mapping is a shmem file: the kernel patch would (uselessly) start its
    // writeback too, so it is listed.
    let shm = FileMappings::overlapping(anon, anon + ps).unwrap();
    assert_eq!(shm.len(), 1);
    assert!(
        FileMappings::all()
            .unwrap()
            .iter()
            .any(|m| m.start == shared)
    );
    drop((found, shm));
    unmap(shared, 2 * ps);
    unmap(private, ps);
    unmap(anon, ps);
}

/// Minor faults of this thread.
fn minflt() -> i64 {
    // SAFETY: getrusage into a zeroed struct.
    let mut ru: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    ru.ru_minflt
}

/// Whether storing into `addr` took a page fault (a write-protect fault on a page that
/// writeback cleaned, on a file system with writeback).
fn store_faults(addr: usize, v: u64) -> bool {
    let before = minflt();
    // SAFETY: callers pass addresses inside their read-write mapping.
    unsafe { core::ptr::write_volatile(addr as *mut u64, v) };
    minflt() > before
}

#[test]
fn each_mode_starts_exactly_the_writeback_it_claims() {
    let ps = ps();
    let dir = std::env::temp_dir();
    let fs = FsKind::of(&dir).expect("statfs of the temp dir");
    let region = Region::shared_file(&dir, "test-modes", 8 * ps, ps).expect("shared file");
    let page = |i: usize| region.addr() + i * ps;
    for (mode, wait) in Mode::ALL.into_iter().flat_map(|m| [(m, false), (m, true)]) {
        let maps = FileMappings::overlapping(region.addr(), region.addr() + region.len()).unwrap();
        assert_eq!(maps.len(), 1);
        let probe = EmulatedMsync::new(mode, maps)
            .expect("EmulatedMsync")
            .with_wait_before(wait);
        assert_eq!(probe.waits_before(), wait);
        // Dirty every page and make sure each is mapped writable (a second store never faults).
        for round in 0..2 {
            for i in 0..8 {
                let faulted = store_faults(page(i), round);
                if round == 1 {
                    assert!(
                        !faulted,
                        "{mode}: page {i} still faults after being dirtied"
                    );
                }
            }
        }
        // Probe 8 bytes inside page 2; errno is left as it was.
        support::set_errno(4242);
        assert_eq!(probe.check(page(2) + 8, 8), Ok(true));
        assert_eq!(support::errno(), 4242, "{mode}: the probe changed errno");
        let probed = store_faults(page(2), 7);
        let other = store_faults(page(5), 7);
        let expect = match (fs, mode) {
            (FsKind::Tmpfs, _) | (_, Mode::Stock) => (false, false),
            (FsKind::Ext4, Mode::AB) => (true, false),
            (FsKind::Ext4, Mode::AAlone) => (true, true),
            (FsKind::Other(m), _) => {
                eprintln!("note: temp dir on file system {m:#x}: writeback effects not asserted");
                (probed, other)
            }
        };
        assert_eq!(
            (probed, other),
            expect,
            "{mode} (wait before: {wait}) on {}: (probed page refaulted, other page refaulted)",
            fs.name()
        );
        // Unmapped memory still answers "not mapped" in every mode.
        let hole = map(
            ps,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        unmap(hole, ps);
        let _ = probe.check(hole, 8); // may have been reused by another thread: no assertion
        assert_eq!(probe.check(0, 8), Ok(false));
        // msync fails with ENOMEM on an unmapped page: errno must still be the caller's.
        support::set_errno(4243);
        assert_eq!(probe.check(0x1000, 8), Ok(false));
        assert_eq!(support::errno(), 4243, "{mode}: a 'no' changed errno");
        // Writeback must not change the bytes.
        assert_eq!(
            // SAFETY: an aligned 8-byte load from page 2 of the test's own read-write mapping.
            unsafe { core::ptr::read_volatile(page(2) as *const u64) },
            7
        );
    }
}

#[test]
fn walk_finds_the_frames_it_was_given_and_stops_at_an_unmapped_record() {
    let ps = ps();
    let stack = support::Region::anon(4);
    let probe = EmulatedMsync::new(Mode::Stock, FileMappings::default()).unwrap();
    // 32 frames, 64 bytes apart, in pages 0 and 1.
    // SAFETY: pages 0..2 of our read-write region.
    let fp = unsafe { write_chain(stack.page(0), 32, 64, 0x1000, 16) };
    let mut out = [Frame::default(); 64];
    // SAFETY: the chain lies in our read-write region.
    let w = unsafe { workloads::walk(&probe, fp, &mut out) };
    assert_eq!(w.depth, 32);
    assert_eq!(w.stop, addrprobe::unwind::Stop::EndOfChain);
    for (i, f) in out[..32].iter().enumerate() {
        assert_eq!(f.pc, 0x1000 + i * 16, "return address of frame {i}");
    }
    // Frame 9 now links to page 3, which we unmap: 10 frames, then "unreadable".
    // SAFETY: the saved-fp word of frame 9, in our region.
    unsafe { core::ptr::write_volatile((stack.page(0) + 9 * 64) as *mut usize, stack.page(3)) };
    stack.unmap(3);
    // SAFETY: as above; the unmapped record is never loaded (msync says "not mapped").
    let w = unsafe { workloads::walk(&probe, fp, &mut out) };
    assert_eq!(w.depth, 10);
    assert!(
        matches!(w.stop, addrprobe::unwind::Stop::Unreadable { fp } if fp == stack.page(3)),
        "{:?}",
        w.stop
    );
    assert_eq!(FRAME_RECORD, 2 * core::mem::size_of::<usize>());
    let _ = ps;
}

#[test]
fn profiler_run_leaves_no_handler_timer_file_or_descriptor() {
    if is_child("profiler_run_leaves_no_handler_timer_file_or_descriptor") {
        let dir = std::env::temp_dir();
        // SAFETY: a zeroed sigaction with SIG_IGN is valid.
        let mut ign: libc::sigaction = unsafe { core::mem::zeroed() };
        ign.sa_sigaction = libc::SIG_IGN;
        assert_eq!(
            // SAFETY: `ign` is a valid action (SIG_IGN, empty mask); the old action is not
            // asked for (null).
            unsafe { libc::sigaction(libc::SIGPROF, &ign, core::ptr::null_mut()) },
            0
        );
        let fds = fd_list();
        let mut cfg = ProfilerConfig::study(300);
        cfg.file_bytes = 4 << 20;
        cfg.work_per_op = 2000;
        let rows = workloads::profile(cfg, &dir, &Mode::ALL, 1).expect("profile");
        assert_eq!(rows.len(), 3);
        for (r, m) in rows.iter().zip(Mode::ALL) {
            assert_eq!(r.mode, m);
            assert_eq!(r.ops, 300);
            assert_eq!(
                r.probe_failures, 0,
                "{m}: a probe of a live record said not mapped"
            );
        }
        // SAFETY: zeroed out-parameter.
        let mut now: libc::sigaction = unsafe { core::mem::zeroed() };
        assert_eq!(
            // SAFETY: a null new action only reads the current disposition into `now`.
            unsafe { libc::sigaction(libc::SIGPROF, core::ptr::null(), &mut now) },
            0
        );
        assert_eq!(
            now.sa_sigaction,
            libc::SIG_IGN,
            "the previous SIGPROF disposition is back"
        );
        assert!(
            new_fds(&fds, &fd_list()).is_empty(),
            "descriptors left open: {:?}",
            new_fds(&fds, &fd_list())
        );
        let prefix = format!("addrprobe-msync-profiler-{}-", std::process::id());
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .collect();
        assert!(left.is_empty(), "files left behind: {left:?}");
        // The timer is gone: with SIGPROF at its default action (terminate), waiting 20 ms
        // of CPU-free time and burning 20 ms of CPU must not kill us.
        // SAFETY: a zeroed sigaction with SIG_DFL is valid.
        let mut dfl: libc::sigaction = unsafe { core::mem::zeroed() };
        dfl.sa_sigaction = libc::SIG_DFL;
        // SAFETY: valid pointer.
        unsafe { libc::sigaction(libc::SIGPROF, &dfl, core::ptr::null_mut()) };
        let mut x = 1u64;
        for _ in 0..20_000_000u64 {
            x = core::hint::black_box(x.wrapping_mul(3).wrapping_add(1));
        }
        println!("child done {x}");
        return;
    }
    let out = run_child("profiler_run_leaves_no_handler_timer_file_or_descriptor");
    out.assert_success();
    assert!(out.stdout.contains("child done"), "{}", out.stdout);
}

/// Drops every capability of this (child) process: `/proc/self/map_files` then refuses to
/// open (it needs `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN`), as for an unprivileged user.
fn drop_all_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads one header and two data structs of the v3 layout.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    assert_eq!(r, 0, "capset: {}", std::io::Error::last_os_error());
}

#[test]
fn without_map_files_access_the_file_is_found_by_its_path() {
    if is_child("without_map_files_access_the_file_is_found_by_its_path") {
        drop_all_capabilities();
        let ps = ps();
        let dir = std::env::temp_dir();
        let region = Region::shared_file(&dir, "test-path", 2 * ps, ps).expect("shared file");
        let found = FileMappings::overlapping(region.addr(), region.addr() + 1).expect("by path");
        assert_eq!(found.len(), 1);
        let m = found.iter().next().unwrap();
        assert_eq!(
            m.opened_via,
            OpenedVia::Path,
            "map_files should be refused without capabilities"
        );
        assert_eq!((m.start, m.offset), (region.addr(), 0));
        // The writeback still reaches the right file: A + B cleans the probed page.
        let probe = EmulatedMsync::new(Mode::AB, found).unwrap();
        assert_eq!(probe.check(region.addr(), 8), Ok(true));

        // A file unlinked after mapping has no path left: a clear error, not a wrong file.
        let path = dir.join(format!("addrprobe-msync-test-gone-{}", std::process::id()));
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        file.set_len(ps as u64).unwrap();
        let gone = map(ps, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0);
        std::fs::remove_file(&path).unwrap();
        let err = FileMappings::overlapping(gone, gone + 1).expect_err("no way to open it");
        assert!(
            err.to_string().contains("cannot open the file behind"),
            "{err}"
        );
        unmap(gone, ps);
        println!("child done");
        return;
    }
    let out = run_child("without_map_files_access_the_file_is_found_by_its_path");
    out.assert_success();
    assert!(out.stdout.contains("child done"), "{}", out.stdout);
}
