//! The renderer on this machine's EGL (Mesa llvmpipe; no GPU, no /dev/dri on
//! the host): device choice, uploads in every format against the capture
//! crate's decoding, composition geometry, blending, fences, readback.
//! DMA-BUF import needs udmabuf: it is tested in the lab (tests/tests/lab_*.rs).

use capture::{decode_row, RgbaFrame};
use drm_fourcc::DrmFourcc;
use gl_renderer::{Composition, Rect, RenderDevice, Renderer, Source};

fn renderer() -> Renderer {
    Renderer::new(&RenderDevice::Software).expect("Mesa's software EGL device")
}

fn pattern(fourcc: DrmFourcc, width: u32, height: u32, bpp: u32) -> Vec<u8> {
    // Distinct bytes everywhere, so a swapped channel cannot pass.
    (0..width * height * bpp)
        .map(|i| (i.wrapping_mul(37).wrapping_add(fourcc as u32) % 251) as u8)
        .collect()
}

fn expected(fourcc: DrmFourcc, width: u32, height: u32, data: &[u8], bpp: u32) -> RgbaFrame {
    let mut frame = RgbaFrame::default();
    frame.reset(width, height);
    for y in 0..height {
        let row = &data[(y * width * bpp) as usize..((y + 1) * width * bpp) as usize];
        decode_row(fourcc, row, frame.row_mut(y)).unwrap();
    }
    frame
}

fn px(frame: &RgbaFrame, x: u32, y: u32) -> [u8; 4] {
    let i = ((y * frame.width + x) * 4) as usize;
    frame.pixels[i..i + 4].try_into().unwrap()
}

#[test]
fn auto_without_a_gpu_renders_in_software() {
    let r = Renderer::new(&RenderDevice::Auto).unwrap();
    assert!(r.device.software, "{:?}", r.device);
    assert!(
        r.device.node.is_none(),
        "never a DRM node without a GPU: {:?}",
        r.device
    );
}

#[test]
fn uploads_read_back_as_the_capture_crate_decodes_them() {
    let mut r = renderer();
    for (fourcc, bpp) in [
        (DrmFourcc::Xrgb8888, 4),
        (DrmFourcc::Argb8888, 4),
        (DrmFourcc::Xbgr8888, 4),
        (DrmFourcc::Abgr8888, 4),
        (DrmFourcc::Rgb565, 2),
    ] {
        let (w, h) = (7, 5);
        let data = pattern(fourcc, w, h, bpp);
        let texture = r.upload(fourcc, w, h, w * bpp, &data).unwrap();
        let target = r.create_target(w, h).unwrap();
        r.clear(&target);
        let how = Composition::fit(Rect::new(0, 0, w, h), (w, h), false);
        r.draw(&target, Source::Texture(&texture), &how).unwrap();
        let mut got = RgbaFrame::default();
        r.read(&target, &mut got).unwrap();
        let want = expected(fourcc, w, h, &data, bpp);
        assert_eq!(capture::compare_rgb(&got, &want, 0), Ok(()), "{fourcc:?}");
        if fourcc == DrmFourcc::Xrgb8888 {
            assert!(
                got.pixels.chunks_exact(4).all(|p| p[3] == 255),
                "X bytes are opaque"
            );
        }
        drop((texture, target));
    }
}

#[test]
fn padded_strides_and_partial_updates() {
    let mut r = renderer();
    let (w, h, stride) = (3u32, 2u32, 20u32);
    let mut data = vec![0u8; (stride * h) as usize];
    for y in 0..h {
        for x in 0..w {
            let i = (y * stride + x * 4) as usize;
            data[i..i + 4].copy_from_slice(&[x as u8 * 10, y as u8 * 10, 200, 0]);
        }
    }
    let texture = r.upload(DrmFourcc::Xbgr8888, w, h, stride, &data).unwrap();
    r.update_texture(&texture, Rect::new(1, 1, 1, 1), 4, &[1, 2, 3, 0])
        .unwrap();
    assert!(
        r.update_texture(&texture, Rect::new(2, 1, 2, 1), 8, &[0; 8])
            .is_err(),
        "outside the texture"
    );
    let target = r.create_target(w, h).unwrap();
    r.draw(
        &target,
        Source::Texture(&texture),
        &Composition::fit(Rect::new(0, 0, w, h), (w, h), false),
    )
    .unwrap();
    let mut got = RgbaFrame::default();
    r.read(&target, &mut got).unwrap();
    assert_eq!(px(&got, 2, 0), [20, 0, 200, 255]);
    assert_eq!(px(&got, 0, 1), [0, 10, 200, 255]);
    assert_eq!(px(&got, 1, 1), [1, 2, 3, 255]);
}

