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

/// Starts the thread that turns a stop signal into `shared.stop(...)`.
pub fn forward_stop_signals(shared: Arc<Shared>) {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(signal) = stop_signals().wait() {
                tracing::info!("{signal}: stopping");
                shared.stop(StopReason::Signal(signal as i32));
            }
        })
        .expect("spawning a thread");
}
