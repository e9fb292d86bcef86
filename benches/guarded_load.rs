//! What a SignalGuard probe costs against a plain load: `cargo bench --bench guarded_load`
//! (criterion's figures for each case, then a table of paired measurements with the ratios
//! the targets are stated in), `cargo bench --bench guarded_load -- --paired [ROUNDS]` (only
//! that table; `scripts/kernel-matrix --arch arm64` runs the bench binary so inside an arm64
//! guest under `-icount shift=0`, where a nanosecond is one guest instruction), or
//! `cargo bench --bench guarded_load -- --test` (one quick pass of every case, no figures).
//!
//! The cases:
//!
//! - `load call`: an `#[inline(never)]` function doing one volatile 8-byte load, the baseline;
//! - `check 8 B valid`, `read 8 B valid`: [`Prober::check`]/[`Prober::read`] of 8 readable bytes
//!   with a SignalGuard prober (one inline guarded load);
//! - `load_u64 valid`: [`GuardedLoads::load_u64`](addrprobe::GuardedLoads::load_u64);
//! - `check 8 B PROT_NONE`, `check 8 B unmapped`, `load_u64 PROT_NONE`: loads that fault, each a
//!   signal delivery;
//! - `walk 64 frames, ...`: a frame-pointer walk over a fake stack of 64 frame records (next
//!   frame pointer, return address) in a `Vec`: with plain loads (no validation), with two
//!   `load_u64` or one `load_u64_pair` per frame, or copying each record with `Prober::read`
//!   (16 bytes).
//!
//! The ratios come from one run: every round (about 6 ms) measures each case once, in turn,
//! over a batch of iterations; the table gives, for each case, the median and the fastest of
//! its per-round times, and the median over the rounds of its ratio to the baseline measured in
//! the same round (robust when other work shares the machine).

use std::hint::black_box;
use std::time::{Duration, Instant};

use addrprobe::{Backend, GuardedLoads, Prober};
use criterion::Criterion;

/// Frames of the fake stack.
const FRAMES: usize = 64;
/// Bytes between two frame records (a typical small frame).
const FRAME_BYTES: usize = 96;

