//! Text rendering of a [`Record`]: pure functions from the report to a string.

use std::fmt::Write as _;

use crate::{
    cgroup::Workload,
    hist::{Bucket, Latency, Summary},
    record::Record,
};

/// Width of the histogram bars.
const BAR: usize = 40;

pub fn text(record: &Record) -> String {
    let mut out = String::new();
    let s = &record.signals;
    let _ = writeln!(out, "observer record: {:.1} s", record.duration_s);
    if let Some(scope) = &record.scope {
        let _ = writeln!(out, "scope: cgroup {scope} (only what runs in it)");
    }
    if let Some(r) = &s.runqueue {
        latency(&mut out, "run-queue latency", "waits", &r.latency);
        if let Some(rows) = &r.by_cgroup {
            table(
                &mut out,
                "by cgroup",
                rows.iter().map(|r| (cgroup(&r.workload), &r.summary)),
            );
        }
        if let Some(rows) = &r.by_process {
            table(
                &mut out,
                "by process",
                rows.iter()
                    .map(|r| (format!("{} {}", r.tgid, r.comm), &r.summary)),
            );
        }
        dropped(
            &mut out,
            &[
                ("cgroup", r.dropped.by_cgroup),
                ("process", r.dropped.by_process),
            ],
        );
    }
    if let Some(r) = &s.blockio {
        latency(
            &mut out,
            "block I/O device latency (issue -> complete)",
            "requests",
            &r.device,
        );
        latency(
            &mut out,
            "block I/O queue latency (insert -> issue)",
            "requests",
            &r.queue,
        );
        if let Some(rows) = &r.by_op {
            table(
                &mut out,
                "device time by op",
                rows.iter().map(|r| (r.op.to_owned(), &r.device)),
            );
        }
        if let Some(rows) = &r.by_disk {
            table(
                &mut out,
                "device time by disk",
                rows.iter()
                    .map(|r| (format!("{} {}", r.disk, r.op), &r.device)),
            );
        }
        dropped(
            &mut out,
            &[
                ("disk", r.dropped.by_disk),
                ("in flight", r.dropped.inflight),
            ],
        );
    }
    if let Some(r) = &s.tcp {
        let _ = writeln!(out, "\nTCP retransmits: {}", r.count);
        if let Some(rows) = r.by_remote.as_ref().filter(|rows| !rows.is_empty()) {
            let _ = writeln!(
                out,
                "  {:<40} {:>6} {:<12} {:>8}",
                "remote", "lport", "state", "count"
            );
            for row in rows {
                let remote = row.endpoint();
                let _ = writeln!(
                    out,
                    "  {remote:<40} {:>6} {:<12} {:>8}",
                    row.local_port, row.state, row.count
                );
            }
        }
        dropped(&mut out, &[("endpoint", r.dropped.by_remote)]);
    }
    if let Some(r) = &s.lock {
        latency(&mut out, "kernel lock contention", "waits", &r.latency);
        if let Some(rows) = &r.by_class {
            table(
                &mut out,
                "by lock class",
                rows.iter().map(|r| (r.class.to_owned(), &r.summary)),
            );
        }
    }
    if let Some(r) = &s.futex {
        latency(&mut out, "futex waits", "waits", &r.latency);
        if let Some(rows) = &r.by_process {
            table(
                &mut out,
                "by process",
                rows.iter()
                    .map(|r| (format!("{} {}", r.tgid, r.comm), &r.summary)),
            );
        }
        dropped(&mut out, &[("process", r.dropped.by_process)]);
    }
    if let Some(programs) = &record.programs {
        let _ = writeln!(out, "\nprogram cost (kernel.bpf_stats):");
        let _ = writeln!(
            out,
            "  {:<24} {:<20} {:>12} {:>10}",
            "program", "tracepoint", "runs", "ns/run"
        );
        for p in programs {
            let _ = writeln!(
                out,
                "  {:<24} {:<20} {:>12} {:>10.1}",
                p.program, p.tracepoint, p.runs, p.ns_per_run
            );
        }
    }
    for (signal, why) in &record.errors {
        let _ = writeln!(out, "\n{signal}: not measured: {why}");
    }
    out
}

