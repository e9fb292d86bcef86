//! The experiment behind "Dropping the descriptor check: designs measured" in
//! `docs/results/readers-2-core-vm.md`: can the pipe backend drop its `fstat` by copying with
//! `vmsplice(SPLICE_F_NONBLOCK)` instead of `writev`?
//!
//! `cargo run --release -p addrprobe-lab --features bench --example vmsplice`
//!
//! 1. What `vmsplice` (and, beside it, `writev`) answers for memory built with `mmap`,
//!    `mprotect`, `memfd`, protection keys and `userfaultfd`, against what a user load does.
//! 2. What `vmsplice` does when the number holds a file other than the crate's pipe.
//! 3. ns per 8-byte read for each design, in one run, beside `pprof::validate` + load.
//!
//! A lab program, not a test: it changes this thread's PKRU (one fresh key) and registers a
//! `userfaultfd`, which is why it is an example and not part of the suite.

use std::hint::black_box;
use std::time::Duration;

use addrprobe::{Backend, Prober};
use addrprobe_lab::bench::{Budget, KERNEL_ADDR, ns_per_call, peers, volatile_load};
use addrprobe_lab::fixtures::Mapping;

const SPLICE_F_NONBLOCK: libc::c_uint = 2;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn errname(e: i32) -> String {
    match e {
        libc::EFAULT => "EFAULT".into(),
        libc::EBADF => "EBADF".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EAGAIN => "EAGAIN".into(),
        libc::EPIPE => "EPIPE".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::EPERM => "EPERM".into(),
        e => format!("errno {e}"),
    }
}

/// A syscall's result as text: the count, or the errno's name.
fn show(r: isize, e: i32) -> String {
    if r < 0 { errname(e) } else { r.to_string() }
}

/// `vmsplice(fd, [addr, addr + len), SPLICE_F_NONBLOCK)`: the raw result and errno.
fn vmsplice(fd: i32, addr: usize, len: usize) -> (isize, i32) {
    let iov = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: for a descriptor opened for writing the kernel only reads the range (pinning its
    // pages, validating the address). Callers pass only descriptors they own; the one case
    // that hands a pipe's read end (which would write into the range) passes a buffer of ours.
    let r = unsafe { libc::syscall(libc::SYS_vmsplice, fd, &iov, 1usize, SPLICE_F_NONBLOCK) };
    (r as isize, if r < 0 { errno() } else { 0 })
}

/// `writev(fd, [addr, addr + len))`: the raw result and errno.
fn writev(fd: i32, addr: usize, len: usize) -> (isize, i32) {
    let iov = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: the kernel reads the range with fault handling and reports faults as EFAULT or a
    // short count.
    let r = unsafe { libc::syscall(libc::SYS_writev, fd, &iov, 1usize) };
    (r as isize, if r < 0 { errno() } else { 0 })
}

/// `process_vm_readv` of `[addr, addr + len)` of this process into a buffer of ours.
fn pvr(addr: usize, len: usize) -> (isize, i32) {
    let mut buf = [0u8; 64];
    let l = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len.min(64),
    };
    let r = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len.min(64),
    };
    // SAFETY: the kernel validates the remote range; `l` is our buffer.
    let n = unsafe {
        libc::syscall(
            libc::SYS_process_vm_readv,
            libc::getpid(),
            &l,
            1usize,
            &r,
            1usize,
            0usize,
        )
    };
    (n as isize, if n < 0 { errno() } else { 0 })
}

/// Empties a non-blocking descriptor.
fn drain(fd: i32) {
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        // SAFETY: reads into our own buffer.
        if unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } <= 0 {
            break;
        }
    }
}

/// A non-blocking pipe as one `O_RDWR` descriptor (the pool's shape) and its two ends.
struct Pipe {
    rdwr: i32,
    r: i32,
    w: i32,
}

fn pipe() -> Pipe {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for two descriptors.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    assert_eq!(r, 0);
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", fds[0])).unwrap();
    // SAFETY: a NUL-terminated path.
    let rdwr = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    assert!(rdwr >= 0, "open /proc/self/fd: {}", errno());
    Pipe {
        rdwr,
        r: fds[0],
        w: fds[1],
    }
}

