//! The latency report, written at exit: a JSON file with the frame counts,
//! each stage interval's figures and every kept frame's timestamps, and an
//! SVG plot of the stage distributions (percentile curves) over a per-frame
//! timeline. Both files are written atomically (a temporary file in the same
//! directory, then a rename).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::{json, Value};

use crate::frame::FrameRecord;
use crate::latency::{LatencyStats, StageFigures};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("plotting {}: {message}", path.display())]
    Plot { path: PathBuf, message: String },
}

/// One stage's figures as the report writes them (µs).
fn figures_json(f: &StageFigures) -> Value {
    json!({
        "count": f.count,
        "min_us": f.min,
        "median_us": f.median,
        "p90_us": f.p90,
        "p99_us": f.p99,
        "max_us": f.max,
    })
}

/// What a run saw, ready to be written out.
pub struct Report<'a> {
    /// "capture", "display" or "latency".
    pub mode: &'a str,
    /// "dbus" or "vdmabuf".
    pub source: &'a str,
    /// The display's refresh period, if there is a display.
    pub refresh: Option<Duration>,
    pub stats: &'a LatencyStats,
    /// The kept per-frame records, oldest first.
    pub records: &'a [FrameRecord],
    /// Input event → D-Bus call written (`display` with input), if any
    /// input was forwarded.
    pub input_to_call: Option<StageFigures>,
}

