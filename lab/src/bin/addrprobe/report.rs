//! `addrprobe report [--json]`: what every backend does on this machine.
//!
//! Prints the kernel release, CPU model and page size; for each backend whether it is
//! available (and if not, why), its guarantee and its self-test result; what `auto()`
//! chooses; the conformance matrix (fixtures × backends, judged against the constructed
//! truth); the pipe backend's recovery after 1,000 faulting probes; and a quick cost table in
//! ns per probe, valid and invalid, beside a bare `getppid` syscall measured in the same run.
//! Exits 1 if any backend gave a false positive or failed to recover.

use std::hint::black_box;
use std::time::Duration;

use addrprobe::{AutoOptions, Backend, Error, Prober};
use addrprobe_lab::fixtures::{self, Cell, FixtureSet, Mapping, Verdict};

use crate::context;
use crate::json::Json;
use addrprobe_lab::bench::{Budget, ns_per_call};

struct BackendStatus {
    backend: Backend,
    prober: Result<Prober, Error>,
}

impl BackendStatus {
    fn available(&self) -> bool {
        !matches!(self.prober, Err(Error::Unavailable { .. }))
    }

    fn self_test(&self) -> String {
        match &self.prober {
            Ok(_) => "pass".into(),
            Err(Error::Unavailable { .. }) => "not run (unavailable)".into(),
            Err(e) => format!("fail: {e}"),
        }
    }

    fn reason(&self) -> Option<String> {
        match &self.prober {
            Err(e @ Error::Unavailable { .. }) => Some(e.to_string()),
            _ => None,
        }
    }
}

/// Everything one run gathers, printed as text or JSON.
struct Report {
    statuses: Vec<BackendStatus>,
    auto: Result<Backend, Error>,
    auto_sig: Result<Backend, Error>,
    fixture_names: Vec<&'static str>,
    matrix: Vec<Cell>,
    false_positives: usize,
    failures: usize,
    recovery: Option<Result<bool, Error>>,
    getppid_ns: f64,
    costs: Vec<Cost>,
}

struct Cost {
    backend: Backend,
    valid_ns: f64,
    invalid_ns: f64,
}

/// Probe costs: a resident 8-byte range and an unmapped one.
fn costs(statuses: &[BackendStatus]) -> (f64, Vec<Cost>) {
    let ps = addrprobe::range::page_size();
    // Two pages in the quiet region; the second is unmapped again so that it is a hole nobody
    // else owns while we probe it.
    let Ok(mut pages) = Mapping::anon(2 * ps, libc::PROT_READ | libc::PROT_WRITE, 0) else {
        return (f64::NAN, Vec::new());
    };
    pages.fill(0, &[1]);
    pages.punch(ps, ps);
    let base = pages.addr();
    let (valid, invalid) = (base + 64, base + ps);
    let budget = |max_iters| Budget {
        per_rep: Duration::from_millis(20),
        reps: 5,
        max_iters,
    };
    let getppid = ns_per_call(budget(200_000), || {
        // SAFETY: getppid has no arguments and no side effects.
        black_box(unsafe { libc::syscall(libc::SYS_getppid) });
    });
    let rows = statuses
        .iter()
        .filter_map(|s| s.prober.as_ref().ok().map(|p| (s.backend, p)))
        .map(|(backend, p)| Cost {
            backend,
            valid_ns: ns_per_call(budget(200_000), || {
                let _ = black_box(p.check(black_box(valid), 8));
            }),
            invalid_ns: ns_per_call(budget(50_000), || {
                let _ = black_box(p.check(black_box(invalid), 8));
            }),
        })
        .collect();
    drop(pages);
    (getppid, rows)
}

/// 1,000 faulting pipe probes in a row, then a valid one. Kernels 5.5–6.14 leave an empty
/// ring slot per faulting write; without recovery the 17th write would fail with EAGAIN.
fn pipe_recovery(statuses: &[BackendStatus]) -> Option<Result<bool, Error>> {
    let p = statuses
        .iter()
        .find(|s| s.backend == Backend::Pipe)?
        .prober
        .as_ref()
        .ok()?;
    let valid = 0u64;
    let addr = &valid as *const u64 as usize;
    for _ in 0..1000 {
        match p.check(0x1000, 1) {
            Ok(false) => {}
            Ok(true) => return Some(Ok(false)),
            Err(e) => return Some(Err(e)),
        }
    }
    Some(p.check(addr, 8))
}

