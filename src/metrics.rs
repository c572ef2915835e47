//! Counters for `/metrics` and the exit summary.
//!
//! The loop counts in plain integers (`Stats`, no atomics on the request path) and publishes
//! them once per turn into its worker's [`Metrics`] with relaxed stores: a reader on any thread
//! sees values at most one turn old. [`Registry`] holds every worker's `Metrics` and renders
//! them in the Prometheus text format, per worker and summed.
//!
//! Log output is process-wide (the `log` facade is): whoever writes the lines (the binary's
//! stderr writer and access log) counts what it could not write in [`LogHealth::global`], which
//! `/metrics` and the exit summary show.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::blocking::{BlockingPool, BlockingStats, Monitor};
pub use crate::counters::DrainReport;
use crate::counters::{Counts, Cut, CutCounts, Stats};

/// Status classes counted: 1xx to 5xx.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Why responses were cut, in the order of `Stats::cuts`.
const CUTS: [&str; 3] = [Cut::ALL[0].1, Cut::ALL[1].1, Cut::ALL[2].1];
/// One worker's published counters; read from any thread.
#[derive(Debug, Default)]
pub struct Metrics {
    new: AtomicU64,
    active: AtomicU64,
    idle: AtomicU64,
    accepted: AtomicU64,
    responses: [AtomicU64; 5],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    deferred: AtomicU64,
    streams: AtomicU64,
    streams_finished: AtomicU64,
    cuts: [AtomicU64; 3],
    draining: AtomicU64,
    drain_start: [AtomicU64; 3],
    drain_served: AtomicU64,
    forced: AtomicU64,
    streams_cut: AtomicU64,
    drain_cut: [AtomicU64; 3],
    drain_micros: AtomicU64,
    slow_turns: AtomicU64,
}

impl Metrics {
    /// Publishes the loop's counters (called once per turn).
    pub(crate) fn publish(&self, stats: &Stats, counts: &Counts) {
        self.new.store(counts.new as u64, Relaxed);
        self.active.store(counts.active as u64, Relaxed);
        self.idle.store(counts.idle as u64, Relaxed);
        self.accepted.store(stats.accepted, Relaxed);
        for (slot, &n) in self.responses.iter().zip(&stats.responses) {
            slot.store(n, Relaxed);
        }
        self.bytes_in.store(stats.bytes_in, Relaxed);
        self.bytes_out.store(stats.bytes_out, Relaxed);
        self.deferred.store(stats.deferred, Relaxed);
        self.streams.store(stats.streams, Relaxed);
        self.streams_finished.store(stats.streams_finished, Relaxed);
        for (slot, &n) in self.cuts.iter().zip(&stats.cuts) {
            slot.store(n, Relaxed);
        }
        self.slow_turns.store(stats.slow_turns, Relaxed);
    }

    /// Publishes the state of a shutdown (from its first request on; sets the draining flag).
    pub(crate) fn publish_drain(&self, report: &DrainReport) {
        self.draining.store(1, Relaxed);
        let start = [report.at_start.new, report.at_start.active, report.at_start.idle];
        for (slot, n) in self.drain_start.iter().zip(start) {
            slot.store(n as u64, Relaxed);
        }
        self.drain_served.store(report.served, Relaxed);
        self.forced.store(report.forced, Relaxed);
        self.streams_cut.store(report.streams_cut, Relaxed);
        let cut = [report.cut.write_timeout, report.cut.drain_write_timeout, report.cut.shutdown];
        for (slot, n) in self.drain_cut.iter().zip(cut) {
            slot.store(n, Relaxed);
        }
        self.drain_micros.store(report.micros, Relaxed);
    }

    /// The drain as last published (all zero if none began).
    pub fn drain_report(&self) -> DrainReport {
        let [new, active, idle] = [0, 1, 2].map(|i| self.drain_start[i].load(Relaxed) as usize);
        DrainReport {
            at_start: Counts { new, active, idle },
            served: self.drain_served.load(Relaxed),
            forced: self.forced.load(Relaxed),
            streams_cut: self.streams_cut.load(Relaxed),
            cut: CutCounts::since(&[0, 1, 2].map(|i| self.drain_cut[i].load(Relaxed)), &[0; 3]),
            micros: self.drain_micros.load(Relaxed),
        }
    }

    /// Active connections, as last published.
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }
}