impl Report<'_> {
    /// The report as JSON: counts, per-stage figures (µs; `null` for a
    /// stage without samples) and one sample per record (µs since boot on
    /// CLOCK_MONOTONIC; `null` for a stage the frame never reached).
    pub fn to_json(&self) -> Value {
        let stages: serde_json::Map<String, Value> = self
            .stats
            .stages()
            .map(|(name, f)| {
                let figures = if f.count == 0 {
                    json!({
                        "count": 0,
                        "min_us": null,
                        "median_us": null,
                        "p90_us": null,
                        "p99_us": null,
                        "max_us": null,
                    })
                } else {
                    figures_json(&f)
                };
                (name.to_owned(), figures)
            })
            .collect();
        let samples: Vec<Value> = self
            .records
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "received_us": micros(r.received),
                    "imported_us": r.imported.map(micros),
                    "committed_us": r.committed.map(micros),
                    "flipped_us": r.flipped.map(micros),
                    "event_read_us": r.event_read.map(micros),
                    "released_us": r.released.map(micros),
                    "skipped": r.skipped,
                    "path": r.path.map(|p| p.name()),
                })
            })
            .collect();
        json!({
            "mode": self.mode,
            "source": self.source,
            "refresh_us": self.refresh.map(micros),
            "frames": {
                "received": self.stats.received,
                "shown": self.stats.shown,
                "skipped": self.stats.skipped,
                "deadline_answers": self.stats.deadline_answers,
            },
            "stages": stages,
            "input_to_call": self.input_to_call.as_ref().map(figures_json),
            "samples": samples,
        })
    }

    /// Writes [`Report::to_json`] (pretty-printed) to `path`, atomically.
    ///
    /// The top-level keys come in a reading order, the long `samples`
    /// last, rather than serde_json's alphabetical one.
    pub fn write_json(&self, path: &Path) -> Result<(), ReportError> {
        let text = pretty_in_order(&self.to_json()).map_err(|e| ReportError::Write {
            path: path.to_owned(),
            source: e.into(),
        })?;
        write_atomically(path, text.as_bytes())
    }

    /// Plots the report to an SVG file at `path`, atomically.
    pub fn write_svg(&self, path: &Path) -> Result<(), ReportError> {
        let svg = self.svg().map_err(|e| ReportError::Plot {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        write_atomically(path, svg.as_bytes())
    }

    fn svg(&self) -> Result<String, Box<dyn std::error::Error>> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
            root.fill(&WHITE)?;
            let refresh = match self.refresh {
                Some(r) => format!("refresh {}", ms_label(ms(r))),
                None => "no display refresh".to_owned(),
            };
            let root = root.titled(
                &format!(
                    "qemu-sink latency: {} mode, {} source, {refresh}",
                    self.mode, self.source
                ),
                (FONT, 24),
            )?;
            let (summary, rest) = root.split_vertically(30);
            summary.draw(&Text::new(
                format!(
                    "frames: {} received, {} shown, {} skipped, {} answered at the deadline; \
                     {} per-frame records kept",
                    self.stats.received,
                    self.stats.shown,
                    self.stats.skipped,
                    self.stats.deadline_answers,
                    self.records.len()
                ),
                (20, 4),
                (FONT, 16),
            ))?;
            let (top, bottom) = rest.split_vertically(rest.dim_in_pixel().1 * 45 / 100);
            self.plot_distributions(&top)?;
            self.plot_timeline(&bottom)?;
            root.present()?;
        }
        Ok(svg)
    }

    /// Top panel: a latency-by-percentile curve per stage interval.
    fn plot_distributions(&self, area: &Area) -> PlotResult {
        let (chart_area, legend_area) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
        let title = "Stage intervals: latency by percentile";
        let stages: Vec<(&'static str, &hdrhistogram::Histogram<u64>)> = self
            .stats
            .stages()
            .filter(|(_, f)| f.count > 0)
            .filter_map(|(name, _)| Some((name, self.stats.histogram(name)?)))
            .collect();
        let Some(most) = stages.iter().map(|(_, h)| h.len()).max() else {
            return no_data(&chart_area, title);
        };
        // How many nines the samples can tell: 100 frames reach p99.
        let nines = (most as f64).log10().ceil().clamp(1.0, 4.0);
        let curves: Vec<(&'static str, Vec<(f64, f64)>)> = stages
            .iter()
            .map(|(name, h)| {
                let points = (0..=CURVE_POINTS)
                    .map(|i| {
                        let x = nines * i as f64 / CURVE_POINTS as f64;
                        let q = 1.0 - 10f64.powf(-x);
                        (x, (h.value_at_quantile(q) as f64 / 1000.0).max(FLOOR_MS))
                    })
                    .collect();
                (*name, points)
            })
            .collect();
        let refresh_ms = self.refresh.map(ms);
        let (lo, hi) = log_bounds(
            curves
                .iter()
                .flat_map(|(_, points)| points.iter().map(|(_, y)| *y))
                .chain(refresh_ms),
        );
        let mut chart = ChartBuilder::on(&chart_area)
            .caption(title, (FONT, 20))
            .margin(10)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(NinesAxis(nines), (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("percentile (of the frames that reached the stage)")
            .y_desc("latency (ms)")
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| ms_label(*y))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()?;
        let mut legend = Vec::new();
        if let Some(r) = refresh_ms {
            chart.draw_series(DashedLineSeries::new(
                [(0.0, r), (nines, r)],
                6,
                4,
                GREY.stroke_width(2),
            ))?;
            legend.push((
                format!("refresh period {}", ms_label(r)),
                Mark::Dashed(GREY),
            ));
        }
        for (name, points) in curves {
            let colour = stage_colour(name);
            chart.draw_series(LineSeries::new(points, colour.stroke_width(2)))?;
            legend.push((name.to_owned(), Mark::Line(colour)));
        }
        draw_legend(&legend_area, "stage interval", &legend)
    }

    /// Bottom panel: each frame's stage timestamps, as time since it was
    /// received, against when it was received.
    fn plot_timeline(&self, area: &Area) -> PlotResult {
        let (chart_area, legend_area) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
        let title = "Per-frame timeline: time from receipt to each stage";
        let Some(t0) = self.records.iter().map(|r| r.received).min() else {
            return no_data(&chart_area, title);
        };
        let (frames, stride) = thin(self.records);
        let at = |r: &FrameRecord| (r.received - t0).as_secs_f64();
        let offset = |r: &FrameRecord, t: Duration| ms(t.saturating_sub(r.received)).max(FLOOR_MS);
        let x_end = frames.iter().map(|r| at(r)).fold(0.0, f64::max).max(0.001) * 1.02;
        let refresh_ms = self.refresh.map(ms);
        let (lo, hi) = log_bounds(
            frames
                .iter()
                .flat_map(|r| {
                    TIMESTAMPS
                        .iter()
                        .filter_map(|(_, _, get)| Some(offset(r, get(r)?)))
                })
                .chain(refresh_ms),
        );
        let caption = if stride > 1 {
            format!("{title} (1 frame in {stride}, and all the slowest)")
        } else {
            title.to_owned()
        };
        let mut chart = ChartBuilder::on(&chart_area)
            .caption(caption, (FONT, 20))
            .margin(10)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_end, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("frame received (s since the first kept frame)")
            .y_desc("time since received (ms)")
            .y_label_formatter(&|y| ms_label(*y))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()?;
        let mut legend = Vec::new();
        if let Some(r) = refresh_ms {
            let mut k = 1.0;
            while k * r <= hi && k <= 8.0 {
                chart.draw_series(DashedLineSeries::new(
                    [(0.0, k * r), (x_end, k * r)],
                    6,
                    4,
                    GREY.stroke_width(1),
                ))?;
                k += 1.0;
            }
            legend.push((
                format!("refresh multiples ({})", ms_label(r)),
                Mark::Dashed(GREY),
            ));
        }
        // Released, event read and flipped are often a fraction of a
        // millisecond apart: drawn last stage first, in shrinking dots, the
        // later ones show as rings around the earlier.
        for (i, (_, stage, get)) in TIMESTAMPS.iter().enumerate().rev() {
            let colour = stage_colour(stage);
            chart.draw_series(
                frames
                    .iter()
                    .filter(|r| !r.skipped)
                    .filter_map(|r| Some((at(r), offset(r, get(r)?))))
                    .map(|p| Circle::new(p, dot_radius(i), colour.filled())),
            )?;
        }
        for (i, (stamp, stage, _)) in TIMESTAMPS.iter().enumerate() {
            legend.push((
                (*stamp).to_owned(),
                Mark::Dot(stage_colour(stage), dot_radius(i)),
            ));
        }
        // Skipped frames: a cross at each stage they reached, or at the
        // bottom if they reached none.
        chart.draw_series(frames.iter().filter(|r| r.skipped).flat_map(|r| {
            let stamps: Vec<f64> = TIMESTAMPS
                .iter()
                .filter_map(|(_, _, get)| Some(offset(r, get(r)?)))
                .collect();
            let ys = if stamps.is_empty() { vec![lo] } else { stamps };
            ys.into_iter()
                .map(move |y| Cross::new((at(r), y), 4, SKIPPED.stroke_width(1)))
        }))?;
        legend.push(("skipped frame".to_owned(), Mark::Cross(SKIPPED)));
        draw_legend(&legend_area, "frame timestamp", &legend)
    }
}

type Area<'b> = DrawingArea<SVGBackend<'b>, Shift>;
type PlotResult = Result<(), Box<dyn std::error::Error>>;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 1000;
const LEGEND_WIDTH: u32 = 250;
const FONT: &str = "sans-serif";
/// Points per percentile curve.
const CURVE_POINTS: u32 = 300;
/// The timeline's frames: more than this are thinned to about this many.
const MAX_PLOTTED: usize = 2000;
/// Latencies below a microsecond are drawn at one (log scales).
const FLOOR_MS: f64 = 0.001;

const BLUE_: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN_: RGBColor = RGBColor(44, 160, 44);
const PURPLE: RGBColor = RGBColor(148, 103, 189);
const RED_: RGBColor = RGBColor(214, 39, 40);
const TOTAL: RGBColor = RGBColor(30, 30, 30);
const GREY: RGBColor = RGBColor(150, 150, 150);
const SKIPPED: RGBColor = RGBColor(90, 90, 90);

type Stamp = fn(&FrameRecord) -> Option<Duration>;

/// The timeline's series: the timestamp, the interval that ends at it (whose
/// colour it shares with the top panel) and how to read it off a record.
const TIMESTAMPS: [(&str, &str, Stamp); 5] = [
    ("imported", "receive→import", |r| r.imported),
    ("committed", "import→commit", |r| r.committed),
    ("flipped", "commit→flip", |r| r.flipped),
    ("event read", "flip→event read", |r| r.event_read),
    ("released", "event read→release", |r| r.released),
];

/// The timeline's dot for the `i`th of [`TIMESTAMPS`].
fn dot_radius(i: usize) -> i32 {
    match i {
        0..=2 => 2,
        3 => 3,
        _ => 4,
    }
}

fn stage_colour(stage: &str) -> RGBColor {
    match stage {
        "receive→import" => BLUE_,
        "import→commit" => ORANGE,
        "commit→flip" => GREEN_,
        "flip→event read" => PURPLE,
        "event read→release" => RED_,
        "receive→release" => TOTAL,
        _ => GREY,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// "16.7 ms", "250 µs", "1.2 s".
fn ms_label(v: f64) -> String {
    if v >= 1000.0 {
        format!("{} s", trim(v / 1000.0))
    } else if v >= 1.0 {
        format!("{} ms", trim(v))
    } else {
        format!("{} µs", trim(v * 1000.0))
    }
}

/// Four significant digits at most, without trailing zeros.
fn trim(v: f64) -> String {
    let decimals = if v >= 100.0 {
        1
    } else if v >= 10.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// The percentile at `x` nines: 0 → 0%, 1 → 90%, 2 → 99%, 3 → 99.9%.
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = (x.round() as usize).saturating_sub(2);
    format!("{p:.decimals$}%")
}

/// A log axis around `values` (ms), with some room either side.
fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (FLOOR_MS, 1.0);
    }
    let lo = (lo / 1.5).max(FLOOR_MS / 2.0);
    let hi = (hi * 1.5).max(lo * 10.0);
    (lo, hi)
}

/// The frames the timeline plots, oldest first, and the stride: all of
/// them up to [`MAX_PLOTTED`]; past that every stride-th one plus the
/// slowest 1 % (by time from receipt to their last timestamp), so the
/// outliers stay visible.
fn thin(records: &[FrameRecord]) -> (Vec<&FrameRecord>, usize) {
    if records.len() <= MAX_PLOTTED {
        return (records.iter().collect(), 1);
    }
    let stride = records.len().div_ceil(MAX_PLOTTED);
    let span = |r: &FrameRecord| {
        TIMESTAMPS
            .iter()
            .filter_map(|(_, _, get)| get(r))
            .max()
            .map_or(Duration::ZERO, |t| t.saturating_sub(r.received))
    };
    let mut spans: Vec<Duration> = records.iter().map(span).collect();
    spans.sort_unstable();
    let slow = spans[spans.len() * 99 / 100];
    let frames = records
        .iter()
        .enumerate()
        .filter(|(i, r)| i % stride == 0 || span(r) > slow)
        .map(|(_, r)| r)
        .collect();
    (frames, stride)
}

/// The percentile axis, in nines: 0 is 0 %, 1 is 90 %, 2 is 99 %, up to
/// the given number; ticks at the usual percentiles.
struct NinesAxis(f64);

impl Ranged for NinesAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let f = value / self.0;
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        [0.0, 2f64.log10(), 1.0, 2.0, 3.0, 4.0]
            .into_iter()
            .filter(|x| *x <= self.0 + 1e-9)
            .collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        0.0..self.0
    }
}