fn answer_text(answer: &Result<bool, Error>) -> String {
    match answer {
        Ok(true) => "yes".into(),
        Ok(false) => "no".into(),
        Err(e) => format!("error: {e}"),
    }
}

pub fn run(args: &[String]) -> i32 {
    let mut json = false;
    for a in args {
        match a.as_str() {
            "--json" => json = true,
            "-h" | "--help" => {
                println!("usage: addrprobe report [--json]");
                return 0;
            }
            other => {
                eprintln!(
                    "addrprobe report: unknown option {other:?} (usage: addrprobe report [--json])"
                );
                return 2;
            }
        }
    }
    let set = match FixtureSet::build() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("addrprobe report: cannot build the conformance fixtures: {e}");
            return 1;
        }
    };
    let statuses: Vec<BackendStatus> = Backend::ALL
        .into_iter()
        .map(|backend| BackendStatus {
            backend,
            prober: Prober::new(backend),
        })
        .collect();
    let auto = Prober::auto().map(|p| p.backend());
    let auto_sig = AutoOptions::new()
        .allow_signal_handler(true)
        .build()
        .map(|p| p.backend());
    let mut matrix: Vec<Cell> = Vec::new();
    for s in &statuses {
        if let Ok(p) = &s.prober {
            matrix.extend(fixtures::run_matrix(&set, p));
        }
    }
    let mut fixture_names: Vec<&'static str> = Vec::new();
    set.for_each(|f| fixture_names.push(f.name));
    let false_positives = matrix
        .iter()
        .filter(|c| c.verdict == Verdict::FalsePositive)
        .count();
    let failures = matrix
        .iter()
        .filter(|c| c.verdict.is_failure() || c.read_ok == Some(false))
        .count();
    let recovery = pipe_recovery(&statuses);
    let (getppid_ns, costs) = costs(&statuses);
    let recovered = !matches!(recovery, Some(Ok(false)) | Some(Err(_)));

    let report = Report {
        statuses,
        auto,
        auto_sig,
        fixture_names,
        matrix,
        false_positives,
        failures,
        recovery,
        getppid_ns,
        costs,
    };
    if json {
        print_json(&report);
    } else {
        print_text(&report);
    }
    i32::from(false_positives > 0 || !recovered)
}

fn backend_name(r: &Result<Backend, Error>) -> String {
    match r {
        Ok(b) => b.to_string(),
        Err(e) => format!("none ({e})"),
    }
}

fn print_text(report: &Report) {
    let Report {
        statuses,
        auto,
        auto_sig,
        fixture_names,
        matrix,
        false_positives,
        failures,
        recovery,
        getppid_ns,
        costs,
    } = report;
    println!("# addrprobe report\n");
    println!("- kernel: {}", context::kernel_release());
    println!("- architecture: {}", context::arch());
    println!("- CPU: {}", context::cpu_model());
    let features = context::cpu_features();
    if !features.is_empty() {
        println!("- CPU features: {}", features.join(", "));
    }
    println!("- page size: {} bytes", addrprobe::range::page_size());
    println!("- auto(): {}", backend_name(auto));
    println!(
        "- auto() with a signal handler allowed: {}\n",
        backend_name(auto_sig)
    );

    println!("## Backends\n");
    println!("| backend | guarantee | available | self-test |");
    println!("| --- | --- | --- | --- |");
    for s in statuses {
        let avail = if s.available() {
            "yes".to_owned()
        } else {
            format!("no: {}", s.reason().unwrap_or_default())
        };
        println!(
            "| {} | {} | {} | {} |",
            s.backend,
            s.backend.guarantee(),
            avail,
            s.self_test()
        );
    }

    println!("\n## Conformance matrix\n");
    println!(
        "✓ matches the constructed truth under the backend's guarantee; ✗ does not; ~ a documented"
    );
    println!(
        "false negative, or a \"yes\" from the unsound backend, which proves nothing; - unavailable.\n"
    );
    let tested: Vec<Backend> = statuses
        .iter()
        .filter(|s| s.prober.is_ok())
        .map(|s| s.backend)
        .collect();
    print!("| fixture |");
    for b in &tested {
        print!(" {b} |");
    }
    print!("\n| --- |");
    for _ in &tested {
        print!(" --- |");
    }
    println!();
    for name in fixture_names {
        print!("| {name} |");
        for b in &tested {
            let mark = matrix
                .iter()
                .find(|c| c.backend == *b && c.fixture == *name)
                .map_or("-", |c| {
                    if c.read_ok == Some(false) {
                        "✗ (read)"
                    } else {
                        c.verdict.mark()
                    }
                });
            print!(" {mark} |");
        }
        println!();
    }
    println!("\nfalse positives: {false_positives}; failures (incl. wrong read bytes): {failures}");
    for c in matrix {
        if let Verdict::KnownFalseNegative(why) = c.verdict {
            println!(
                "- known false negative, {} on {}: {why}",
                c.backend, c.fixture
            );
        }
    }
    match recovery {
        Some(Ok(true)) => {
            println!("- pipe: a valid probe after 1,000 faulting probes answers yes (recovered)")
        }
        Some(r) => println!(
            "- pipe: after 1,000 faulting probes a valid probe answered {}",
            answer_text(r)
        ),
        None => println!("- pipe: unavailable, recovery not tested"),
    }

    println!("\n## Cost (ns per 8-byte probe, median of 5)\n");
    println!("| backend | valid | invalid | valid / getppid |");
    println!("| --- | ---: | ---: | ---: |");
    println!("| bare getppid syscall | {getppid_ns:.1} | | 1.00 |");
    for c in costs {
        println!(
            "| {} | {:.1} | {:.1} | {:.2} |",
            c.backend,
            c.valid_ns,
            c.invalid_ns,
            c.valid_ns / getppid_ns
        );
    }
}