/// The baseline: one 8-byte load behind a call.
#[inline(never)]
fn load_call(addr: usize) -> u64 {
    // SAFETY: the benchmark passes the address of a live, aligned u64.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

/// A fake stack: `FRAMES` records `[next frame pointer, return address]`, `FRAME_BYTES` apart,
/// the last one's next pointer 0. Returns the buffer and the innermost frame pointer.
fn fake_stack() -> (Vec<u64>, usize) {
    let words = FRAMES * FRAME_BYTES / 8;
    let mut stack = vec![0u64; words];
    let base = stack.as_ptr() as usize;
    for i in 0..FRAMES {
        let at = i * FRAME_BYTES / 8;
        stack[at] = if i + 1 < FRAMES {
            (base + (i + 1) * FRAME_BYTES) as u64
        } else {
            0
        };
        stack[at + 1] = 0x40_0000 + 16 * i as u64;
    }
    (stack, base)
}

/// A walk that trusts every frame pointer: the cost of the walk itself.
#[inline(never)]
fn walk_plain(mut fp: usize, out: &mut [u64; FRAMES]) -> usize {
    let mut n = 0;
    while fp != 0 && n < FRAMES {
        // SAFETY: the benchmark passes the fake stack, whose frame pointers all point into it.
        let (next, ret) = unsafe {
            (
                core::ptr::read(fp as *const usize),
                core::ptr::read((fp + 8) as *const u64),
            )
        };
        out[n] = ret;
        n += 1;
        fp = next;
    }
    n
}

/// The same walk with every frame record read by one guarded pair.
#[inline(never)]
fn walk_pair(g: GuardedLoads<'_>, mut fp: usize, out: &mut [u64; FRAMES]) -> usize {
    let mut n = 0;
    while fp != 0 && n < FRAMES {
        let Some([next, ret]) = g.load_u64_pair(fp) else {
            break;
        };
        out[n] = ret;
        n += 1;
        fp = next as usize;
    }
    n
}

/// The same walk with every frame record read by two guarded loads.
#[inline(never)]
fn walk_guarded(g: GuardedLoads<'_>, mut fp: usize, out: &mut [u64; FRAMES]) -> usize {
    let mut n = 0;
    while fp != 0 && n < FRAMES {
        let (Some(next), Some(ret)) = (g.load_u64(fp), g.load_u64(fp + 8)) else {
            break;
        };
        out[n] = ret;
        n += 1;
        fp = next as usize;
    }
    n
}

/// The same walk with each frame record copied by [`Prober::read`] (16 bytes: the general
/// path, two 8-byte guarded loads).
#[inline(never)]
fn walk_read(p: &Prober, mut fp: usize, out: &mut [u64; FRAMES]) -> usize {
    let mut n = 0;
    while fp != 0 && n < FRAMES {
        let mut rec = [0u8; 16];
        if !matches!(p.read(fp, &mut rec), Ok(true)) {
            break;
        }
        let (next, ret) = rec.split_at(8);
        out[n] = u64::from_ne_bytes(ret.try_into().unwrap());
        n += 1;
        fp = u64::from_ne_bytes(next.try_into().unwrap()) as usize;
    }
    n
}

/// The memory the cases probe: a readable u64, a PROT_NONE page and an unmapped page.
struct Fixture {
    value: Box<u64>,
    prot_none: usize,
    unmapped: usize,
}

fn fixture() -> Fixture {
    // SAFETY: a fresh anonymous mapping; the second page is then made PROT_NONE and the third
    // unmapped, both our own.
    unsafe {
        let p = libc::mmap(
            core::ptr::null_mut(),
            3 * 4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let p = p as usize;
        assert_eq!(
            libc::mprotect((p + 4096) as *mut libc::c_void, 4096, libc::PROT_NONE),
            0
        );
        assert_eq!(libc::munmap((p + 8192) as *mut libc::c_void, 4096), 0);
        Fixture {
            value: Box::new(0x1234_5678_9abc_def0),
            prot_none: p + 4096,
            unmapped: p + 8192,
        }
    }
}

/// One case: its name and a closure that runs it `n` times.
type Case<'a> = (&'static str, Box<dyn Fn(u64) + 'a>);

fn cases<'a>(p: &'a Prober, fx: &'a Fixture, stack: &'a (Vec<u64>, usize)) -> Vec<Case<'a>> {
    let g = p.guarded().expect("a SignalGuard prober has guarded loads");
    let valid = &*fx.value as *const u64 as usize;
    let (prot_none, unmapped, fp) = (fx.prot_none, fx.unmapped, stack.1);
    vec![
        (
            "load call",
            Box::new(move |n| {
                for _ in 0..n {
                    black_box(load_call(black_box(valid)));
                }
            }),
        ),
        (
            "check 8 B valid",
            Box::new(move |n| {
                for _ in 0..n {
                    assert!(matches!(p.check(black_box(valid), 8), Ok(true)));
                }
            }),
        ),
        (
            "load_u64 valid",
            Box::new(move |n| {
                for _ in 0..n {
                    black_box(g.load_u64(black_box(valid)).unwrap());
                }
            }),
        ),
        (
            "read 8 B valid",
            Box::new(move |n| {
                let mut buf = [0u8; 8];
                for _ in 0..n {
                    assert!(matches!(p.read(black_box(valid), &mut buf), Ok(true)));
                    black_box(&buf);
                }
            }),
        ),
        (
            "walk 64 frames, no validation",
            Box::new(move |n| {
                let mut out = [0u64; FRAMES];
                for _ in 0..n {
                    assert_eq!(walk_plain(black_box(fp), &mut out), FRAMES);
                    black_box(&out);
                }
            }),
        ),
        (
            "walk 64 frames, 2 load_u64 per frame",
            Box::new(move |n| {
                let mut out = [0u64; FRAMES];
                for _ in 0..n {
                    assert_eq!(walk_guarded(g, black_box(fp), &mut out), FRAMES);
                    black_box(&out);
                }
            }),
        ),
        (
            "walk 64 frames, load_u64_pair per frame",
            Box::new(move |n| {
                let mut out = [0u64; FRAMES];
                for _ in 0..n {
                    assert_eq!(walk_pair(g, black_box(fp), &mut out), FRAMES);
                    black_box(&out);
                }
            }),
        ),
        (
            "walk 64 frames, Prober::read 16 B per frame",
            Box::new(move |n| {
                let mut out = [0u64; FRAMES];
                for _ in 0..n {
                    assert_eq!(walk_read(p, black_box(fp), &mut out), FRAMES);
                    black_box(&out);
                }
            }),
        ),
        (
            "check 8 B PROT_NONE",
            Box::new(move |n| {
                for _ in 0..n {
                    assert!(matches!(p.check(black_box(prot_none), 8), Ok(false)));
                }
            }),
        ),
        (
            "check 8 B unmapped",
            Box::new(move |n| {
                for _ in 0..n {
                    assert!(matches!(p.check(black_box(unmapped), 8), Ok(false)));
                }
            }),
        ),
        (
            "load_u64 PROT_NONE",
            Box::new(move |n| {
                for _ in 0..n {
                    assert_eq!(g.load_u64(black_box(prot_none)), None);
                }
            }),
        ),
    ]
}