/// A log destination, as [`LogHealth`] counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// The log lines (the binary writes them to stderr).
    Stderr = 0,
    /// The access log.
    Access = 1,
}

impl LogStream {
    /// Both, in the order of their label values.
    const ALL: [LogStream; 2] = [LogStream::Stderr, LogStream::Access];
    /// The label value (`log="stderr"`, `log="access"`).
    const NAMES: [&'static str; 2] = ["stderr", "access"];
}

/// What the process's log output could not write, per [`LogStream`]: lines lost (dropped because
/// the destination took too little, or lost to a write error) and writes that failed. A full
/// disk, a pipe whose reader left or one that stalled is never a reason to stop serving: it is
/// counted here, and shown in `/metrics` (`quiesce_log_lost_lines_total`,
/// `quiesce_log_write_errors_total`) and the exit summary. Relaxed atomics; process-wide.
#[derive(Debug, Default)]
pub struct LogHealth {
    lost: [AtomicU64; 2],
    errors: [AtomicU64; 2],
}

/// What [`LogHealth`] counted, at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogCounts {
    /// Lines lost, by [`LogStream`] (`[stderr, access]`).
    pub lost: [u64; 2],
    /// Writes that failed, by [`LogStream`].
    pub errors: [u64; 2],
}

static LOG_HEALTH: LogHealth =
    LogHealth { lost: [AtomicU64::new(0), AtomicU64::new(0)], errors: [AtomicU64::new(0), AtomicU64::new(0)] };

impl LogHealth {
    /// The process's counters.
    pub fn global() -> &'static LogHealth {
        &LOG_HEALTH
    }

    /// `lines` lines of `stream` were lost.
    pub fn lost(&self, stream: LogStream, lines: u64) {
        if lines > 0 {
            self.lost[stream as usize].fetch_add(lines, Relaxed);
        }
    }

    /// A write to `stream` failed.
    pub fn failed(&self, stream: LogStream) {
        self.errors[stream as usize].fetch_add(1, Relaxed);
    }

    /// The counts now.
    pub fn counts(&self) -> LogCounts {
        LogCounts {
            lost: self.lost.each_ref().map(|n| n.load(Relaxed)),
            errors: self.errors.each_ref().map(|n| n.load(Relaxed)),
        }
    }
}

impl LogCounts {
    /// Lines lost from `stream`.
    pub fn lost(&self, stream: LogStream) -> u64 {
        self.lost[stream as usize]
    }

    /// Failed writes to `stream`.
    pub fn errors(&self, stream: LogStream) -> u64 {
        self.errors[stream as usize]
    }

    /// As a JSON object: `{"stderr":{"lost":0,"errors":0},"access":{"lost":0,"errors":0}}`.
    pub fn to_json(&self) -> String {
        let mut json = String::from("{");
        for (i, stream) in LogStream::ALL.into_iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let name = LogStream::NAMES[stream as usize];
            let _ =
                write!(json, "{sep}\"{name}\":{{\"lost\":{},\"errors\":{}}}", self.lost(stream), self.errors(stream));
        }
        json.push('}');
        json
    }

    /// Appends the two process-wide families in the Prometheus text format.
    fn render(&self, out: &mut String) {
        let families: [(&str, &str, &[u64; 2]); 2] = [
            (
                "log_lost_lines_total",
                "Log lines lost: dropped while the destination took too little, or lost to a write error.",
                &self.lost,
            ),
            ("log_write_errors_total", "Writes of log lines that failed (a full disk, a closed pipe).", &self.errors),
        ];
        for (name, help, values) in families {
            let _ = writeln!(out, "# HELP quiesce_{name} {help}\n# TYPE quiesce_{name} counter");
            for (label, value) in LogStream::NAMES.iter().zip(values) {
                let _ = writeln!(out, "quiesce_{name}{{log=\"{label}\"}} {value}");
            }
        }
    }
}

/// Every worker's [`Metrics`], rendered together, and the figures of their blocking pool.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    workers: Vec<Arc<Metrics>>,
    blocking: Option<Monitor>,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsConfig>,
}

