//! Busy polling: a session thread that has just done work keeps polling its
//! sockets, without sleeping, for a short window before it blocks in
//! `epoll_wait`.
//!
//! Why: waking a sleeping thread on another CPU is the dearest step of a
//! CONNECT here. On the benchmark's virtual machine a thread ping-pong
//! across two CPUs takes 43 us a round trip against 5 us on one CPU (the
//! idle CPU halts, and the wake-up is an interrupt through the hypervisor),
//! and a CONNECT from a waiting client needs such wake-ups for its accept,
//! its request and its close. A thread still polling when the next event
//! arrives needs none. Measured with `scripts/bench`'s handshake loop:
//! about 6,300 CONNECTs/s without it, about 8,800/s with a 100 us window
//! (and the listener steering of `workers.rs`).
//!
//! The window opens again each time a session or accept task makes progress
//! (see [`counted`]), so a busy thread keeps polling while work keeps
//! coming. Its length adapts the way Linux's guest halt-polling does: a
//! thread that polled in vain and then slept longer than the longest window
//! halves it (down to none: traffic too sparse for polling to catch), and
//! one whose next work came within the longest window doubles it (up to
//! `busy_poll_us`).
//! An idle server spends nothing; sparse traffic soon costs nothing either.
//!
//! How, with tokio's public API only: the runtime calls [`before_park`]
//! (its `on_thread_park` hook) when it has run out of tasks. While the
//! window is open the hook wakes a do-nothing task ([`spinner`]); the
//! runtime, having work again, checks its sockets with a zero timeout
//! instead of blocking, runs what became ready, and comes back to the hook.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;

thread_local! {
    /// Polls of counted tasks on this thread so far.
    static WORK: Cell<u64> = const { Cell::new(0) };
    /// Set during a counted task's poll if that poll only moved relay data.
    static RELAY_ONLY: Cell<bool> = const { Cell::new(false) };
    static SPIN: RefCell<Spin> =
        const { RefCell::new(Spin { seen: 0, window_us: 0, until: None, slept_at: None, waker: None }) };
}

struct Spin {
    /// `WORK` when the hook last ran.
    seen: u64,
    /// The current window, adapted between 0 and the configured longest.
    window_us: u32,
    /// While polling, the end of the window.
    until: Option<Instant>,
    /// When the thread last went to sleep for real.
    slept_at: Option<Instant>,
    /// The spinner's, while it waits to be woken.
    waker: Option<Waker>,
}

pin_project! {
    /// A task whose polls open this thread's polling window; see [`counted`].
    pub(crate) struct Counted<F> {
        #[pin]
        future: F,
    }
}

/// Runs `future`, opening this thread's polling window at each of its polls
/// unless the poll only moved relay data (see [`relaying`]).
pub(crate) fn counted<F: Future>(future: F) -> Counted<F> {
    Counted { future }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        RELAY_ONLY.set(false);
        let polled = self.project().future.poll(cx);
        if !RELAY_ONLY.take() {
            WORK.set(WORK.get().wrapping_add(1));
        }
        polled
    }
}

pin_project! {
    /// A relay inside a counted task; see [`relaying`].
    pub(crate) struct Relaying<F> {
        #[pin]
        future: F,
        started: bool,
    }
}

/// Marks `relay` as data moving, which opens no window: polling after each
/// chunk of a bulk stream would take CPU from the programs at both ends (a
/// few percent of throughput, measured) to save wake-ups that cost little
/// next to the data. The poll that starts the relay, and the one that ends
/// it, still count: they are the session's own steps.
pub(crate) fn relaying<F: Future>(relay: F) -> Relaying<F> {
    Relaying { future: relay, started: false }
}

impl<F: Future> Future for Relaying<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let polled = this.future.poll(cx);
        if polled.is_pending() && std::mem::replace(this.started, true) {
            RELAY_ONLY.set(true);
        }
        polled
    }
}

/// The task [`before_park`] wakes to keep the runtime from sleeping; spawn
/// one on each runtime that has the hook. Never ends.
pub(crate) async fn spinner() {
    std::future::poll_fn(|cx| {
        SPIN.with_borrow_mut(|s| match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        });
        Poll::<()>::Pending
    })
    .await;
}

/// The runtime's `on_thread_park` hook: keeps it polling while the window
/// since the last counted poll is open; `longest_us` (0 = off) caps the
/// window. A thread that went to sleep adapts the window when work next
/// comes (a wake-up without work, such as a timer being set, does not
/// count).
pub(crate) fn before_park(longest_us: &AtomicU32) {
    let longest = longest_us.load(Ordering::Relaxed);
    SPIN.with_borrow_mut(|s| {
        let now = Instant::now();
        let work = WORK.get();
        if work != s.seen {
            s.seen = work;
            if let Some(slept_at) = s.slept_at.take() {
                s.window_us = adapt(s.window_us, now - slept_at, longest);
            }
            s.window_us = s.window_us.min(longest);
            s.until = (s.window_us > 0).then(|| now + Duration::from_micros(u64::from(s.window_us)));
        }
        match s.until {
            Some(until) if now < until => {
                if let Some(waker) = s.waker.take() {
                    waker.wake();
                }
            }
            _ => {
                s.until = None;
                if s.slept_at.is_none() && longest > 0 {
                    s.slept_at = Some(now);
                }
            }
        }
    });
}