#[test]
fn letterbox_flip_sub_rectangle_and_blend() {
    let mut r = renderer();
    // A 2x2 source: top row red, bottom row blue (XBGR: R, G, B, X bytes).
    let data = [255, 0, 0, 0, 255, 0, 0, 0, 0, 0, 255, 0, 0, 0, 255, 0];
    let texture = r.upload(DrmFourcc::Xbgr8888, 2, 2, 8, &data).unwrap();
    let target = r.create_target(8, 4).unwrap();
    let mut got = RgbaFrame::default();

    // Pillarboxed 2x: black bars two pixels wide on each side.
    r.clear(&target);
    let how = Composition::fit(Rect::new(0, 0, 2, 2), (8, 4), false);
    assert_eq!(how.dst, Rect::new(2, 0, 4, 4));
    r.draw(&target, Source::Texture(&texture), &how).unwrap();
    r.read(&target, &mut got).unwrap();
    assert_eq!(px(&got, 0, 0), [0, 0, 0, 255]);
    assert_eq!(px(&got, 7, 3), [0, 0, 0, 255]);
    assert_eq!(px(&got, 2, 0), [255, 0, 0, 255], "top stays on top");
    assert_eq!(px(&got, 5, 3), [0, 0, 255, 255]);

    // y0_top: the source is bottom-up, so blue is the picture's top.
    r.clear(&target);
    r.draw(
        &target,
        Source::Texture(&texture),
        &Composition::fit(Rect::new(0, 0, 2, 2), (8, 4), true),
    )
    .unwrap();
    r.read(&target, &mut got).unwrap();
    assert_eq!(px(&got, 2, 0), [0, 0, 255, 255]);
    assert_eq!(px(&got, 5, 3), [255, 0, 0, 255]);

    // A sub-rectangle (the bottom row only, as ScanoutDMABUF2's y) at 1:1.
    r.clear(&target);
    let how = Composition {
        src: Rect::new(0, 1, 2, 1),
        dst: Rect::new(0, 0, 2, 1),
        flip_y: false,
        blend: false,
    };
    r.draw(&target, Source::Texture(&texture), &how).unwrap();
    r.read(&target, &mut got).unwrap();
    assert_eq!(px(&got, 0, 0), [0, 0, 255, 255]);
    assert_eq!(px(&got, 0, 1), [0, 0, 0, 255]);

    // A half-transparent white cursor (ARGB) blended over blue.
    let cursor = r
        .upload(DrmFourcc::Argb8888, 1, 1, 4, &[255, 255, 255, 128])
        .unwrap();
    let how = Composition {
        src: Rect::new(0, 0, 1, 1),
        dst: Rect::new(0, 0, 1, 1),
        flip_y: false,
        blend: true,
    };
    r.draw(&target, Source::Texture(&cursor), &how).unwrap();
    r.read(&target, &mut got).unwrap();
    let p = px(&got, 0, 0);
    assert!(
        (127..=129).contains(&p[0]) && (127..=129).contains(&p[1]) && p[2] == 255,
        "{p:?}"
    );
    assert_eq!(p[3], 255, "the target stays opaque");
}

#[test]
fn a_fence_signals_once_drawing_is_done() {
    let mut r = renderer();
    let target = r.create_target(64, 64).unwrap();
    r.clear(&target);
    let fence = r.fence().unwrap();
    assert!(fence.wait(std::time::Duration::from_secs(5)));
}
