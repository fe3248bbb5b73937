//! Release as a value: an `UpdateDMABUF` answer that goes out when the last
//! thing reading the frame drops its [`Release`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use event_listener::Event;

#[derive(Debug, Default)]
struct Shared {
    released: AtomicBool,
    event: Event,
}

/// Dropping it releases the frame: the listener then answers QEMU.
#[derive(Debug)]
pub struct Release {
    shared: Arc<Shared>,
}

/// The listener's side: waits for the [`Release`] to drop.
#[derive(Debug)]
pub struct ReleaseWait {
    shared: Arc<Shared>,
}

impl Release {
    pub fn new() -> (Release, ReleaseWait) {
        let shared = Arc::new(Shared::default());
        (
            Release {
                shared: shared.clone(),
            },
            ReleaseWait { shared },
        )
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.shared.released.store(true, Ordering::Release);
        self.shared.event.notify(usize::MAX);
    }
}

impl ReleaseWait {
    pub fn is_released(&self) -> bool {
        self.shared.released.load(Ordering::Acquire)
    }

    async fn released(&self) {
        loop {
            if self.is_released() {
                return;
            }
            let listener = self.shared.event.listen();
            if self.is_released() {
                return;
            }
            listener.await;
        }
    }

    /// Waits for the release for at most `deadline`; true if it came.
    pub async fn wait_until(self, deadline: Duration) -> bool {
        futures_lite::future::or(
            async {
                self.released().await;
                true
            },
            async {
                async_io::Timer::after(deadline).await;
                false
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn dropping_the_token_releases() {
        let (release, wait) = Release::new();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(release);
        });
        assert!(futures_lite::future::block_on(
            wait.wait_until(Duration::from_secs(5))
        ));
        t.join().unwrap();
    }

    #[test]
    fn the_deadline_answers_when_nothing_releases() {
        let (release, wait) = Release::new();
        let start = Instant::now();
        assert!(!futures_lite::future::block_on(
            wait.wait_until(Duration::from_millis(50))
        ));
        assert!(start.elapsed() >= Duration::from_millis(50));
        drop(release);
    }
}