fn map(len: usize, prot: i32, flags: i32, fd: i32) -> usize {
    // SAFETY: a fresh mapping at an address the kernel chooses; it lives to the end of the
    // program.
    let p = unsafe { libc::mmap(core::ptr::null_mut(), len, prot, flags, fd, 0) };
    assert_ne!(p, libc::MAP_FAILED, "mmap: {}", errno());
    p as usize
}

fn memfd(size: i64) -> i32 {
    // SAFETY: a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"vmsplice-lab".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: our own memfd.
    assert_eq!(unsafe { libc::ftruncate(fd, size) }, 0);
    fd
}

/// The first address of the `/proc/self/maps` line whose name is `name`.
fn maps_entry(name: &str) -> Option<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with(name))?;
    usize::from_str_radix(line.split('-').next()?, 16).ok()
}

struct MemFixture {
    name: String,
    addr: usize,
    len: usize,
    /// What a user load of every byte does, from how the memory was built.
    load: &'static str,
}

/// The memory fixtures. Each is built fresh; a resident page has been written.
fn mem_fixtures(ps: usize) -> Vec<MemFixture> {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    let mut v = Vec::new();
    let mut add = |name: &str, addr: usize, len: usize, load: &'static str| {
        v.push(MemFixture {
            name: name.into(),
            addr,
            len,
            load,
        })
    };

    let a = map(ps, rw, anon, -1);
    // SAFETY: our own read-write page.
    unsafe { (a as *mut u64).write_volatile(0x5a5a) };
    add("resident anonymous", a, 8, "reads");
    add(
        "never-touched anonymous",
        map(ps, rw, anon, -1),
        8,
        "reads (zero page)",
    );

    let m = Mapping::anon(2 * ps, rw, 0).unwrap();
    m.fill(0, &[1; 8]);
    let mut m = m;
    m.protect(ps, ps, libc::PROT_NONE).unwrap();
    add(
        "straddle readable→PROT_NONE (8 B, 4 + 4)",
        m.addr() + ps - 4,
        8,
        "faults on byte 4",
    );
    std::mem::forget(m);

    add("PROT_NONE", map(ps, libc::PROT_NONE, anon, -1), 8, "faults");
    // A hole between PROT_NONE pages in the lab's quiet region, so later mappings do not
    // fill it.
    let mut fence = Mapping::anon(3 * ps, libc::PROT_NONE, 0).unwrap();
    fence.punch(ps, ps);
    add("unmapped hole", fence.addr() + ps, 8, "faults");
    std::mem::forget(fence);
    add("kernel address", KERNEL_ADDR, 8, "faults");

    let wo = map(ps, rw, anon, -1);
    // SAFETY: our own page, written, then made write-only.
    unsafe {
        (wo as *mut u64).write_volatile(7);
        libc::mprotect(wo as *mut libc::c_void, ps, libc::PROT_WRITE);
    }
    add(
        "PROT_WRITE only, resident",
        wo,
        8,
        "reads (x86: W implies R in the PTE)",
    );
    add(
        "PROT_WRITE only, never touched",
        map(ps, libc::PROT_WRITE, anon, -1),
        8,
        "reads (x86)",
    );

    let xo = map(ps, rw, anon, -1);
    // SAFETY: our own page, written, then made exec-only.
    unsafe {
        (xo as *mut u64).write_volatile(7);
        libc::mprotect(xo as *mut libc::c_void, ps, libc::PROT_EXEC);
    }
    add(
        "PROT_EXEC only, resident (execute-only pkey where PKU)",
        xo,
        8,
        "faults with PKU (SEGV_PKUERR), reads without",
    );

    // Protection key with access disabled for this thread.
    // SAFETY: pkey_alloc(flags 0, PKEY_DISABLE_ACCESS) sets only this thread's rights for a
    // fresh key.
    let key = unsafe { libc::syscall(libc::SYS_pkey_alloc, 0usize, 1usize) };
    if key >= 0 {
        let pk = map(ps, rw, anon, -1);
        // SAFETY: our own page, written before the key is applied.
        unsafe {
            (pk as *mut u64).write_volatile(7);
            libc::syscall(libc::SYS_pkey_mprotect, pk, ps, rw, key);
        }
        add(
            "pkey, access disabled (PKRU), resident",
            pk,
            8,
            "faults (SEGV_PKUERR)",
        );
    } else {
        println!("(pkey_alloc: {}; no pkey fixture)", errname(errno()));
    }

    let fd = memfd(ps as i64);
    let sh = map(2 * ps, rw, libc::MAP_SHARED, fd);
    // SAFETY: page 0 is within the memfd's size.
    unsafe { (sh as *mut u64).write_volatile(3) };
    add("MAP_SHARED memfd page", sh, 8, "reads");
    add("MAP_SHARED memfd page beyond EOF", sh + ps, 8, "SIGBUS");

    // SAFETY: memfd_secret(flags 0) makes a descriptor or fails.
    let sfd = unsafe { libc::syscall(447, libc::O_CLOEXEC as usize) } as i32;
    if sfd >= 0 {
        // SAFETY: our own descriptor.
        unsafe { libc::ftruncate(sfd, ps as i64) };
        let s = map(ps, rw, libc::MAP_SHARED, sfd);
        // SAFETY: page 0 is within the size.
        unsafe { (s as *mut u64).write_volatile(9) };
        add("memfd_secret page", s, 8, "reads");
    } else {
        println!("(memfd_secret: {}; no secretmem fixture)", errname(errno()));
    }

    if let Some(vv) = maps_entry("[vvar]") {
        add("[vvar] (VM_IO | VM_PFNMAP)", vv, 8, "reads");
    }
    if let Some(vd) = maps_entry("[vdso]") {
        add("[vdso]", vd, 8, "reads");
    }
    add("program text", main as *const () as usize, 8, "reads");
    v
}

