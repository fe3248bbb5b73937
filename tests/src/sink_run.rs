//! `qemu-sink capture` run in the background the way the lab tests need
//! it: its log read as it comes (a full pipe would block the sink), killed if
//! a test fails, and the PNG it keeps rewriting waited on.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use capture::{read_png, RgbaFrame};

use crate::sink_command;
use crate::udmabuf::assert_picture_eq;

/// `qemu-sink capture` in the background, killed if the test fails. Its
/// log is read as it comes (a full pipe would block the sink).
pub struct Sink {
    child: Option<Child>,
    log: Option<std::thread::JoinHandle<String>>,
    /// The log read so far.
    so_far: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Sink {
    /// `qemu-sink capture --out OUT --bus BUS --vm VM EXTRA...`.
    pub fn capture_vm(out: &Path, bus: &str, vm: &str, extra: &[&str]) -> Sink {
        let mut args = vec!["--bus", bus, "--vm", vm];
        args.extend_from_slice(extra);
        Sink::capture(out, &args)
    }

    /// `qemu-sink capture --out OUT ARGS...`.
    pub fn capture(out: &Path, args: &[&str]) -> Sink {
        let mut all = vec!["capture", "--out", out.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        Sink::spawn(sink_command(&all))
    }

    /// Any `qemu-sink` command line (see [`sink_command`]), in the background.
    pub fn spawn(mut command: std::process::Command) -> Sink {
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting qemu-sink");
        let stderr = child.stderr.take().expect("piped");
        let so_far = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let shared = so_far.clone();
        let log = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut text = shared.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
            shared.lock().unwrap().clone()
        });
        Sink {
            child: Some(child),
            log: Some(log),
            so_far,
        }
    }

    /// Waits until its log says `needle`; false after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.so_far.lock().unwrap().contains(needle) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.so_far.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn finish(mut self, mut child: Child) -> String {
        let status = child.wait().unwrap();
        let log = self.log.take().unwrap().join().unwrap();
        assert!(status.success(), "qemu-sink failed ({status}): {log}");
        log
    }

    /// SIGTERM, then its log (it must have exited 0).
    pub fn stop(mut self) -> String {
        let child = self.child.take().unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        self.finish(child)
    }

    /// SIGTERM, then its exit status and log, whatever the status; panics
    /// if it is still running after `timeout`.
    pub fn terminate(mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = self.log.take().unwrap().join().unwrap();
                panic!("qemu-sink still ran {timeout:?} after SIGTERM: {log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, self.log.take().unwrap().join().unwrap())
    }

    /// Kills it and returns its log so far (for a failing test's message),
    /// after how it ended if it had already exited.
    pub fn abort(mut self) -> String {
        let mut ended = String::new();
        if let Some(mut child) = self.child.take() {
            if let Ok(Some(status)) = child.try_wait() {
                ended = format!("qemu-sink had already exited: {status}\n");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        ended + &self.log.take().unwrap().join().unwrap()
    }

    /// Waits for it to exit by itself (0), at most `timeout`; its log.
    pub fn wait(mut self, timeout: Duration) -> String {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = self.log.take().unwrap().join().unwrap();
                panic!("qemu-sink ran past {timeout:?}: {log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.finish(child)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            // A test that failed with the sink still running: its log is
            // what tells why.
            if std::thread::panicking() {
                eprintln!(
                    "--- qemu-sink's log ---\n{}--- end of qemu-sink's log ---",
                    self.log()
                );
            }
        }
    }
}

/// Composition output is opaque: compare RGB and expect alpha 255.
pub fn opaque(frame: &RgbaFrame) -> RgbaFrame {
    let mut out = frame.clone();
    for px in out.pixels.chunks_exact_mut(4) {
        px[3] = 255;
    }
    out
}

/// Waits until `path` holds exactly `want` (the sink rewrites it on change).
/// Waits until the PNG at `path` equals `want` within `tolerance` per
/// channel (a picture GL scaled: the filter's rounding), at most `timeout`.
pub fn wait_for_picture_within(
    what: &str,
    path: &Path,
    want: &RgbaFrame,
    tolerance: u8,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        match read_png(path).map(|got| capture::compare_rgb(&got, want, tolerance)) {
            Ok(Ok(())) => return,
            Ok(Err(diff)) if Instant::now() > deadline => panic!("{what}: {diff}"),
            _ if Instant::now() > deadline => panic!("{what}: {} never appeared", path.display()),
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn wait_for_picture(what: &str, path: &Path, want: &RgbaFrame, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(got) = read_png(path) {
            if got == *want {
                return;
            }
            if Instant::now() > deadline {
                assert_picture_eq(what, &got, want);
            }
        } else if Instant::now() > deadline {
            panic!("{what}: {} never appeared", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
