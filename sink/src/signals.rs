//! SIGINT and SIGTERM become a [`StopReason`]: blocked in every thread (call
//! [`block_stop_signals`] before starting any) and taken by one thread with
//! `sigwait`, so that the sink always writes its last PNG and cleans up.

use std::sync::Arc;

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

/// Starts the thread that turns every stop signal into a stop.
pub fn forward_stop_signals(shared: Arc<Shared>) {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            // Not only the first: a signal must never be left blocked and
            // unread while the sink goes on.
            while let Ok(signal) = stop_signals().wait() {
                tracing::info!("{signal}: stopping");
                stop_by_signal(&shared, signal as i32);
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
}