/// One metric family: name, help, type, and how to read one value of it (per label value).
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    label: Option<(&'static str, &'static [&'static str])>,
    read: fn(&Metrics, usize) -> u64,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "connections",
        help: "Open connections by state.",
        kind: "gauge",
        label: Some(("state", &["new", "active", "idle"])),
        read: |m, i| [&m.new, &m.active, &m.idle][i].load(Relaxed),
    },
    Family {
        name: "accepted_connections_total",
        help: "Connections accepted.",
        kind: "counter",
        label: None,
        read: |m, _| m.accepted.load(Relaxed),
    },
    Family {
        name: "responses_total",
        help: "Responses sent, by status class (1xx are interim responses).",
        kind: "counter",
        label: Some(("class", &CLASSES)),
        read: |m, i| m.responses[i].load(Relaxed),
    },
    Family {
        name: "received_bytes_total",
        help: "Request bytes read.",
        kind: "counter",
        label: None,
        read: |m, _| m.bytes_in.load(Relaxed),
    },
    Family {
        name: "sent_bytes_total",
        help: "Response bytes written.",
        kind: "counter",
        label: None,
        read: |m, _| m.bytes_out.load(Relaxed),
    },
    Family {
        name: "deferred_responses_total",
        help: "Answers a handler deferred to a responder (sent whole or streamed).",
        kind: "counter",
        label: None,
        read: |m, _| m.deferred.load(Relaxed),
    },
    Family {
        name: "streamed_responses_total",
        help: "Streamed responses started.",
        kind: "counter",
        label: None,
        read: |m, _| m.streams.load(Relaxed),
    },
    Family {
        name: "finished_streams_total",
        help: "Streamed responses that ended with their last chunk.",
        kind: "counter",
        label: None,
        read: |m, _| m.streams_finished.load(Relaxed),
    },
    Family {
        name: "cut_responses_total",
        help: "Responses cut short: the client took nothing of it for the write timeout or the drain \
               write timeout, or the shutdown timeout or an immediate stop closed it mid-response.",
        kind: "counter",
        label: Some(("reason", &CUTS)),
        read: |m, i| m.cuts[i].load(Relaxed),
    },
    Family {
        name: "slow_turns_total",
        help: "Loop turns longer than the slow-turn threshold: every connection of the worker waited meanwhile.",
        kind: "counter",
        label: None,
        read: |m, _| m.slow_turns.load(Relaxed),
    },
    Family {
        name: "draining",
        help: "1 from the first shutdown request on (drain delay included).",
        kind: "gauge",
        label: None,
        read: |m, _| m.draining.load(Relaxed),
    },
    Family {
        name: "drain_duration_microseconds",
        help: "Time since the drain began, or how long it took.",
        kind: "gauge",
        label: None,
        read: |m, _| m.drain_micros.load(Relaxed),
    },
    Family {
        name: "forced_closes_total",
        help: "Connections closed by force at the shutdown timeout or an immediate stop.",
        kind: "counter",
        label: None,
        read: |m, _| m.forced.load(Relaxed),
    },
    Family {
        name: "cut_streams_total",
        help: "Streamed responses cut short at the shutdown timeout or an immediate stop.",
        kind: "counter",
        label: None,
        read: |m, _| m.streams_cut.load(Relaxed),
    },
];

impl Registry {
    /// A registry of these workers' metrics, in worker order.
    pub fn new(workers: Vec<Arc<Metrics>>) -> Self {
        Registry {
            workers,
            blocking: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Renders the handshake figures of the servers using `tls` too (`quiesce_tls_*`).
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, tls: &crate::tls::TlsConfig) -> Self {
        self.tls = Some(tls.clone());
        self
    }

    /// Renders `pool`'s figures too (`quiesce_blocking_*`); the registry does not keep the
    /// pool's threads alive.
    pub fn with_blocking(mut self, pool: &BlockingPool) -> Self {
        self.blocking = Some(pool.monitor());
        self
    }

    /// The workers' metrics.
    pub fn workers(&self) -> &[Arc<Metrics>] {
        &self.workers
    }

    /// Appends every metric in the Prometheus text exposition format (version 0.0.4): each
    /// family summed over the workers as `quiesce_<name>`, and per worker as
    /// `quiesce_worker_<name>{worker="N"}`; then the process-wide [`LogHealth`].
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP quiesce_info Build and process information.\n# TYPE quiesce_info gauge");
        let _ = writeln!(
            out,
            "quiesce_info{{version=\"{}\",pid=\"{}\",workers=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            self.workers.len()
        );
        for family in FAMILIES {
            let values = family.label.map_or(&[""][..], |(_, values)| values);
            for per_worker in [false, true] {
                let prefix = if per_worker { "quiesce_worker_" } else { "quiesce_" };
                let _ = writeln!(out, "# HELP {prefix}{} {}", family.name, family.help);
                let _ = writeln!(out, "# TYPE {prefix}{} {}", family.name, family.kind);
                for (i, value) in values.iter().enumerate() {
                    let label = family.label.map(|(name, _)| format!("{name}=\"{value}\""));
                    if per_worker {
                        for (w, metrics) in self.workers.iter().enumerate() {
                            let labels = label.as_ref().map_or(String::new(), |l| format!(",{l}"));
                            let _ = writeln!(
                                out,
                                "{prefix}{}{{worker=\"{w}\"{labels}}} {}",
                                family.name,
                                (family.read)(metrics, i)
                            );
                        }
                    } else {
                        let sum: u64 = self.workers.iter().map(|m| (family.read)(m, i)).sum();
                        let labels = label.map_or(String::new(), |l| format!("{{{l}}}"));
                        let _ = writeln!(out, "{prefix}{}{labels} {sum}", family.name);
                    }
                }
            }
        }
        if let Some(pool) = &self.blocking {
            render_blocking(&pool.stats(), out);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            tls.counts().render(out);
        }
        LogHealth::global().counts().render(out);
    }

