//! `addrprobe`: the command-line face of the crate.
//!
//! Each subcommand lives in its own module and takes the arguments after its name:
//!
//! - `addrprobe report [--json]`: kernel, CPU, each backend's availability, guarantee and
//!   self-test, the conformance matrix on this kernel and a quick cost table.
//! - `addrprobe bench [--quick] [--json]`: probe-cost, unwinder, profiler and scaling tables.
//! - `addrprobe bench fast-path [--quick] [--json]`: the stack-bounds fast path's targets.
//! - `addrprobe bench readers [--quick]`: the cost of `check` and `read` of every backend,
//!   `pprof::validate` + load, what `auto()` and `AutoOptions::for_reads()` pick, and
//!   `StackReader` on and off the thread's own stack.
//! - `addrprobe msync-patch [--json] [--dir DIR] [--guest] [--quick]`: the msync-patch study.

mod bench;
mod context;
mod fast_path;
mod json;
mod msync_patch;
mod readers;
mod report;

const USAGE: &str = "usage: addrprobe <command> [options]

commands:
  report [--json]   what every backend does on this machine: availability, guarantee,
                    self-test, the conformance matrix and a quick cost table
  bench [--quick] [--json]
                    probe costs, unwinder, profiler and scaling tables with every
                    benchmark target as a ratio (< 60 s; --quick < 15 s)
  bench fast-path [--quick] [--json]
                    the stack-bounds fast path alone: own-stack walk and 10 kHz
                    profiler ratios, batch windows
  bench readers [--quick]
                    what unwinders call: check and read of every backend, pprof's
                    validate + load, the auto() picks, StackReader on and off stack
  msync-patch [--json] [--dir DIR] [--guest] [--quick]
                    what the 2012 msync(MS_ASYNC) writeback patch would cost unwinders
                    and profilers: stock, A alone and A + B, emulated on this kernel
  help              this text";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]);
    let code = match args.first().map(String::as_str) {
        Some("report") => report::run(rest),
        Some("bench") if rest.first().map(String::as_str) == Some("fast-path") => {
            fast_path::run(&rest[1..])
        }
        Some("bench") if rest.first().map(String::as_str) == Some("readers") => {
            readers::run(&rest[1..])
        }
        Some("bench") => bench::run(rest),
        Some("msync-patch") => msync_patch::run(rest),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            0
        }
        Some(other) => {
            eprintln!("addrprobe: unknown command {other:?}\n\n{USAGE}");
            2
        }
        None => {
            eprintln!("{USAGE}");
            2
        }
    };
    std::process::exit(code);
}
