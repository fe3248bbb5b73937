//! The qemu-display baseline for `qemu-sink-bench`'s "2D Update ingest": the
//! same flood (one `Scanout`, then N full-frame `Update`s at 1080p and 4K,
//! sent NO_REPLY_EXPECTED by QEMU's side over the p2p listener socket),
//! consumed by a minimal listener built on the `qemu-display` crate that keeps
//! its surface as qemu-sink does: each `Update`'s pixels copied into its own
//! buffer, under a mutex that the measuring thread polls. MB/s from the first
//! `Update` sent until the listener has applied the last one.
//!
//! qemu-display's listener object is crate-private, so it is reached as a
//! client reaches it: `Console::new` and `Console::register_listener` against
//! a fake QEMU serving `org.qemu.Display1.Console` on a p2p connection. The
//! crate makes the listener socketpair itself, with the kernel's default
//! buffers (qemu-sink sizes both ends at 4 MiB). That is what its users get,
//! and the reference; a second flood with QEMU's end resized to 4 MiB (the
//! sender's buffer is the one that bounds a Unix stream) tells the socket
//! buffers' share of the difference from the copies'.
//!
//!   qemu-display-baseline [--quick] [--frames N] [--size 1080p|4K] [--socket stock|4mib]
//!
//! Prints `qemu-display Update ingest <size>: <MB/s> MB/s` per size, then one
//! JSON line (the last line) for `qemu-sink-bench --baseline FILE`.

use std::os::unix::net::UnixStream;
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use dbus_interfaces::format::PIXMAN_X8R8G8B8;
use dbus_interfaces::qemu_side::{ConsoleServer, ListenerProxyBlocking};
use qemu_display::{
    Console, ConsoleListenerHandler, Cursor, MouseSet, Scanout, ScanoutDMABUF, Update, UpdateDMABUF,
};
use serde_json::json;

/// The surface, as qemu-sink's `Shared` state holds it: packed rows.
#[derive(Default)]
struct State {
    width: u32,
    height: u32,
    stride: usize,
    data: Vec<u8>,
    /// Scanouts and Updates applied.
    updates: u64,
    /// Updates refused (outside the surface, short data).
    refused: u64,
}

type Shared = Arc<Mutex<State>>;

/// The minimal listener: 32-bit formats only (the flood's x8r8g8b8).
struct Sink {
    shared: Shared,
}

#[async_trait::async_trait]
impl ConsoleListenerHandler for Sink {
    async fn scanout(&mut self, s: Scanout) {
        let mut state = self.shared.lock().unwrap();
        let row = s.width as usize * 4;
        let (stride, height) = (s.stride as usize, s.height as usize);
        if height > 0 && (stride < row || s.data.len() < stride * (height - 1) + row) {
            state.refused += 1;
            return;
        }
        let state = &mut *state;
        state.data.clear();
        state.data.reserve(row * height);
        for y in 0..height {
            state
                .data
                .extend_from_slice(&s.data[y * stride..y * stride + row]);
        }
        (state.width, state.height, state.stride) = (s.width, s.height, row);
        state.updates += 1;
    }

    async fn update(&mut self, u: Update) {
        let mut state = self.shared.lock().unwrap();
        let (x, y, w, h) = (u.x as usize, u.y as usize, u.w as usize, u.h as usize);
        let (row, stride) = (w * 4, u.stride as usize);
        let fits = u.x >= 0
            && u.y >= 0
            && u.w >= 0
            && u.h >= 0
            && x + w <= state.width as usize
            && y + h <= state.height as usize
            && stride >= row
            && (h == 0 || u.data.len() >= stride * (h - 1) + row);
        if !fits {
            state.refused += 1;
            return;
        }
        let state = &mut *state;
        for r in 0..h {
            let start = (y + r) * state.stride + x * 4;
            state.data[start..start + row].copy_from_slice(&u.data[r * stride..r * stride + row]);
        }
        state.updates += 1;
    }

    async fn scanout_dmabuf(&mut self, _scanout: ScanoutDMABUF) {}

    async fn update_dmabuf(&mut self, _update: UpdateDMABUF) {}

    async fn disable(&mut self) {}

    async fn mouse_set(&mut self, _set: MouseSet) {}

    async fn cursor_define(&mut self, _cursor: Cursor) {}

    fn disconnected(&mut self) {}

