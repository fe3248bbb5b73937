//! An output is a thread: it opens its card, renderer and buffers itself
//! and owns them until it ends (a GL context is current on one thread; a
//! panic there still restores the CRTC as the thread unwinds). Frames
//! reach it from the sources through its console's [`Shared`] mailbox and
//! wake fd, never through the caller; the caller steers it with requests
//! over a channel: run until the source stops, go black, finish. Several
//! heads are several of these.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{Display, DisplayError, DisplayOptions, DisplaySummary};
use crate::output::headless::Stopped;
use crate::state::Shared;

/// What the caller asks of the output.
enum Request {
    /// Show frames until a stop (signal, the source gone, `--frames`, ...).
    Run,
    /// The source went away: let its buffers go, black on screen.
    Blank,
    /// Shut down (the CRTC as it was) and sum up.
    Finish(Stopped),
}

enum Reply {
    Lit(Result<(), DisplayError>),
    Ran(Result<Stopped, DisplayError>),
    Blanked(Result<(), DisplayError>),
    Finished(Box<DisplaySummary>),
}

/// A display output running on a thread of its own.
pub struct OutputThread {
    requests: Sender<Request>,
    replies: Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
}

impl OutputThread {
    /// Starts the output's thread, which opens the card and lights the
    /// monitor black; returns once it is lit (or why not).
    pub fn start(
        options: DisplayOptions,
        shared: Arc<Shared>,
    ) -> Result<OutputThread, DisplayError> {
        let (requests, inbox) = mpsc::channel();
        let (outbox, replies) = mpsc::channel();
        let name = format!(
            "output {}",
            options.connector.as_deref().unwrap_or("(first connected)")
        );
        // The caller's span (a head's, with several) goes with the thread.
        let span = tracing::Span::current();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let _head = span.entered();
                serve(options, &shared, &inbox, &outbox)
            })
            .map_err(DisplayError::Thread)?;
        let output = OutputThread {
            requests,
            replies,
            thread: Some(thread),
        };
        match output.reply()? {
            Reply::Lit(result) => result.map(|()| output),
            _ => Err(DisplayError::OutputGone),
        }
    }

    /// Shows frames until the sink stops or the source goes away.
    pub fn run(&self) -> Result<Stopped, DisplayError> {
        self.send(Request::Run)?;
        match self.reply()? {
            Reply::Ran(result) => result,
            _ => Err(DisplayError::OutputGone),
        }
    }

    /// The source went away: black until it is back.
    pub fn blank(&self) -> Result<(), DisplayError> {
        self.send(Request::Blank)?;
        match self.reply()? {
            Reply::Blanked(result) => result,
            _ => Err(DisplayError::OutputGone),
        }
    }

    /// Shuts the output down (the CRTC back as it was) and sums up.
    pub fn finish(mut self, stopped: Stopped) -> Result<DisplaySummary, DisplayError> {
        self.send(Request::Finish(stopped))?;
        let reply = self.reply();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        match reply? {
            Reply::Finished(summary) => Ok(*summary),
            _ => Err(DisplayError::OutputGone),
        }
    }

    fn send(&self, request: Request) -> Result<(), DisplayError> {
        self.requests
            .send(request)
            .map_err(|_| DisplayError::OutputGone)
    }

    fn reply(&self) -> Result<Reply, DisplayError> {
        self.replies.recv().map_err(|_| DisplayError::OutputGone)
    }
}

impl Drop for OutputThread {
    /// Not finished (an error on the caller's side): the thread sees its
    /// channel close, drops the display (which restores the CRTC) and ends.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel();
        self.requests = closed;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The output's thread: opens the display, then serves requests until
/// `Finish` or until the caller is gone.
fn serve(
    options: DisplayOptions,
    shared: &Shared,
    inbox: &Receiver<Request>,
    outbox: &Sender<Reply>,
) {
    let mut display = match Display::open(options) {
        Ok(display) => display,
        Err(err) => {
            let _ = outbox.send(Reply::Lit(Err(err)));
            return;
        }
    };
    if outbox.send(Reply::Lit(Ok(()))).is_err() {
        return;
    }
    loop {
        // Between runs (QEMU gone, waiting for it) the output is idle, not
        // stuck: the watchdog is fed here too.
        let idle =
            crate::notify::turn_at_least_every().unwrap_or(std::time::Duration::from_secs(1));
        let request = match inbox.recv_timeout(idle) {
            Ok(request) => request,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                crate::notify::output_turned(display.watchdog_id());
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let reply = match request {
            Request::Run => Reply::Ran(display.run(shared)),
            Request::Blank => Reply::Blanked(display.blank()),
            Request::Finish(stopped) => {
                let summary = display.finish_run(shared, stopped);
                let _ = outbox.send(Reply::Finished(Box::new(summary)));
                return;
            }
        };
        if outbox.send(reply).is_err() {
            return;
        }
    }
}
