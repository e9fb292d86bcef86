//! `fork()`: parent and child keep probing at the same time, each answers for its own
//! address space, and they share no pipe.
//!
//! The child of `fork()` in a multi-threaded process may only do async-signal-safe work, so
//! it only probes (probes are async-signal-safe), writes to memory, `munmap`s, talks to the
//! parent through a pipe and `_exit`s; the parent does the checking that needs allocation,
//! including reading the child's `/proc/<pid>/fd` and `fdinfo`.
//!
//! This binary holds a single test, so the new descriptors it sees are the crate's.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use addrprobe::{Backend, Guarantee, Prober};
use support::{Region, fd_list, figure, new_fds, ps};

const ROUNDS: usize = 10;
const ITERATIONS: usize = 150;

fn pat(i: usize, seed: u8) -> u8 {
    (i as u8).wrapping_mul(7).wrapping_add(seed) | 1
}

fn fill(addr: usize, seed: u8) {
    for i in 0..ps() {
        // SAFETY: `addr` is a writable page of ours.
        unsafe { ((addr + i) as *mut u8).write_volatile(pat(i, seed)) };
    }
}

/// Probes the four pages and counts wrong answers. Allocation-free: runs in the child.
/// `page0` holds `seed`'s pattern, `gone` is unmapped here, `kept` is mapped here.
fn probe_round(probers: &[Prober], page0: usize, seed: u8, gone: usize, kept: usize) -> usize {
    let mut wrong = 0;
    let mut buf = [0u8; 4096];
    let n = ps().min(buf.len());
    for p in probers {
        let g = p.guarantee();
        if p.check(page0, n) != Ok(true) {
            wrong += 1;
        }
        if p.check(kept, 8) != Ok(true) {
            wrong += 1;
        }
        if g != Guarantee::Unsound && p.check(gone, 8) != Ok(false) {
            wrong += 1;
        }
        if g == Guarantee::Readable {
            buf.fill(0);
            if p.read(page0, &mut buf[..n]) != Ok(true) {
                wrong += 1;
            }
            if (0..n).any(|i| buf[i] != pat(i, seed)) {
                wrong += 1;
            }
        }
    }
    wrong
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn pipe_ino(target: &str) -> Option<&str> {
    target.strip_prefix("pipe:[")?.strip_suffix(']')
}

/// One byte from `fd`, waiting at most 10 s; 0 on timeout or EOF.
fn wait_byte(fd: i32) -> u8 {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd of ours.
    if unsafe { libc::poll(&mut pfd, 1, 10_000) } != 1 {
        return 0;
    }
    let mut b = [0u8; 1];
    // SAFETY: reading one byte from our own pipe.
    let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
    if n == 1 { b[0] } else { 0 }
}

fn send_byte(fd: i32, v: u8) {
    // SAFETY: writing one byte to our own pipe.
    unsafe { libc::write(fd, [v].as_ptr().cast(), 1) };
}

#[test]
fn fork_parent_and_child_probe_their_own_memory() {
    let before = fd_list();
    let probers = support::all_probers();
    let crate_fds = new_fds(&before, &fd_list());
    let parent_pipes: Vec<String> = crate_fds
        .iter()
        .filter_map(|(_, t)| pipe_ino(t).map(str::to_owned))
        .collect();
    assert!(
        !parent_pipes.is_empty(),
        "the pipe pool should be open: {crate_fds:?}"
    );

    // Another thread keeps probing through the pipe pool while we fork, so some forks happen
    // with a pooled pipe busy.
    let stop = AtomicBool::new(false);
    let background = AtomicUsize::new(0);
    let mut fork_cases = 0;
    let mut parent_wrong = 0;
    let mut parent_probes = 0;
    let mut child_probes = 0;
    // Mapped before any round punches a hole that it could land in.
    let bg = Region::anon(1);
    fill(bg.addr, 9);
    std::thread::scope(|s| {
        s.spawn(|| {
            let pipe = probers
                .iter()
                .find(|p| p.backend() == Backend::Pipe)
                .unwrap();
            let r = &bg;
            let mut buf = vec![0u8; ps()];
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(pipe.read(r.addr, &mut buf), Ok(true));
                assert!(buf.iter().enumerate().all(|(i, &b)| b == pat(i, 9)));
                background.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Stops the background thread also when an assertion below panics.
        let _stop = StopOnDrop(&stop);
        for round in 0..ROUNDS {
            let r = Region::anon(4);
            let (page0, child_unmaps, parent_unmaps) = (r.page(0), r.page(2), r.page(3));
            fill(page0, 1);
            fill(r.page(2), 2);
            fill(r.page(3), 3);
            let mut to_child = [0i32; 2];
            let mut to_parent = [0i32; 2];
            // SAFETY: pipe2 writes two descriptors each.
            unsafe {
                assert_eq!(libc::pipe2(to_child.as_mut_ptr(), libc::O_CLOEXEC), 0);
                assert_eq!(libc::pipe2(to_parent.as_mut_ptr(), libc::O_CLOEXEC), 0);
            }
            // SAFETY: the child does only async-signal-safe work (memory writes, munmap,
            // probes, read/write on pipes) and leaves with _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork");
            if pid == 0 {
                // Child: its own bytes in page 0, its own hole at page 2.
                fill(page0, 0x40);
                // SAFETY: unmapping a page of the child's copy of the region.
                unsafe { libc::munmap(child_unmaps as *mut libc::c_void, ps()) };
                // The first probes replace what the child inherited (its pipes, its maps
                // file): the parent looks at the result before letting it go on.
                let mut wrong = probe_round(&probers, page0, 0x40, child_unmaps, parent_unmaps);
                send_byte(to_parent[1], b'R');
                let go = wait_byte(to_child[0]);
                wrong += usize::from(go != b'G');
                for _ in 0..ITERATIONS {
                    wrong += probe_round(&probers, page0, 0x40, child_unmaps, parent_unmaps);
                }
                let code = if wrong == 0 {
                    0
                } else {
                    1 + wrong.min(100) as i32
                };
                // SAFETY: _exit skips atexit handlers and destructors, as a fork child must.
                unsafe { libc::_exit(code) };
            }
            // Parent.
            assert_eq!(wait_byte(to_parent[0]), b'R', "the child did not start");
            // The child keeps its copy.
            r.unmap(3);

            // The child's descriptors at the crate's numbers, once it has probed: fresh pipes,
            // its own maps file, all close-on-exec.
            for (n, parent_target) in &crate_fds {
                let link = std::fs::read_link(format!("/proc/{pid}/fd/{n}"))
                    .unwrap_or_else(|e| panic!("child fd {n}: {e}"));
                let target = link.to_string_lossy();
                if let Some(ino) = pipe_ino(&target) {
                    assert!(
                        !parent_pipes.iter().any(|p| p == ino),
                        "child fd {n} shares the parent's pipe {target}"
                    );
                } else if parent_target.ends_with("/maps") {
                    assert_eq!(
                        target,
                        format!("/proc/{pid}/maps"),
                        "child fd {n} still describes the parent"
                    );
                } else {
                    assert_eq!(&*target, parent_target.as_str());
                }
                let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{n}")).unwrap();
                let flags = info
                    .lines()
                    .find_map(|l| l.strip_prefix("flags:"))
                    .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
                    .unwrap();
                assert_ne!(
                    flags & libc::O_CLOEXEC as u32,
                    0,
                    "child fd {n} is not O_CLOEXEC: {info}"
                );
            }
            send_byte(to_child[1], b'G');
            for _ in 0..ITERATIONS {
                parent_wrong += probe_round(&probers, page0, 1, parent_unmaps, child_unmaps);
                parent_probes += probers.len();
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "round {round}: the child got {} wrong answers (status {status:#x})",
                libc::WEXITSTATUS(status).saturating_sub(1)
            );
            child_probes += ITERATIONS * probers.len();
            for fd in to_child.into_iter().chain(to_parent) {
                // SAFETY: our own sync pipes.
                unsafe { libc::close(fd) };
            }
            fork_cases += 1;
        }
    });
    assert_eq!(parent_wrong, 0, "the parent got wrong answers");
    drop(probers);
    assert_eq!(
        fd_list(),
        before,
        "descriptors left open after dropping the probers"
    );
    figure("fork.cases_passed", fork_cases);
    figure("fork.parent_probe_rounds", parent_probes);
    figure("fork.child_probe_rounds", child_probes);
    figure(
        "fork.background_pipe_reads",
        background.load(Ordering::Relaxed),
    );
    figure("fork.wrong_answers", 0);
}
