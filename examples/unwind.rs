//! Plugging addrprobe into an unwinder.
//!
//! `cargo run --example unwind`
//!
//! 1. The crate's own frame-pointer unwinder, [`addrprobe::unwind::Unwinder`].
//! 2. An external unwinder's memory-read callback. framehop, for example, asks for stack
//!    memory through a closure `read_stack: FnMut(u64) -> Result<u64, ()>`; libunwind's
//!    `access_mem` and other DWARF unwinders have the same shape. [`Unwinder::read_word`]
//!    is exactly that callback, validated by the prober: hand it over as
//!    `&mut read_stack` and a corrupt CFA or frame pointer becomes an `Err(())` that ends
//!    the unwind instead of a SIGSEGV. (This example does not depend on framehop; the
//!    tiny `unwind_with` below stands in for its `iter_frames(pc, regs, cache, &mut
//!    read_stack)` loop.)

use addrprobe::unwind::{Frame, Start, Unwinder};
use addrprobe::{Prober, unwind};

/// Stand-in for an external unwinder: walks frame pointers, reading memory only through
/// the caller's `read_stack` callback (framehop's signature).
fn unwind_with(fp: u64, mut read_stack: impl FnMut(u64) -> Result<u64, ()>, out: &mut Vec<u64>) {
    let mut fp = fp;
    while out.len() < 64 {
        let (Ok(next), Ok(ra)) = (read_stack(fp), read_stack(fp + 8)) else {
            println!("  read_stack refused {fp:#x}: unwind ends here");
            break;
        };
        if ra == 0 || next <= fp {
            break;
        }
        out.push(ra);
        fp = next;
    }
}

#[inline(never)]
fn deep(n: usize, f: &mut dyn FnMut()) {
    if n == 0 {
        f()
    } else {
        deep(n - 1, f)
    }
    std::hint::black_box(n);
}

fn main() -> Result<(), addrprobe::Error> {
    // Any Readable backend: race-free copies, sound on any stack, usable in signal handlers.
    let prober = Prober::auto()?;
    println!("backend: {} ({})", prober.backend(), prober.guarantee());
    let unwinder = Unwinder::new(&prober)?;

    deep(5, &mut || {
        // 1. The crate's unwinder, from the current frame.
        let mut frames = [Frame::default(); 32];
        let walk = unwinder.walk(Start::Current, &mut frames, None);
        println!(
            "walk(Start::Current): {} frames, stopped: {:?}",
            walk.depth, walk.stop
        );
        for f in &frames[..walk.depth.min(8)] {
            println!("  pc {:#x}  fp {:#x}", f.pc, f.fp);
        }

        // 2. The framehop-style callback.
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            match unwinder.read_word(addr as usize) {
                Ok(Some(word)) => Ok(word as u64),
                _ => Err(()),
            }
        };
        let fp = frames[0].fp as u64;
        let mut pcs = Vec::new();
        unwind_with(fp, &mut read_stack, &mut pcs);
        println!("external unwinder via read_stack: {} frames", pcs.len());

        // A corrupt frame pointer (a kernel address, then an unmapped one): no crash.
        for bad in [0xffff_ffff_8100_0000u64, 0x10] {
            let mut pcs = Vec::new();
            unwind_with(bad, &mut read_stack, &mut pcs);
        }
        let mut out = [Frame::default(); 4];
        let w = unwinder.walk(
            Start::From {
                pc: 0x1234,
                fp: 0x7000_0000_0000,
            },
            &mut out,
            None,
        );
        println!("walk from a bogus fp: {:?}", w.stop);
        assert!(
            matches!(w.stop, unwind::Stop::Unreadable { .. }),
            "a bogus frame pointer is unreadable"
        );
    });
    Ok(())
}
