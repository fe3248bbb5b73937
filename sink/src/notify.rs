//! systemd's service notifications (the `sd_notify` protocol: one datagram
//! of `KEY=value` lines to the socket named by `$NOTIFY_SOCKET`), written
//! here rather than through libsystemd: the protocol is that one datagram.
//!
//! `display` says `READY=1` once every head's monitor is lit, and feeds the
//! watchdog (`WATCHDOG=1`, when `$WATCHDOG_USEC` asks for it) from its
//! output loop: an output thread that stops turning (blocked in the kernel,
//! a deadlock) stops feeding it, and systemd restarts the service.
//! Without `$NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where notifications go, and the watchdog's period.
pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
    /// `WATCHDOG_USEC`, when it is for this process.
    watchdog: Option<Duration>,
    last_fed: Mutex<Option<Instant>>,
    /// When each output loop last turned (its index from
    /// [`register_output`]): the watchdog is fed only while all of them do.
    outputs: Mutex<Vec<Instant>>,
    heads_lit: AtomicUsize,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` (a path, or `@name` for an abstract
    /// socket) and `$WATCHDOG_USEC`/`$WATCHDOG_PID` describe; `None` when
    /// not under a service manager that listens.
    pub fn from_env() -> Option<Notifier> {
        let socket = std::env::var_os("NOTIFY_SOCKET")?;
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0)
            .filter(|_| {
                std::env::var("WATCHDOG_PID")
                    .ok()
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_none_or(|pid| pid == std::process::id())
            })
            .map(Duration::from_micros);
        match Notifier::new(Path::new(&socket), watchdog) {
            Ok(notifier) => Some(notifier),
            Err(err) => {
                tracing::warn!(
                    "NOTIFY_SOCKET={}: {err}; the service manager is not told",
                    Path::new(&socket).display()
                );
                None
            }
        }
    }

    pub fn new(socket: &Path, watchdog: Option<Duration>) -> std::io::Result<Notifier> {
        let to = match socket.to_str().and_then(|s| s.strip_prefix('@')) {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => SocketAddr::from_pathname(socket)?,
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            to,
            watchdog,
            last_fed: Mutex::new(None),
            outputs: Mutex::new(Vec::new()),
            heads_lit: AtomicUsize::new(0),
        })
    }

    /// Sends `state` (newline-separated `KEY=value` lines).
    pub fn send(&self, state: &str) {
        if let Err(err) = self.socket.send_to_addr(state.as_bytes(), &self.to) {
            tracing::debug!("sd_notify {state:?}: {err}");
        }
    }

    /// Output `id`'s loop turned: `WATCHDOG=1` when the watchdog is on,
    /// half its period has passed since the last one, and every output
    /// turned within that half (cheap to call on every loop).
    pub fn output_turned(&self, id: usize) {
        let Some(period) = self.watchdog else {
            return;
        };
        let now = Instant::now();
        {
            let mut outputs = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = outputs.get_mut(id) {
                *t = now;
            }
            if outputs.iter().any(|&t| now.duration_since(t) >= period / 2) {
                return;
            }
        }
        self.feed_watchdog();
    }

    fn register_output(&self) -> usize {
        let mut outputs = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        outputs.push(Instant::now());
        outputs.len() - 1
    }

    /// `WATCHDOG=1` when the watchdog is on and half its period has passed
    /// since the last one.
    pub fn feed_watchdog(&self) {
        let Some(period) = self.watchdog else {
            return;
        };
        let now = Instant::now();
        let mut last = self.last_fed.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < period / 2) {
            return;
        }
        *last = Some(now);
        drop(last);
        self.send("WATCHDOG=1");
    }
}

fn notifier() -> Option<&'static Notifier> {
    static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();
    NOTIFIER.get_or_init(Notifier::from_env).as_ref()
}

/// Tells the service manager `state`, if there is one.
pub fn notify(state: &str) {
    if let Some(n) = notifier() {
        n.send(state);
    }
}

/// One more head is lit; with all `heads` lit, the service is ready.
pub fn head_lit(heads: usize, status: &str) {
    if let Some(n) = notifier() {
        if n.heads_lit.fetch_add(1, Ordering::SeqCst) + 1 == heads {
            n.send(&format!("READY=1\nSTATUS={status}"));
        }
    }
}

/// How often an output loop must turn for the watchdog to be fed on time
/// (a quarter of its period); `None` without a watchdog.
pub fn turn_at_least_every() -> Option<Duration> {
    notifier().and_then(|n| n.watchdog).map(|period| period / 4)
}

/// An output loop that will say it turns ([`output_turned`]).
pub fn register_output() -> usize {
    notifier().map_or(0, Notifier::register_output)
}

/// From output `id`'s loop: it still turns.
pub fn output_turned(id: usize) {
    if let Some(n) = notifier() {
        n.output_turned(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> (std::path::PathBuf, UnixDatagram) {
        let path = std::env::temp_dir().join(format!(
            "qemu-sink-notify-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        (path, socket)
    }

    fn next(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn states_arrive_as_one_datagram_each() {
        let (path, socket) = listener();
        let n = Notifier::new(&path, None).unwrap();
        n.send("READY=1\nSTATUS=lit");
        n.send("STOPPING=1");
        assert_eq!(next(&socket), "READY=1\nSTATUS=lit");
        assert_eq!(next(&socket), "STOPPING=1");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn the_watchdog_is_fed_at_half_its_period_and_only_when_asked() {
        let (path, socket) = listener();
        let n = Notifier::new(&path, Some(Duration::from_millis(200))).unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(450) {
            n.feed_watchdog();
            std::thread::sleep(Duration::from_millis(5));
        }
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut fed = 0;
        let mut buf = [0u8; 64];
        while let Ok(len) = socket.recv(&mut buf) {
            assert_eq!(&buf[..len], b"WATCHDOG=1");
            fed += 1;
        }
        // At 0, 100, 200, 300, 400 ms (give or take the sleeps).
        assert!((4..=6).contains(&fed), "fed {fed} times in 450 ms");

        let quiet = Notifier::new(&path, None).unwrap();
        quiet.feed_watchdog();
        assert!(
            socket.recv(&mut [0u8; 64]).is_err(),
            "fed without a watchdog"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn one_stalled_output_starves_the_watchdog() {
        let (path, socket) = listener();
        let n = Notifier::new(&path, Some(Duration::from_millis(100))).unwrap();
        let (a, b) = (n.register_output(), n.register_output());
        std::thread::sleep(Duration::from_millis(60));
        // Only `a` turns: `b` last turned 60 ms ago, past half the period.
        n.output_turned(a);
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        assert!(
            socket.recv(&mut [0u8; 64]).is_err(),
            "fed with output b stalled"
        );
        n.output_turned(b);
        n.output_turned(a);
        assert_eq!(next(&socket), "WATCHDOG=1");
        let _ = std::fs::remove_file(path);
    }
}
