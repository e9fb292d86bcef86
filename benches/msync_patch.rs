//! The msync-patch emulation under criterion: what one validated walk and one application
//! operation cost with a stock `msync(MS_ASYNC)`, with patch A alone and with A + B
//! (see `docs/msync-patch.md` and `addrprobe_lab::msync_patch`).
//!
//! `cargo bench --bench msync_patch` (`-- --test` for a smoke run).
//! Files go to `$ADDRPROBE_MSYNC_DIR` (default `/tmp`, ext4 here) and, when it is tmpfs,
//! `/dev/shm`.
//!
//! Groups (each with one benchmark per mode, `stock`, `a-alone`, `a+b`):
//! - `msync-patch/unwind-anon-stack`: one 64-frame walk over an anonymous stack, each frame
//!   validated with msync (the stack is rewritten before each walk, outside the timing);
//! - `msync-patch/unwind-file-code-cache/<fs>`: the same walk over frames that live in a
//!   `MAP_SHARED` file that also holds a code cache the "JIT" writes to before each walk;
//! - `msync-patch/profiler-app-op/<fs>`: one operation of the application that dirties random
//!   pages of a 64 MiB `MAP_SHARED` file while a 1 kHz SIGPROF sampler validates pointers into
//!   it. The time per operation is the inverse of the application's throughput; after the
//!   group, the probe cost inside the handler and the bytes written are printed, since
//!   criterion only times.
//!
//! Ratios to stock are what to read: criterion's absolute numbers include this machine's
//! noise, and the stock run of each group is the baseline measured in the same run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use addrprobe::unwind::Frame;
use addrprobe_lab::msync_patch::Mode;
use addrprobe_lab::msync_patch::workloads::{
    FsKind, ProfilerConfig, ProfilerSetup, StackKind, UnwindConfig, UnwindSetup,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn dirs() -> Vec<PathBuf> {
    let main = std::env::var_os("ADDRPROBE_MSYNC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let mut v = vec![main.clone()];
    let shm = Path::new("/dev/shm");
    if FsKind::of(&main).ok() != Some(FsKind::Tmpfs) && FsKind::of(shm).ok() == Some(FsKind::Tmpfs)
    {
        v.push(shm.to_path_buf());
    }
    v
}

fn unwind_group(c: &mut Criterion, kind: StackKind, dir: &Path) {
    let name = match kind {
        StackKind::Anonymous => format!("msync-patch/{}", kind.workload_name()),
        StackKind::FileCodeCache => format!(
            "msync-patch/{}/{}",
            kind.workload_name(),
            FsKind::of(dir).map(|f| f.name()).unwrap_or_default()
        ),
    };
    let mut setup = match UnwindSetup::new(kind, UnwindConfig::study(0), dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping {name}: {e}");
            return;
        }
    };
    let mut g = c.benchmark_group(&name);
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut out = [Frame::default(); 64];
    for mode in Mode::ALL {
        let probe = setup.prepare(mode).expect("prepare the unwinder workload");
        g.bench_function(mode.name(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let fp = setup.rewrite();
                    let t = std::time::Instant::now();
                    let n = setup.walk(&probe, fp, &mut out).expect("walk");
                    total += t.elapsed();
                    assert_eq!(n, 64, "the walk must find every frame");
                }
                total
            })
        });
    }
    g.finish();
}

fn profiler_group(c: &mut Criterion, dir: &Path) {
    let fs = FsKind::of(dir).map(|f| f.name()).unwrap_or_default();
    let name = format!("msync-patch/profiler-app-op/{fs}");
    let mut setup = match ProfilerSetup::new(ProfilerConfig::study(0), dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping {name}: {e}");
            return;
        }
    };
    let mut g = c.benchmark_group(&name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let mut notes = Vec::new();
    for mode in Mode::ALL {
        let (mut ops, mut probe_ns, mut probes, mut dev, mut secs) = (0u64, 0.0, 0u64, 0u64, 0.0);
        g.bench_function(mode.name(), |b| {
            b.iter_custom(|iters| {
                let r = setup.run_ops(mode, iters).expect("profiler run");
                assert_eq!(r.probe_failures, 0);
                ops += r.ops;
                probe_ns += r.ns_per_probe * r.probes as f64;
                probes += r.probes;
                dev += r.io.device_bytes.unwrap_or(0);
                secs += r.elapsed_ns as f64 / 1e9;
                Duration::from_nanos(r.elapsed_ns)
            })
        });
        if ops == 0 {
            continue; // filtered out on the command line
        }
        notes.push(format!(
            "{name}/{mode}: {ops} ops, {probes} sampler probes at {:.0} ns each, device writes {:.2} MB/s",
            probe_ns / probes.max(1) as f64,
            dev as f64 / secs.max(1e-9) / 1e6
        ));
    }
    g.finish();
    for n in notes {
        println!("{n}");
    }
}

fn benches(c: &mut Criterion) {
    let dirs = dirs();
    unwind_group(c, StackKind::Anonymous, &dirs[0]);
    for d in &dirs {
        unwind_group(c, StackKind::FileCodeCache, d);
    }
    for d in &dirs {
        profiler_group(c, d);
    }
}

criterion_group!(msync_patch, benches);
criterion_main!(msync_patch);