/// userfaultfd, `UFFD_USER_MODE_ONLY` or not: what each call does on a missing page of a
/// registered range. The call runs on a thread; this thread waits up to 1 s for the fault
/// event, reports it, then resolves the fault with `UFFDIO_ZEROPAGE` so the call can return.
fn uffd_case(
    ps: usize,
    user_mode_only: bool,
    call: fn(i32, usize, usize) -> (isize, i32),
) -> String {
    const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
    const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
    const UFFDIO_ZEROPAGE: libc::c_ulong = 0xC020_AA04;
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | if user_mode_only { 1 } else { 0 };
    // SAFETY: userfaultfd makes a descriptor or fails.
    let uffd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) } as i32;
    if uffd < 0 {
        return format!("userfaultfd: {}", errname(errno()));
    }
    let mut api = [0xAAu64, 0, 0];
    let area = map(
        ps,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    );
    let mut reg = [area as u64, ps as u64, 1 /* MISSING */, 0];
    // SAFETY: the structs have the kernel's layout (uffdio_api: 3 × u64; uffdio_register:
    // range (2 × u64), mode, ioctls).
    unsafe {
        if libc::ioctl(uffd, UFFDIO_API, api.as_mut_ptr()) != 0
            || libc::ioctl(uffd, UFFDIO_REGISTER, reg.as_mut_ptr()) != 0
        {
            return format!("uffd ioctl: {}", errname(errno()));
        }
    }
    let p = pipe();
    let fd = p.w;
    let t = std::thread::spawn(move || call(fd, area, 8));
    let mut pfd = libc::pollfd {
        fd: uffd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd of ours.
    let event = unsafe { libc::poll(&mut pfd, 1, 1000) } == 1;
    std::thread::sleep(Duration::from_millis(50));
    let blocked = !t.is_finished();
    let mut zp = [area as u64, ps as u64, 0, 0];
    // SAFETY: uffdio_zeropage: range, mode, result.
    unsafe { libc::ioctl(uffd, UFFDIO_ZEROPAGE, zp.as_mut_ptr()) };
    let (r, e) = t.join().unwrap();
    drain(p.r);
    format!(
        "{}; fault event: {}; {}",
        show(r, e),
        if event { "yes" } else { "no" },
        if blocked {
            "blocked until resolved"
        } else {
            "did not block"
        }
    )
}