fn no_data(area: &Area, title: &str) -> PlotResult {
    area.draw(&Text::new(
        format!("{title}: no samples"),
        (40, 40),
        (FONT, 20),
    ))?;
    Ok(())
}

enum Mark {
    Line(RGBColor),
    Dashed(RGBColor),
    Dot(RGBColor, i32),
    Cross(RGBColor),
}

/// A legend beside the chart, where it hides no data.
fn draw_legend(area: &Area, title: &str, entries: &[(String, Mark)]) -> PlotResult {
    let left = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    area.draw(&Text::new(
        title.to_owned(),
        (8, 50),
        TextStyle::from((FONT, 16).into_font().style(FontStyle::Bold))
            .pos(Pos::new(HPos::Left, VPos::Center)),
    ))?;
    for (i, (label, mark)) in entries.iter().enumerate() {
        let y = 78 + 24 * i as i32;
        match *mark {
            Mark::Line(c) => {
                area.draw(&PathElement::new(vec![(8, y), (34, y)], c.stroke_width(3)))?
            }
            Mark::Dashed(c) => area.draw(&plotters::element::DashedPathElement::new(
                vec![(8, y), (34, y)],
                6,
                4,
                c.stroke_width(2),
            ))?,
            Mark::Dot(c, radius) => area.draw(&Circle::new((21, y), radius + 1, c.filled()))?,
            Mark::Cross(c) => area.draw(&Cross::new((21, y), 5, c.stroke_width(2)))?,
        }
        area.draw(&Text::new(label.clone(), (42, y), left.clone()))?;
    }
    Ok(())
}