/// The next window after sleeping `slept` with `window`: wider if a longer
/// one would have caught the work, narrower if none would have.
fn adapt(window: u32, slept: Duration, longest: u32) -> u32 {
    if longest == 0 {
        // Turned off (SIGHUP) while the thread slept.
        return 0;
    }
    let start = (longest / 8).max(1);
    if slept <= Duration::from_micros(u64::from(longest)) {
        window.saturating_mul(2).clamp(start, longest)
    } else if window / 2 < start {
        0
    } else {
        window / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn window_grows_on_short_sleeps_and_shrinks_to_none_on_long_ones() {
        let ms = Duration::from_millis;
        // Woken within the longest window: wider, from an eighth of it.
        assert_eq!(adapt(0, Duration::from_micros(30), 100), 12);
        assert_eq!(adapt(12, Duration::from_micros(30), 100), 24);
        assert_eq!(adapt(96, ms(0), 100), 100);
        // Slept past it: halved, then none.
        assert_eq!(adapt(100, ms(5), 100), 50);
        assert_eq!(adapt(24, ms(5), 100), 12);
        assert_eq!(adapt(12, ms(5), 100), 0);
        assert_eq!(adapt(0, ms(5), 100), 0);
        // A window is never wider than the longest, which may have shrunk,
        // even to nothing.
        assert_eq!(adapt(100, ms(0), 40), 40);
        assert_eq!(adapt(100, ms(0), 0), 0);
        assert_eq!(adapt(0, ms(0), 3), 1);
    }

    /// A runtime with the hooks and a spinner that counts its polls; one
    /// poll beyond the first means the runtime polled instead of sleeping.
    fn runtime(longest_us: u32) -> (tokio::runtime::Runtime, Arc<AtomicU64>) {
        let longest = AtomicU32::new(longest_us);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(move || before_park(&longest))
            .build()
            .unwrap();
        let polls = Arc::new(AtomicU64::new(0));
        let counter = polls.clone();
        runtime.spawn(std::future::poll_fn(move |cx| {
            counter.fetch_add(1, Ordering::Relaxed);
            SPIN.with_borrow_mut(|s| s.waker = Some(cx.waker().clone()));
            Poll::<()>::Pending
        }));
        (runtime, polls)
    }

    /// Work every millisecond (within the 20 ms longest window): the thread
    /// soon polls between the events instead of sleeping. Then work every
    /// 60 ms: the window shrinks to none and the thread just sleeps.
    #[test]
    fn polls_while_work_comes_often_and_stops_when_it_comes_rarely() {
        let (runtime, polls) = runtime(20_000);
        let work_every = |gap: Duration, times: u32| {
            runtime.block_on(counted(async move {
                for _ in 0..times {
                    tokio::time::sleep(gap).await;
                }
            }))
        };
        work_every(Duration::from_millis(1), 50);
        let frequent = polls.swap(0, Ordering::Relaxed);
        assert!(frequent > 100, "the thread slept between frequent events: {frequent} polls");

        work_every(Duration::from_millis(60), 6);
        polls.store(0, Ordering::Relaxed);
        work_every(Duration::from_millis(60), 3);
        let rare = polls.load(Ordering::Relaxed);
        assert!(rare <= 3, "polled {rare} times between rare events");
    }

    /// Polls that only move relay data leave the work count alone; the
    /// poll that starts the relay and the one that ends it count.
    #[test]
    fn relay_polls_open_no_window() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
        let task = runtime.spawn(counted(async move {
            // The "handshake" step, then a relay that runs until told to end.
            tokio::task::yield_now().await;
            relaying(async move { while rx.recv().await == Some(false) {} }).await;
        }));
        let work = || runtime.block_on(async { WORK.get() });
        let settle = || runtime.block_on(async { tokio::time::sleep(Duration::from_millis(5)).await });
        settle();
        let started = work();
        for _ in 0..10 {
            tx.send(false).unwrap();
            settle();
        }
        assert_eq!(work(), started, "relay-only polls opened the window");
        tx.send(true).unwrap();
        runtime.block_on(task).unwrap();
        assert_eq!(work(), started + 1, "the poll that ends the relay must count");
    }

    #[test]
    fn never_polls_when_off() {
        let (runtime, polls) = runtime(0);
        runtime.block_on(counted(async {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
        let n = polls.load(Ordering::Relaxed);
        assert!(n <= 1, "polled {n} times with busy polling off");
    }
}
