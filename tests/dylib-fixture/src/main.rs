//! The executable of the dylib fixture: a case per argument, each printing one
//! `RESULT <case> ok` line, or dying as a stray fault would.
//!
//! - `exe`: a SignalGuard prober made by the dylib's code; the executable's own inlined
//!   `check(0, 1)`, `guarded().load_u64(0)` and `read(8, ..)` must answer "no", and a readable
//!   address "yes";
//! - `dylib`: the same probes made by the dylib's code;
//! - `both`: the executable's, then the dylib's, then the executable's again;
//! - `stray`: after the probes, a NULL load of the executable's own that is no probe must
//!   still kill the process with SIGSEGV (the handler chains it).

use probe_dylib::addrprobe::{Backend, Prober};

#[inline(never)]
fn probes_here(p: &Prober, readable: usize) -> (bool, bool, bool, bool) {
    let mut buf = [0u8; 8];
    (
        p.check(0, 1) == Ok(false),
        p.guarded().map(|g| g.load_u64(0)) == Some(None),
        p.read(8, &mut buf) == Ok(false),
        p.check(readable, 8) == Ok(true),
    )
}

fn main() {
    let case = std::env::args().nth(1).unwrap_or_default();
    let p = Prober::new(Backend::SignalGuard).expect("signal-guard");
    let value = 7u64;
    let readable = &value as *const u64 as usize;
    let all = (true, true, true, true);
    match case.as_str() {
        "exe" => assert_eq!(probes_here(&p, readable), all),
        "dylib" => assert_eq!(probe_dylib::probes_here(&p, readable), all),
        "both" => {
            assert_eq!(probes_here(&p, readable), all);
            assert_eq!(probe_dylib::probes_here(&p, readable), all);
            assert_eq!(probes_here(&p, readable), all);
        }
        "stray" => {
            assert_eq!(probes_here(&p, readable), all);
            println!("RESULT {case} probed");
            // SAFETY: not safe: the stray fault under test, in a process meant to die.
            let v = unsafe { core::ptr::read_volatile(core::ptr::null::<u8>()) };
            println!("RESULT {case} survived {v}");
            return;
        }
        other => panic!("unknown case {other:?}"),
    }
    println!("RESULT {case} ok");
}
