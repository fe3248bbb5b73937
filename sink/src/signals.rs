//! SIGINT and SIGTERM become a [`StopReason`]: blocked in every thread (call
//! [`block_stop_signals`] before starting any) and taken by one thread with
//! `sigwait`, so that the sink always writes its last PNG and cleans up.

use std::sync::{Arc, Mutex};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

use crate::state::{Shared, StopReason};

fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// Blocks SIGINT/SIGTERM in this thread and every thread it starts later.
pub fn block_stop_signals() -> nix::Result<()> {
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stop_signals()), None)
}

/// Whom a stop signal stops: every console's [`Shared`] (one per head),
/// also the ones added after a signal came.
#[derive(Debug, Default)]
pub struct StopTargets {
    inner: Mutex<(Vec<Arc<Shared>>, Option<i32>)>,
}

impl StopTargets {
    /// Stops `shared` on the next signal (at once if one came already).
    pub fn add(&self, shared: Arc<Shared>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(signal) = inner.1 {
            stop_by_signal(&shared, signal);
        }
        inner.0.push(shared);
    }

    /// Stops every target as `signal` would (also: a head failed).
    pub fn stop_all(&self, signal: i32) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.1 = Some(signal);
        for shared in &inner.0 {
            stop_by_signal(shared, signal);
        }
    }
}

/// Starts the thread that turns every stop signal into a stop of each of
/// `targets`.
pub fn forward_stop_signals(targets: Arc<StopTargets>) {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            // Not only the first: a signal must never be left blocked and
            // unread while the sink goes on.
            while let Ok(signal) = stop_signals().wait() {
                tracing::info!("{signal}: stopping");
                targets.stop_all(signal as i32);
            }
        })
        .expect("spawning a thread");
}

/// A signal outranks any other reason to stop: QEMU's disconnect, say,
/// only pauses `display` until QEMU is back, and a signal in that window
/// must still end the sink.
fn stop_by_signal(shared: &Shared, signal: i32) {
    shared.modify(|s| {
        if !matches!(s.stop, Some(StopReason::Signal(_))) {
            s.stop = Some(StopReason::Signal(signal));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_after_a_disconnect_is_not_forgotten() {
        let shared = Shared::default();
        shared.stop(StopReason::Disconnected);
        stop_by_signal(&shared, 2);
        // What `display` asks before waiting for QEMU to come back.
        assert!(!shared.forget_source());
        assert_eq!(shared.lock().stop, Some(StopReason::Signal(2)));
    }

    #[test]
    fn a_signal_stops_every_head_also_one_added_later() {
        let targets = StopTargets::default();
        let first = Arc::new(Shared::default());
        targets.add(first.clone());
        targets.stop_all(15);
        let later = Arc::new(Shared::default());
        targets.add(later.clone());
        for shared in [first, later] {
            assert_eq!(shared.lock().stop, Some(StopReason::Signal(15)));
        }
    }
}
