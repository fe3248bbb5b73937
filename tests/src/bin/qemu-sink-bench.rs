//! `scripts/bench.sh`: the sink's throughput figures, each printed on one
//! line next to its reference measured in the same run (this machine is
//! shared and noisy: only ratios mean the same everywhere), and all of them
//! written to `bench-results/<date>-<host>.json`.
//!
//! Host figures: 2D `Update` ingest and `Unix.Map` ingest through the real
//! listener and D-Bus source (a fake QEMU floods full-frame damage over the
//! p2p socket), against memcpy bandwidth; 4K PNG capture against the `image`
//! crate's default encoder. `--baseline FILE` adds 2D `Update` ingest against
//! the `qemu-display` crate's listener (see `vs_qemu_display`). `--quick`
//! uses small frames and a few iterations, without that baseline: it proves
//! every line is produced (CI), not the numbers.

use std::hint::black_box;
use std::io::Cursor;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use capture::RgbaFrame;
use dbus_interfaces::format::PIXMAN_X8R8G8B8;
use dbus_interfaces::{listener_socketpair, serve_listener, ListenerOptions};
use image::ImageEncoder;
use serde_json::json;
use sink::source::dbus::DbusSource;
use sink::state::Shared;
use tests::bench::Figure;
use tests::fake_qemu::FakeListener;

fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / 1e6
}

/// memcpy out of cache: a buffer well past the L3, copied a few times.
fn memcpy_bandwidth(len: usize, rounds: usize) -> f64 {
    let src = vec![7u8; len];
    let mut dst = vec![0u8; len];
    dst.copy_from_slice(&src); // fault the pages in first
    let start = Instant::now();
    for _ in 0..rounds {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    }
    mb_per_s((len * rounds) as u64, start.elapsed())
}

/// A sink listener (the real one, with the D-Bus source) and QEMU's side.
fn connect() -> anyhow::Result<(Arc<Shared>, FakeListener, zbus::blocking::Connection)> {
    let shared = Arc::new(Shared::default());
    let (ours, theirs) = listener_socketpair()?;
    let qemu = std::thread::spawn(move || FakeListener::serve(theirs));
    let sink = serve_listener(
        ours,
        Box::new(DbusSource::new(shared.clone())),
        ListenerOptions::default(),
    )?;
    let qemu = qemu.join().expect("handshake thread")?;
    Ok((shared, qemu, sink))
}

