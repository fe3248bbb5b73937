//! The lab's half of `scripts/bench.sh` (run inside the lab by
//! `scripts/lab/run.sh`): the KMS and DMA-BUF figures, each beside its
//! reference measured in the same run, from `qemu-sink` runs as a user
//! makes them (`display --report`, `latency --report`) fed by the fake
//! QEMU's udmabufs.
//!
//! - direct path on vkms at 60 Hz, frames as fast as answers allow: event
//!   read → release p99, kernel flip → release p99, receive → commit p99
//!   (each against the refresh period), CPU bytes copied per frame;
//! - frames on a 60 Hz schedule: how many the sink dropped (skipped);
//! - the direct-path share of a guest sized to its monitor (`SetUIInfo`
//!   followed) against one that is not;
//! - DMA-BUF import + composite per frame (headless, Mesa's software
//!   renderer), against one memcpy of the same frame;
//! - input event → D-Bus call p99 (keys typed on a uinput keyboard into
//!   `display`, the sink's own stage from the kernel's event stamp to the
//!   call written), against the refresh period of the same run.
//!
//! Prints one line per figure and writes them as JSON to `--out FILE`;
//! `--plot FILE.svg` keeps the sink's plot of the direct-path run.
//! `--quick` uses few frames and small composite sizes (CI: every line
//! is produced, the numbers are not the point).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use drm_fourcc::DrmFourcc;
use serde_json::Value;
use sink::output::kms::{find_node, NodeKind};
use tests::bench::Figure;
use tests::fake_qemu::{BufferDesc, FakeListener, FakeQemu};
use tests::sink_run::Sink;
use tests::udmabuf::Udmabuf;
use tests::{private_bus, sink_command, TempDir};

/// The fake QEMU on a private bus with `qemu-sink ARGS --report FILE`
/// attached to it.
struct Run {
    dir: TempDir,
    _bus: sink::vm::PrivateBus,
    fake: FakeQemu,
    listener: FakeListener,
    sink: Sink,
}

impl Run {
    fn start(tag: &str, size: (u32, u32), args: &[&str]) -> anyhow::Result<Run> {
        let dir = TempDir::new(tag);
        let bus = private_bus(&dir);
        let fake = FakeQemu::on_bus(
            &bus.address,
            tag,
            "00000000-0000-4000-8000-0000000be4c0",
            size,
        )?;
        let report = dir.path("report.json");
        let mut all = args.to_vec();
        all.extend_from_slice(&[
            "--bus",
            &bus.address,
            "--vm",
            tag,
            "--report",
            report.to_str().expect("utf-8"),
        ]);
        let sink = Sink::spawn(sink_command(&all));
        let listener = match fake.accept_listener(Duration::from_secs(60)) {
            Ok(listener) => listener,
            Err(err) => bail!("{err:#}; sink:\n{}", sink.abort()),
        };
        Ok(Run {
            dir,
            _bus: bus,
            fake,
            listener,
            sink,
        })
    }

