//! `qemu-sink capture --source vdmabuf` in the lab: a producer exports
//! udmabufs through the loopback module, the sink shows them, and each id
//! comes back as a release notice exactly once; bad exports are dropped
//! with the id still released.
//!
//! Starts: the vdmabuf loopback module's nodes, the qemu-sink binary;
//! udmabufs. Every test needs the lab.

use std::time::Duration;

use drm_fourcc::DrmFourcc;
use tests::lab::require_lab;
use tests::sink_run::{opaque, wait_for_picture, Sink};
use tests::udmabuf::Udmabuf;
use tests::vdmabuf::{module_counter, module_refcount, Blob, BufId, Producer, CONSUMER_NODE};
use tests::TempDir;

/// Waits for the release notice of `id` (and only that one).
fn wait_release(producer: &Producer, id: BufId) {
    let notices = producer
        .wait_notices(Duration::from_secs(10))
        .expect("reading release notices");
    let ids: Vec<BufId> = notices.iter().map(|n| n.id()).collect();
    assert_eq!(ids, vec![id], "exactly the one release notice");
}

#[test]
#[ignore = "needs the lab"]
fn vdmabuf_exports_are_captured_exactly_and_each_id_released_once() {
    require_lab();
    let dir = TempDir::new("lab-vdmabuf");
    let baseline = module_counter("exported").unwrap();
    let producer = Producer::open().expect("the producer node");
    let out = dir.path("vdmabuf.png");
    let node = format!("vdmabuf={CONSUMER_NODE}");
    let opened = module_refcount().unwrap();
    let sink = Sink::capture(&out, &["--source", &node, "--render-device", "software"]);
    let timeout = Duration::from_secs(60);
    // Events go to the consumers open at export time: wait for the sink's
    // open of the node (after its EGL warm-up).
    let deadline = std::time::Instant::now() + timeout;
    while module_refcount().unwrap() <= opened {
        assert!(
            std::time::Instant::now() < deadline,
            "the sink never opened {CONSUMER_NODE}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    for (frame, fourcc) in [
        DrmFourcc::Xrgb8888,
        DrmFourcc::Argb8888,
        DrmFourcc::Xbgr8888,
        DrmFourcc::Abgr8888,
        DrmFourcc::Rgb565,
    ]
    .into_iter()
    .enumerate()
    {
        let bpp = capture::bytes_per_pixel(fourcc).unwrap() as u32;
        let mut buffer = Udmabuf::with_stride(72, 40, 72 * bpp + 32, fourcc).unwrap();
        buffer.fill(frame as u32).unwrap();
        let blob = Blob::new(72, 40, buffer.stride(), fourcc, 0);
        let id = producer.export_blob(buffer.fd(), &blob).unwrap();
        wait_for_picture(
            &format!("{fourcc:?}"),
            &out,
            &opaque(&buffer.expected(frame as u32)),
            timeout,
        );
        wait_release(&producer, id);
    }

    // Bad exports: an unknown fourcc, a stride below the width, a blob
    // larger than the buffer. Imported, dropped, released; the last good
    // picture stays.
    let last_good = capture::read_png(&out).unwrap();
    let small = Udmabuf::new(16, 16, DrmFourcc::Xrgb8888).unwrap();
    for blob in [
        Blob {
            format: 0x1234_5678,
            ..Blob::new(16, 16, 64, DrmFourcc::Xrgb8888, 0)
        },
        Blob::new(16, 16, 32, DrmFourcc::Xrgb8888, 0),
        Blob::new(64, 64, 256, DrmFourcc::Xrgb8888, 0),
    ] {
        let id = producer.export_blob(small.fd(), &blob).unwrap();
        wait_release(&producer, id);
    }
    // Private data too short to be a blob: never imported, and released
    // all the same (every id read goes back once).
    let short = producer.export(small.fd(), &[0; 10]).unwrap();
    wait_release(&producer, short);
    assert_eq!(
        capture::read_png(&out).unwrap(),
        last_good,
        "the last good frame stays"
    );

    let log = sink.stop();
    assert_eq!(log.matches("dropping vdmabuf export").count(), 4, "{log}");
    // Everything the sink read is released.
    assert_eq!(module_counter("exported").unwrap(), baseline, "{log}");
}
