//! `addrprobe bench readers [--quick]`: what unwinders actually call, in one run.
//!
//! - Every backend's cost of `check` and of `read` on a valid, resident 8-byte range, and
//!   the peer `pprof::validate` followed by a plain load (pprof-rs's way to read a word), in
//!   the same run (the peer needs the lab's `bench` feature).
//! - Which backend `auto()` (ordered by `check`) and `AutoOptions::for_reads()` (ordered by
//!   `read`) pick here.
//! - `StackReader::read_u64` on the thread's own stack (the fast path) and off it (the
//!   prober, or the snapshot) against a plain load.
//!
//! Prints Markdown; `docs/results/readers-2-core-vm.md` is its output on the reference VM.

use std::hint::black_box;

use addrprobe::reader::StackReader;
use addrprobe::stack_bounds::{StackBounds, current_sp};
use addrprobe::{AutoOptions, Backend, Guarantee, Prober};
use addrprobe_lab::bench::{Arena, Budget, Case, Floors, ns_per_call, volatile_load};

fn fmt(ns: Option<f64>) -> String {
    match ns {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
        None => "—".into(),
    }
}

#[cfg(feature = "bench")]
fn pprof_validate_load(b: Budget, addr: usize) -> Option<f64> {
    use addrprobe_lab::bench::peers;
    Some(ns_per_call(b, || {
        let a = black_box(addr);
        if peers::pprof_validate(a, 8) {
            // SAFETY: pprof's check said yes and the arena's resident page stays mapped for
            // the whole run (this is the peer's check-then-load, on memory we know is valid).
            black_box(unsafe { volatile_load(a) });
        }
    }))
}

#[cfg(not(feature = "bench"))]
fn pprof_validate_load(_b: Budget, _addr: usize) -> Option<f64> {
    None
}

/// A descriptor to `fstat` for the cost of the pipe backend's descriptor check.
fn floors_fd() -> i32 {
    2
}

