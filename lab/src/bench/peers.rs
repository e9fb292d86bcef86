//! The peer crates' probes, wrapped to the shape of [`Prober::check`](addrprobe::Prober::check),
//! and their answers on the conformance fixtures beside ours (feature `bench`).
//!
//! - [`pprof_validate`]: `pprof::validate` (pprof 0.15, public): a 16-byte `write()` from the
//!   address into one process-wide pipe, drained by a `read()` before each probe. It takes no
//!   length, so a range is judged by its first 16 bytes.
//! - [`accessible`]: `accessible::probe_readable`: `process_vm_readv` of the first and of the
//!   last byte only (falls back to `/proc/self/mem` on `ENOSYS`).

use crate::fixtures::{Expect, FixtureSet};
use addrprobe::{Backend, Prober};

/// `pprof::validate(addr)`; `len` is ignored (pprof validates a pointer, not a range).
#[inline]
pub fn pprof_validate(addr: usize, _len: usize) -> bool {
    pprof::validate(addr as *const libc::c_void)
}

/// `accessible::probe_readable(addr, len)`: `Ok(true)` readable, `Ok(false)` unreadable or
/// NULL, `Err` for a length that overflows.
#[inline]
pub fn accessible(addr: usize, len: usize) -> Result<bool, &'static str> {
    match accessible::probe_readable(addr as *const u8, len) {
        Ok(()) => Ok(true),
        Err(accessible::CheckError::LengthOverflow) => Err("length overflow"),
        Err(_) => Ok(false),
    }
}

/// One fixture's answers.
#[derive(Clone, Debug)]
pub struct Row {
    /// Fixture name.
    pub fixture: &'static str,
    /// The constructed truth: readable (`None`: the range is invalid and must be refused).
    pub readable: Option<bool>,
    /// Our backends' answers (`None`: error or unavailable).
    pub ours: Vec<(Backend, Option<bool>)>,
    /// `pprof::validate`.
    pub pprof: bool,
    /// `accessible::probe_readable` (`None`: refused the range).
    pub accessible: Option<bool>,
}

/// Runs the peers and the given probers over every fixture.
pub fn fixture_rows(set: &FixtureSet, probers: &[Prober]) -> Vec<Row> {
    let mut rows = Vec::new();
    set.for_each(|fx| {
        rows.push(Row {
            fixture: fx.name,
            readable: match fx.expect {
                Expect::Answer(t) => Some(t.readable),
                Expect::InvalidRange => None,
            },
            ours: probers
                .iter()
                .map(|p| (p.backend(), p.check(fx.addr, fx.len).ok()))
                .collect(),
            pprof: pprof_validate(fx.addr, fx.len),
            accessible: accessible(fx.addr, fx.len).ok(),
        })
    });
    rows
}

fn mark(truth: Option<bool>, got: Option<bool>) -> String {
    let ok = truth == got;
    let ans = match got {
        Some(true) => "yes",
        Some(false) => "no",
        None => "refused",
    };
    format!("{} {ans}", if ok { "✓" } else { "✗" })
}

/// The rows as a Markdown table, truth first, then ours, then the peers; and the number of
/// fixtures each peer got wrong (pprof, accessible).
pub fn fixture_table(rows: &[Row]) -> (String, usize, usize) {
    let mut s = String::from("| fixture | readable? |");
    let mut sep = String::from("| --- | --- |");
    if let Some(r) = rows.first() {
        for (b, _) in &r.ours {
            s += &format!(" {b} |");
            sep += " --- |";
        }
    }
    s += " pprof::validate | accessible |\n";
    s += &sep;
    s += " --- | --- |\n";
    let (mut pw, mut aw) = (0, 0);
    for r in rows {
        let truth = r.readable;
        s += &format!(
            "| {} | {} |",
            r.fixture,
            truth.map_or("invalid range", |t| if t { "yes" } else { "no" })
        );
        for (_, a) in &r.ours {
            s += &format!(" {} |", mark(truth, *a));
        }
        pw += usize::from(truth != Some(r.pprof));
        aw += usize::from(truth != r.accessible);
        s += &format!(
            " {} | {} |\n",
            mark(truth, Some(r.pprof)),
            mark(truth, r.accessible)
        );
    }
    (s, pw, aw)
}
