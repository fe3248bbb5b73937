//! Latency mode against a known schedule: the fake QEMU sends DMA-BUF
//! frames at a fixed rate, and `qemu-sink latency --report` must count
//! every frame once, in order, with receive times spaced at that rate.
//!
//! Starts: dbus-daemon, the fake QEMU (udmabufs), the qemu-sink binary.
//! Needs the lab (`scripts/lab/test.sh latency_`).

use std::time::{Duration, Instant};

use drm_fourcc::DrmFourcc;
use tests::fake_qemu::{BufferDesc, FakeQemu};
use tests::lab::require_lab;
use tests::sink_run::Sink;
use tests::udmabuf::Udmabuf;
use tests::*;

#[test]
#[ignore = "needs the lab"]
fn latency_mode_counts_a_fixed_rate_schedule() {
    require_lab();
    const FRAMES: usize = 60;
    const PERIOD: Duration = Duration::from_millis(50);
    let dir = TempDir::new("lab-latency");
    let bus = private_bus(&dir);
    let fake = FakeQemu::on_bus(
        &bus.address,
        "fake-latency",
        "00000000-0000-4000-8000-00000000a7e0",
        (128, 96),
    )
    .unwrap();
    let report = dir.path("report.json");
    let plot = dir.path("plot.svg");
    let sink = Sink::spawn(sink_command(&[
        "latency",
        "--bus",
        &bus.address,
        "--vm",
        "fake-latency",
        "--render-device",
        "software",
        "--latency-interval",
        "1",
        "--report",
        report.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]));
    let mut listener = match fake.accept_listener(Duration::from_secs(60)) {
        Ok(listener) => listener,
        Err(err) => panic!("{err:#}; sink:\n{}", sink.abort()),
    };
    let buffers = [
        Udmabuf::new(128, 96, DrmFourcc::Xrgb8888).unwrap(),
        Udmabuf::new(128, 96, DrmFourcc::Xrgb8888).unwrap(),
    ];
    let desc = BufferDesc {
        width: 128,
        height: 96,
        stride: 128 * 4,
        fourcc: DrmFourcc::Xrgb8888 as u32,
        modifier: 0,
    };
    // One frame first: the renderer's first import and draw are slow
    // under emulation; the schedule starts once it is answered.
    listener
        .scanout_dmabuf(buffers[1].fd(), desc, false)
        .unwrap();
    assert!(listener.update_dmabuf(0, 0, 128, 96).ok, "the first frame");
    let mut sent = Vec::new();
    let start = Instant::now();
    for n in 0..FRAMES {
        let due = start + PERIOD * n as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        listener
            .scanout_dmabuf(buffers[n % 2].fd(), desc, false)
            .unwrap();
        sent.push(sink::frame::monotonic_now().as_micros() as u64);
        assert!(listener.update_dmabuf(0, 0, 128, 96).ok, "frame {n}");
    }
    let late = listener
        .answers
        .iter()
        .filter(|a| a.latency() > PERIOD)
        .count();
    let log = sink.stop();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["mode"], "latency");
    let total = FRAMES as u64 + 1;
    assert_eq!(report["frames"]["received"], total, "{log}");
    assert_eq!(report["frames"]["shown"], total, "{log}");
    assert_eq!(report["frames"]["skipped"], 0, "{log}");
    let samples = report["samples"].as_array().unwrap();
    assert_eq!(samples.len(), FRAMES + 1);
    let received: Vec<u64> = samples
        .iter()
        .enumerate()
        .map(|(n, s)| {
            assert_eq!(s["id"], n as u64, "each frame once, in order");
            assert!(s["released_us"].is_u64(), "frame {n} released: {s}");
            s["received_us"].as_u64().unwrap()
        })
        .skip(1)
        .collect();
    // Each frame was received after it was sent (same clock, same
    // machine) and before its answer came back.
    let period = PERIOD.as_micros() as u64;
    let mut transit = Vec::new();
    for (n, (&got, &send)) in received.iter().zip(&sent).enumerate() {
        let answered = listener.answers[n + 1].answered_at.as_micros() as u64;
        assert!(
            send <= got && got <= answered,
            "frame {n}: sent {send}, received {got}, answered {answered} (us)"
        );
        transit.push(got - send);
    }
    // The receive spacing follows the send schedule.
    let mut gaps: Vec<u64> = received.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    transit.sort_unstable();
    let median = gaps[gaps.len() / 2];
    eprintln!(
        "receive spacing: median {median} us, min {} us, max {} us; send to receive median {} us, max {} us; {late} answers slower than the period",
        gaps[0],
        gaps[gaps.len() - 1],
        transit[transit.len() / 2],
        transit[transit.len() - 1]
    );
    assert!(
        median.abs_diff(period) <= period / 10,
        "frames were sent every {period} us, received every {median} us (median)"
    );
    let span = received[FRAMES - 1] - received[0];
    let sent_span = sent[FRAMES - 1] - sent[0];
    assert!(
        span.abs_diff(sent_span) <= period,
        "received over {span} us, sent over {sent_span} us"
    );
    assert!(log.contains("frame stages so far"), "{log}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") || svg.contains("<svg"), "an SVG");
}
