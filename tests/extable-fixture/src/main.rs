//! The host side: links two copies of addrprobe (`a`: 0.1.x, `b`: 0.99.0, one fat-LTO module)
//! and `dlopen`s `libextable_fixture.so`, which has a third. Three exception tables in one
//! process: the executable's (both copies' loads: one section name, one table) and the
//! library's, each bounded by its own hidden `__start_`/`__stop_` symbols.
//!
//! Without arguments this is the driver: it runs every case in a child process (this binary
//! with `case <name>`), kills a child that runs longer than 20 s, and prints one line per case:
//!
//! ```text
//! RESULT <case> status=<exit:N|signal:N|hung> ready=<bool> ok=<bool>
//! ```
//!
//! Cases are `<order>-<end>`. `order`: `none` (no prober at all: the baselines), `lib` (only
//! the library probes), `host-lib` (both host copies install and probe first, then the
//! library, then the host again), `lib-host` (the library first). `end`: `done` (print PROBES OK
//! and exit 0), `host-null` (a stray NULL load in the executable), `lib-null` (one in the
//! library), `host-sigbus` (a stray load beyond the end of a file).

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use addrprobe as a;
use addrprobe_other as b;

/// The pages the probes are judged against.
struct Fixtures {
    /// A readable page that starts with `VALUE`, followed by `prot_none`.
    valid: usize,
    prot_none: usize,
    /// A page of a shared mapping beyond the end of its one-page file.
    beyond_eof: usize,
}

const VALUE: u64 = 0x0123_4567_89ab_cdef;
const SECTION: &str = "addrprobe_extable_x86_64_v1";

fn ps() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

fn fixtures() -> Fixtures {
    let page = ps();
    // SAFETY: fresh mappings at kernel-chosen addresses; we write and protect only our own.
    unsafe {
        let base = libc::mmap(
            core::ptr::null_mut(),
            2 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(base, libc::MAP_FAILED);
        let base = base as usize;
        *(base as *mut u64) = VALUE;
        assert_eq!(
            libc::mprotect((base + page) as *mut libc::c_void, page, libc::PROT_NONE),
            0
        );
        let fd = libc::memfd_create(c"extable-fixture".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, page as libc::off_t), 0);
        let m = libc::mmap(
            core::ptr::null_mut(),
            2 * page,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(m, libc::MAP_FAILED);
        libc::close(fd);
        Fixtures {
            valid: base,
            prot_none: base + page,
            beyond_eof: m as usize + page,
        }
    }
}

/// Probes with one host copy's SignalGuard prober; the wrong answers.
macro_rules! host_probe {
    ($krate:ident, $p:expr, $fx:expr) => {{
        let p: &$krate::Prober = $p;
        let fx: &Fixtures = $fx;
        let g = p.guarded().expect("a SignalGuard prober");
        let mut buf = [0u8; 8];
        let answers = [
            ("check valid", p.check(fx.valid, 8) == Ok(true)),
            ("check PROT_NONE", p.check(fx.prot_none, 8) == Ok(false)),
            ("check beyond EOF", p.check(fx.beyond_eof, 8) == Ok(false)),
            ("load valid", g.load_u64(fx.valid) == Some(VALUE)),
            ("load PROT_NONE", g.load_u64(fx.prot_none).is_none()),
            ("load beyond EOF", g.load_u8(fx.beyond_eof).is_none()),
            ("load across", g.load_u32(fx.prot_none - 2).is_none()),
            (
                "pair valid",
                g.load_u64_pair(fx.valid).map(|[v, _]| v) == Some(VALUE),
            ),
            ("pair across", g.load_u64_pair(fx.prot_none - 8).is_none()),
            (
                "read valid",
                p.read(fx.valid, &mut buf) == Ok(true) && buf == VALUE.to_ne_bytes(),
            ),
            (
                "read PROT_NONE",
                p.read(fx.prot_none, &mut buf) == Ok(false),
            ),
        ];
        answers
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(what, _)| format!("{}: {what}", stringify!($krate)))
            .collect::<Vec<_>>()
    }};
}

/// The library, opened once (`RTLD_NODELETE`: its handler may be installed, so it must stay
/// mapped).
struct Lib {
    probe: extern "C" fn(usize, u64, usize, usize) -> u32,
    stray_load: extern "C" fn(usize) -> u8,
    handle: *mut libc::c_void,
}

fn open_lib() -> Lib {
    let path = std::env::current_exe()
        .unwrap()
        .with_file_name("libextable_fixture.so");
    let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: dlopen of our own library with a valid path; dlsym of two functions it exports
    // with these signatures.
    unsafe {
        let handle = libc::dlopen(
            cpath.as_ptr(),
            libc::RTLD_NOW | libc::RTLD_LOCAL | libc::RTLD_NODELETE,
        );
        assert!(!handle.is_null(), "dlopen {}", path.display());
        let probe = libc::dlsym(handle, c"extable_fixture_probe".as_ptr());
        let stray = libc::dlsym(handle, c"extable_fixture_stray_load".as_ptr());
        assert!(!probe.is_null() && !stray.is_null(), "dlsym");
        Lib {
            probe: core::mem::transmute::<
                *mut libc::c_void,
                extern "C" fn(usize, u64, usize, usize) -> u32,
            >(probe),
            stray_load: core::mem::transmute::<*mut libc::c_void, extern "C" fn(usize) -> u8>(
                stray,
            ),
            handle,
        }
    }
}

