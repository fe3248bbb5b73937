//! The output's link to its monitor: lit, unplugged, or the card taken by
//! another process. Only a lit link is committed to; the others answer
//! frames as they come and are probed each second.

use std::time::{Duration, Instant};

/// How often the connector's state is read (a cached GETCONNECTOR, no
/// probe) and DRM master asked back.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The link's state. The transitions:
///
/// ```text
///   Lit ──unplugged──▶ Unplugged ──plugged in, lit again──▶ Lit
///   Lit / Unplugged ──a commit refused (EACCES/EPERM)──▶ MasterLost
///   MasterLost ──SET_MASTER succeeds, lit again──▶ Lit
/// ```
///
/// (Unplugged → MasterLost happens only through a commit, and nothing is
/// committed while unplugged; MasterLost → Unplugged is found by the
/// probe after the card is back.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Lit,
    /// The connector reports no monitor.
    Unplugged,
    /// Another process is DRM master (a VT switch, a compositor).
    MasterLost,
}

/// When the link is looked at next.
#[derive(Debug)]
pub struct Probe {
    next: Instant,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            next: Instant::now() + PROBE_INTERVAL,
        }
    }
}

impl Probe {
    /// Is a probe due? If so, the next is scheduled.
    pub fn due(&mut self) -> bool {
        let now = Instant::now();
        if now < self.next {
            return false;
        }
        self.next = now + PROBE_INTERVAL;
        true
    }

    /// How long until the next probe.
    pub fn wait(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }
}
