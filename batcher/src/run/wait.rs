//! Between two ticks: the loop waits for the tick interval, or less —
//! a sync commit that wants its batch now, a suspension's instant, a
//! suspend hook to poll — or for an operator's request, or the stop.

use super::Batcher;
use crate::suspend::{Command, State, Suspensions};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What ended the wait.
pub(super) enum Woken {
    /// Time for the next tick.
    Tick,
    /// An operator's request, carried out before the next tick.
    Command(Command),
    /// The batcher stops.
    Stop,
}

/// How often a running suspend hook is polled.
const HOOK_POLL: Duration = Duration::from_millis(100);

impl Batcher {
    /// Waits out the tick that started at `tick_start`.
    pub(super) async fn wait(
        &self,
        tick_start: Instant,
        susp: &Suspensions,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Woken {
        let mut wait = self.cfg.tick.saturating_sub(tick_start.elapsed());
        let kicked = async {
            match &self.cfg.sync {
                Some(sync) => sync.until_kicked().await,
                None => std::future::pending().await,
            }
        };
        let next_due = susp
            .values()
            .filter(|s| s.state == State::Scheduled)
            .map(|s| s.due)
            .min();
        let due = async {
            match next_due {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        if susp
            .values()
            .any(|s| s.hook.is_some() && !s.resume_waiting.is_empty())
        {
            wait = wait.min(HOOK_POLL);
        }
        let mut commands = self.commands.lock().await;
        tokio::select! {
            _ = tokio::time::sleep(wait) => Woken::Tick,
            _ = kicked => Woken::Tick,
            _ = due => Woken::Tick,
            Some(cmd) = commands.recv() => Woken::Command(cmd),
            _ = shutdown.changed() => Woken::Stop,
        }
    }
}
