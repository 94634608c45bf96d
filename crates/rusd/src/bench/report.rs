//! Recording (per task, no sharing) and the final report: text, or one JSON object.
//!
//! JSON fields: `workload`, `endpoints`, `conns`, `clients`, `requests` (completed, ok or not),
//! `ok`, `errors` (`{code: count}`, gRPC code names, plus `MissingEvent` for watch events that
//! never arrived), `error_samples` (`{code: first message}`), `seconds` (the measured phase),
//! `rps` (ok requests per second), `latency_us` (`min`, `mean`, `stddev`, `p50`, `p90`, `p99`,
//! `p99_9`, `max`, in microseconds; `null` when nothing succeeded), `ops` (the same fields per
//! operation kind) and workload-specific counters.

use std::io::Write;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tonic::{Code, Status};

/// Error kinds: the 17 gRPC codes, then the bench's own.
const KINDS: usize = 18;
/// A watch event that did not arrive.
pub const MISSING_EVENT: usize = 17;

fn kind_name(kind: usize) -> &'static str {
    match kind {
        0 => "Ok",
        1 => "Cancelled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "MissingEvent",
    }
}

/// One operation kind's latencies (µs) and errors.
#[derive(Clone)]
pub struct OpStats {
    hist: Histogram<u64>,
    errors: [u64; KINDS],
    samples: [Option<String>; KINDS],
}

impl OpStats {
    fn new() -> OpStats {
        OpStats {
            // Auto-resizing, 3 significant digits: exact below 2 ms, 0.1% above.
            hist: Histogram::new(3).expect("3 significant digits are valid"),
            errors: [0; KINDS],
            samples: Default::default(),
        }
    }

    fn merge(&mut self, other: &OpStats) {
        // Auto-resizing histograms take any value.
        let _ = self.hist.add(&other.hist);
        for k in 0..KINDS {
            self.errors[k] += other.errors[k];
            if self.samples[k].is_none() {
                self.samples[k].clone_from(&other.samples[k]);
            }
        }
    }

    /// Successful requests.
    pub fn ok(&self) -> u64 {
        self.hist.len()
    }

    /// Failed requests.
    pub fn failed(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// A task's records, one [`OpStats`] per operation kind of the workload.
#[derive(Clone)]
pub struct Recorder {
    names: &'static [&'static str],
    ops: Vec<OpStats>,
}

impl Recorder {
    /// An empty recorder for operation kinds `names`.
    pub fn new(names: &'static [&'static str]) -> Recorder {
        Recorder {
            names,
            ops: names.iter().map(|_| OpStats::new()).collect(),
        }
    }

    /// A success of `op` that started at `start`.
    #[inline]
    pub fn ok(&mut self, op: usize, start: Instant) {
        self.ok_us(op, start.elapsed().as_micros() as u64);
    }

    /// A success of `op` that took `us` microseconds.
    #[inline]
    pub fn ok_us(&mut self, op: usize, us: u64) {
        let hist = &mut self.ops[op].hist;
        if hist.record(us).is_err() {
            hist.saturating_record(us);
        }
    }

    /// A failure of `op`.
    pub fn error(&mut self, op: usize, code: Code, message: &str) {
        self.errors(op, code as usize, 1, message);
    }

    /// `count` failures of `op` with error kind `kind` (a gRPC code or [`MISSING_EVENT`]).
    pub fn errors(&mut self, op: usize, kind: usize, count: u64, message: &str) {
        if count == 0 {
            return;
        }
        let kind = kind.min(KINDS - 1);
        let stats = &mut self.ops[op];
        stats.errors[kind] += count;
        if stats.samples[kind].is_none() {
            stats.samples[kind] = Some(message.to_owned());
        }
    }

