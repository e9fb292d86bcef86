//! Probe paths never allocate: every backend's `check` and `read`, on readable and unreadable
//! memory, run under a global allocator that counts the calling thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use addrprobe::{Backend, Guarantee, Prober};

struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if TRACKING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|n| n.set(0));
    TRACKING.with(|t| t.set(true));
    f();
    TRACKING.with(|t| t.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn probes_do_not_allocate() {
    let ps = addrprobe::range::page_size();
    let readable = addrprobe_lab::fixtures::map_anonymous(4 * ps).expect("mmap");
    assert_eq!(
        // SAFETY: the last page of our own mapping becomes PROT_NONE.
        unsafe {
            libc::mprotect(
                (readable + 3 * ps) as *mut libc::c_void,
                ps,
                libc::PROT_NONE,
            )
        },
        0
    );
    let mut buf = vec![0u8; 3 * ps];
    let mut tested = 0;
    for backend in Backend::ALL {
        let Ok(p) = Prober::new(backend) else {
            continue;
        };
        let n = allocations_in(|| {
            for (addr, len) in [
                (readable, 8),
                (readable + 5, 3 * ps - 5),
                (readable + 3 * ps, 8),
                (readable + 2 * ps, 2 * ps),
                (0, 8),
                (usize::MAX - 7, 7),
                (1, usize::MAX),
            ] {
                let _ = p.check(addr, len);
                if p.guarantee() == Guarantee::Readable {
                    let _ = p.read(addr, &mut buf[..len.min(3 * ps)]);
                }
            }
        });
        assert_eq!(n, 0, "{backend} allocated {n} times while probing");
        tested += 1;
    }
    assert!(tested >= 4, "only {tested} backends could be tested");
    // The counter itself works: an allocation under tracking is seen.
    assert_eq!(
        allocations_in(|| drop(std::hint::black_box(vec![1u8; 64]))),
        1
    );
    // SAFETY: our own mapping.
    unsafe { libc::munmap(readable as *mut libc::c_void, 4 * ps) };
}

#[test]
fn stack_reader_does_not_allocate() {
    use addrprobe::reader::StackReader;
    use addrprobe::stack_bounds::{StackBounds, current_sp};
    std::thread::spawn(|| {
        let ps = addrprobe::range::page_size();
        let mapping = addrprobe_lab::fixtures::map_anonymous(2 * ps).expect("mmap");
        assert_eq!(
            // SAFETY: the second page of our own mapping becomes PROT_NONE.
            unsafe { libc::mprotect((mapping + ps) as *mut libc::c_void, ps, libc::PROT_NONE) },
            0
        );
        let bounds = StackBounds::register_current_thread().expect("register");
        let local = std::hint::black_box([3u64; 4]);
        let on_stack = &local as *const [u64; 4] as u64;
        let mut snapshot = vec![0u64; 1024];
        let mut tested = 0;
        for backend in [
            Backend::SigprocMask,
            Backend::ProcessVmReadv,
            Backend::Pipe,
            Backend::Msync,
        ] {
            let Ok(p) = Prober::new(backend) else {
                continue;
            };
            let n = allocations_in(|| {
                let sp = current_sp();
                let r = StackReader::with_bounds(&p, sp, Some(bounds));
                for addr in [on_stack, mapping as u64, (mapping + ps) as u64, 0, u64::MAX] {
                    let _ = r.read_u64(addr);
                    let _ = r.read_or_latch(addr);
                }
                let mut mem = r.memory();
                let _ = mem(on_stack);
                let _ = r.error();
                if let Ok((r, _)) =
                    StackReader::new(&p, mapping + ps - 64).with_snapshot(&mut snapshot)
                {
                    let _ = r.read_u64((mapping + ps - 8) as u64);
                }
            });
            assert_eq!(n, 0, "{backend}: the reader allocated {n} times");
            tested += 1;
        }
        assert!(tested >= 2, "only {tested} backends could be tested");
        std::hint::black_box(&local);
        // SAFETY: our own mapping.
        unsafe { libc::munmap(mapping as *mut libc::c_void, 2 * ps) };
    })
    .join()
    .unwrap();
}
