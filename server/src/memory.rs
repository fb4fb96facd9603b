//! Gives the heap that a crowd of finished sessions freed back to the
//! system. glibc's malloc keeps freed memory in its arenas and returns only
//! a free block at the very top of a heap on its own; after thousands of
//! relays close, most of their memory sits in free blocks below live ones,
//! so RSS would stay near its peak (measured: 4.4 MiB idle, 41 MiB with
//! 9,900 relays, still 27 MiB after they all closed). `malloc_trim(0)`
//! releases the free pages of every arena.

use std::time::Duration;

/// How often the live session count is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Fewer sessions gone than this is not worth a trim (a few KiB each).
const MIN_DROP: usize = 64;

/// Watches the live session count and trims the heap when it has fallen to
/// half its peak since the last trim, by at least `MIN_DROP`. `live` returns
/// the sessions live now and the most that were live at once since it was
/// last asked (so a burst shorter than `CHECK_EVERY` is seen), or `None`
/// once the server is gone, which ends the task. Must be called inside a
/// tokio runtime.
pub(crate) fn spawn_trimmer(live: impl Fn() -> Option<(usize, usize)> + Send + 'static) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(CHECK_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut peak = 0;
        loop {
            ticks.tick().await;
            let Some((now, recent_peak)) = live() else { return };
            peak = peak.max(recent_peak);
            if should_trim(peak, now) {
                trim();
                peak = now;
            }
        }
    });
}

/// Whether `now` live sessions, after `peak`, are few enough to give memory back.
fn should_trim(peak: usize, now: usize) -> bool {
    peak - now >= MIN_DROP && now <= peak / 2
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks;
    // it takes no pointer from us. It runs for a few milliseconds at most
    // on a heap of tens of MiB, rarely, so it stays on this worker.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(released = released != 0, "heap trimmed after sessions ended");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_after_half_the_peak_is_gone_and_at_least_min_drop() {
        assert!(should_trim(200, 100));
        assert!(!should_trim(200, 101));
        assert!(should_trim(MIN_DROP, 0));
        assert!(!should_trim(MIN_DROP - 1, 0));
        assert!(!should_trim(0, 0));
        // Under half the peak, but fewer than MIN_DROP gone.
        assert!(!should_trim(MIN_DROP + 36, 40));
    }
}
