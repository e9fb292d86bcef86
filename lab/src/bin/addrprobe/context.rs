//! The machine a run happened on: kernel, architecture, CPU and its relevant features, page size, core count, CPU vulnerability
//! mitigations and the kernel command line. Every `--json` output embeds it, so results from
//! different machines and kernels can be told apart.

use crate::json::Json;

/// What `uname -r` prints.
pub fn kernel_release() -> String {
    let mut u = core::mem::MaybeUninit::<libc::utsname>::uninit();
    // SAFETY: uname writes one `struct utsname` into the buffer we pass.
    if unsafe { libc::uname(u.as_mut_ptr()) } != 0 {
        return "unknown".to_owned();
    }
    // SAFETY: uname succeeded, so it initialised the struct; `release` is NUL-terminated.
    let release = unsafe { core::ffi::CStr::from_ptr(u.assume_init_ref().release.as_ptr()) };
    release.to_string_lossy().into_owned()
}

/// The CPU's name from `/proc/cpuinfo`, or "unknown". x86_64 (and most others) have a
/// `model name` line; arm64 has none, only MIDR fields (`CPU implementer`, `CPU part`,
/// `CPU variant`, `CPU revision`), which become "Arm Neoverse-N1 (implementer 0x41, part
/// 0xd0c, r3p1)" for the parts this table knows and the raw fields otherwise.
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpu_model_from(&info)
}

/// [`cpu_model`] of a given `/proc/cpuinfo` text.
pub fn cpu_model_from(info: &str) -> String {
    let field = |name: &str| {
        info.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_owned())
    };
    if let Some(m) = field("model name") {
        return m;
    }
    let (Some(imp), Some(part)) = (field("CPU implementer"), field("CPU part")) else {
        return "unknown".to_owned();
    };
    let hex = |s: &str| usize::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let rev = match (
        field("CPU variant").as_deref().and_then(hex),
        field("CPU revision"),
    ) {
        (Some(v), Some(r)) => format!(", r{v}p{r}"),
        _ => String::new(),
    };
    let name = match (hex(&imp), hex(&part)) {
        // An implementer of 0 is "reserved for software use": QEMU's `-cpu max` reports it.
        (Some(0x00), _) => Some("software-defined (e.g. QEMU -cpu max)"),
        (Some(0x41), Some(p)) => match p {
            0xd03 => Some("Arm Cortex-A53"),
            0xd07 => Some("Arm Cortex-A57"),
            0xd08 => Some("Arm Cortex-A72"),
            0xd0b => Some("Arm Cortex-A76"),
            0xd0c => Some("Arm Neoverse-N1"),
            0xd40 => Some("Arm Neoverse-V1"),
            0xd49 => Some("Arm Neoverse-N2"),
            0xd4f => Some("Arm Neoverse-V2"),
            0xd8e => Some("Arm Neoverse-N3"),
            0xd84 => Some("Arm Neoverse-V3"),
            _ => Some("Arm"),
        },
        (Some(0x46), _) => Some("Fujitsu"),
        (Some(0x48), _) => Some("HiSilicon"),
        (Some(0x4e), _) => Some("NVIDIA"),
        (Some(0x51), _) => Some("Qualcomm"),
        (Some(0x61), _) => Some("Apple"),
        (Some(0xc0), _) => Some("Ampere"),
        _ => None,
    };
    let raw = format!("implementer {imp}, part {part}{rev}");
    match name {
        Some(n) => format!("{n} ({raw})"),
        None => raw,
    }
}

/// The architecture this binary was built for (`x86_64`, `aarch64`).
pub fn arch() -> &'static str {
    std::env::consts::ARCH
}

/// The CPU features from `/proc/cpuinfo` (`flags` on x86_64, `Features` on arm64) that change
/// what a probe can meet: protection keys (`pku`, `ospke`) and 5-level paging (`la57`) on
/// x86_64; memory tagging (`mte`, `mte3`), pointer authentication (`paca`, `pacg`) and branch
/// targets (`bti`) on arm64. Sorted; empty when none is present.
pub fn cpu_features() -> Vec<String> {
    const WANTED: &[&str] = &["pku", "ospke", "la57", "mte", "mte3", "paca", "pacg", "bti"];
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut out: Vec<String> = info
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| matches!(k.trim(), "flags" | "Features"))
        .map(|(_, v)| {
            v.split_whitespace()
                .filter(|f| WANTED.contains(f))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Online CPUs.
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `/sys/devices/system/cpu/vulnerabilities/*`, as `(name, status)` pairs.
pub fn vulnerabilities() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        std::fs::read_dir("/sys/devices/system/cpu/vulnerabilities")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let status = std::fs::read_to_string(e.path()).ok()?;
                Some((
                    e.file_name().to_string_lossy().into_owned(),
                    status.trim().to_owned(),
                ))
            })
            .collect();
    out.sort();
    out
}

/// The kernel's own parameters from `/proc/cmdline` (everything before a ` -- `, after which
/// come the init program's arguments, which say nothing about the kernel), or an empty string.
pub fn kernel_cmdline() -> String {
    let line = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let kernel_part = match line.split_once(" -- ") {
        Some((params, _init_args)) => params,
        None => line.as_str(),
    };
    kernel_part.trim().to_owned()
}

/// All of the above as one JSON object.
pub fn json() -> Json {
    Json::obj([
        ("kernel", Json::str(kernel_release())),
        ("arch", Json::str(arch())),
        ("cpu", Json::str(cpu_model())),
        (
            "cpu_features",
            Json::Arr(cpu_features().into_iter().map(Json::Str).collect()),
        ),
        ("nproc", Json::num(nproc() as f64)),
        ("page_size", Json::num(addrprobe::range::page_size() as f64)),
        (
            "vulnerabilities",
            Json::obj(
                vulnerabilities()
                    .into_iter()
                    .map(|(k, v)| (k, Json::Str(v))),
            ),
        ),
        ("cmdline", Json::str(kernel_cmdline())),
    ])
}

#[cfg(test)]
mod tests {
    use super::cpu_model_from;

    #[test]
    fn x86_64_model_name() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu pku\n";
        assert_eq!(cpu_model_from(info), "AMD EPYC 7B13");
    }

    #[test]
    fn arm64_midr_fields() {
        let info = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd mte\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n";
        assert_eq!(
            cpu_model_from(info),
            "Arm Neoverse-N1 (implementer 0x41, part 0xd0c, r3p1)"
        );
        let unknown = info.replace("0x41", "0x99");
        assert_eq!(
            cpu_model_from(&unknown),
            "implementer 0x99, part 0xd0c, r3p1"
        );
        assert_eq!(cpu_model_from("processor\t: 0\n"), "unknown");
    }
}