    fn interfaces(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Everything one flood needs alive: the fake QEMU's bus connection, the
/// console (it owns qemu-display's listener connection) and QEMU's side of
/// the listener connection.
struct Setup {
    shared: Shared,
    _bus: zbus::blocking::Connection,
    _client: zbus::Connection,
    _console: Console,
    qemu: zbus::blocking::Connection,
}

const CONSOLE_PATH: &str = "/org/qemu/Display1/Console_0";

fn connect((w, h): (u32, u32), qemu_sndbuf: Option<usize>) -> anyhow::Result<Setup> {
    let shared = Shared::default();
    let (client, server) = UnixStream::pair()?;
    let (tx, listeners) = channel();
    // The fake QEMU's "bus": a p2p connection serving Console_0, as the main
    // bench's fake QEMU does on a real bus.
    let bus = std::thread::spawn(move || {
        zbus::blocking::connection::Builder::async_io_unix_stream(server)
            .server(zbus::Guid::generate())?
            .p2p()
            .serve_at(
                CONSOLE_PATH,
                ConsoleServer {
                    label: "VGA".into(),
                    width: w,
                    height: h,
                    listeners: tx,
                    ui_infos: None,
                },
            )?
            .build()
    });
    // QEMU's side of the listener socket: the auth server, as QEMU (and the
    // main bench's `FakeListener::serve`) is.
    let qemu = std::thread::spawn(move || -> anyhow::Result<zbus::blocking::Connection> {
        let fd = listeners
            .recv_timeout(Duration::from_secs(10))
            .context("no RegisterListener")?;
        let socket = UnixStream::from(fd);
        if let Some(size) = qemu_sndbuf {
            use nix::sys::socket::{setsockopt, sockopt};
            setsockopt(&socket, sockopt::SndBuf, &size)?;
            setsockopt(&socket, sockopt::RcvBuf, &size)?;
        }
        zbus::blocking::connection::Builder::async_io_unix_stream(socket)
            .server(zbus::Guid::generate())?
            .p2p()
            .build()
            .context("p2p handshake as QEMU")
    });
    let sink = Sink {
        shared: shared.clone(),
    };
    let (client, console) = async_io::block_on(async move {
        let client = zbus::connection::Builder::async_io_unix_stream(client)
            .p2p()
            .build()
            .await
            .context("p2p handshake with the fake QEMU")?;
        let console = Console::new(&client, 0).await?;
        console.register_listener(sink).await?;
        anyhow::Ok((client, console))
    })?;
    let bus = bus.join().expect("fake QEMU bus thread")?;
    let qemu = qemu.join().expect("listener handshake thread")?;
    Ok(Setup {
        shared,
        _bus: bus,
        _client: client,
        _console: console,
        qemu,
    })
}

fn wait_for_updates(shared: &Shared, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let state = shared.lock().unwrap();
        if state.refused > 0 {
            anyhow::bail!("the listener refused {} messages", state.refused);
        }
        if state.updates >= n {
            return Ok(());
        }
        drop(state);
        anyhow::ensure!(Instant::now() < deadline, "stuck at {n} updates");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Full-frame `Update`s as fast as the socket takes them: the main bench's
/// `update_ingest`, message for message.
fn update_ingest(
    (w, h): (u32, u32),
    frames: u64,
    qemu_sndbuf: Option<usize>,
) -> anyhow::Result<f64> {
    let setup = connect((w, h), qemu_sndbuf)?;
    let listener = ListenerProxyBlocking::builder(&setup.qemu)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()?;
    let frame = vec![0x5au8; (w * h * 4) as usize];
    let bytes = serde_bytes::Bytes::new(&frame);
    listener.scanout(w, h, w * 4, PIXMAN_X8R8G8B8, bytes)?;
    wait_for_updates(&setup.shared, 1)?;
    let start = Instant::now();
    for _ in 0..frames {
        listener.update(0, 0, w as i32, h as i32, w * 4, PIXMAN_X8R8G8B8, bytes)?;
    }
    wait_for_updates(&setup.shared, frames + 1)?;
    let took = start.elapsed();
    let state = setup.shared.lock().unwrap();
    anyhow::ensure!(
        state.data.len() == frame.len() && state.data.iter().all(|&b| b == 0x5a),
        "the surface does not hold the frame"
    );
    Ok((frames * frame.len() as u64) as f64 / took.as_secs_f64() / 1e6)
}

/// What qemu-sink's listener_socketpair gives each end.
const SOCKET_BUFFER: usize = 4 << 20;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].as_str())
    };
    let quick = args.iter().any(|a| a == "--quick");
    let frames: u64 = match value("--frames") {
        Some(n) => n.parse().context("--frames N")?,
        None if quick => 20,
        None => 120,
    };
    // For profiling one flood: --size 1080p|4K, --socket stock|4mib.
    let only_size = value("--size");
    let only_socket = value("--socket");
    let sizes: &[(&str, (u32, u32))] = if quick {
        &[("320x240", (320, 240))]
    } else {
        &[("1080p", (1920, 1080)), ("4K", (3840, 2160))]
    };
    let mut stock = serde_json::Map::new();
    let mut tuned = serde_json::Map::new();
    for &(label, size) in sizes {
        if only_size.is_some_and(|s| s != label) {
            continue;
        }
        if only_socket.is_none_or(|s| s == "stock") {
            let mb_s = update_ingest(size, frames, None).context("qemu-display Update ingest")?;
            println!("qemu-display Update ingest {label}: {mb_s:.1} MB/s");
            stock.insert(label.into(), json!(mb_s));
        }
        if only_socket.is_none_or(|s| s == "4mib") {
            let mb_s = update_ingest(size, frames, Some(SOCKET_BUFFER))
                .context("qemu-display Update ingest, 4 MiB socket")?;
            println!(
                "qemu-display Update ingest {label} (QEMU's end at 4 MiB SO_SNDBUF): {mb_s:.1} MB/s"
            );
            tuned.insert(label.into(), json!(mb_s));
        }
    }
    println!(
        "{}",
        json!({
            "baseline": "qemu-display 0.2.1",
            "frames": frames,
            "update_ingest_mb_s": stock,
            "update_ingest_4mib_socket_mb_s": tuned,
        })
    );
    Ok(())
}