fn print_json(report: &Report) {
    let Report {
        statuses,
        auto,
        auto_sig,
        fixture_names,
        matrix,
        false_positives,
        failures,
        recovery,
        getppid_ns,
        costs,
    } = report;
    let backends = statuses
        .iter()
        .map(|s| {
            Json::obj([
                ("name", Json::str(s.backend.name())),
                ("guarantee", Json::str(s.backend.guarantee().name())),
                ("available", Json::Bool(s.available())),
                ("reason", Json::opt(s.reason(), Json::Str)),
                (
                    "errno",
                    Json::opt(s.prober.as_ref().err().and_then(Error::errno), |e| {
                        Json::num(e as f64)
                    }),
                ),
                ("self_test", Json::str(s.self_test())),
            ])
        })
        .collect();
    let cells = matrix
        .iter()
        .map(|c| {
            Json::obj([
                ("fixture", Json::str(c.fixture)),
                ("backend", Json::str(c.backend.name())),
                ("answer", Json::str(answer_text(&c.answer))),
                ("verdict", Json::str(c.verdict.name())),
                ("read_ok", Json::opt(c.read_ok, Json::Bool)),
            ])
        })
        .collect();
    let cost_rows = costs
        .iter()
        .map(|c| {
            Json::obj([
                ("backend", Json::str(c.backend.name())),
                ("valid_ns", Json::num(c.valid_ns)),
                ("invalid_ns", Json::num(c.invalid_ns)),
            ])
        })
        .collect();
    let recovery_json = match recovery {
        None => Json::Null,
        Some(r) => Json::obj([
            ("faulting_probes", Json::num(1000.0)),
            ("valid_after", Json::str(answer_text(r))),
            ("recovered", Json::Bool(matches!(r, Ok(true)))),
        ]),
    };
    let auto_json = |r: &Result<Backend, Error>| match r {
        Ok(b) => Json::str(b.name()),
        Err(_) => Json::Null,
    };
    let out = Json::obj([
        ("context", context::json()),
        ("kernel", Json::str(context::kernel_release())),
        ("arch", Json::str(context::arch())),
        ("cpu", Json::str(context::cpu_model())),
        ("page_size", Json::num(addrprobe::range::page_size() as f64)),
        ("nproc", Json::num(context::nproc() as f64)),
        ("backends", Json::Arr(backends)),
        ("auto", auto_json(auto)),
        ("auto_with_signal_handler", auto_json(auto_sig)),
        (
            "fixtures",
            Json::Arr(fixture_names.iter().map(|n| Json::str(*n)).collect()),
        ),
        ("matrix", Json::Arr(cells)),
        ("false_positives", Json::num(*false_positives as f64)),
        ("failures", Json::num(*failures as f64)),
        ("pipe_recovery", recovery_json),
        ("getppid_ns", Json::num(*getppid_ns)),
        ("costs", Json::Arr(cost_rows)),
    ]);
    println!("{out}");
}
