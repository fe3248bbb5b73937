//! The primary screen: which of a VM's graphic consoles a single head
//! shows when it is not pinned to one (`display` without `--console`).
//! A VM often has two: a VGA that boots (BIOS, boot loader, early kernel)
//! and then stops changing once the guest's driver takes over another
//! (virtio-gpu). The head follows: the console shown yields it when it has
//! been idle for a while and another console is active.
//!
//! "Active" counts content, not life signs: an update of at least
//! [`COUNTING_AREA`] pixels (a line of text, a frame), so a text cursor
//! blinking on an abandoned VGA console (one character cell) keeps it
//! neither shown nor wanted. The other consoles are watched by listeners of
//! their own that only note their updates and answer them at once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dbus_interfaces::{InvalidInput, ListenerEvent, ListenerHandler};

/// An update smaller than this (in pixels) is no sign of use: a blinking
/// text cursor is one 9x16 cell; a line of text is 720x16.
pub const COUNTING_AREA: u64 = 64 * 64;
/// How far back activity is looked at.
pub const WINDOW: Duration = Duration::from_secs(3);
/// Updates within [`WINDOW`] that make a console active.
pub const ACTIVE_UPDATES: usize = 2;
/// Counting updates remembered per console (enough for [`ACTIVE_UPDATES`];
/// bounded, so a busy console allocates nothing once warmed up).
const REMEMBERED: usize = 8;

/// When each console last had counting updates, and when the console
/// shown now began to be shown.
#[derive(Debug, Default)]
pub struct Activity {
    updates: HashMap<u32, VecDeque<Instant>>,
    shown_since: Option<(u32, Instant)>,
}

impl Activity {
    /// Console `console` had an update of `area` pixels at `at`.
    pub fn note(&mut self, console: u32, area: u64, at: Instant) {
        if area < COUNTING_AREA {
            return;
        }
        let seen = self.updates.entry(console).or_default();
        if seen.len() == REMEMBERED {
            seen.pop_front();
        }
        seen.push_back(at);
    }

    /// Console `console` is shown from `at` on (its quiet time counts from
    /// then: a console just attached is not idle yet).
    pub fn showing(&mut self, console: u32, at: Instant) {
        self.shown_since = Some((console, at));
    }

    fn recent(&self, console: u32, now: Instant) -> usize {
        self.updates.get(&console).map_or(0, |seen| {
            seen.iter()
                .filter(|&&t| now.saturating_duration_since(t) < WINDOW)
                .count()
        })
    }

    /// The console the head should show instead of the one shown, if any:
    /// the shown one idle for [`WINDOW`] (no counting update, and shown at
    /// least that long) while another had [`ACTIVE_UPDATES`] within it
    /// (the busiest, the lowest number on a tie).
    pub fn choose(&self, now: Instant) -> Option<u32> {
        let (shown, since) = self.shown_since?;
        if now.saturating_duration_since(since) < WINDOW || self.recent(shown, now) > 0 {
            return None;
        }
        self.updates
            .keys()
            .copied()
            .filter(|&c| c != shown)
            .map(|c| (self.recent(c, now), c))
            .filter(|&(n, _)| n >= ACTIVE_UPDATES)
            .max_by_key(|&(n, c)| (n, std::cmp::Reverse(c)))
            .map(|(_, c)| c)
    }
}

/// The activities of one VM's consoles, shared by their listeners.
pub type SharedActivity = Arc<Mutex<Activity>>;

/// A listener handler that notes its console's updates in `activity`, and
/// then hands the message on to `inner` (the console shown) or drops it (a
/// watched console: a DMA-BUF update is answered as its release drops).
pub struct Watched {
    inner: Option<Box<dyn ListenerHandler>>,
    console: u32,
    activity: SharedActivity,
}

impl Watched {
    /// The shown console's handler, watched.
    pub fn shown(
        console: u32,
        inner: Box<dyn ListenerHandler>,
        activity: SharedActivity,
    ) -> Watched {
        Watched {
            inner: Some(inner),
            console,
            activity,
        }
    }