/// The top-level keys of the JSON report, in the order it is written.
const KEY_ORDER: [&str; 6] = [
    "mode",
    "source",
    "refresh_us",
    "frames",
    "stages",
    "samples",
];

/// `json` pretty-printed, its top-level keys in [`KEY_ORDER`] (then any
/// others).
fn pretty_in_order(json: &Value) -> Result<String, serde_json::Error> {
    let Some(map) = json.as_object() else {
        return serde_json::to_string_pretty(json);
    };
    let rest = map.keys().filter(|k| !KEY_ORDER.contains(&k.as_str()));
    let keys = KEY_ORDER
        .iter()
        .copied()
        .filter(|k| map.contains_key(*k))
        .chain(rest.map(String::as_str));
    let mut out = String::from("{");
    for (i, key) in keys.enumerate() {
        out.push_str(if i == 0 { "\n  " } else { ",\n  " });
        out.push_str(&serde_json::to_string(key)?);
        out.push_str(": ");
        // Newlines in JSON text are layout only (strings escape theirs).
        out.push_str(&serde_json::to_string_pretty(&map[key])?.replace('\n', "\n  "));
    }
    out.push_str("\n}\n");
    Ok(out)
}

/// Writes `bytes` to a temporary file beside `path`, flushes it to disk and
/// renames it over `path`: readers see the old file or the whole new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let error = |source| ReportError::Write {
        path: path.to_owned(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| error(io::Error::new(io::ErrorKind::InvalidInput, "not a file")))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".{}-{}.tmp",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(error)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::frame::ShowPath;

    fn us(v: u64) -> Duration {
        Duration::from_micros(v)
    }

    const PERIOD: Duration = Duration::from_nanos(16_666_667);

    /// 100 frames at 60 Hz from 5 s after boot; every fifth skipped
    /// (released 100 µs after it arrived, nothing else). The others:
    /// imported at +500 µs, committed at +2 ms, flipped at +10 ms, the event
    /// read at +10.2 ms, released at +10.3 ms; direct and composite in turn.
    fn schedule() -> Vec<FrameRecord> {
        (0..100u64)
            .map(|i| {
                let received = Duration::from_secs(5) + PERIOD * i as u32;
                if i % 5 == 4 {
                    FrameRecord {
                        id: 1000 + i,
                        received,
                        released: Some(received + us(100)),
                        skipped: true,
                        ..FrameRecord::default()
                    }
                } else {
                    FrameRecord {
                        id: 1000 + i,
                        received,
                        imported: Some(received + us(500)),
                        committed: Some(received + us(2000)),
                        flipped: Some(received + us(10_000)),
                        event_read: Some(received + us(10_200)),
                        released: Some(received + us(10_300)),
                        skipped: false,
                        path: Some(if i % 2 == 0 {
                            ShowPath::Direct
                        } else {
                            ShowPath::Composite
                        }),
                    }
                }
            })
            .collect()
    }

    fn stats_of(records: &[FrameRecord]) -> LatencyStats {
        let mut stats = LatencyStats::default();
        for r in records {
            stats.record(r);
        }
        stats
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("qemu-sink-report-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn assert_near(value: &Value, expected: u64) {
        let v = value
            .as_u64()
            .unwrap_or_else(|| panic!("{value} is no integer"));
        // HDR histograms at 3 significant digits.
        assert!(
            v.abs_diff(expected) <= expected / 500 + 1,
            "{v} is not about {expected}"
        );
    }

    #[test]
    fn the_json_holds_the_schedule() {
        let records = schedule();
        let mut stats = stats_of(&records);
        stats.deadline_answers = 3;
        let report = Report {
            mode: "display",
            source: "vdmabuf",
            refresh: Some(PERIOD),
            stats: &stats,
            records: &records,
            input_to_call: None,
        };
        let json = report.to_json();
        assert_eq!(json["mode"], "display");
        assert_eq!(json["source"], "vdmabuf");
        assert_eq!(json["refresh_us"], 16_666);
        assert_eq!(
            json["frames"],
            json!({"received": 100, "shown": 80, "skipped": 20, "deadline_answers": 3})
        );

        let stages = json["stages"].as_object().unwrap();
        assert_eq!(stages.len(), 6, "{stages:?}");
        for (name, count, median) in [
            ("receive→import", 80, 500),
            ("import→commit", 80, 1500),
            ("commit→flip", 80, 8000),
            ("flip→event read", 80, 200),
            ("event read→release", 80, 100),
            ("receive→release", 100, 10_300),
        ] {
            let s = &stages[name];
            assert_eq!(s["count"], count, "{name}: {s}");
            assert_near(&s["median_us"], median);
            assert_near(&s["max_us"], median);
            let f = stats.stage(name).unwrap();
            assert_eq!(s["p90_us"], f.p90, "{name}");
            assert_eq!(s["p99_us"], f.p99, "{name}");
        }
        // The skipped frames' releases (100 µs) are the total's fastest.
        assert_near(&stages["receive→release"]["min_us"], 100);

        let samples = json["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 100);
        let ids: HashSet<u64> = samples.iter().map(|s| s["id"].as_u64().unwrap()).collect();
        assert_eq!(ids.len(), 100, "no frame twice");
        assert_eq!(ids, (1000..1100).collect::<HashSet<u64>>());
        let received_5s = 5_050_000; // 5 s and 3 periods, 50.000001 ms
        assert_eq!(
            samples[3],
            json!({
                "id": 1003,
                "received_us": received_5s,
                "imported_us": received_5s + 500,
                "committed_us": received_5s + 2000,
                "flipped_us": received_5s + 10_000,
                "event_read_us": received_5s + 10_200,
                "released_us": received_5s + 10_300,
                "skipped": false,
                "path": "composite",
            })
        );
        assert_eq!(samples[4]["skipped"], true);
        assert_eq!(samples[4]["imported_us"], Value::Null);
        assert_eq!(samples[4]["flipped_us"], Value::Null);
        assert_eq!(samples[4]["path"], Value::Null);
        assert_eq!(
            samples[4]["released_us"].as_u64().unwrap(),
            samples[4]["received_us"].as_u64().unwrap() + 100
        );
        assert_eq!(samples.iter().filter(|s| s["skipped"] == true).count(), 20);
        assert_eq!(samples[0]["path"], "direct");
    }

    #[test]
    fn stages_without_samples_are_null_and_no_refresh_is_null() {
        // Headless: no flips, no events.
        let records: Vec<FrameRecord> = schedule()
            .into_iter()
            .map(|r| FrameRecord {
                flipped: None,
                event_read: None,
                ..r
            })
            .collect();
        let stats = stats_of(&records);
        let report = Report {
            mode: "capture",
            source: "dbus",
            refresh: None,
            stats: &stats,
            records: &records,
            input_to_call: None,
        };
        let json = report.to_json();
        assert_eq!(json["refresh_us"], Value::Null);
        let flip = &json["stages"]["commit→flip"];
        assert_eq!(flip["count"], 0);
        assert_eq!(flip["median_us"], Value::Null);
        assert_eq!(flip["max_us"], Value::Null);
        assert_eq!(json["stages"]["receive→import"]["count"], 80);
    }

    #[test]
    fn the_json_file_is_written_whole_and_alone() {
        let records = schedule();
        let stats = stats_of(&records);
        let report = Report {
            mode: "latency",
            source: "dbus",
            refresh: Some(PERIOD),
            stats: &stats,
            records: &records,
            input_to_call: None,
        };
        let dir = temp_dir("json");
        let path = dir.join("latency.json");
        fs::write(&path, "old").unwrap();
        report.write_json(&path).unwrap();
        let read: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(read, report.to_json());
        let text = fs::read_to_string(&path).unwrap();
        let at = |key: &str| text.find(&format!("\n  \"{key}\": ")).unwrap();
        assert!(at("mode") < at("frames"));
        assert!(at("frames") < at("stages"));
        assert!(at("stages") < at("samples"), "samples last");
        let names: Vec<OsString> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["latency.json"], "no temporary file left");

        let missing = dir.join("no such dir").join("latency.json");
        let error = report.write_json(&missing).unwrap_err();
        assert!(
            error.to_string().contains("no such dir/latency.json"),
            "{error}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The contents of the SVG's `<text>` elements.
    fn texts(svg: &str) -> Vec<&str> {
        svg.split("<text ")
            .skip(1)
            .map(|e| {
                let start = e.find('>').unwrap() + 1;
                let end = e.find("</text>").unwrap();
                e[start..end].trim()
            })
            .collect()
    }

    /// How many `<tag` elements have `attribute` set to `colour`.
    fn count(svg: &str, tag: &str, attribute: &str, colour: RGBColor) -> usize {
        let wanted = format!(
            "{attribute}=\"#{:02X}{:02X}{:02X}\"",
            colour.0, colour.1, colour.2
        );
        svg.split(&format!("<{tag} "))
            .skip(1)
            .filter(|e| e[..e.find('>').unwrap()].contains(&wanted))
            .count()
    }

    #[test]
    fn the_svg_plots_every_series() {
        let records = schedule();
        let stats = stats_of(&records);
        let report = Report {
            mode: "display",
            source: "dbus",
            refresh: Some(PERIOD),
            stats: &stats,
            records: &records,
            input_to_call: None,
        };
        let dir = temp_dir("svg");
        let path = dir.join("latency.svg");
        report.write_svg(&path).unwrap();
        let svg = fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.len() > 20_000, "{} bytes", svg.len());
        let texts = texts(&svg);
        for label in [
            "qemu-sink latency: display mode, dbus source, refresh 16.67 ms",
            "frames: 100 received, 80 shown, 20 skipped, 0 answered at the deadline; \
             100 per-frame records kept",
            "receive→import",
            "import→commit",
            "commit→flip",
            "flip→event read",
            "event read→release",
            "receive→release",
            "imported",
            "committed",
            "flipped",
            "event read",
            "released",
            "skipped frame",
            "latency (ms)",
            "percentile (of the frames that reached the stage)",
            "frame received (s since the first kept frame)",
            "refresh period 16.67 ms",
            "refresh multiples (16.67 ms)",
            "time since received (ms)",
            "99%",
        ] {
            assert!(texts.contains(&label), "no {label:?} in {texts:?}");
        }
        // Each shown frame's five timestamps, one dot each (plus the legend's).
        for colour in [BLUE_, ORANGE, GREEN_, PURPLE, RED_] {
            assert_eq!(count(&svg, "circle", "fill", colour), 80 + 1, "{colour:?}");
        }
        // A percentile curve per stage (one polyline each, the legend's
        // mark is another).
        for colour in [BLUE_, ORANGE, GREEN_, PURPLE, RED_, TOTAL] {
            assert_eq!(count(&svg, "polyline", "stroke", colour), 2, "{colour:?}");
        }
        // A cross (two lines) per skipped frame, and the legend's.
        assert_eq!(count(&svg, "line", "stroke", SKIPPED), 2 * (20 + 1));
        let names: Vec<OsString> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["latency.svg"], "no temporary file left");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_run_still_gives_a_report() {
        let stats = LatencyStats::default();
        let report = Report {
            mode: "capture",
            source: "vdmabuf",
            refresh: None,
            stats: &stats,
            records: &[],
            input_to_call: None,
        };
        let json = report.to_json();
        assert_eq!(json["samples"], json!([]));
        assert_eq!(json["frames"]["received"], 0);
        let dir = temp_dir("empty");
        let path = dir.join("latency.svg");
        report.write_svg(&path).unwrap();
        let svg = fs::read_to_string(&path).unwrap();
        assert!(svg.contains("no samples"), "{svg}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_long_run_is_thinned_but_keeps_its_slowest_frames() {
        let records: Vec<FrameRecord> = (0..20_000u64)
            .map(|i| {
                let received = PERIOD * i as u32;
                let late = if i == 12_345 { 800_000 } else { 5_000 + i % 7 };
                FrameRecord {
                    id: i,
                    received,
                    released: Some(received + us(late)),
                    ..FrameRecord::default()
                }
            })
            .collect();
        let (frames, stride) = thin(&records);
        assert_eq!(stride, 10);
        assert!(frames.len() < 2 * MAX_PLOTTED, "{}", frames.len());
        assert!(frames.iter().any(|r| r.id == 12_345), "the slowest kept");
        let ids: HashSet<u64> = frames.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), frames.len(), "no frame twice");
        assert!(frames.windows(2).all(|w| w[0].received < w[1].received));

        let stats = stats_of(&records);
        let report = Report {
            mode: "latency",
            source: "dbus",
            refresh: Some(PERIOD),
            stats: &stats,
            records: &records,
            input_to_call: None,
        };
        let svg = report.svg().unwrap();
        assert!(svg.contains("(1 frame in 10, and all the slowest)"));
        assert_eq!(count(&svg, "circle", "fill", RED_), frames.len() + 1);
        assert!(svg.len() < 2_000_000, "{} bytes", svg.len());
    }

    #[test]
    fn labels_read_well() {
        assert_eq!(ms_label(16.666_667), "16.67 ms");
        assert_eq!(ms_label(0.25), "250 µs");
        assert_eq!(ms_label(1200.0), "1.2 s");
        assert_eq!(ms_label(100.0), "100 ms");
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(2f64.log10()), "50%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
    }
}