fn wait_for_updates(shared: &Shared, n: u64) {
    while shared.lock().updates < n {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Full-frame `Update`s as fast as the socket takes them.
fn update_ingest((w, h): (u32, u32), frames: u64) -> anyhow::Result<f64> {
    let (shared, qemu, _sink) = connect()?;
    let listener = qemu.listener();
    let frame = vec![0x5au8; (w * h * 4) as usize];
    let bytes = serde_bytes::Bytes::new(&frame);
    listener.scanout(w, h, w * 4, PIXMAN_X8R8G8B8, bytes)?;
    wait_for_updates(&shared, 1);
    let start = Instant::now();
    for _ in 0..frames {
        listener.update(0, 0, w as i32, h as i32, w * 4, PIXMAN_X8R8G8B8, bytes)?;
    }
    wait_for_updates(&shared, frames + 1);
    Ok(mb_per_s(frames * frame.len() as u64, start.elapsed()))
}

/// `ScanoutMap` once, then full-frame `UpdateMap`s: the pixels never cross
/// the socket, and the sink reads them in place when it renders.
fn map_ingest((w, h): (u32, u32), frames: u64) -> anyhow::Result<f64> {
    let (shared, qemu, _sink) = connect()?;
    let memfd = nix::sys::memfd::memfd_create("bench", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    nix::unistd::ftruncate(&memfd, i64::from(w * h * 4))?;
    qemu.map_listener()
        .scanout_map(memfd.as_fd().into(), 0, w, h, w * 4, PIXMAN_X8R8G8B8)?;
    wait_for_updates(&shared, 1);
    let map = qemu.map_listener();
    let start = Instant::now();
    for _ in 0..frames {
        map.update_map(0, 0, w as i32, h as i32)?;
    }
    wait_for_updates(&shared, frames + 1);
    Ok(mb_per_s(frames * u64::from(w * h * 4), start.elapsed()))
}

/// The cost of reading shared memory with `pread` (a file QEMU shrinks
/// cannot fault it) for one full-frame `UpdateMap`: read and decoded by the
/// painter, against decoding straight from a mapping of the same memfd (how
/// it was read before). Milliseconds per frame: (pread, mmap).
fn map_read_cost((w, h): (u32, u32), rounds: u32) -> anyhow::Result<(f64, f64)> {
    use dbus_interfaces::{Layout, SharedMap};
    let len = (w * h * 4) as usize;
    let memfd = nix::sys::memfd::memfd_create("bench", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    nix::unistd::ftruncate(&memfd, len as i64)?;
    nix::sys::uio::pwrite(&memfd, &test_picture(w, h).pixels, 0)?;
    let layout = Layout::new(w, h, w * 4, PIXMAN_X8R8G8B8)?;
    let mut painter = sink::surface::Painter::default();
    painter.scanout_map(SharedMap::new(memfd.try_clone()?, 0, layout)?)?;
    let all = dbus_interfaces::validate::rect_from_wire(0, 0, w as i32, h as i32)?;
    let start = Instant::now();
    for _ in 0..rounds {
        painter.update_map(all)?;
    }
    let pread = start.elapsed().as_secs_f64() / f64::from(rounds);
    // SAFETY: a private read-only mapping of our own memfd, not shrunk
    // while mapped, unmapped below.
    let base = unsafe {
        nix::sys::mman::mmap(
            None,
            std::num::NonZeroUsize::new(len).context("empty")?,
            nix::sys::mman::ProtFlags::PROT_READ,
            nix::sys::mman::MapFlags::MAP_SHARED,
            memfd.as_fd(),
            0,
        )?
    };
    // SAFETY: `len` readable bytes at `base` until the munmap below.
    let mapped = unsafe { std::slice::from_raw_parts(base.as_ptr().cast::<u8>(), len) };
    let mut frame = RgbaFrame::default();
    frame.reset(w, h);
    let start = Instant::now();
    for _ in 0..rounds {
        for y in 0..h {
            let row = &mapped[(y * w * 4) as usize..((y + 1) * w * 4) as usize];
            capture::decode_row(drm_fourcc::DrmFourcc::Xrgb8888, row, frame.row_mut(y))?;
        }
        black_box(&frame);
    }
    let mmap = start.elapsed().as_secs_f64() / f64::from(rounds);
    // SAFETY: the region mapped above, once.
    unsafe { nix::sys::mman::munmap(base, len)? };
    Ok((pread * 1e3, mmap * 1e3))
}

/// How long the shared lock is held for one full-frame 2D `Update`: now a
/// swap by the source (publish) and one by the output (take), against the
/// full decode an output did under the lock before (measured here on the
/// same frame). Microseconds: (now, before).
fn lock_hold((w, h): (u32, u32), rounds: u32) -> anyhow::Result<(f64, f64)> {
    use dbus_interfaces::{Layout, Pixels};
    let shared = Shared::default();
    let picture = test_picture(w, h);
    let layout = Layout::new(w, h, w * 4, PIXMAN_X8R8G8B8)?;
    let pixels = Pixels::new(layout, &picture.pixels)?;
    let mut mine = sink::surface::SurfacePicture::default();
    shared.painter().scanout(&pixels);
    let mut held = Duration::ZERO;
    for _ in 0..rounds {
        let mut painter = shared.painter();
        painter.update(0, 0, &pixels)?;
        painter.prepare();
        let start = Instant::now();
        shared.modify(|s| painter.publish(&mut s.surface));
        held += start.elapsed();
        drop(painter);
        let start = Instant::now();
        let mut state = shared.lock();
        let live = state.surface.take_picture(&mut mine);
        drop(state);
        held += start.elapsed();
        anyhow::ensure!(live, "no picture taken");
    }
    let now = held.as_secs_f64() / f64::from(rounds);
    let mut frame = RgbaFrame::default();
    frame.reset(w, h);
    let start = Instant::now();
    for _ in 0..rounds {
        for y in 0..h {
            capture::decode_row(
                drm_fourcc::DrmFourcc::Xrgb8888,
                pixels.row(y),
                frame.row_mut(y),
            )?;
        }
        black_box(&frame);
    }
    let before = start.elapsed().as_secs_f64() / f64::from(rounds);
    Ok((now * 1e6, before * 1e6))
}

/// A picture with some structure (gradients and noise), as a screen has.
fn test_picture(w: u32, h: u32) -> RgbaFrame {
    let mut frame = RgbaFrame::default();
    frame.reset(w, h);
    let mut seed = 0x1234_5678u32;
    for (i, px) in frame.pixels.chunks_exact_mut(4).enumerate() {
        let (x, y) = (i as u32 % w, i as u32 / w);
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let noise = if (x / 64 + y / 64) % 3 == 0 {
            seed as u8 & 0x1f
        } else {
            0
        };
        px.copy_from_slice(&[
            (x / 8) as u8 ^ noise,
            (y / 8) as u8,
            ((x + y) / 16) as u8,
            255,
        ]);
    }
    frame
}

/// Our PNG capture (fast deflate, Up filter, atomic write) against the
/// `image` crate's default encoder on the same frame; seconds per frame.
fn png_capture((w, h): (u32, u32), rounds: u32) -> anyhow::Result<(f64, f64)> {
    let frame = test_picture(w, h);
    let dir = std::env::temp_dir().join(format!("qemu-sink-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bench.png");
    let start = Instant::now();
    for _ in 0..rounds {
        capture::write_png_atomic(&path, &frame)?;
    }
    let ours = start.elapsed().as_secs_f64() / f64::from(rounds);
    let start = Instant::now();
    for _ in 0..rounds {
        let mut out = Cursor::new(Vec::new());
        image::codecs::png::PngEncoder::new(&mut out).write_image(
            &frame.pixels,
            w,
            h,
            image::ExtendedColorType::Rgba8,
        )?;
        black_box(out);
    }
    let reference = start.elapsed().as_secs_f64() / f64::from(rounds);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((ours, reference))
}

/// `--baseline FILE`: the same 2D `Update` flood consumed by a listener built
/// on the `qemu-display` crate (`bench/qemu-display-baseline`, a cargo project
/// outside the workspace; `scripts/bench.sh` builds and runs it on full runs
/// and passes its JSON line here). One figure per size it measured.
fn vs_qemu_display(path: &str, figures: &[Figure]) -> anyhow::Result<Vec<Figure>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {path}"))?;
    let theirs = json["update_ingest_mb_s"]
        .as_object()
        .with_context(|| format!("{path}: no update_ingest_mb_s"))?;
    let mut out = Vec::new();
    for (label, reference) in theirs {
        let reference = reference
            .as_f64()
            .filter(|v| *v > 0.0)
            .with_context(|| format!("{path}: bad figure for {label}"))?;
        let name = format!("2D Update ingest {label}");
        let ours = figures
            .iter()
            .find(|f| f.name == name)
            .with_context(|| format!("{path}: {label}, which this run did not measure"))?;
        out.push(Figure::new(
            format!("{name} vs qemu-display"),
            ours.value,
            "MB/s",
            reference,
            ">= 1.5 x qemu-display",
        ));
    }
    Ok(out)
}

/// What to measure: frame sizes, frames per flood, the PNG frame.
struct Plan {
    sizes: &'static [(&'static str, (u32, u32))],
    frames: u64,
    png_size: (u32, u32),
    png_rounds: u32,
}

impl Plan {
    const QUICK: Plan = Plan {
        sizes: &[("320x240", (320, 240))],
        frames: 20,
        png_size: (640, 480),
        png_rounds: 2,
    };
    const FULL: Plan = Plan {
        sizes: &[("1080p", (1920, 1080)), ("4K", (3840, 2160))],
        frames: 120,
        png_size: (3840, 2160),
        png_rounds: 5,
    };
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let baseline = args
        .windows(2)
        .find(|w| w[0] == "--baseline")
        .map(|w| &w[1]);
    let plan = if quick { Plan::QUICK } else { Plan::FULL };
    // `--png-only`: the 4K PNG capture alone, repeated (to profile it).
    if args.iter().any(|a| a == "--png-only") {
        let (ours, reference) = png_capture(plan.png_size, 30)?;
        let (w, h) = plan.png_size;
        let frame = test_picture(w, h);
        let start = Instant::now();
        let mut size = 0;
        for _ in 0..30 {
            let mut out = Cursor::new(Vec::new());
            image::codecs::png::PngEncoder::new_with_quality(
                &mut out,
                image::codecs::png::CompressionType::Uncompressed,
                image::codecs::png::FilterType::NoFilter,
            )
            .write_image(&frame.pixels, w, h, image::ExtendedColorType::Rgba8)?;
            size = out.get_ref().len();
        }
        let stored = start.elapsed().as_secs_f64() / 30.0;
        println!(
            "PNG capture: ours {:.1} ms, image's default {:.1} ms; stored (no compression) {:.1} ms, {size} bytes",
            ours * 1e3,
            reference * 1e3,
            stored * 1e3
        );
        return Ok(());
    }
    let Plan {
        sizes,
        frames,
        png_size,
        png_rounds,
    } = plan;
    let memcpy = memcpy_bandwidth(
        if quick { 32 << 20 } else { 128 << 20 },
        if quick { 4 } else { 16 },
    );
    println!("memcpy (out of cache): {memcpy:.0} MB/s");
    let mut figures = Vec::new();
    for &(label, size) in sizes {
        let update = update_ingest(size, frames).context("2D Update ingest")?;
        figures.push(Figure::new(
            format!("2D Update ingest {label}"),
            update,
            "MB/s",
            memcpy,
            ">= 0.25 x memcpy",
        ));
        let (pread, mmap) = map_read_cost(size, if quick { 3 } else { 30 })?;
        figures.push(Figure::new(
            format!("Unix.Map full-frame read {label} (pread)"),
            pread,
            "ms",
            mmap,
            "<= 2 x decoding from a mapping",
        ));
        let (now, before) = lock_hold(size, if quick { 3 } else { 30 })?;
        figures.push(Figure::new(
            format!("2D lock hold per full Update {label}"),
            now,
            "us",
            before,
            "<= 0.01 x the decode under the lock before",
        ));
        let map = map_ingest(size, frames * 10).context("Unix.Map ingest")?;
        figures.push(Figure::new(
            format!("Unix.Map ingest {label}"),
            map,
            "MB/s",
            memcpy,
            ">= 0.8 x memcpy",
        ));
    }
    match baseline {
        Some(path) => figures.extend(vs_qemu_display(path, &figures)?),
        None if quick => println!("qemu-display baseline: skipped (--quick)"),
        None => println!(
            "qemu-display baseline: not measured (scripts/bench.sh passes --baseline FILE)"
        ),
    }
    let (ours, reference) = png_capture(png_size, png_rounds).context("PNG capture")?;
    figures.push(Figure::new(
        format!("PNG capture {}x{}", png_size.0, png_size.1),
        ours * 1e3,
        "ms",
        reference * 1e3,
        "<= 0.1 x image's default encoder",
    ));
    figures.iter().for_each(Figure::print);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_owned();
    let date = String::from_utf8(
        std::process::Command::new("date")
            .arg("+%Y-%m-%dT%H%M%S")
            .output()?
            .stdout,
    )?;
    let json = json!({
        "date": date.trim(),
        "host": host,
        "quick": quick,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memcpy_mb_s": memcpy,
        "figures": figures.iter().map(Figure::to_json).collect::<Vec<_>>(),
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-results");
    std::fs::create_dir_all(&dir)?;
    let suffix = if quick { "-quick" } else { "" };
    let path = dir.join(format!("{}-{host}{suffix}.json", date.trim()));
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {}", path.display());
    Ok(())
}