    /// The summed drain reports of every worker: the longest drain time, the rest added up.
    pub fn drain_report(&self) -> DrainReport {
        self.workers.iter().map(|m| m.drain_report()).fold(DrainReport::default(), |sum, r| DrainReport {
            at_start: Counts {
                new: sum.at_start.new + r.at_start.new,
                active: sum.at_start.active + r.at_start.active,
                idle: sum.at_start.idle + r.at_start.idle,
            },
            served: sum.served + r.served,
            forced: sum.forced + r.forced,
            streams_cut: sum.streams_cut + r.streams_cut,
            cut: sum.cut.plus(r.cut),
            micros: sum.micros.max(r.micros),
        })
    }
}

/// Appends a blocking pool's figures: three gauges and the jobs by outcome.
fn render_blocking(stats: &BlockingStats, out: &mut String) {
    let gauges = [
        ("blocking_threads", "Threads of the blocking pool started (they start as jobs need them).", stats.threads),
        ("blocking_running", "Blocking jobs running.", stats.running),
        ("blocking_queued", "Blocking jobs waiting for a thread.", stats.queued),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP quiesce_{name} {help}\n# TYPE quiesce_{name} gauge\nquiesce_{name} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP quiesce_blocking_jobs_total Blocking jobs by outcome: done, skipped (the client had left), \
         panicked (answered 500), rejected (the queue was full: 503).\n# TYPE quiesce_blocking_jobs_total counter"
    );
    let outcomes =
        [("done", stats.done), ("skipped", stats.skipped), ("panicked", stats.panicked), ("rejected", stats.rejected)];
    for (outcome, value) in outcomes {
        let _ = writeln!(out, "quiesce_blocking_jobs_total{{outcome=\"{outcome}\"}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sums_and_per_worker_values() {
        let (a, b) = (Arc::new(Metrics::default()), Arc::new(Metrics::default()));
        let mut stats = Stats::default();
        stats.response(200);
        stats.response(404);
        stats.accepted = 2;
        a.publish(&stats, &Counts { new: 1, active: 2, idle: 3 });
        b.publish(&stats, &Counts { new: 0, active: 1, idle: 0 });
        let mut out = String::new();
        Registry::new(vec![a, b]).with_blocking(&BlockingPool::new(2, 4)).render(&mut out);
        assert!(out.contains("\nquiesce_connections{state=\"active\"} 3\n"), "{out}");
        assert!(out.contains("\nquiesce_worker_connections{worker=\"1\",state=\"active\"} 1\n"), "{out}");
        assert!(out.contains("\nquiesce_responses_total{class=\"4xx\"} 2\n"), "{out}");
        assert!(out.contains("\nquiesce_accepted_connections_total 4\n"), "{out}");
        assert!(out.contains("\nquiesce_worker_draining{worker=\"0\"} 0\n"), "{out}");
        assert!(out.contains("\nquiesce_blocking_threads 0\n"), "{out}");
        assert!(out.contains("\nquiesce_blocking_jobs_total{outcome=\"rejected\"} 0\n"), "{out}");
        // Every sample line is `name{labels} value` or `name value`.
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("a value");
            value.parse::<u64>().expect("an integer value");
        }
    }
}
