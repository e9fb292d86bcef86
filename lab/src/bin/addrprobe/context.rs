//! The machine a run happened on: kernel, CPU, page size, core count, CPU vulnerability
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

/// The first `model name` of `/proc/cpuinfo`, or "unknown".
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
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
        ("cpu", Json::str(cpu_model())),
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
