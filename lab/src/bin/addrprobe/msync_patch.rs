//! `addrprobe msync-patch`: what the 2012 `msync(MS_ASYNC)` writeback patch would cost
//! unwinders and profilers, emulated on the running kernel (see `docs/msync-patch.md`).
//!
//! ```text
//! addrprobe msync-patch [--json] [--dir DIR] [--guest] [--quick]
//! ```
//!
//! - `--dir DIR`: where the workloads' files go (default `/tmp`). Outside `--guest`, the
//!   file-backed workloads also run on `/dev/shm` when it is tmpfs and `DIR` is not, to show
//!   that tmpfs has no writeback.
//! - `--guest`: only the stock mode (on a patched kernel the kernel does the writeback
//!   itself), with iteration counts small enough for QEMU/TCG. Used by `kernels/run.sh`.
//! - `--quick`: fewer iterations.
//! - `--large-folios`: fill the files with 2 MiB `write`s instead of page-sized ones, so
//!   that kernels with large page-cache folios (ext4 since 6.16) use them; writeback then
//!   writes whole folios.
//! - `--wait-before`: the patched modes wait for writeback already in flight before starting
//!   it, approximating a `WB_SYNC_ALL` patch (`filemap_fdatawrite_range`) instead of
//!   `WB_SYNC_NONE`.
//! - `--json`: machine-readable output (schema `addrprobe-msync-patch/1`; its fields are
//!   listed in `docs/msync-patch.md`, section "JSON").

use std::fmt::Write as _;
use std::path::PathBuf;

use addrprobe_lab::msync_patch::Mode;

use crate::json::Json;
use addrprobe_lab::msync_patch::workloads::{
    self, FsKind, Io, ProfilerConfig, ProfilerResult, StackKind, UnwindConfig, UnwindResult,
};

const USAGE: &str = "usage: addrprobe msync-patch [--json] [--dir DIR] [--guest] [--quick] [--large-folios] [--wait-before]";

struct Opts {
    json: bool,
    dir: PathBuf,
    guest: bool,
    quick: bool,
    large_folios: bool,
    wait_before: bool,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        json: false,
        dir: PathBuf::from("/tmp"),
        guest: false,
        quick: false,
        large_folios: false,
        wait_before: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => o.json = true,
            "--guest" => o.guest = true,
            "--quick" => o.quick = true,
            "--large-folios" => o.large_folios = true,
            "--wait-before" => o.wait_before = true,
            "--dir" => o.dir = PathBuf::from(it.next().ok_or("--dir needs a directory")?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(o)
}

/// Iteration counts: fixed, so a guest under `-icount` runs the same instructions each boot.
struct Counts {
    walks: usize,
    ops: u64,
    rounds: usize,
}

fn configs(o: &Opts) -> (UnwindConfig, ProfilerConfig) {
    let c = counts(o);
    let mut u = UnwindConfig::study(c.walks);
    let mut p = ProfilerConfig::study(c.ops);
    if o.large_folios {
        u.fill_chunk = 2 << 20;
        p.fill_chunk = 2 << 20;
    }
    u.wait_before = o.wait_before;
    p.wait_before = o.wait_before;
    (u, p)
}

fn counts(o: &Opts) -> Counts {
    match (o.guest, o.quick) {
        (true, true) => Counts {
            walks: 50,
            ops: 500,
            rounds: 1,
        },
        (true, false) => Counts {
            walks: 200,
            ops: 2000,
            rounds: 1,
        },
        (false, true) => Counts {
            walks: 1000,
            ops: 2000,
            rounds: 3,
        },
        (false, false) => Counts {
            walks: 2000,
            ops: 8000,
            rounds: 5,
        },
    }
}

/// One measured row, whatever the workload.
struct Row {
    workload: &'static str,
    fs: String,
    mode: Mode,
    ns_per_probe: f64,
    throughput: f64,
    throughput_unit: &'static str,
    elapsed_ns: f64,
    range: (f64, f64),
    rounds: usize,
    io: Io,
    extra: Vec<(&'static str, f64)>,
    sampler_clock: Option<&'static str>,
    /// Operations per second of the application thread's CPU time (profiler only).
    cpu_throughput: Option<f64>,
}

impl Row {
    fn unwind(r: &UnwindResult) -> Row {
        Row {
            workload: r.workload,
            fs: r.fs.clone(),
            mode: r.mode,
            ns_per_probe: r.ns_per_probe,
            throughput: r.iterations_per_s,
            throughput_unit: "walks/s",
            elapsed_ns: r.walks as f64 * 1e9 / r.iterations_per_s.max(1e-9),
            range: r.ns_per_probe_range,
            rounds: r.rounds,
            io: r.io,
            extra: vec![
                ("frames", r.frames as f64),
                ("walks", r.walks as f64),
                ("probes_per_walk", r.probes_per_walk as f64),
                ("walk_ns_median", r.walk_ns_median),
                ("walk_ns_mean", r.walk_ns_mean),
                ("rewrite_ns_mean", r.rewrite_ns_mean),
            ],
            sampler_clock: None,
            cpu_throughput: None,
        }
    }

