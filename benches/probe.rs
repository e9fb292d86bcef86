//! Per-probe cost of every backend, beside the floors and the peers, in one criterion run.
//!
//! `cargo bench --features addrprobe-lab/bench --bench probe` (`-- --test` for a smoke run):
//! the lab's `bench` feature builds the peer crates.
//!
//! Groups:
//! - `probe/<len>`: every backend's `check` on each case (valid resident, valid never-touched,
//!   PROT_NONE, unmapped, kernel address), for 8 B, 1 page, 16 pages and 256 pages;
//!   `auto` is `Prober::auto()`. The 8 B group also holds the floors (`floor/bare-<backend>`:
//!   the backend's syscall called directly; `floor/getppid`; `floor/volatile-load`) and the
//!   peers (`peer/pprof-validate`, `peer/accessible`).
//! - `full-copy/256 pages`: copying the whole range through the Pipe / ProcessVmReadv /
//!   SigprocMask syscall, the naive way the crate avoids.
//!
//! Before the benchmarks it prints the peers' answers on the conformance fixtures beside ours.

use std::hint::black_box;

use addrprobe::{AutoOptions, Backend, Prober};
use addrprobe_lab::bench::{Arena, Case, Floors, len_label, lengths, peers};
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};

fn probers() -> Vec<Prober> {
    Backend::ALL
        .into_iter()
        .filter_map(|b| match Prober::new(b) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("skipping {b}: {e}");
                None
            }
        })
        .collect()
}

fn fixture_table(probers: &[Prober]) {
    let set = addrprobe_lab::fixtures::FixtureSet::build().expect("fixtures");
    let ours: Vec<Prober> = probers
        .iter()
        .filter(|p| p.guarantee() == addrprobe::Guarantee::Readable)
        .filter_map(|p| Prober::new(p.backend()).ok())
        .collect();
    let rows = peers::fixture_rows(&set, &ours);
    let (table, pprof_wrong, acc_wrong) = peers::fixture_table(&rows);
    println!("\nPeers on the conformance fixtures (truth = readable):\n\n{table}");
    println!("pprof::validate wrong on {pprof_wrong} fixtures, accessible wrong on {acc_wrong}\n");
}

fn bench_probe(c: &mut Criterion) {
    let probers = probers();
    fixture_table(&probers);
    let auto = AutoOptions::new().build().expect("auto");
    let arena = Arena::new().expect("arena");
    let floors = Floors::open().expect("floors");

    for len in lengths() {
        let mut g = c.benchmark_group(format!("probe/{}", len_label(len)));
        for case in Case::ALL {
            let addr = arena.addr(case);
            let run = |g: &mut criterion::BenchmarkGroup<_>, name: String, f: &dyn Fn() -> bool| {
                let id = BenchmarkId::new(name, case.name());
                if case == Case::Untouched {
                    g.bench_function(id, |b| {
                        b.iter_batched(
                            || arena.reset_untouched(len),
                            |()| black_box(f()),
                            BatchSize::PerIteration,
                        )
                    });
                } else {
                    g.bench_function(id, |b| b.iter(|| black_box(f())));
                }
            };
            for p in &probers {
                run(&mut g, p.backend().to_string(), &|| {
                    p.check(black_box(addr), len) == Ok(true)
                });
            }
            run(&mut g, "auto".into(), &|| {
                auto.check(black_box(addr), len) == Ok(true)
            });
            if len == 8 {
                for b in Backend::ALL.into_iter().filter(|&b| Floors::has_bare(b)) {
                    run(&mut g, format!("floor/bare-{b}"), &|| {
                        floors.bare(b, black_box(addr)).is_some()
                    });
                }
                run(&mut g, "peer/pprof-validate".into(), &|| {
                    peers::pprof_validate(black_box(addr), len)
                });
            }
            run(&mut g, "peer/accessible".into(), &|| {
                peers::accessible(black_box(addr), len) == Ok(true)
            });
        }
        if len == 8 {
            g.bench_function("floor/getppid", |b| b.iter(addrprobe_lab::bench::getppid));
            let addr = arena.addr(Case::Resident);
            g.bench_function("floor/volatile-load", |b| {
                b.iter(|| {
                    // SAFETY: the resident mapping is readable and page-aligned.
                    unsafe { addrprobe_lab::bench::volatile_load(black_box(addr)) }
                })
            });
        }
        g.finish();
    }

    let len = *lengths().last().unwrap();
    let mut g = c.benchmark_group(format!("full-copy/{}", len_label(len)));
    g.sample_size(10);
    let addr = arena.addr(Case::Resident);
    let mut buf = vec![0u8; len];
    for b in Backend::ALL
        .into_iter()
        .filter(|&b| Floors::has_full_copy(b))
    {
        g.bench_function(BenchmarkId::new("copy-all", b), |bch| {
            bch.iter(|| floors.full_copy(b, black_box(addr), &mut buf))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_probe);
criterion_main!(benches);