    /// Records a unary call's outcome; the response on success.
    #[inline]
    pub fn result<T>(
        &mut self,
        op: usize,
        start: Instant,
        result: Result<tonic::Response<T>, Status>,
    ) -> Option<T> {
        match result {
            Ok(response) => {
                self.ok(op, start);
                Some(response.into_inner())
            }
            Err(status) => {
                self.error(op, status.code(), status.message());
                None
            }
        }
    }

    /// Adds another task's records.
    pub fn merge(&mut self, other: &Recorder) {
        for (mine, theirs) in self.ops.iter_mut().zip(&other.ops) {
            mine.merge(theirs);
        }
    }

    /// One operation kind's records.
    pub fn op(&self, op: usize) -> &OpStats {
        &self.ops[op]
    }
}

/// Requests, errors, rate and latencies of one or more operation kinds over a time span.
pub struct Summary {
    stats: OpStats,
    seconds: f64,
}

impl Summary {
    /// The sum of `ops` of `rec`, over `seconds`.
    pub fn of(rec: &Recorder, ops: &[usize], seconds: f64) -> Summary {
        let mut stats = OpStats::new();
        for &op in ops {
            stats.merge(&rec.ops[op]);
        }
        Summary { stats, seconds }
    }

    fn requests(&self) -> u64 {
        self.stats.ok() + self.stats.failed()
    }

    fn rps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.stats.ok() as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn json_into(&self, out: &mut Map<String, Value>) {
        let s = &self.stats;
        let mut errors = Map::new();
        let mut samples = Map::new();
        for k in 0..KINDS {
            if s.errors[k] > 0 {
                errors.insert(kind_name(k).into(), s.errors[k].into());
                if let Some(m) = &s.samples[k] {
                    samples.insert(kind_name(k).into(), m.clone().into());
                }
            }
        }
        out.insert("requests".into(), self.requests().into());
        out.insert("ok".into(), s.ok().into());
        out.insert("errors".into(), errors.into());
        out.insert("error_samples".into(), samples.into());
        out.insert("seconds".into(), round(self.seconds, 6).into());
        out.insert("rps".into(), round(self.rps(), 1).into());
        let h = &s.hist;
        let latency = if h.is_empty() {
            Value::Null
        } else {
            json!({
                "min": h.min(),
                "mean": round(h.mean(), 1),
                "stddev": round(h.stdev(), 1),
                "p50": h.value_at_quantile(0.5),
                "p90": h.value_at_quantile(0.9),
                "p99": h.value_at_quantile(0.99),
                "p99_9": h.value_at_quantile(0.999),
                "max": h.max(),
            })
        };
        out.insert("latency_us".into(), latency);
    }

    fn text(&self, w: &mut impl Write, indent: &str) -> std::io::Result<()> {
        let s = &self.stats;
        writeln!(
            w,
            "{indent}{} requests, {} ok, {} errors in {:.3} s: {:.1} ok/s",
            self.requests(),
            s.ok(),
            s.failed(),
            self.seconds,
            self.rps()
        )?;
        let h = &s.hist;
        if !h.is_empty() {
            let ms = |us: u64| us as f64 / 1000.0;
            writeln!(
                w,
                "{indent}latency ms: mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                h.mean() / 1000.0,
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.9)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                ms(h.max()),
            )?;
        }
        for k in 0..KINDS {
            if s.errors[k] > 0 {
                writeln!(
                    w,
                    "{indent}error {}: {} (first: {})",
                    kind_name(k),
                    s.errors[k],
                    s.samples[k].as_deref().unwrap_or("")
                )?;
            }
        }
        Ok(())
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// A workload's result.
pub struct Report {
    workload: &'static str,
    config: Map<String, Value>,
    main: Summary,
    ops: Vec<(&'static str, Summary)>,
    extra: Map<String, Value>,
}

impl Report {
    /// A report whose headline is the sum of `main_ops` over `seconds`, with every operation
    /// kind listed under `ops` too.
    pub fn new(rec: &Recorder, main_ops: &[usize], seconds: f64) -> Report {
        let ops = (0..rec.names.len())
            .map(|op| (rec.names[op], Summary::of(rec, &[op], seconds)))
            .collect();
        Report {
            workload: "",
            config: Map::new(),
            main: Summary::of(rec, main_ops, seconds),
            ops,
            extra: Map::new(),
        }
    }