    /// A console only watched.
    pub fn watcher(console: u32, activity: SharedActivity) -> Watched {
        Watched {
            inner: None,
            console,
            activity,
        }
    }
}

/// The pixels an update covers (none for other messages).
fn updated_area(event: &ListenerEvent<'_>) -> u64 {
    let area = |w: u32, h: u32| u64::from(w) * u64::from(h);
    match event {
        ListenerEvent::Update { pixels, .. } => area(pixels.layout.width, pixels.layout.height),
        ListenerEvent::UpdateMap(rect) => area(rect.width, rect.height),
        // An unknown damage: the whole buffer may have changed.
        ListenerEvent::UpdateDmabuf { damage, .. } => {
            damage.map_or(u64::MAX, |d| area(d.width, d.height))
        }
        _ => 0,
    }
}

impl ListenerHandler for Watched {
    fn handle(&mut self, event: ListenerEvent<'_>) {
        let area = updated_area(&event);
        if area > 0 {
            self.activity
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .note(self.console, area, Instant::now());
        }
        if let Some(inner) = &mut self.inner {
            inner.handle(event);
        }
    }

    fn rejected(&mut self, member: &'static str, why: &InvalidInput) {
        if let Some(inner) = &mut self.inner {
            inner.rejected(member, why);
        }
    }

    fn release_deadline_passed(&mut self) {
        if let Some(inner) = &mut self.inner {
            inner.release_deadline_passed();
        }
    }
}

/// The other graphic consoles of a VM watched while one is shown; when
/// the head should move (see [`Activity::choose`]), `shared` is stopped as
/// if QEMU had left, and [`ConsoleWatch::chosen`] says where to go.
pub struct ConsoleWatch {
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    chosen: Arc<Mutex<Option<u32>>>,
}

/// How often the choice is looked at.
const CHECK_EVERY: Duration = Duration::from_millis(250);