/// Iterations per batch: about half a millisecond of work for each case.
fn batch(name: &str) -> u64 {
    if name.contains("PROT_NONE") || name.contains("unmapped") {
        200
    } else if name.starts_with("walk") {
        4_000
    } else {
        200_000
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Every case once per round, in turn, `rounds` rounds: each case's ns per iteration in each
/// round (`[case][round]`).
fn paired(cases: &[Case<'_>], rounds: usize) -> Vec<Vec<f64>> {
    let mut samples = vec![Vec::with_capacity(rounds); cases.len()];
    for (name, run) in cases {
        run(batch(name) / 10); // warm up
    }
    for _ in 0..rounds {
        for (i, (name, run)) in cases.iter().enumerate() {
            let n = batch(name);
            let t = Instant::now();
            run(n);
            samples[i].push(t.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    samples
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--test");
    // `--paired [ROUNDS]`: only the table of paired rounds (no criterion), e.g. inside an
    // emulated guest under `-icount`, where time is an instruction count and few rounds do.
    let paired_only = args.iter().position(|a| a == "--paired").map(|i| {
        args.get(i + 1)
            .and_then(|r| r.parse::<usize>().ok())
            .filter(|&r| r > 0)
            .unwrap_or(DEFAULT_ROUNDS)
    });
    let prober = Prober::new(Backend::SignalGuard).expect("signal-guard");
    let fx = fixture();
    let stack = fake_stack();
    let cases = cases(&prober, &fx, &stack);
    if quick {
        for (name, run) in &cases {
            run(10);
            println!("{name}: ok");
        }
        return;
    }

    if let Some(rounds) = paired_only {
        table(&cases, rounds);
        return;
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();
    for (name, run) in &cases {
        // The loop runs inside the case: no call through the box per iteration.
        c.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                run(iters);
                t.elapsed()
            })
        });
    }

    table(&cases, DEFAULT_ROUNDS);
}

/// Rounds of the paired table unless `--paired ROUNDS` says otherwise.
const DEFAULT_ROUNDS: usize = 201;

/// Prints the table of paired rounds and the targets' ratios.
fn table(cases: &[Case<'_>], rounds: usize) {
    // Rounds of about 6 ms: the cases of one round share the machine's state, so the ratio
    // within a round is the figure; the table gives the median over the rounds of each case's
    // time and of its ratio to the baseline measured in the same round.
    let samples = paired(cases, rounds);
    let index = |name: &str| cases.iter().position(|c| c.0 == name).unwrap();
    let (load, plain_walk) = (index("load call"), index("walk 64 frames, no validation"));
    let ratio = |i: usize| {
        let base = if cases[i].0.starts_with("walk") {
            plain_walk
        } else {
            load
        };
        let mut r: Vec<f64> = (0..rounds)
            .map(|k| samples[i][k] / samples[base][k])
            .collect();
        median(&mut r)
    };
    println!("\npaired, median of {rounds} rounds:\n");
    println!("| case | ns (median) | ns (fastest round) | ratio (median of the rounds) |");
    println!("| --- | ---: | ---: | --- |");
    for (i, (name, _)) in cases.iter().enumerate() {
        let mut s = samples[i].clone();
        let fastest = s.iter().copied().fold(f64::INFINITY, f64::min);
        let against = if name.starts_with("walk") {
            "the unvalidated walk"
        } else {
            "a load call"
        };
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} × {against} |",
            median(&mut s),
            fastest,
            ratio(i)
        );
    }
    println!(
        "\ntargets: check 8 B valid {:.2} (<= 1.5), load_u64 valid {:.2} (<= 1.5), guarded walk \
         {:.2} with load_u64, {:.2} with load_u64_pair (<= 1.3)",
        ratio(index("check 8 B valid")),
        ratio(index("load_u64 valid")),
        ratio(index("walk 64 frames, 2 load_u64 per frame")),
        ratio(index("walk 64 frames, load_u64_pair per frame")),
    );
}
