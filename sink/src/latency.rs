//! Latency statistics from the per-frame timestamp records: one HDR
//! histogram per stage interval (µs), plus frame counts. Recording a frame
//! allocates nothing.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::frame::FrameRecord;

/// The stage intervals, in pipeline order: name and how to read it off a record.
type Interval = (&'static str, fn(&FrameRecord) -> Option<Duration>);

fn between(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    Some(b?.saturating_sub(a?))
}

const INTERVALS: [Interval; 6] = [
    ("receive→import", |r| {
        between(Some(r.received), r.imported)
    }),
    ("import→commit", |r| between(r.imported, r.committed)),
    ("commit→flip", |r| between(r.committed, r.flipped)),
    ("flip→event read", |r| between(r.flipped, r.event_read)),
    ("event read→release", |r| {
        between(r.event_read, r.released)
    }),
    ("receive→release", |r| {
        between(Some(r.received), r.released)
    }),
];

/// A stage's distribution in µs: 1 µs to 60 s at 3 significant digits.
fn stage_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Counts `d` in a stage's distribution (at least 1 µs; beyond its range
/// at the top).
fn record_us(histogram: &mut Histogram<u64>, d: Duration) {
    histogram.saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
}

/// Finished frames: statistics of every one, the records of the recent ones
/// (a day at 60 Hz would be 5 M records; reports and plots show the last
/// [`FrameLog::MAX_RECORDS`]). The records' ring is allocated whole at the
/// start: a sink running for days must not grow as it fills.
pub struct FrameLog {
    pub stats: LatencyStats,
    /// Oldest first.
    pub records: std::collections::VecDeque<FrameRecord>,
}

impl Default for FrameLog {
    fn default() -> Self {
        FrameLog {
            stats: LatencyStats::default(),
            records: std::collections::VecDeque::with_capacity(Self::MAX_RECORDS),
        }
    }
}

impl FrameLog {
    /// Over a minute at 60 Hz (about 450 KiB).
    pub const MAX_RECORDS: usize = 4096;

    /// Counts a frame whose way through is over (shown and released, or
    /// skipped) and keeps its record.
    pub fn finish(&mut self, record: FrameRecord) {
        self.stats.record(&record);
        if self.records.len() == Self::MAX_RECORDS {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }
}

/// Counts and per-stage distributions of the frames seen so far.
pub struct LatencyStats {
    histograms: Vec<Histogram<u64>>,
    pub received: u64,
    pub shown: u64,
    pub skipped: u64,
    /// Frames QEMU was answered for by the deadline, not by their release.
    pub deadline_answers: u64,
}

impl Default for LatencyStats {
    fn default() -> Self {
        LatencyStats {
            histograms: INTERVALS.iter().map(|_| stage_histogram()).collect(),
            received: 0,
            shown: 0,
            skipped: 0,
            deadline_answers: 0,
        }
    }
}

/// One interval's figures, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageFigures {
    pub count: u64,
    pub min: u64,
    pub median: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl StageFigures {
    /// The figures of a distribution in µs.
    pub fn of(h: &Histogram<u64>) -> StageFigures {
        StageFigures {
            count: h.len(),
            min: if h.is_empty() { 0 } else { h.min() },
            median: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}

/// The input stage: from the kernel's timestamp of an input event frame
/// (`SYN_REPORT`, CLOCK_MONOTONIC) to when the last D-Bus call it caused
/// was written to QEMU's connection, in µs. Recording allocates nothing.
pub struct InputLatency(Histogram<u64>);

impl Default for InputLatency {
    fn default() -> Self {
        InputLatency(stage_histogram())
    }
}

impl InputLatency {
    pub fn record(&mut self, d: Duration) {
        record_us(&mut self.0, d);
    }

    /// `None` before the first sample.
    pub fn figures(&self) -> Option<StageFigures> {
        (!self.0.is_empty()).then(|| StageFigures::of(&self.0))
    }
}

impl LatencyStats {
    pub fn record(&mut self, record: &FrameRecord) {
        self.received += 1;
        if record.skipped {
            self.skipped += 1;
        } else {
            self.shown += 1;
        }
        for ((_, interval), histogram) in INTERVALS.iter().zip(&mut self.histograms) {
            if let Some(d) = interval(record) {
                record_us(histogram, d);
            }
        }
    }

    /// The figures of the interval named `name` (see the table's rows).
    pub fn stage(&self, name: &str) -> Option<StageFigures> {
        let i = INTERVALS.iter().position(|(n, _)| *n == name)?;
        Some(StageFigures::of(&self.histograms[i]))
    }

    /// Every interval's name and figures, in pipeline order, including the
    /// intervals without samples (count 0).
    pub fn stages(&self) -> impl Iterator<Item = (&'static str, StageFigures)> + '_ {
        INTERVALS
            .iter()
            .map(|(name, _)| (*name, self.stage(name).expect("a known stage")))
    }

    /// The distribution (µs) of the interval named `name`.
    pub fn histogram(&self, name: &str) -> Option<&Histogram<u64>> {
        let i = INTERVALS.iter().position(|(n, _)| *n == name)?;
        Some(&self.histograms[i])
    }

    /// A compact table: the counts, then a row per interval with samples.
    pub fn table(&self) -> String {
        let mut out = format!(
            "frames: {} received, {} shown, {} skipped, {} answered at the deadline\n\
             {:<20} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}  (µs)\n",
            self.received,
            self.shown,
            self.skipped,
            self.deadline_answers,
            "stage",
            "count",
            "min",
            "median",
            "p90",
            "p99",
            "max"
        );
        for (name, _) in INTERVALS {
            let s = self.stage(name).expect("a known stage");
            if s.count > 0 {
                out.push_str(&format!(
                    "{name:<20} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                    s.count, s.min, s.median, s.p90, s.p99, s.max
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// A known schedule: frames every 10 ms, imported 1 ms after they
    /// arrive, composed 2 ms later, released 1 ms after that; every fourth
    /// frame skipped (released at once, never composed).
    #[test]
    fn a_known_schedule_gives_its_own_figures() {
        let mut stats = LatencyStats::default();
        for i in 0..100u64 {
            let received = ms(1000 + 10 * i);
            let record = if i % 4 == 3 {
                FrameRecord {
                    id: i,
                    received,
                    released: Some(received),
                    skipped: true,
                    ..FrameRecord::default()
                }
            } else {
                FrameRecord {
                    id: i,
                    received,
                    imported: Some(received + ms(1)),
                    committed: Some(received + ms(3)),
                    released: Some(received + ms(4)),
                    ..FrameRecord::default()
                }
            };
            stats.record(&record);
        }
        assert_eq!((stats.received, stats.shown, stats.skipped), (100, 75, 25));
        let import = stats.stage("receive→import").unwrap();
        assert_eq!(import.count, 75, "skipped frames are never imported");
        assert_eq!((import.min, import.median, import.max), (1000, 1000, 1000));
        let commit = stats.stage("import→commit").unwrap();
        assert_eq!((commit.count, commit.median), (75, 2000));
        let release = stats.stage("receive→release").unwrap();
        assert_eq!(release.count, 100, "every frame is released, shown or not");
        // 25 skipped at ~0 µs (recorded as 1), 75 at 4 ms.
        assert_eq!(release.min, 1);
        assert!((3995..=4005).contains(&release.median), "{release:?}");
        assert!(
            stats.stage("commit→flip").unwrap().count == 0,
            "no flips headless"
        );
        let table = stats.table();
        assert!(
            table.starts_with("frames: 100 received, 75 shown, 25 skipped"),
            "{table}"
        );
        assert!(table.contains("receive→import"), "{table}");
        let names: Vec<&str> = stats.stages().map(|(name, _)| name).collect();
        assert_eq!(
            names,
            [
                "receive→import",
                "import→commit",
                "commit→flip",
                "flip→event read",
                "event read→release",
                "receive→release"
            ]
        );
        assert!(stats
            .stages()
            .all(|(name, figures)| stats.stage(name) == Some(figures)));
        assert_eq!(stats.histogram("receive→release").unwrap().len(), 100);
        assert!(stats.histogram("no such stage").is_none());
        assert!(
            !table.contains("commit→flip"),
            "rows without samples are left out: {table}"
        );
    }

    /// The ring of records never grows past what it was given at the start
    /// (the soak's RSS check: a 64 Ki-record ring that filled over a long
    /// run grew RSS by 7 MB).
    #[test]
    fn the_record_ring_is_allocated_once() {
        let mut log = FrameLog::default();
        let capacity = log.records.capacity();
        assert!(capacity >= FrameLog::MAX_RECORDS);
        for id in 0..3 * FrameLog::MAX_RECORDS as u64 {
            log.finish(FrameRecord {
                id,
                ..FrameRecord::default()
            });
        }
        assert_eq!(log.records.len(), FrameLog::MAX_RECORDS);
        assert_eq!(log.records.capacity(), capacity);
        assert_eq!(log.stats.received, 3 * FrameLog::MAX_RECORDS as u64);
        assert_eq!(log.records[0].id, 2 * FrameLog::MAX_RECORDS as u64);
    }
}