impl Lib {
    fn probe(&self, fx: &Fixtures, rounds: usize) {
        for round in 0..rounds {
            let wrong = (self.probe)(fx.valid, VALUE, fx.prot_none, fx.beyond_eof);
            assert_eq!(
                wrong, 0,
                "library probes, round {round}: wrong answers {wrong:#x}"
            );
        }
    }
}

/// Neither object exports its table's bounds: each binds its own.
fn no_exported_bounds(lib: &Lib) {
    for prefix in ["__start_", "__stop_"] {
        let name = std::ffi::CString::new(format!("{prefix}{SECTION}")).unwrap();
        // SAFETY: dlsym lookups by name; nothing is called.
        unsafe {
            assert!(
                libc::dlsym(lib.handle, name.as_ptr()).is_null(),
                "the library exports {name:?}"
            );
            assert!(
                libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()).is_null(),
                "{name:?} is exported"
            );
        }
    }
}

fn host_probes(pa: &a::Prober, pb: &b::Prober, fx: &Fixtures, rounds: usize) {
    for round in 0..rounds {
        let mut wrong = host_probe!(a, pa, fx);
        wrong.extend(host_probe!(b, pb, fx));
        assert!(wrong.is_empty(), "host probes, round {round}: {wrong:?}");
    }
}

/// A byte load the compiler cannot remove: a stray access in the executable.
fn stray_load(addr: usize) -> u8 {
    let v: u8;
    // SAFETY: not safe at all: this is the stray fault under test; the child is meant to die.
    unsafe {
        core::arch::asm!("mov {v}, byte ptr [{a}]", a = in(reg) addr, v = out(reg_byte) v, options(nostack, readonly))
    };
    v
}

fn run_case(case: &str) {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid struct; this process is a disposable child.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
    let fx = fixtures();
    let (order, end) = case.rsplit_once('-').expect("case <order>-<end>");
    let (order, end) = match end {
        "null" | "sigbus" => {
            let (o, place) = order
                .rsplit_once('-')
                .expect("case <order>-<place>-<fault>");
            (o, format!("{place}-{end}"))
        }
        _ => (order, end.to_owned()),
    };
    let lib = open_lib();
    no_exported_bounds(&lib);
    match order {
        "none" => {}
        "lib" => lib.probe(&fx, 100),
        "host-lib" => {
            let pa = a::Prober::new(a::Backend::SignalGuard).expect("copy a");
            let pb = b::Prober::new(b::Backend::SignalGuard).expect("copy b");
            host_probes(&pa, &pb, &fx, 100);
            lib.probe(&fx, 100);
            host_probes(&pa, &pb, &fx, 100);
        }
        "lib-host" => {
            lib.probe(&fx, 100);
            let pa = a::Prober::new(a::Backend::SignalGuard).expect("copy a");
            let pb = b::Prober::new(b::Backend::SignalGuard).expect("copy b");
            host_probes(&pa, &pb, &fx, 100);
            lib.probe(&fx, 100);
        }
        o => panic!("unknown order {o}"),
    }
    println!("READY");
    match end.as_str() {
        "done" => println!("PROBES OK"),
        "host-null" => {
            stray_load(core::hint::black_box(0));
        }
        "lib-null" => {
            (lib.stray_load)(core::hint::black_box(0));
        }
        "host-sigbus" => {
            stray_load(fx.beyond_eof);
        }
        e => panic!("unknown end {e}"),
    }
    println!("SURVIVED");
}

fn cases() -> Vec<String> {
    let mut v = Vec::new();
    for order in ["none", "lib", "host-lib", "lib-host"] {
        for end in ["done", "host-null", "lib-null", "host-sigbus"] {
            v.push(format!("{order}-{end}"));
        }
    }
    v
}

fn drive() {
    let exe = std::env::current_exe().expect("current_exe");
    for case in cases() {
        let mut child = Command::new(&exe)
            .args(["case", &case])
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a case");
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let out_t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err_t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        let status = match status {
            None => "hung".to_owned(),
            Some(st) => match (st.code(), st.signal()) {
                (Some(c), _) => format!("exit:{c}"),
                (None, Some(s)) => format!("signal:{s}"),
                _ => format!("{st:?}"),
            },
        };
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            println!("  {case} stderr: {line}");
        }
        println!(
            "RESULT {case} status={status} ready={} ok={}",
            stdout.lines().any(|l| l == "READY"),
            stdout.lines().any(|l| l == "PROBES OK"),
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "case" {
        run_case(&args[2]);
    } else {
        drive();
    }
}