fn part1(ps: usize) {
    println!("### What the copy answers, by memory\n");
    println!("8 bytes, `SPLICE_F_NONBLOCK`, into an empty pipe (`O_RDWR` descriptor).\n");
    println!("| memory | a user load | `writev` | `vmsplice` | `process_vm_readv` (self) |");
    println!("| --- | --- | --- | --- | --- |");
    let p = pipe();
    for f in mem_fixtures(ps) {
        let (w, we) = writev(p.rdwr, f.addr, f.len);
        drain(p.rdwr);
        let (s, se) = vmsplice(p.rdwr, f.addr, f.len);
        drain(p.rdwr);
        let (v, ve) = pvr(f.addr, f.len);
        println!(
            "| {} | {} | {} | {} | {} |",
            f.name,
            f.load,
            show(w, we),
            show(s, se),
            show(v, ve)
        );
    }
    for (umo, label) in [(true, "`UFFD_USER_MODE_ONLY`"), (false, "full (root)")] {
        println!(
            "| userfaultfd {label}, missing page | blocks until the handler resolves it | {} | {} | {} |",
            uffd_case(ps, umo, writev),
            uffd_case(ps, umo, vmsplice),
            uffd_case(ps, umo, |_, a, n| pvr(a, n))
        );
    }
}