    /// Stops the sink; its log and report.
    fn finish(self) -> anyhow::Result<(String, Value)> {
        let log = self.sink.stop();
        let path = self.dir.path("report.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
        Ok((log, serde_json::from_str(&text)?))
    }
}

/// The `q`-quantile of `values` (sorted in place).
fn quantile(values: &mut [u64], q: f64) -> u64 {
    values.sort_unstable();
    let i = ((values.len() as f64 - 1.0) * q).round() as usize;
    values[i.min(values.len() - 1)]
}

/// `b - a` over the report's samples, where both are there.
fn intervals(report: &Value, a: &str, b: &str) -> Vec<u64> {
    report["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some(s[b].as_u64()?.saturating_sub(s[a].as_u64()?)))
        .collect()
}

/// The direct path on vkms, frames as fast as their answers allow (with
/// the sink's `--plot` of it written to `plot`).
fn direct_path(frames: usize, plot: Option<&str>, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    let card = find_node(NodeKind::Primary, "vkms")?;
    let card = card.to_str().expect("utf-8");
    let mut args = vec!["display", "--device", card, "--mode", "640x480"];
    if let Some(plot) = plot {
        args.extend_from_slice(&["--plot", plot]);
    }
    let mut run = Run::start("bench-direct", (640, 480), &args)?;
    let buffers = [
        Udmabuf::new(640, 480, DrmFourcc::Xrgb8888)?,
        Udmabuf::new(640, 480, DrmFourcc::Xrgb8888)?,
    ];
    for n in 0..frames {
        run.listener
            .scanout_dmabuf(buffers[n % 2].fd(), BufferDesc::xrgb(640, 480), false)?;
        run.listener.update_dmabuf(0, 0, 640, 480);
    }
    let (log, report) = run.finish()?;
    let refresh = report["refresh_us"].as_u64().context("refresh_us")? as f64;
    let direct = report["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["path"] == "direct")
        .count();
    if direct < frames {
        bail!("only {direct} of {frames} frames went direct:\n{log}");
    }
    let mut push = |name: &str, mut values: Vec<u64>, goal| {
        let median = quantile(&mut values, 0.5);
        let p99 = quantile(&mut values, 0.99) as f64;
        eprintln!(
            "{name}: median {median} us, p99 {p99} us over {} frames",
            values.len()
        );
        figures.push(Figure::new(name, p99, "us", refresh, goal));
    };
    push(
        "event read -> release p99, direct, vkms",
        intervals(&report, "event_read_us", "released_us"),
        "<= 0.006 x refresh",
    );
    push(
        "kernel flip -> release p99, direct, vkms",
        intervals(&report, "flipped_us", "released_us"),
        "report",
    );
    push(
        "receive -> commit p99, direct, vkms",
        intervals(&report, "received_us", "committed_us"),
        "<= 0.02 x refresh",
    );
    let copied: f64 = log
        .lines()
        .find_map(|l| l.split("CPU bytes copied on the direct path: ").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .context("the sink's summary line")?;
    figures.push(Figure::new(
        "CPU bytes copied per frame, direct path",
        copied / frames as f64,
        "B",
        640.0 * 480.0 * 4.0,
        "0",
    ));
    Ok(())
}

/// The guest sized to its monitor (`SetUIInfo`): on vkms at 800x600, a
/// 640x480 guest (told, but not following) is composed, letterboxed; the
/// same console sending buffers of the size it was told goes direct. The
/// share of frames on the direct path for each, in one run.
fn sized_to_monitor(frames: usize, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    let card = find_node(NodeKind::Primary, "vkms")?;
    let card = card.to_str().expect("utf-8");
    let mut run = Run::start(
        "bench-sized",
        (640, 480),
        &["display", "--device", card, "--mode", "800x600"],
    )?;
    let told = run
        .fake
        .next_ui_info(Duration::from_secs(30))
        .context("no SetUIInfo from the sink")?;
    let (w, h) = (told.width, told.height);
    let other_size = Udmabuf::new(640, 480, DrmFourcc::Xrgb8888)?;
    let sized = Udmabuf::new(w, h, DrmFourcc::Xrgb8888)?;
    for _ in 0..frames {
        run.listener
            .scanout_dmabuf(other_size.fd(), BufferDesc::xrgb(640, 480), false)?;
        run.listener.update_dmabuf(0, 0, 640, 480);
    }
    for _ in 0..frames {
        run.listener
            .scanout_dmabuf(sized.fd(), BufferDesc::xrgb(w, h), false)?;
        run.listener.update_dmabuf(0, 0, w as i32, h as i32);
    }
    let (_, report) = run.finish()?;
    // One sample per frame, in the order sent: the unsized ones first.
    let samples = report["samples"].as_array().context("samples")?;
    if samples.len() != 2 * frames {
        bail!("{} samples for {} frames", samples.len(), 2 * frames);
    }
    let (unsized_frames, sized_frames) = samples.split_at(frames);
    let share = |frames: &[Value]| {
        let direct = frames.iter().filter(|s| s["path"] == "direct").count();
        100.0 * direct as f64 / frames.len() as f64
    };
    figures.push(Figure::new(
        format!("direct-path share, guest sized to its monitor ({w}x{h})"),
        share(sized_frames),
        "%",
        100.0,
        ">= 0.99",
    ));
    figures.push(Figure::new(
        format!("direct-path share, guest not sized (640x480 on {w}x{h})"),
        share(unsized_frames),
        "%",
        100.0,
        "report",
    ));
    Ok(())
}

/// Keys typed on a uinput keyboard into `display` (showing a DMA-BUF
/// console at 60 Hz meanwhile, as a person types into a running guest):
/// the sink's input stage, kernel event stamp → D-Bus call written, p99,
/// against the refresh period.
fn input_to_call(keys: usize, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    use tests::uinput::{Spec, VirtualDevice};
    const KEY_A: u16 = 30;
    let card = find_node(NodeKind::Primary, "vkms")?;
    let mut keyboard = VirtualDevice::create(&Spec::keyboard("qemu-sink bench keyboard"))?;
    let node = keyboard.node.to_str().expect("utf-8").to_owned();
    let card = card.to_str().expect("utf-8");
    let mut run = Run::start(
        "bench-input",
        (640, 480),
        &[
            "display",
            "--device",
            card,
            "--mode",
            "640x480",
            "--input-device",
            &node,
        ],
    )?;
    if !run
        .sink
        .wait_for_log("input: sending to console", Duration::from_secs(30))
    {
        bail!("input never attached:\n{}", run.sink.log());
    }
    let buffers = [
        Udmabuf::new(640, 480, DrmFourcc::Xrgb8888)?,
        Udmabuf::new(640, 480, DrmFourcc::Xrgb8888)?,
    ];
    let mut calls = 0;
    for n in 0..keys {
        keyboard.tap(KEY_A)?;
        run.listener
            .scanout_dmabuf(buffers[n % 2].fd(), BufferDesc::xrgb(640, 480), false)?;
        run.listener.update_dmabuf(0, 0, 640, 480);
        calls += run.fake.inputs_until_quiet(Duration::from_millis(1)).len();
    }
    calls += run.fake.inputs_until_quiet(Duration::from_secs(2)).len();
    if calls != 2 * keys {
        bail!(
            "{calls} key calls for {keys} keys typed:\n{}",
            run.sink.log()
        );
    }
    let (_, report) = run.finish()?;
    let refresh = report["refresh_us"].as_u64().context("refresh_us")? as f64;
    let stage = &report["input_to_call"];
    let count = stage["count"]
        .as_u64()
        .context("input_to_call in the report")?;
    let p99 = stage["p99_us"].as_u64().context("p99_us")? as f64;
    eprintln!(
        "input event -> D-Bus call: median {} us, p99 {p99} us, max {} us over {count} events",
        stage["median_us"], stage["max_us"]
    );
    figures.push(Figure::new(
        "input event -> D-Bus call p99, display, vkms",
        p99,
        "us",
        refresh,
        "report",
    ));
    Ok(())
}

/// Frames on a 60 Hz schedule (each still waits for its answer, as QEMU's
/// do): how many the sink dropped.
fn schedule_60hz(frames: usize, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    let card = find_node(NodeKind::Primary, "vkms")?;
    let card = card.to_str().expect("utf-8");
    let mut run = Run::start(
        "bench-60hz",
        (640, 480),
        &["display", "--device", card, "--mode", "640x480"],
    )?;
    let buffers = [
        Udmabuf::new(640, 480, DrmFourcc::Xrgb8888)?,
        Udmabuf::new(640, 480, DrmFourcc::Xrgb8888)?,
    ];
    let period = Duration::from_secs(1) / 60;
    let start = Instant::now();
    for n in 0..frames {
        std::thread::sleep((start + period * n as u32).saturating_duration_since(Instant::now()));
        run.listener
            .scanout_dmabuf(buffers[n % 2].fd(), BufferDesc::xrgb(640, 480), false)?;
        run.listener.update_dmabuf(0, 0, 640, 480);
    }
    let behind = start.elapsed().saturating_sub(period * frames as u32);
    let (_, report) = run.finish()?;
    let skipped = report["frames"]["skipped"].as_u64().unwrap_or(0) as f64;
    eprintln!("60 Hz schedule: the sender ended {behind:?} behind it");
    figures.push(Figure::new(
        "frames dropped at 60 Hz, direct, vkms",
        skipped,
        "frames",
        frames as f64,
        "report",
    ));
    Ok(())
}

/// One memcpy of `len` bytes, in µs (the best of a few).
fn memcpy_us(len: usize) -> f64 {
    let src = vec![7u8; len];
    let mut dst = vec![0u8; len];
    (0..5)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
            t.elapsed().as_secs_f64() * 1e6
        })
        .fold(f64::INFINITY, f64::min)
}

/// Headless import + composite (re-bind, draw, fence) per frame.
fn composite(
    label: &str,
    (w, h): (u32, u32),
    frames: usize,
    figures: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    let mut run = Run::start(
        &format!("bench-compose-{label}"),
        (w, h),
        &["latency", "--render-device", "software"],
    )?;
    let buffer = Udmabuf::new(w, h, DrmFourcc::Xrgb8888)?;
    for _ in 0..frames {
        run.listener
            .scanout_dmabuf(buffer.fd(), BufferDesc::xrgb(w, h), false)?;
        run.listener.update_dmabuf(0, 0, w as i32, h as i32);
    }
    let (_, report) = run.finish()?;
    let median = report["stages"]["import→commit"]["median_us"]
        .as_f64()
        .context("no import→commit figures")?;
    let reference = memcpy_us((w * h * 4) as usize);
    figures.push(Figure::new(
        format!("DMA-BUF import + composite {label}"),
        median,
        "us",
        reference,
        "report (x one memcpy)",
    ));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .context("--out FILE")?;
    if !tests::in_lab() {
        bail!("run it in the lab: scripts/lab/run.sh target/…/qemu-sink-lab-bench");
    }
    let mut figures = Vec::new();
    let frames = if quick { 60 } else { 600 };
    let plot = args
        .iter()
        .position(|a| a == "--plot")
        .and_then(|i| args.get(i + 1));
    // `--direct-only`: the direct-path run alone (to profile it).
    let direct_only = args.iter().any(|a| a == "--direct-only");
    direct_path(frames, plot.map(String::as_str), &mut figures).context("direct path")?;
    if !direct_only {
        schedule_60hz(frames, &mut figures).context("60 Hz schedule")?;
        sized_to_monitor(if quick { 20 } else { 200 }, &mut figures)
            .context("guest sized to its monitor")?;
        input_to_call(if quick { 30 } else { 300 }, &mut figures).context("input to call")?;
    }
    let sizes: &[(&str, (u32, u32))] = if quick {
        &[("320x180", (320, 180)), ("640x360", (640, 360))]
    } else {
        &[("1080p", (1920, 1080)), ("4K", (3840, 2160))]
    };
    for &(label, size) in sizes.iter().filter(|_| !direct_only) {
        composite(label, size, if quick { 3 } else { 10 }, &mut figures)
            .with_context(|| format!("composite {label}"))?;
    }
    figures.iter().for_each(Figure::print);
    let json: Vec<Value> = figures
        .iter()
        .map(|f| {
            let mut json = f.to_json();
            json["where"] = "lab (TCG, 1 vCPU, vkms, llvmpipe)".into();
            json
        })
        .collect();
    std::fs::write(Path::new(out), serde_json::to_string_pretty(&json)?)?;
    Ok(())
}
