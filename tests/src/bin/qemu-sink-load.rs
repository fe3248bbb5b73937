//! `qemu-sink-load`: the fake QEMU as a load generator. It owns `org.qemu`
//! on a bus as a VM named `--name`, waits for a sink to register a
//! listener, and sends full-frame pictures of `--size` at `--rate` frames
//! a second (or `max`: each as soon as the previous one was answered) as
//! 2D `Update`s, `Unix.Map` `UpdateMap`s or udmabuf `UpdateDMABUF`s. It
//! records its own send → answer time of every frame and prints their
//! distribution: QEMU's view of the sink, to set beside the sink's own
//! `--report`.
//!
//!     qemu-sink-load --bus ADDR --kind dmabuf --size 1920x1080 --rate 60 --frames 600 &
//!     qemu-sink latency --bus ADDR --vm load --report sink.json
//!
//! `--kind dmabuf` needs /dev/udmabuf (the lab has it).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dbus_interfaces::format::PIXMAN_X8R8G8B8;
use drm_fourcc::DrmFourcc;
use tests::fake_qemu::{BufferDesc, FakeQemu};
use tests::udmabuf::Udmabuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Update,
    Map,
    Dmabuf,
}

struct Options {
    bus: String,
    name: String,
    kind: Kind,
    size: (u32, u32),
    /// Frames a second; `None`: as fast as answers allow.
    rate: Option<f64>,
    frames: usize,
}

fn parse() -> anyhow::Result<Options> {
    let mut options = Options {
        bus: std::env::var("DBUS_SESSION_BUS_ADDRESS").unwrap_or_default(),
        name: "load".into(),
        kind: Kind::Update,
        size: (1920, 1080),
        rate: Some(60.0),
        frames: 600,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bus" => options.bus = value()?,
            "--name" => options.name = value()?,
            "--kind" => {
                options.kind = match value()?.as_str() {
                    "update" => Kind::Update,
                    "map" => Kind::Map,
                    "dmabuf" => Kind::Dmabuf,
                    other => bail!("--kind {other}: update, map or dmabuf"),
                }
            }
            "--size" => {
                let v = value()?;
                let (w, h) = v.split_once('x').context("--size WxH")?;
                options.size = (w.parse()?, h.parse()?);
                if options.size.0 == 0 || options.size.1 == 0 || options.size.0 > 8192 {
                    bail!("--size {v}: 1x1 to 8192x8192");
                }
            }
            "--rate" => {
                let v = value()?;
                options.rate = if v == "max" { None } else { Some(v.parse()?) };
            }
            "--frames" => options.frames = value()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    if options.bus.is_empty() {
        bail!("--bus ADDRESS (or DBUS_SESSION_BUS_ADDRESS)");
    }
    Ok(options)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let o = parse()?;
    let (w, h) = o.size;
    let fake = FakeQemu::on_bus(
        &o.bus,
        &o.name,
        "00000000-0000-4000-8000-0000000010ad",
        o.size,
    )?;
    eprintln!("qemu-sink-load: {} on the bus, waiting for a sink", o.name);
    let mut listener = fake.accept_listener(Duration::from_secs(600))?;
    let stride = w * 4;
    let frame = vec![0x5au8; (stride * h) as usize];
    let mut times = Vec::with_capacity(o.frames);
    let mut failed = 0;
    // What each kind sends once, then per frame.
    let memfd;
    match o.kind {
        Kind::Update => {
            listener.listener().scanout(
                w,
                h,
                stride,
                PIXMAN_X8R8G8B8,
                serde_bytes::Bytes::new(&frame),
            )?;
        }
        Kind::Map => {
            memfd = nix::sys::memfd::memfd_create("load", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
            nix::unistd::ftruncate(&memfd, i64::from(stride * h))?;
            listener.map_listener().scanout_map(
                memfd.as_fd().into(),
                0,
                w,
                h,
                stride,
                PIXMAN_X8R8G8B8,
            )?;
        }
        Kind::Dmabuf => {}
    }
    let buffers = match o.kind {
        Kind::Dmabuf => vec![
            Udmabuf::new(w, h, DrmFourcc::Xrgb8888)?,
            Udmabuf::new(w, h, DrmFourcc::Xrgb8888)?,
        ],
        _ => Vec::new(),
    };
    let desc = BufferDesc {
        width: w,
        height: h,
        stride,
        fourcc: DrmFourcc::Xrgb8888 as u32,
        modifier: 0,
    };
    let start = Instant::now();
    for n in 0..o.frames {
        if let Some(rate) = o.rate {
            let due = start + Duration::from_secs_f64(n as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let sent = Instant::now();
        let ok = match o.kind {
            Kind::Update => listener
                .listener()
                .update(
                    0,
                    0,
                    w as i32,
                    h as i32,
                    stride,
                    PIXMAN_X8R8G8B8,
                    serde_bytes::Bytes::new(&frame),
                )
                .is_ok(),
            Kind::Map => listener
                .map_listener()
                .update_map(0, 0, w as i32, h as i32)
                .is_ok(),
            Kind::Dmabuf => {
                let buffer = &buffers[n % 2];
                listener.scanout_dmabuf(buffer.fd(), desc, false)?;
                listener.update_dmabuf(0, 0, w as i32, h as i32).ok
            }
        };
        if !ok {
            failed += 1;
        }
        times.push(sent.elapsed());
    }
    let took = start.elapsed();
    times.sort_unstable();
    println!(
        "qemu-sink-load: {} {:?} frames of {w}x{h} in {took:?} ({:.1}/s), {failed} failed; \
         send to answer: median {:?}, p90 {:?}, p99 {:?}, max {:?}",
        o.frames,
        o.kind,
        o.frames as f64 / took.as_secs_f64(),
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        percentile(&times, 0.99),
        times[times.len() - 1],
    );
    Ok(())
}
