//! The unwinder workload: a frame-pointer walk of a real recursion stack of depth 16, 64 and
//! 256, every read validated by each backend, against the same walk with no validation.
//!
//! `cargo bench --bench unwind`. Criterion reports time per walk; divide by
//! the depth for ns per frame (`addrprobe bench` prints ns per frame directly).
//!
//! Readable backends walk with [`Unwinder::new`] (`Prober::read` per frame); Mapped and
//! RegionReadable ones with [`Unwinder::check_then_load`], sound here because the walk is
//! limited to the frames of the recursion, which are live and intact.

use std::hint::black_box;

use addrprobe::unwind::{Frame, Start, Unwinder, walk_chain};
use addrprobe::{AutoOptions, Backend, Guarantee, Prober};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn bench_unwind(c: &mut Criterion) {
    let mut probers: Vec<(String, Prober)> = Backend::ALL
        .into_iter()
        .filter_map(|b| Prober::new(b).ok().map(|p| (b.to_string(), p)))
        .collect();
    probers.push(("auto".into(), AutoOptions::new().build().expect("auto")));
    for depth in [16usize, 64, 256] {
        let mut g = c.benchmark_group(format!("unwind/depth-{depth}"));
        addrprobe_lab::bench::recurse(depth, &mut || {
            let mut out = vec![Frame::default(); depth];
            g.bench_function("baseline-no-validation", |b| {
                b.iter(|| {
                    let (fp, sp) = addrprobe_lab::bench::current_fp_sp();
                    let w = walk_chain(fp, sp, &mut out, 0, |fp| {
                        // SAFETY: at most `depth` frames are read, all of them frames of the live
                        // recursion above (compiled with frame pointers).
                        Ok(Some(unsafe {
                            [
                                core::ptr::read_volatile(fp as *const usize),
                                core::ptr::read_volatile((fp + 8) as *const usize),
                            ]
                        }))
                    });
                    black_box(w)
                })
            });
            for (name, p) in &probers {
                let u = if p.guarantee() == Guarantee::Readable {
                    Unwinder::new(p).unwrap()
                } else {
                    // SAFETY: the walk stays within `depth` frames of the live recursion.
                    unsafe { Unwinder::check_then_load(p) }
                }
                .with_max_depth(depth);
                g.bench_function(BenchmarkId::from_parameter(name), |b| {
                    b.iter(|| black_box(u.walk(Start::Current, &mut out, None)))
                });
            }
        });
        g.finish();
    }
}

criterion_group!(benches, bench_unwind);
criterion_main!(benches);