/// A descriptor fixture: name, number, and what to report after the calls.
type Row = (&'static str, i32, Box<dyn Fn() -> String>);

fn part2(ps: usize) {
    println!("\n### What `vmsplice` does when the number holds another file\n");
    println!(
        "8 readable bytes (our own buffer, holding `PROBEDBY`) passed to `vmsplice` and to \
         `writev` on a descriptor the crate did not make.\n"
    );
    println!("| descriptor at the number | `writev` | `vmsplice` | effect of `vmsplice` |");
    println!("| --- | --- | --- | --- |");
    let mut rows: Vec<Row> = Vec::new();
    let tmp = std::env::temp_dir().join(format!("vmsplice-lab-{}", std::process::id()));
    let path = std::ffi::CString::new(tmp.to_str().unwrap()).unwrap();
    // SAFETY: NUL-terminated path; we create and remove the file.
    let file = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC,
            0o600,
        )
    };
    // SAFETY: as above.
    let file_ro = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    rows.push(("regular file, O_RDWR", file, Box::new(String::new)));
    rows.push(("regular file, O_RDONLY", file_ro, Box::new(String::new)));
    // SAFETY: NUL-terminated path.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    rows.push(("/dev/null", null, Box::new(String::new)));
    let mut sv = [0i32; 2];
    // SAFETY: `sv` has room for two descriptors.
    unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK,
            0,
            sv.as_mut_ptr(),
        )
    };
    rows.push(("unix stream socket", sv[0], Box::new(String::new)));
    rows.push(("memfd", memfd(ps as i64), Box::new(String::new)));
    // SAFETY: eventfd makes a descriptor.
    rows.push((
        "eventfd",
        unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) },
        Box::new(String::new),
    ));
    rows.push(("closed number", 900, Box::new(String::new)));
    let app = pipe();
    let app_r = app.r;
    rows.push((
        "application's pipe, write end",
        app.w,
        Box::new(move || {
            let mut b = [0u8; 16];
            // SAFETY: reads into our buffer.
            let n = unsafe { libc::read(app_r, b.as_mut_ptr().cast(), 16) };
            format!(
                "the application's reader gets {n} bytes: {:?}",
                String::from_utf8_lossy(&b[..n.max(0) as usize])
            )
        }),
    ));
    let app2 = pipe();
    // SAFETY: writes our own bytes into our own pipe.
    unsafe { libc::write(app2.rdwr, b"APPDATA!".as_ptr().cast(), 8) };
    let app2_fd = app2.rdwr;
    rows.push((
        "application's pipe, O_RDWR (holding 8 bytes of its own)",
        app2.rdwr,
        Box::new(move || {
            let mut b = [0u8; 32];
            // SAFETY: reads into our buffer.
            let n = unsafe { libc::read(app2_fd, b.as_mut_ptr().cast(), 9) };
            format!(
                "a `read` of n + 1 = 9 gets {n}: {:?}",
                String::from_utf8_lossy(&b[..n.max(0) as usize])
            )
        }),
    ));
    for (name, fd, after) in &rows {
        let mut probed = *b"PROBEDBY";
        let (w, we) = writev(*fd, probed.as_mut_ptr() as usize, 8);
        let effect_w = after();
        let (s, se) = vmsplice(*fd, probed.as_mut_ptr() as usize, 8);
        let effect = after();
        let _ = effect_w;
        println!(
            "| {name} | {} | {} | {}{} |",
            show(w, we),
            show(s, se),
            if effect.is_empty() {
                "nothing written".to_string()
            } else {
                effect
            },
            if black_box(probed) != *b"PROBEDBY" {
                format!("; probed memory now {:?}", String::from_utf8_lossy(&probed))
            } else {
                String::new()
            }
        );
        if *fd == app2_fd {
            drain(app2_fd);
            // SAFETY: refill the application's pipe for the next row.
            unsafe { libc::write(app2.w, b"APPDATA!".as_ptr().cast(), 8) };
        }
    }
    // The read end: the direction flips. The probed buffer is ours.
    let app3 = pipe();
    // SAFETY: our own bytes into our own pipe.
    unsafe { libc::write(app3.w, b"APPDATA!".as_ptr().cast(), 8) };
    let mut probed = *b"PROBEDBY";
    let (w, we) = writev(app3.r, probed.as_mut_ptr() as usize, 8);
    let (s, se) = vmsplice(app3.r, probed.as_mut_ptr() as usize, 8);
    println!(
        "| application's pipe, read end (holding 8 bytes of its own) | {} | {} | the probed memory now holds {:?}: `vmsplice` on a read-only pipe copies *into* the iovec |",
        show(w, we),
        show(s, se),
        String::from_utf8_lossy(&black_box(probed))
    );
    let mut probed = *b"PROBEDBY";
    let (s, se) = vmsplice(app3.r, probed.as_mut_ptr() as usize, 8);
    let _ = probed;
    println!(
        "| the same, pipe empty | — | {} | nothing written |",
        show(s, se)
    );
    probed = *b"PROBEDBY";
    black_box(&mut probed);
    for (_, fd, _) in &rows {
        if *fd != 900 {
            // SAFETY: descriptors this function opened.
            unsafe { libc::close(*fd) };
        }
    }
    // SAFETY: our temporary file.
    unsafe { libc::unlink(path.as_ptr()) };
}

/// Reads n + 1 bytes back into `dst` (8) and one spare byte: Ok when exactly 8 came back.
#[inline]
fn read_n_plus_1(fd: i32, dst: &mut [u8; 8]) -> bool {
    let mut spare = 0u8;
    let iov = [
        libc::iovec {
            iov_base: dst.as_mut_ptr().cast(),
            iov_len: 8,
        },
        libc::iovec {
            iov_base: (&mut spare as *mut u8).cast(),
            iov_len: 1,
        },
    ];
    // SAFETY: our own buffers.
    unsafe { libc::syscall(libc::SYS_readv, fd, iov.as_ptr(), 2usize) == 8 }
}

