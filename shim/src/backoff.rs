//! Which upstreams are down: an upstream that could not be reached (or did not answer within the
//! timeout) is skipped until its back-off period is over, so the next connect goes straight to the
//! next server, and a connect whose upstreams are all down fails at once instead of waiting (or
//! spinning) through them again.
//!
//! What one process learns, the whole program tree knows: the table is an anonymous `MAP_SHARED`
//! mapping created by the library constructor (like the remote-DNS pool), so a child forked later
//! shares it with its parent both ways. Each slot is two atomics (the deadline, then the errno
//! that put it down); nothing is ever locked, so a process killed mid-write cannot block the
//! others, and a torn pair (two processes marking one slot at once) is still two valid values.
//! The clock is `CLOCK_MONOTONIC`, one clock for every process of the machine. The table does not
//! survive `exec` (a new program starts with every upstream up), and a process that could not map
//! it keeps its own.

use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering};
use std::time::Duration;

use crate::sys::Errno;

/// Upstreams one configuration may name: one slot each.
pub const SLOTS: usize = 256;

/// One upstream's state. All zeroes: up.
#[repr(C)]
struct Slot {
    /// `CLOCK_MONOTONIC` nanoseconds until which the upstream is skipped; 0 = up.
    down_until: AtomicU64,
    /// The errno of the failure that put it down (what a connect skipping it reports).
    errno: AtomicI32,
}

impl Slot {
    /// At `now` (nanoseconds): the errno that put it down and how long it stays down, if it is.
    fn down_at(&self, now: u64) -> Option<(Errno, Duration)> {
        let until = self.down_until.load(Ordering::Acquire);
        (until > now).then(|| (self.errno.load(Ordering::Relaxed), Duration::from_nanos(until - now)))
    }

    /// Down from `now` for `period`, with `errno`.
    fn mark_down_at(&self, errno: Errno, period: Duration, now: u64) {
        let until = now.saturating_add(u64::try_from(period.as_nanos()).unwrap_or(u64::MAX));
        self.errno.store(errno, Ordering::Relaxed);
        self.down_until.store(until, Ordering::Release);
    }
}

#[repr(C)]
struct Table {
    slots: [Slot; SLOTS],
}

impl Table {
    const fn new() -> Table {
        Table { slots: [const { Slot { down_until: AtomicU64::new(0), errno: AtomicI32::new(0) } }; SLOTS] }
    }
}

/// The shared table, once mapped; never unmapped.
static SHARED: AtomicPtr<Table> = AtomicPtr::new(ptr::null_mut());
/// This process's own table, used until (or unless) the shared one exists.
static LOCAL: Table = Table::new();

fn table() -> &'static Table {
    let shared = SHARED.load(Ordering::Acquire);
    if shared.is_null() {
        return &LOCAL;
    }
    // SAFETY: a non-null SHARED points at a published, zero-initialised mapping of a Table, never
    // unmapped; its fields are atomics, which other processes change only atomically too.
    unsafe { &*shared }
}

/// Maps the shared table (from the library constructor, before any fork). True when it exists.
pub fn create() -> bool {
    if !SHARED.load(Ordering::Acquire).is_null() {
        return true;
    }
    let size = size_of::<Table>();
    // SAFETY: an anonymous shared mapping with no address hint; the result is checked for
    // MAP_FAILED before use.
    let mapped = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        return false;
    }
    // Zeroed memory is a valid Table (every atomic 0: every upstream up), page-aligned.
    match SHARED.compare_exchange(ptr::null_mut(), mapped.cast(), Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => true,
        Err(_) => {
            // SAFETY: our own mapping of `size` bytes, never published.
            unsafe { libc::munmap(mapped, size) };
            true
        }
    }
}

/// Now on `CLOCK_MONOTONIC`, in nanoseconds (never 0).
fn now() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64).max(1)
}

/// If upstream `slot` is down: the errno that put it down and how long it stays down.
pub fn down(slot: usize) -> Option<(Errno, Duration)> {
    table().slots.get(slot)?.down_at(now())
}

/// Upstream `slot` failed with `errno`: skip it for `period`.
pub fn mark_down(slot: usize, errno: Errno, period: Duration) {
    if let Some(s) = table().slots.get(slot) {
        s.mark_down_at(errno, period, now());
    }
}

/// Upstream `slot` answered: up again for everyone.
pub fn mark_up(slot: usize) {
    if let Some(s) = table().slots.get(slot)
        && s.down_until.load(Ordering::Relaxed) != 0
    {
        s.down_until.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_for_the_period_then_up() {
        // Both tests use the shared table, whichever runs first.
        assert!(create());
        mark_down(7, libc::ECONNREFUSED, Duration::from_millis(200));
        let (errno, left) = down(7).unwrap();
        assert_eq!(errno, libc::ECONNREFUSED);
        assert!(left <= Duration::from_millis(200) && left > Duration::from_millis(100), "{left:?}");
        assert_eq!(down(8), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(down(7), None);
        mark_down(9, libc::ETIMEDOUT, Duration::from_secs(60));
        mark_up(9);
        assert_eq!(down(9), None);
        assert_eq!(down(SLOTS), None, "out of range is up, never a panic");
        mark_down(SLOTS, 1, Duration::from_secs(1));
    }

    /// The period is exact to the nanosecond: down until its last one, up from the deadline on.
    #[test]
    fn down_until_the_deadline_exactly() {
        let s = Slot { down_until: AtomicU64::new(0), errno: AtomicI32::new(0) };
        assert_eq!(s.down_at(1), None, "all zeroes: up");
        s.mark_down_at(libc::EHOSTUNREACH, Duration::from_nanos(500), 1_000);
        assert_eq!(s.down_at(1_000), Some((libc::EHOSTUNREACH, Duration::from_nanos(500))));
        assert_eq!(s.down_at(1_499), Some((libc::EHOSTUNREACH, Duration::from_nanos(1))));
        assert_eq!(s.down_at(1_500), None);
        s.mark_down_at(libc::ETIMEDOUT, Duration::MAX, 1_000);
        assert_eq!(s.down_at(u64::MAX - 1), Some((libc::ETIMEDOUT, Duration::from_nanos(1))), "saturates");
    }

    /// What a forked child learns, its parent knows, and the other way round.
    #[test]
    fn forked_processes_share_the_table_both_ways() {
        assert!(create());
        // SAFETY: the child only stores to atomics in the shared mapping and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            mark_down(3, libc::EHOSTUNREACH, Duration::from_secs(60));
            let seen = down(4).is_some_and(|(e, _)| e == libc::ENETUNREACH);
            // Wait (bounded) for the parent's mark.
            let mut ok = seen;
            for _ in 0..500 {
                if ok {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
                ok = down(4).is_some_and(|(e, _)| e == libc::ENETUNREACH);
            }
            // SAFETY: leaving the child without running the test harness's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        mark_down(4, libc::ENETUNREACH, Duration::from_secs(60));
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child never saw the parent's mark");
        assert_eq!(down(3).map(|(e, _)| e), Some(libc::EHOSTUNREACH), "the parent never saw the child's mark");
        mark_up(3);
        mark_up(4);
    }
}