    /// Measures operation kind `name` over its own time span (e.g. a setup phase).
    pub fn op_seconds(&mut self, name: &str, seconds: f64) {
        for (n, s) in &mut self.ops {
            if *n == name {
                s.seconds = seconds;
            }
        }
    }

    /// Adds a workload-specific field.
    pub fn extra(&mut self, key: &str, value: impl Into<Value>) {
        self.extra.insert(key.into(), value.into());
    }

    /// Records the workload name and the global settings.
    pub fn set_config(&mut self, workload: &'static str, g: &super::Global) {
        self.workload = workload;
        self.config
            .insert("endpoints".into(), g.endpoints.clone().into());
        self.config.insert("conns".into(), g.conns.into());
        self.config.insert("clients".into(), g.clients.into());
    }

    /// Whether the headline requests all failed, or there were none because everything they
    /// depend on failed (e.g. every put of the watch workload).
    pub fn all_failed(&self) -> bool {
        if self.main.requests() > 0 {
            return self.main.stats.ok() == 0;
        }
        self.ops.iter().any(|(_, s)| s.stats.failed() > 0)
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("workload".into(), self.workload.into());
        out.extend(self.config.clone());
        self.main.json_into(&mut out);
        let mut ops = Map::new();
        for (name, s) in &self.ops {
            let mut o = Map::new();
            s.json_into(&mut o);
            ops.insert((*name).into(), o.into());
        }
        out.insert("ops".into(), ops.into());
        out.extend(self.extra.clone());
        out.into()
    }

    /// Prints the report on stdout: JSON or text.
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        let stdout = std::io::stdout();
        let mut w = stdout.lock();
        if json {
            serde_json::to_writer(&mut w, &self.to_json())?;
            writeln!(w)?;
        } else {
            writeln!(w, "{}:", self.workload)?;
            self.main.text(&mut w, "  ")?;
            // The breakdown, when more than one kind of operation ran.
            let ran: Vec<_> = self.ops.iter().filter(|(_, s)| s.requests() > 0).collect();
            if ran.len() > 1 {
                for (name, s) in ran {
                    writeln!(w, "  {name}:")?;
                    s.text(&mut w, "    ")?;
                }
            }
            for (k, v) in &self.extra {
                writeln!(w, "  {k}: {v}")?;
            }
        }
        w.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn error_counts(s: &OpStats) -> BTreeMap<&'static str, u64> {
        (0..KINDS)
            .filter(|&k| s.errors[k] > 0)
            .map(|k| (kind_name(k), s.errors[k]))
            .collect()
    }

    #[test]
    fn merge_and_json() {
        let mut a = Recorder::new(&["read", "write"]);
        let mut b = Recorder::new(&["read", "write"]);
        for us in 1..=1000 {
            a.ok_us(0, us);
        }
        b.ok_us(1, 5000);
        b.error(1, Code::Unavailable, "down");
        b.error(1, Code::Unavailable, "down again");
        a.merge(&b);
        assert_eq!(error_counts(a.op(1)), BTreeMap::from([("Unavailable", 2)]));
        let r = Report::new(&a, &[0, 1], 2.0);
        let j = r.to_json();
        assert_eq!(j["requests"], 1003);
        assert_eq!(j["ok"], 1001);
        assert_eq!(j["errors"]["Unavailable"], 2);
        assert_eq!(j["error_samples"]["Unavailable"], "down");
        assert_eq!(j["rps"], 500.5);
        assert_eq!(j["latency_us"]["p50"], 501);
        assert_eq!(j["ops"]["read"]["ok"], 1000);
        assert!(j["latency_us"]["max"].as_u64() >= Some(5000));
        assert!(!r.all_failed());
    }
}