fn part3(ps: usize) {
    let _ = ps;
    let b = Budget::FULL;
    let src = map(
        ps,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    );
    // SAFETY: our own page.
    unsafe { (src as *mut u64).write_volatile(0x5a5a_5a5a) };
    let p = pipe();
    let ends = pipe();
    let mut dst = [0u8; 8];
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    let fd = p.rdwr;
    let rows: Vec<(&str, f64)> = vec![
        (
            "crate `pipe` `Prober::read` (fstat + writev + readv n+1, pool)",
            {
                let pr = Prober::new(Backend::Pipe).unwrap();
                ns_per_call(b, || {
                    black_box(pr.read(black_box(src), &mut dst)).ok();
                })
            },
        ),
        (
            "bare fstat + writev + readv (n+1): the crate's syscalls",
            ns_per_call(b, || {
                // SAFETY: our own pipe and buffers; fstat writes only `st`.
                unsafe { libc::fstat(fd, st.as_mut_ptr()) };
                if writev(fd, black_box(src), 8).0 == 8 {
                    black_box(read_n_plus_1(fd, &mut dst));
                }
            }),
        ),
        (
            "bare writev + read",
            ns_per_call(b, || {
                if writev(fd, black_box(src), 8).0 == 8 {
                    // SAFETY: our buffer.
                    black_box(unsafe { libc::read(fd, dst.as_mut_ptr().cast(), 8) });
                }
            }),
        ),
        (
            "bare vmsplice + read",
            ns_per_call(b, || {
                if vmsplice(fd, black_box(src), 8).0 == 8 {
                    // SAFETY: our buffer.
                    black_box(unsafe { libc::read(fd, dst.as_mut_ptr().cast(), 8) });
                }
            }),
        ),
        (
            "bare vmsplice + readv (n+1)",
            ns_per_call(b, || {
                if vmsplice(fd, black_box(src), 8).0 == 8 {
                    black_box(read_n_plus_1(fd, &mut dst));
                }
            }),
        ),
        (
            "bare vmsplice (write end) + vmsplice (read end → dst)",
            ns_per_call(b, || {
                if vmsplice(ends.w, black_box(src), 8).0 == 8 {
                    // Read end: vmsplice_to_user copies the pipe's bytes into dst.
                    black_box(vmsplice(ends.r, dst.as_mut_ptr() as usize, 8));
                }
            }),
        ),
        (
            "one fstat",
            ns_per_call(b, || {
                // SAFETY: fstat writes only `st`.
                black_box(unsafe { libc::fstat(fd, st.as_mut_ptr()) });
            }),
        ),
        (
            "`pprof::validate` + load (peer)",
            ns_per_call(b, || {
                let a = black_box(src);
                if peers::pprof_validate(a, 8) {
                    // SAFETY: our page, mapped for the whole run.
                    black_box(unsafe { volatile_load(a) });
                }
            }),
        ),
        ("bare process_vm_readv (8 B)", {
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            ns_per_call(b, || {
                let l = libc::iovec {
                    iov_base: dst.as_mut_ptr().cast(),
                    iov_len: 8,
                };
                let r = libc::iovec {
                    iov_base: black_box(src) as *mut libc::c_void,
                    iov_len: 8,
                };
                // SAFETY: the kernel validates the remote range; `l` is our buffer.
                black_box(unsafe {
                    libc::syscall(
                        libc::SYS_process_vm_readv,
                        pid,
                        &l,
                        1usize,
                        &r,
                        1usize,
                        0usize,
                    )
                });
            })
        }),
        ("crate `process-vm-readv` `Prober::read`", {
            let pr = Prober::new(Backend::ProcessVmReadv).unwrap();
            ns_per_call(b, || {
                black_box(pr.read(black_box(src), &mut dst)).ok();
            })
        }),
    ];
    println!("\n### ns per 8-byte read, one run\n");
    let pprof = rows.iter().find(|r| r.0.starts_with("`pprof")).unwrap().1;
    println!("| design | ns | / pprof |");
    println!("| --- | ---: | ---: |");
    for (name, ns) in &rows {
        println!("| {name} | {ns:.0} | {:.2} |", ns / pprof);
    }
    assert_eq!(
        u64::from_ne_bytes(dst),
        0x5a5a_5a5a,
        "the designs read the bytes back"
    );
}

fn main() {
    let ps = addrprobe::range::page_size();
    let only_bench = std::env::args().any(|a| a == "--bench-only");
    if !only_bench {
        part1(ps);
        part2(ps);
    }
    part3(ps);
}