impl ConsoleWatch {
    /// Watches the graphic consoles of `control`'s QEMU other than
    /// `shown`, from a thread of its own: finding them and attaching to
    /// them takes D-Bus calls that must not delay the shown console's
    /// first frame. A console that cannot be watched is left out (and said
    /// so): the shown one goes on either way.
    pub fn start(
        control: &crate::attach::Control,
        shown: u32,
        options: &crate::attach::AttachOptions,
        activity: SharedActivity,
        shared: Arc<crate::state::Shared>,
    ) -> ConsoleWatch {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let chosen = Arc::new(Mutex::new(None));
        let (control, options) = (control.clone(), options.clone());
        let thread = {
            let (stop, chosen) = (stop.clone(), chosen.clone());
            std::thread::Builder::new()
                .name("console-watch".into())
                .spawn(move || {
                    let _watchers = watch_others(&control, shown, &options, &activity);
                    if _watchers.is_empty() {
                        return;
                    }
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let choice = activity
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .choose(Instant::now());
                        if let Some(console) = choice {
                            *chosen.lock().unwrap_or_else(PoisonError::into_inner) = Some(console);
                            shared.stop(crate::state::StopReason::Disconnected);
                            return;
                        }
                        std::thread::sleep(CHECK_EVERY);
                    }
                })
                .map_err(|err| tracing::warn!("not watching the other consoles: {err}"))
                .ok()
        };
        ConsoleWatch {
            thread,
            stop,
            chosen,
        }
    }

    /// The console the head should move to, once chosen.
    pub fn chosen(&self) -> Option<u32> {
        *self.chosen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Listeners on the VM's graphic consoles other than `shown`, each noting
/// its updates in `activity`.
fn watch_others(
    control: &crate::attach::Control,
    shown: u32,
    options: &crate::attach::AttachOptions,
    activity: &SharedActivity,
) -> Vec<crate::attach::Attached> {
    let vm = match control.describe() {
        Ok(vm) => vm,
        Err(err) => {
            tracing::warn!("not following the console in use: {err}");
            return Vec::new();
        }
    };
    // A watcher's end (QEMU gone) is the shown console's business.
    let unseen = Arc::new(crate::state::Shared::default());
    vm.consoles
        .iter()
        .filter(|c| c.kind == "Graphic" && c.id != shown)
        .filter_map(|c| {
            let options = crate::attach::AttachOptions {
                console: c.id,
                ..options.clone()
            };
            let handler = Box::new(Watched::watcher(c.id, activity.clone()));
            match crate::attach::attach_to(control.clone(), &options, handler, &unseen) {
                Ok(watcher) => {
                    tracing::debug!("watching console {} for the one in use", c.id);
                    Some(watcher)
                }
                Err(err) => {
                    tracing::warn!("not watching console {}: {err}", c.id);
                    None
                }
            }
        })
        .collect()
}

impl Drop for ConsoleWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: u64 = 720 * 16;
    const CELL: u64 = 9 * 16;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    /// A VGA boot console (0) shown, then the guest's driver draws on
    /// console 1 while console 0 only blinks its cursor: the head moves to
    /// console 1 once console 0 was idle for the window, not before.
    #[test]
    fn an_idle_console_yields_to_the_active_one() {
        let t0 = Instant::now();
        let mut activity = Activity::default();
        activity.showing(0, t0);
        activity.note(0, LINE, at(t0, 100));
        // Console 1 comes alive at 1 s; console 0 only blinks.
        for ms in [1000, 1200, 1400, 1600] {
            activity.note(1, LINE, at(t0, ms));
            activity.note(0, CELL, at(t0, ms + 50));
        }
        assert_eq!(
            activity.choose(at(t0, 1700)),
            None,
            "console 0 busy until 100 ms + 3 s"
        );
        assert_eq!(activity.choose(at(t0, 3050)), None);
        assert_eq!(activity.choose(at(t0, 3200)), Some(1));
        // Console 1 went quiet too long ago: nothing is active, stay.
        assert_eq!(activity.choose(at(t0, 4700)), None);
    }

    /// Just shown, a console is not idle yet (then it is, while another is
    /// busy); a console busy itself is never left; a blinking cursor alone
    /// never takes a head.
    #[test]
    fn a_console_just_shown_or_busy_keeps_the_head() {
        let t0 = Instant::now();
        let mut activity = Activity::default();
        activity.showing(1, at(t0, 5000));
        for ms in (0..20).map(|i| 4000 + i * 100) {
            activity.note(0, LINE, at(t0, ms));
        }
        assert_eq!(activity.choose(at(t0, 6000)), None, "shown for 1 s only");
        assert_eq!(
            activity.choose(at(t0, 8100)),
            Some(0),
            "console 1 idle, 0 busy"
        );
        assert_eq!(
            activity.choose(at(t0, 9000)),
            None,
            "console 0 quiet since 5.9 s"
        );

        let mut busy = Activity::default();
        busy.showing(1, t0);
        for ms in (0..40).map(|i| i * 100) {
            busy.note(1, u64::MAX, at(t0, ms));
            busy.note(0, LINE, at(t0, ms));
        }
        assert_eq!(busy.choose(at(t0, 4000)), None);

        let mut blinking = Activity::default();
        blinking.showing(1, t0);
        for ms in (0..40).map(|i| i * 500) {
            blinking.note(0, CELL, at(t0, ms));
        }
        assert_eq!(blinking.choose(at(t0, 20_000)), None);
    }

    /// Of two active consoles the busier wins; memory stays bounded.
    #[test]
    fn the_busiest_other_console_wins() {
        let t0 = Instant::now();
        let mut activity = Activity::default();
        activity.showing(0, t0);
        for ms in (0..30).map(|i| 3000 + i * 50) {
            activity.note(2, LINE, at(t0, ms));
        }
        for ms in [3000, 3500, 4000] {
            activity.note(1, LINE, at(t0, ms));
        }
        assert_eq!(activity.choose(at(t0, 4500)), Some(2));
        assert!(activity
            .updates
            .values()
            .all(|seen| seen.len() <= REMEMBERED));
    }
}