/// A cgroup row's name: its path, after the workload's short name when the path has one.
fn cgroup(w: &Workload) -> String {
    let name = w.name();
    if name == w.path {
        name
    } else {
        format!("{name}  {}", w.path)
    }
}

/// A duration in ns with a readable unit.
pub fn ns(v: f64) -> String {
    let (v, unit) = if v >= 1e9 {
        (v / 1e9, "s")
    } else if v >= 1e6 {
        (v / 1e6, "ms")
    } else if v >= 1e3 {
        (v / 1e3, "us")
    } else {
        (v, "ns")
    };
    if v >= 100.0 {
        format!("{v:.0}{unit}")
    } else if v >= 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.2}{unit}")
    }
}

fn summary_line(s: &Summary) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max <= {}",
        ns(s.p50_ns),
        ns(s.p90_ns),
        ns(s.p99_ns),
        ns(s.p999_ns),
        ns(s.max_ns)
    )
}

/// A histogram like runqlat's: one row per power of two (the four scale-2 buckets of each
/// octave merged; the exact buckets are in the JSON output).
fn latency(out: &mut String, title: &str, what: &str, l: &Latency) {
    let s = &l.summary;
    let _ = writeln!(out, "\n{title}: {} {what}", s.count);
    if s.count == 0 {
        return;
    }
    let _ = writeln!(out, "  {}", summary_line(s));
    let rows = octaves(&l.buckets);
    let peak = rows.iter().map(|r| r.2).max().unwrap_or(1).max(1);
    let _ = writeln!(out, "  {:>21} {:>10}  distribution", "range", "count");
    for (lower, upper, count) in rows {
        let stars = (count as u128 * BAR as u128).div_ceil(peak as u128) as usize;
        let range = if upper == 0.0 {
            "0".to_owned()
        } else {
            format!("{} -> {}", ns(lower), ns(upper))
        };
        let _ = writeln!(
            out,
            "  {range:>21} {count:>10}  |{:<BAR$}|",
            "*".repeat(stars)
        );
    }
}

/// Merges buckets into powers of two: (lower, upper, count), with no gaps between the lowest
/// and highest non-empty octave.
pub(crate) fn octaves(buckets: &[Bucket]) -> Vec<(f64, f64, u64)> {
    let mut rows: Vec<(f64, f64, u64)> = Vec::new();
    let zero: u64 = buckets
        .iter()
        .filter(|b| b.upper_ns == 0.0)
        .map(|b| b.count)
        .sum();
    if zero > 0 {
        rows.push((0.0, 0.0, zero));
    }
    let octave = |b: &Bucket| b.upper_ns.log2().ceil() as i32;
    let nonzero: Vec<&Bucket> = buckets.iter().filter(|b| b.upper_ns > 0.0).collect();
    let (Some(first), Some(last)) = (nonzero.first(), nonzero.last()) else {
        return rows;
    };
    for e in octave(first)..=octave(last) {
        let count = nonzero
            .iter()
            .filter(|b| octave(b) == e)
            .map(|b| b.count)
            .sum();
        rows.push((f64::from(e - 1).exp2(), f64::from(e).exp2(), count));
    }
    rows
}

fn table<'a>(out: &mut String, title: &str, rows: impl Iterator<Item = (String, &'a Summary)>) {
    let rows: Vec<_> = rows.collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "  {title}:");
    let _ = writeln!(
        out,
        "    {:<40} {:>10} {:>9} {:>9} {:>9}",
        "", "count", "p50", "p99", "max <="
    );
    for (name, s) in rows {
        let _ = writeln!(
            out,
            "    {name:<40} {:>10} {:>9} {:>9} {:>9}",
            s.count,
            ns(s.p50_ns),
            ns(s.p99_ns),
            ns(s.max_ns)
        );
    }
}