pub fn run(args: &[String]) -> i32 {
    let quick = args.iter().any(|a| a == "--quick");
    let b = if quick { Budget::QUICK } else { Budget::FULL };
    let arena = match Arena::new() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("addrprobe bench readers: arena: {e}");
            return 1;
        }
    };
    let addr = arena.addr(Case::Resident);
    println!("## What unwinders call: `check` and `read` of a valid 8-byte range\n");
    println!("ns per call, fastest of the repetitions, measured in this run.\n");
    println!("| backend | guarantee | `check` | `read` |");
    println!("| --- | --- | ---: | ---: |");
    let mut reads: Vec<(Backend, f64)> = Vec::new();
    for backend in Backend::ALL {
        let Ok(p) = Prober::new(backend) else {
            println!("| `{backend}` | unavailable here | — | — |");
            continue;
        };
        let check = ns_per_call(b, || {
            black_box(p.check(black_box(addr), 8)).ok();
        });
        let read = (p.guarantee() == Guarantee::Readable && p.supports_read()).then(|| {
            let mut buf = [0u8; 8];
            ns_per_call(b, || {
                black_box(p.read(black_box(addr), &mut buf)).ok();
            })
        });
        if let Some(r) = read {
            reads.push((backend, r));
        }
        println!(
            "| `{backend}` | {} | {} | {} |",
            p.guarantee(),
            fmt(Some(check)),
            fmt(read)
        );
    }
    let pprof = pprof_validate_load(b, addr);
    println!(
        "| `pprof::validate` + load (peer) | — | {} | {} |",
        fmt(None),
        fmt(pprof)
    );
    let plain = ns_per_call(b, || {
        // SAFETY: the arena's resident page is readable for the whole run.
        black_box(unsafe { volatile_load(black_box(addr)) });
    });
    println!(
        "| plain load (no validation) | — | — | {} |",
        fmt(Some(plain))
    );

    // The bare technique of each Readable syscall backend's read, on 8 bytes (no range
    // handling, errno preservation or descriptor check), and one fstat: what a read costs
    // the crate beyond the syscall that copies.
    if let Ok(floors) = Floors::open() {
        let mut buf = [0u8; 8];
        for bk in [Backend::Pipe, Backend::ProcessVmReadv] {
            let ns = ns_per_call(b, || {
                black_box(floors.full_copy(bk, black_box(addr), &mut buf));
            });
            let crate_read = reads.iter().find(|(x, _)| *x == bk).map(|(_, ns)| *ns);
            println!(
                "| bare `{bk}` read, C-equivalent syscalls (ratio crate/bare: {}) | — | — | {} |",
                crate_read.map_or("—".into(), |r| format!("{:.2}", r / ns)),
                fmt(Some(ns))
            );
        }
        let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
        let fd = floors_fd();
        let fstat = ns_per_call(b, || {
            // SAFETY: `fd` is stdin/stdout/stderr or -1; fstat only writes `st`.
            black_box(unsafe { libc::fstat(fd, st.as_mut_ptr()) });
        });
        println!(
            "| one `fstat` (the pipe's descriptor check) | — | — | {} |",
            fmt(Some(fstat))
        );
    }

    let pick = |o: AutoOptions| o.build().map(|p| p.backend().to_string());
    let auto = pick(AutoOptions::new()).unwrap_or_else(|e| e.to_string());
    let for_reads = pick(AutoOptions::for_reads()).unwrap_or_else(|e| e.to_string());
    let for_reads_sig =
        pick(AutoOptions::for_reads().allow_signal_handler(true)).unwrap_or_else(|e| e.to_string());
    let fastest = reads
        .iter()
        .filter(|(bk, _)| *bk != Backend::SignalGuard)
        .min_by(|a, b| a.1.total_cmp(&b.1));
    println!();
    println!("- `auto()` (by `check`) picks `{auto}`.");
    println!(
        "- `AutoOptions::for_reads()` picks `{for_reads}`; with `allow_signal_handler(true)`, `{for_reads_sig}`."
    );
    if let Some((bk, ns)) = fastest {
        println!(
            "- Fastest `read` without a signal handler in this run: `{bk}`, {}; ratio to \
             `pprof::validate` + load: {}.",
            fmt(Some(*ns)),
            pprof.map_or("—".into(), |p| format!("{:.2}", ns / p))
        );
    }

    // StackReader on the thread's own stack and off it.
    println!("\n## `StackReader::read_u64`, 8 bytes\n");
    println!("| where | reader | ns | / plain load |");
    println!("| --- | --- | ---: | ---: |");
    let Ok(p) = AutoOptions::for_reads().build() else {
        return 1;
    };
    let bounds = StackBounds::register_current_thread().ok();
    let local = black_box([0x5a5au64; 8]);
    let on_stack = &local as *const [u64; 8] as u64;
    let plain_stack = ns_per_call(b, || {
        // SAFETY: a live local of this function.
        black_box(unsafe { volatile_load(black_box(on_stack as usize)) });
    });
    let row = |where_: &str, what: &str, ns: f64, base: f64| {
        println!(
            "| {where_} | {what} | {} | {:.2} |",
            fmt(Some(ns)),
            ns / base
        );
    };
    row("own stack", "plain load", plain_stack, plain_stack);
    let fast = ns_per_call(b, || {
        let r = StackReader::with_bounds(&p, current_sp(), bounds);
        black_box(r.read_u64(black_box(on_stack))).ok();
    });
    row(
        "own stack",
        "fast path (registered bounds)",
        fast,
        plain_stack,
    );
    let probed = ns_per_call(b, || {
        let r = StackReader::with_bounds(&p, current_sp(), None);
        black_box(r.read_u64(black_box(on_stack))).ok();
    });
    row(
        "own stack",
        &format!("no bounds: prober (`{}`)", p.backend()),
        probed,
        plain_stack,
    );
    let mut snap = [0u64; 512];
    let snapshot_64 = ns_per_call(b, || {
        if let Ok((r, _)) =
            StackReader::with_bounds(&p, black_box(addr), None).with_snapshot(&mut snap)
        {
            for i in 0..64u64 {
                black_box(r.read_u64(addr as u64 + 8 * i)).ok();
            }
        }
    }) / 64.0;
    row(
        "off stack (coroutine-like)",
        "snapshot of 4 KiB, then 64 words, per word",
        snapshot_64,
        plain,
    );
    black_box(&local);
    0
}