    fn profiler(r: &ProfilerResult) -> Row {
        Row {
            workload: r.workload,
            fs: r.fs.clone(),
            mode: r.mode,
            ns_per_probe: r.ns_per_probe,
            throughput: r.ops_per_s,
            throughput_unit: "ops/s",
            elapsed_ns: r.elapsed_ns as f64,
            range: r.ns_per_probe_range,
            rounds: r.rounds,
            io: r.io,
            extra: vec![
                ("ops", r.ops as f64),
                ("samples", r.samples as f64),
                ("probes", r.probes as f64),
                ("probe_failures", r.probe_failures as f64),
                ("cpu_ns", r.cpu_ns as f64),
                ("ops_per_cpu_s", r.ops_per_cpu_s),
            ],
            sampler_clock: Some(r.sampler_clock),
            cpu_throughput: Some(r.ops_per_cpu_s),
        }
    }

    fn per_s(&self, bytes: Option<u64>) -> Option<f64> {
        bytes.map(|b| b as f64 * 1e9 / self.elapsed_ns.max(1.0))
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn run(args: &[String]) -> i32 {
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("addrprobe msync-patch: {e}");
            }
            eprintln!("{USAGE}");
            return 2;
        }
    };
    match measure(&o) {
        Ok(rows) => {
            if o.json {
                print!("{}", json(&o, &rows));
            } else {
                print!("{}", table(&o, &rows));
            }
            let failures: f64 = rows
                .iter()
                .flat_map(|r| r.extra.iter())
                .filter(|(k, _)| *k == "probe_failures")
                .map(|(_, v)| v)
                .sum();
            if failures > 0.0 {
                eprintln!(
                    "addrprobe msync-patch: {failures} sampler probes did not answer \"mapped\""
                );
                return 1;
            }
            0
        }
        Err(e) => {
            eprintln!("addrprobe msync-patch: {e}");
            1
        }
    }
}

fn measure(o: &Opts) -> Result<Vec<Row>, String> {
    let c = counts(o);
    let (cfg_u, cfg_p) = configs(o);
    let modes: &[Mode] = if o.guest { &[Mode::Stock] } else { &Mode::ALL };
    let mut dirs = vec![o.dir.clone()];
    let shm = PathBuf::from("/dev/shm");
    if !o.guest
        && FsKind::of(&o.dir).map_err(|e| format!("{}: {e}", o.dir.display()))? != FsKind::Tmpfs
        && FsKind::of(&shm).ok() == Some(FsKind::Tmpfs)
    {
        dirs.push(shm);
    }
    let mut rows = Vec::new();
    for r in workloads::unwind(StackKind::Anonymous, cfg_u, &o.dir, modes, c.rounds)? {
        rows.push(Row::unwind(&r));
    }
    for dir in &dirs {
        for r in workloads::unwind(StackKind::FileCodeCache, cfg_u, dir, modes, c.rounds)? {
            rows.push(Row::unwind(&r));
        }
    }
    for dir in &dirs {
        for r in workloads::profile(cfg_p, dir, modes, c.rounds)? {
            rows.push(Row::profiler(&r));
        }
    }
    Ok(rows)
}

fn stock_of<'a>(rows: &'a [Row], r: &Row) -> Option<&'a Row> {
    rows.iter()
        .find(|s| s.workload == r.workload && s.fs == r.fs && s.mode == Mode::Stock)
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then_some(a / b)
}

fn mb(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.2}", v / 1e6))
}

fn table(o: &Opts, rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# msync(MS_ASYNC) patch {}: kernel {}, files in {}{}\n",
        if o.guest {
            "(guest, stock mode only)"
        } else {
            "emulation"
        },
        kernel_release(),
        o.dir.display(),
        if o.quick { ", --quick" } else { "" }
    );
    let _ = writeln!(
        s,
        "| workload | fs | mode | ns/probe (min–max) | × stock | throughput | × stock | per CPU-s × stock | device MB/s | dirtied MB/s | minor faults |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let st = stock_of(rows, r);
        let pr = st.and_then(|st| ratio(r.ns_per_probe, st.ns_per_probe));
        let tr = st.and_then(|st| ratio(r.throughput, st.throughput));
        let cr = st.and_then(|st| ratio(r.cpu_throughput?, st.cpu_throughput?));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} ({:.0}–{:.0}) | {} | {:.0} {} | {} | {} | {} | {} | {} |",
            r.workload,
            r.fs,
            r.mode,
            r.ns_per_probe,
            r.range.0,
            r.range.1,
            pr.map_or("–".into(), |v| format!("{v:.2}")),
            r.throughput,
            r.throughput_unit,
            tr.map_or("–".into(), |v| format!("{v:.3}")),
            cr.map_or("–".into(), |v| format!("{v:.3}")),
            mb(r.per_s(r.io.device_bytes)),
            mb(r.per_s(r.io.dirtied_bytes)),
            r.io.minor_faults
        );
    }
    let _ = writeln!(
        s,
        "\nns/probe: median walk / frames (unwinders), mean in the SIGPROF handler (profiler); \
         the median of {} interleaved rounds, with the smallest and largest round.\n\
         per CPU-s: profiler operations per second of the application thread's CPU time \
         (leaves out time the thread waited for the CPU or for I/O).\n\
         device MB/s: sectors written to the file's block device during the run (all processes).\n\
         dirtied MB/s: /proc/self/io write_bytes (clean pages this process dirtied; each is written once, \
         now under the patch, up to 30 s later on a stock kernel).",
        counts(o).rounds
    );
    s
}