fn dropped(out: &mut String, what: &[(&str, u64)]) {
    for (name, n) in what.iter().filter(|(_, n)| *n > 0) {
        let _ = writeln!(
            out,
            "  {n} not attributed to a {name}: the breakdown map was full"
        );
    }
}

/// The rules of a config, one paragraph each, as `observer config check` prints them.
pub fn rules(t: &crate::rules::spec::Tuning) -> String {
    let mut out = String::new();
    if t.rules.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "tuning: default mode {}, journal {}, state {}, at most {} changes per hour",
        t.mode,
        t.journal.display(),
        t.state.display(),
        t.max_changes_per_hour
    );
    for r in &t.rules {
        let _ = writeln!(
            out,
            "rule {} [{}]: when {} for {:?} over a {:?} window (clears for {:?}), at most once \
             per {:?}, {} changes per hour",
            r.name,
            r.mode,
            r.condition(),
            r.hold,
            r.window,
            r.clear_for,
            r.min_interval,
            r.max_changes_per_hour
        );
        for a in &r.actions {
            let _ = writeln!(out, "  - {}", a.describe());
        }
    }
    out
}

/// Audit records as a table, oldest first, as `observer actions` prints them.
pub fn actions(records: &[crate::rules::journal::Record]) -> String {
    let mut out = String::new();
    if records.is_empty() {
        out.push_str("no decisions recorded\n");
        return out;
    }
    for r in records {
        let observed = match (r.observed, r.threshold) {
            (Some(o), Some(t)) if r.unit == "ns" => format!(" {} vs {}", ns(o), ns(t)),
            (Some(o), Some(t)) => format!(" {o:.1}/s vs {t:.1}/s"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{} {} {} [{}] {} {}:{observed} {}",
            r.time,
            r.id,
            r.rule,
            r.mode,
            r.event,
            r.target,
            r.decision()
        );
        if !r.message.is_empty() {
            let _ = writeln!(out, "    {}", r.message);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_rows_show_the_workload_before_the_path() {
        let id = "4f1c2b3a".repeat(8);
        let docker = Workload::from_path(&format!("/system.slice/docker-{id}.scope"));
        assert_eq!(
            cgroup(&docker),
            format!("docker 4f1c2b3a4f1c  /system.slice/docker-{id}.scope")
        );
        assert_eq!(
            cgroup(&Workload::from_path("/system.slice/nginx.service")),
            "nginx.service  /system.slice/nginx.service"
        );
        // Nothing more to say than the path.
        assert_eq!(cgroup(&Workload::from_path("/a/b")), "/a/b");
        assert_eq!(cgroup(&Workload::unknown()), "?");
    }

    #[test]
    fn units() {
        assert_eq!(ns(850.0), "850ns");
        assert_eq!(ns(12_345.0), "12.3us");
        assert_eq!(ns(4_560_000.0), "4.56ms");
        assert_eq!(ns(2e9), "2.00s");
    }

    #[test]
    fn octaves_merge_four_buckets_and_fill_gaps() {
        let b = |lower: f64, upper: f64, count| Bucket {
            lower_ns: lower,
            upper_ns: upper,
            count,
        };
        // Two buckets in (4, 8], nothing in (8, 16], one in (16, 32].
        let rows = octaves(&[
            b(0.0, 0.0, 2),
            b(4.0, 4.76, 1),
            b(6.73, 8.0, 3),
            b(19.0, 22.6, 5),
        ]);
        assert_eq!(
            rows,
            vec![
                (0.0, 0.0, 2),
                (4.0, 8.0, 4),
                (8.0, 16.0, 0),
                (16.0, 32.0, 5)
            ]
        );
    }
}
