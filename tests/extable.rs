//! The exception table of SignalGuard's inline loads in a shared object and under fat LTO.
//!
//! `tests/extable-fixture/` is a standalone cargo project (its own workspace and `Cargo.lock`,
//! release profile `lto = "fat"`, `codegen-units = 1`): a `cdylib` with its own copy of the
//! crate, and a host program that links two copies (0.1.x and the same source as 0.99.0) and
//! `dlopen`s the library. This test builds it with the cargo that runs the tests, offline, into
//! its own target directory, then
//!
//! - reads both ELF files: each has the table section, allocated, read-only (no `SHF_WRITE`),
//!   retained (`SHF_GNU_RETAIN`), with entries besides the anchor; neither needs text
//!   relocations; neither exports `__start_`/`__stop_` of it;
//! - runs the host, which runs each case in a child process (see its module docs) and prints a
//!   `RESULT` line per case: the library's probes alone, the host's two copies before the
//!   library's and after it answer right (so each handler resolves the loads of its own object
//!   and chains the others' faults to the other handler), and a stray NULL load in the
//!   executable or in the library, and a stray load beyond the end of a file, end as in the
//!   baseline without any prober (SIGSEGV, SIGSEGV, SIGBUS).

// The fixture's stray loads and the table's section name are x86_64's.
#![cfg(target_arch = "x86_64")]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Building the fixture (release, fat LTO, a few small crates) on a busy 2-core machine takes
/// about a minute; running it a second.
const TIMEOUT: Duration = Duration::from_secs(900);
const SECTION: &str = "addrprobe_extable_x86_64_v1";

/// Builds the fixture; the directory that holds `extable-host` and `libextable_fixture.so`.
fn build_fixture() -> PathBuf {
    support::cargo_fixture("extable-fixture", "build", &[], TIMEOUT).1
}

// ---------------------------------------------------------------------------------------
// Just enough ELF64 (little-endian) to check the table section and the dynamic section.

const SHF_WRITE: u64 = 0x1;
const SHF_ALLOC: u64 = 0x2;
const SHF_GNU_RETAIN: u64 = 0x20_0000;
const SHT_DYNSYM: u32 = 11;
const SHT_DYNAMIC: u32 = 6;
const DT_TEXTREL: u64 = 0x16;
const DT_FLAGS: u64 = 30;
const DF_TEXTREL: u64 = 0x4;

struct Section {
    name: String,
    kind: u32,
    flags: u64,
    offset: usize,
    size: usize,
    link: usize,
    entsize: usize,
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap()) as usize
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn cstr_at(b: &[u8], at: usize) -> String {
    let end = b[at..].iter().position(|&c| c == 0).unwrap() + at;
    String::from_utf8_lossy(&b[at..end]).into_owned()
}

fn sections(b: &[u8]) -> Vec<Section> {
    assert_eq!(&b[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(b[4], 2, "not ELF64");
    let shoff = u64_at(b, 0x28) as usize;
    let (shentsize, shnum, shstrndx) = (u16_at(b, 0x3a), u16_at(b, 0x3c), u16_at(b, 0x3e));
    let raw = |i: usize| {
        let h = shoff + i * shentsize;
        (
            u32_at(b, h),
            u32_at(b, h + 4),
            u64_at(b, h + 8),
            u64_at(b, h + 0x18) as usize,
            u64_at(b, h + 0x20) as usize,
            u32_at(b, h + 0x28) as usize,
            u64_at(b, h + 0x38) as usize,
        )
    };
    let strtab = raw(shstrndx).3;
    (0..shnum)
        .map(|i| {
            let (name, kind, flags, offset, size, link, entsize) = raw(i);
            Section {
                name: cstr_at(b, strtab + name as usize),
                kind,
                flags,
                offset,
                size,
                link,
                entsize,
            }
        })
        .collect()
}

/// Checks one linked object; returns the number of table entries.
fn check_object(path: &Path) -> usize {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let secs = sections(&b);
    let table = secs
        .iter()
        .find(|s| s.name == SECTION)
        .unwrap_or_else(|| panic!("{}: no {SECTION} section", path.display()));
    let want = SHF_ALLOC | SHF_GNU_RETAIN;
    assert_eq!(
        table.flags & (want | SHF_WRITE),
        want,
        "{}: the table's flags {:#x}",
        path.display(),
        table.flags
    );
    assert_eq!(table.size % 8, 0, "{}: entries are 8 bytes", path.display());
    for s in &secs {
        if s.kind == SHT_DYNAMIC {
            for at in (s.offset..s.offset + s.size).step_by(16) {
                let (tag, val) = (u64_at(&b, at), u64_at(&b, at + 8));
                assert!(
                    tag != DT_TEXTREL && !(tag == DT_FLAGS && val & DF_TEXTREL != 0),
                    "{}: text relocations",
                    path.display()
                );
            }
        }
        if s.kind == SHT_DYNSYM {
            let strtab = secs[s.link].offset;
            for at in (s.offset..s.offset + s.size).step_by(s.entsize.max(24)) {
                let name = cstr_at(&b, strtab + u32_at(&b, at) as usize);
                assert!(
                    !name.contains(SECTION),
                    "{}: exports {name}",
                    path.display()
                );
            }
        }
    }
    table.size / 8
}

#[test]
fn exception_tables_in_a_cdylib_and_under_fat_lto() {
    let dir = build_fixture();
    let lib_entries = check_object(&dir.join("libextable_fixture.so"));
    let host_entries = check_object(&dir.join("extable-host"));
    // The anchor and at least the loads the library's probe function inlines.
    assert!(
        lib_entries > 4,
        "the library's table has {lib_entries} entries"
    );
    assert!(
        host_entries > 8,
        "the host's table has {host_entries} entries"
    );

    let support::ChildResult {
        status,
        stdout,
        stderr,
    } = support::run_command(
        Command::new(dir.join("extable-host")),
        "tests/extable-fixture's host",
        TIMEOUT,
    );
    print!("{stdout}");
    assert!(status.success(), "{status:?}\n{stdout}\n{stderr}");
    let sigsegv = format!("signal:{}", libc::SIGSEGV);
    let sigbus = format!("signal:{}", libc::SIGBUS);
    let mut failures = Vec::new();
    for order in ["none", "lib", "host-lib", "lib-host"] {
        for (end, want) in [
            ("done", "exit:0"),
            ("host-null", sigsegv.as_str()),
            ("lib-null", sigsegv.as_str()),
            ("host-sigbus", sigbus.as_str()),
        ] {
            let case = format!("{order}-{end}");
            let (got, ready, ok) = support::fixture_result(&stdout, &case);
            // The baseline without the crate must end the same way.
            let baseline = support::fixture_result(&stdout, &format!("none-{end}")).0;
            if got != want || baseline != want || !ready || (end == "done") != ok {
                failures.push(format!(
                    "{case}: {got} (baseline {baseline}), probes done: {ready}, PROBES OK: {ok}; \
                     expected {want}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n--- output\n{stdout}",
        failures.join("\n")
    );
}