/// The JSON document: the shared [`Json`] writer, laid out one result row per line so that
/// committed result files diff well.
fn json(o: &Opts, rows: &[Row]) -> String {
    let c = counts(o);
    let (u, p) = configs(o);
    let modes: &[Mode] = if o.guest { &[Mode::Stock] } else { &Mode::ALL };
    let n = |x: f64| Json::num(x);
    let opt = |x: Option<f64>| Json::opt(x, Json::num);
    let head = [
        ("schema", Json::str("addrprobe-msync-patch/1")),
        ("kernel", Json::str(kernel_release())),
        ("guest", Json::Bool(o.guest)),
        ("quick", Json::Bool(o.quick)),
        ("dir", Json::str(o.dir.to_string_lossy())),
        ("page_size", n(addrprobe::range::page_size() as f64)),
        (
            "modes",
            Json::Arr(modes.iter().map(|m| Json::str(m.name())).collect()),
        ),
        (
            "config",
            Json::obj([
                ("frames", n(u.frames as f64)),
                ("frame_stride", n(u.stride as f64)),
                ("code_pages", n(u.code_pages as f64)),
                (
                    "code_pages_written_per_walk",
                    n(u.code_pages_written_per_walk as f64),
                ),
                ("walks", n(u.walks as f64)),
                ("profiler_file_bytes", n(p.file_bytes as f64)),
                ("profiler_ops", n(p.ops as f64)),
                ("work_per_op", n(p.work_per_op as f64)),
                ("pointers_per_sample", n(p.pointers_per_sample as f64)),
                ("sample_hz", n(p.hz as f64)),
                (
                    "fill_chunk",
                    n(if p.fill_chunk == 0 {
                        addrprobe::range::page_size()
                    } else {
                        p.fill_chunk
                    } as f64),
                ),
                ("wait_before", Json::Bool(p.wait_before)),
                ("rounds", n(c.rounds as f64)),
            ]),
        ),
    ];
    let mut s = String::from("{\n");
    for (k, v) in head {
        let _ = writeln!(s, "  {}: {v},", Json::str(k));
    }
    let _ = writeln!(s, "  \"results\": [");
    for (i, r) in rows.iter().enumerate() {
        let st = stock_of(rows, r);
        let mut f: Vec<(&str, Json)> = vec![
            ("workload", Json::str(r.workload)),
            ("fs", Json::str(r.fs.as_str())),
            ("mode", Json::str(r.mode.name())),
            ("ns_per_probe", n(r.ns_per_probe)),
            ("throughput", n(r.throughput)),
            ("throughput_unit", Json::str(r.throughput_unit)),
            ("elapsed_ns", n(r.elapsed_ns)),
            ("ns_per_probe_min", n(r.range.0)),
            ("ns_per_probe_max", n(r.range.1)),
            ("rounds", n(r.rounds as f64)),
        ];
        f.extend(r.extra.iter().map(|&(k, v)| (k, n(v))));
        if let Some(c) = r.sampler_clock {
            f.push(("sampler_clock", Json::str(c)));
        }
        f.extend([
            ("device_bytes", opt(r.io.device_bytes.map(|b| b as f64))),
            ("device_bytes_per_s", opt(r.per_s(r.io.device_bytes))),
            ("dirtied_bytes", opt(r.io.dirtied_bytes.map(|b| b as f64))),
            ("dirtied_bytes_per_s", opt(r.per_s(r.io.dirtied_bytes))),
            ("minor_faults", n(r.io.minor_faults as f64)),
            (
                "probe_cost_vs_stock",
                opt(st.and_then(|st| ratio(r.ns_per_probe, st.ns_per_probe))),
            ),
            (
                "throughput_vs_stock",
                opt(st.and_then(|st| ratio(r.throughput, st.throughput))),
            ),
        ]);
        if r.cpu_throughput.is_some() {
            f.push((
                "cpu_throughput_vs_stock",
                opt(st.and_then(|st| ratio(r.cpu_throughput?, st.cpu_throughput?))),
            ));
        }
        let _ = writeln!(
            s,
            "    {}{}",
            Json::obj(f),
            if i + 1 < rows.len() { "," } else { "" }
        );
    }
    s.push_str("  ]\n}\n");
    s
}
