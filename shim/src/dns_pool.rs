//! The placeholder pool for names resolved on the far side (remote DNS).
//!
//! With `remote_dns` on, a lookup of a name the shim will proxy is answered with a placeholder
//! address from `240.0.0.0/8` (reserved, never routed, not multicast, so tools that reject
//! multicast still accept it), and `connect` to that placeholder becomes a request carrying the
//! name.
//!
//! The table lives in an anonymous `MAP_SHARED` mapping created on first use, so a child forked
//! after its parent resolved a name sees the same mapping (and names the child adds are seen by
//! the parent). Slot `i` holds placeholder `240.0.0.0 + i + 1`; a name is stored once, so a name
//! always gets the same placeholder and two names never share one. When the table is full,
//! lookups fail rather than recycle a placeholder that some socket may still use.
//!
//! The processes of the tree take turns through a process-shared **robust** mutex in the mapping:
//! if a process dies holding it (killed between lock and unlock), the next locker is told
//! (`EOWNERDEAD`), marks it consistent and goes on. The table cannot be left half-changed by such
//! a death: a name is written into the first free slot first and only then counted, so a slot
//! cut off mid-write lies beyond `used` and is overwritten by the next insert. Waiting for the lock
//! is bounded ([`LOCK_WAIT`]; a holder stopped with SIGSTOP, say): then the lookup fails, it never
//! goes ahead unlocked.
//!
//! The table's logic ([`Names`]) is plain safe code over `&`/`&mut`, tested on its own (also
//! under Miri); the `unsafe` here is the mapping, the mutex, and turning "lock held" into the
//! one `&mut Names` that exists at a time.

use std::cell::UnsafeCell;
use std::net::Ipv4Addr;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

use socks4_proto::host;

/// First address of the placeholder network (240.0.0.0/8).
pub const POOL_NET: Ipv4Addr = Ipv4Addr::new(240, 0, 0, 0);
/// Number of names one process tree can hold.
pub const SLOTS: usize = 4096;
/// Longest name stored (a DNS name is at most 253 characters).
pub const MAX_NAME: usize = 253;
/// How long a lookup waits for another thread or process to release the table.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Why a name could not get a placeholder, or a placeholder its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The shared mapping or its lock could not be created.
    #[error("the placeholder table cannot be created")]
    NoMemory,
    /// All placeholders are in use.
    #[error("all placeholders are in use")]
    Full,
    /// Longer than a DNS name can be.
    #[error("the name is longer than a DNS name can be")]
    NameTooLong,
    /// The lock was held longer than [`LOCK_WAIT`], or cannot be taken at all.
    #[error("the placeholder table is locked by a process that does not let go")]
    Busy,
}

/// One stored name.
#[repr(C)]
struct Slot {
    len: u32,
    name: [u8; MAX_NAME],
}

/// The names of the process tree: slot `i` for `i < used`. Only ever seen through the lock.
#[repr(C)]
pub(crate) struct Names {
    used: u32,
    slots: [Slot; SLOTS],
}

impl Names {
    /// The slots in use. `used` and `len` are re-checked on every read: the memory is shared with
    /// other processes, so the values are only as sane as their last writer.
    fn used(&self) -> usize {
        (self.used as usize).min(SLOTS)
    }

    fn name(&self, slot: usize) -> &[u8] {
        let s = &self.slots[slot];
        &s.name[..(s.len as usize).min(MAX_NAME)]
    }

    /// The slot of `name` (already normalised), if stored.
    fn find(&self, name: &str) -> Option<usize> {
        (0..self.used()).find(|&i| self.name(i).eq_ignore_ascii_case(name.as_bytes()))
    }

    /// The slot of `name`, storing it if it is new: the bytes first, then the count, so a writer
    /// that dies in between leaves nothing half-stored.
    fn insert(&mut self, name: &str) -> Result<usize, PoolError> {
        if name.len() > MAX_NAME {
            return Err(PoolError::NameTooLong);
        }
        if let Some(slot) = self.find(name) {
            return Ok(slot);
        }
        let slot = self.used();
        if slot == SLOTS {
            return Err(PoolError::Full);
        }
        let s = &mut self.slots[slot];
        s.name[..name.len()].copy_from_slice(name.as_bytes());
        s.len = name.len() as u32;
        self.used = slot as u32 + 1;
        Ok(slot)
    }

    /// The name in `slot`, if that slot is in use.
    fn lookup(&self, slot: usize) -> Option<String> {
        (slot < self.used()).then(|| String::from_utf8_lossy(self.name(slot)).into_owned())
    }
}

/// The shared mapping: the lock, then the names it guards.
#[repr(C)]
struct Table {
    lock: UnsafeCell<libc::pthread_mutex_t>,
    names: UnsafeCell<Names>,
}

// SAFETY: `names` is only reached through `Table::lock_names`, which hands out its one `&mut`
// while the mutex is held; the mutex itself is made for concurrent use (process-shared even).
unsafe impl Sync for Table {}

/// The table, published once; never unmapped.
static TABLE: AtomicPtr<Table> = AtomicPtr::new(ptr::null_mut());

/// The names, borrowed while the lock is held; dropping it unlocks.
struct Locked<'a> {
    table: &'a Table,
    names: &'a mut Names,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: we hold this process-shared mutex (Locked exists only while it is held), so
        // unlocking it is ours to do; the mutex lives as long as the mapping, which is forever.
        unsafe { libc::pthread_mutex_unlock(self.table.lock.get()) };
    }
}

impl Table {
    /// Maps and initialises a table: zeroed names, a process-shared robust mutex.
    fn create() -> Option<&'static Table> {
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
            return None;
        }
        let table = mapped.cast::<Table>();
        // SAFETY: `table` is a fresh, zeroed, page-aligned mapping of size_of::<Table>() bytes that
        // nothing else can see yet; zeroed bytes are valid `Names` (no name used), and the mutex is
        // initialised here before the table is published.
        if unsafe { init_robust_mutex((*table).lock.get()) } {
            // SAFETY: the mapping was initialised above and lives forever from here on.
            Some(unsafe { &*table })
        } else {
            // SAFETY: our own mapping of `size` bytes, never published.
            unsafe { libc::munmap(mapped, size) };
            None
        }
    }

    /// Takes the lock, waiting at most [`LOCK_WAIT`]; recovers it from a dead holder.
    fn lock_names(&self) -> Result<Locked<'_>, PoolError> {
        let deadline = deadline_after(LOCK_WAIT);
        // SAFETY: an initialised process-shared mutex and a valid absolute time.
        let rc = unsafe { libc::pthread_mutex_timedlock(self.lock.get(), &deadline) };
        match rc {
            0 => {}
            libc::EOWNERDEAD => {
                // Its holder died. The names need no repair (see the module docs): declare the
                // mutex consistent so it stays usable after we unlock it.
                // SAFETY: we hold the mutex (EOWNERDEAD means the lock was acquired).
                unsafe { libc::pthread_mutex_consistent(self.lock.get()) };
            }
            // ETIMEDOUT, ENOTRECOVERABLE, EDEADLK...: never go ahead unlocked.
            _ => return Err(PoolError::Busy),
        }
        // SAFETY: the mutex is held until the returned Locked drops, so this is the only reference
        // to the names in any thread or process of the tree.
        let names = unsafe { &mut *self.names.get() };
        Ok(Locked { table: self, names })
    }
}

/// Initialises `m` as a process-shared robust mutex (error-checking: a thread that locks it twice
/// gets an error, not a deadlock). False if the system refuses any attribute.
///
/// # Safety
///
/// `m` is valid for writes and not in use by anyone.
unsafe fn init_robust_mutex(m: *mut libc::pthread_mutex_t) -> bool {
    // SAFETY: an attribute object on our stack, initialised before use and destroyed after; `m`
    // is valid and unused (caller).
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        if libc::pthread_mutexattr_init(&mut attr) != 0 {
            return false;
        }
        let ok = libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED) == 0
            && libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST) == 0
            && libc::pthread_mutexattr_settype(&mut attr, libc::PTHREAD_MUTEX_ERRORCHECK) == 0
            && libc::pthread_mutex_init(m, &attr) == 0;
        libc::pthread_mutexattr_destroy(&mut attr);
        ok
    }
}

/// `CLOCK_REALTIME` now + `wait`, as pthread_mutex_timedlock wants it.
fn deadline_after(wait: Duration) -> libc::timespec {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let nanos = now.tv_nsec as u64 + u64::from(wait.subsec_nanos());
    libc::timespec {
        tv_sec: now.tv_sec + wait.as_secs() as libc::time_t + (nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as _,
    }
}

/// The shared table, created on first use. Never blocks: two threads racing both map, one wins,
/// the other unmaps its copy.
fn table() -> Option<&'static Table> {
    let current = TABLE.load(Ordering::Acquire);
    if !current.is_null() {
        // SAFETY: a non-null TABLE points at a published, initialised mapping, never unmapped.
        return Some(unsafe { &*current });
    }
    let mine = Table::create()?;
    let mine_ptr = ptr::from_ref(mine).cast_mut();
    match TABLE.compare_exchange(ptr::null_mut(), mine_ptr, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some(mine),
        Err(winner) => {
            // SAFETY: `mine` was never published, nothing else refers to it; its mutex is unlocked.
            unsafe {
                libc::pthread_mutex_destroy(mine.lock.get());
                libc::munmap(mine_ptr.cast(), size_of::<Table>());
            }
            // SAFETY: the winner's mapping is published, initialised and never unmapped.
            Some(unsafe { &*winner })
        }
    }
}

/// The table if some thread of this process tree already created it.
fn existing() -> Option<&'static Table> {
    let current = TABLE.load(Ordering::Acquire);
    // SAFETY: a non-null TABLE points at a published, initialised mapping, never unmapped.
    (!current.is_null()).then(|| unsafe { &*current })
}

/// Creates the shared table now. Called from the library constructor when remote DNS is on: a
/// table first created in a forked child (lftp resolves in one) would be that child's alone.
pub fn create() -> bool {
    table().is_some()
}

/// Is `ip` a placeholder this pool could have handed out?
pub fn is_placeholder(ip: Ipv4Addr) -> bool {
    slot_of(ip).is_some()
}

fn slot_of(ip: Ipv4Addr) -> Option<usize> {
    let offset = u32::from(ip).checked_sub(u32::from(POOL_NET))?;
    let slot = usize::try_from(offset).ok()?.checked_sub(1)?;
    (slot < SLOTS).then_some(slot)
}

fn placeholder(slot: usize) -> Ipv4Addr {
    // SLOTS is far below 2^24, so this stays inside 240.0.0.0/8.
    Ipv4Addr::from(u32::from(POOL_NET) + slot as u32 + 1)
}

impl Table {
    fn placeholder_for(&self, name: &str) -> Result<Ipv4Addr, PoolError> {
        let name = host::strip_root(name);
        if name.len() > MAX_NAME {
            return Err(PoolError::NameTooLong);
        }
        self.lock_names()?.names.insert(name).map(placeholder)
    }

    fn find(&self, name: &str) -> Result<Option<Ipv4Addr>, PoolError> {
        Ok(self.lock_names()?.names.find(host::strip_root(name)).map(placeholder))
    }

    fn name_for(&self, ip: Ipv4Addr) -> Result<Option<String>, PoolError> {
        let Some(slot) = slot_of(ip) else { return Ok(None) };
        Ok(self.lock_names()?.names.lookup(slot))
    }
}

/// The placeholder for `name`, handing out a new one if the name is new. Names are compared as
/// DNS does (case-insensitively, a trailing dot ignored).
///
/// # Errors
///
/// [`PoolError::NameTooLong`], [`PoolError::Full`], [`PoolError::NoMemory`], [`PoolError::Busy`].
pub fn placeholder_for(name: &str) -> Result<Ipv4Addr, PoolError> {
    table().ok_or(PoolError::NoMemory)?.placeholder_for(name)
}

/// The placeholder already handed out for `name`, without adding one. Allocates nothing.
///
/// # Errors
///
/// [`PoolError::Busy`].
pub fn find(name: &str) -> Result<Option<Ipv4Addr>, PoolError> {
    existing().map_or(Ok(None), |t| t.find(name))
}

/// The name behind a placeholder, if this process tree handed it out.
///
/// # Errors
///
/// [`PoolError::Busy`].
pub fn name_for(ip: Ipv4Addr) -> Result<Option<String>, PoolError> {
    existing().map_or(Ok(None), |t| t.name_for(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of names of our own, on the heap: the logic without the mapping or the lock.
    fn fresh_names() -> Box<Names> {
        // SAFETY: all-zero bytes are a valid Names (plain integers and byte arrays).
        unsafe { Box::<Names>::new_zeroed().assume_init() }
    }

    #[test]
    fn names_are_stored_once_and_compared_as_dns_does() {
        let mut names = fresh_names();
        assert_eq!(names.insert("files.internal"), Ok(0));
        assert_eq!(names.insert("b.example"), Ok(1));
        assert_eq!(names.insert("FILES.Internal"), Ok(0));
        assert_eq!(names.find("b.EXAMPLE"), Some(1));
        assert_eq!(names.find("c.example"), None);
        assert_eq!(names.lookup(0).as_deref(), Some("files.internal"));
        assert_eq!(names.lookup(2), None);
    }

    #[test]
    fn a_full_table_refuses_new_names_but_keeps_old_ones() {
        let mut names = fresh_names();
        names.used = SLOTS as u32 - 1;
        assert_eq!(names.insert("last.example"), Ok(SLOTS - 1));
        assert_eq!(names.insert("one.more.example"), Err(PoolError::Full));
        assert_eq!(names.insert("last.example"), Ok(SLOTS - 1));
        assert_eq!(names.insert(&"x".repeat(MAX_NAME)), Err(PoolError::Full));
        assert_eq!(names.insert(&"x".repeat(MAX_NAME + 1)), Err(PoolError::NameTooLong));
    }

    #[test]
    fn garbage_counts_from_another_process_stay_in_bounds() {
        let mut names = fresh_names();
        names.used = u32::MAX;
        names.slots[0].len = u32::MAX;
        assert_eq!(names.used(), SLOTS);
        assert_eq!(names.name(0).len(), MAX_NAME);
        assert_eq!(names.find("nothing.example"), None);
    }

    #[test]
    fn a_half_written_slot_beyond_used_is_ignored_and_reused() {
        let mut names = fresh_names();
        names.insert("a.example").unwrap();
        // What a writer that died after the bytes but before the count leaves behind.
        names.slots[1].name[..9].copy_from_slice(b"b.example");
        names.slots[1].len = 9;
        assert_eq!(names.find("b.example"), None);
        assert_eq!(names.insert("c.example"), Ok(1));
        assert_eq!(names.lookup(1).as_deref(), Some("c.example"));
    }

    #[test]
    fn placeholders_map_to_slots_and_back() {
        assert_eq!(placeholder(0), Ipv4Addr::new(240, 0, 0, 1));
        assert_eq!(slot_of(Ipv4Addr::new(240, 0, 0, 1)), Some(0));
        assert_eq!(slot_of(placeholder(SLOTS - 1)), Some(SLOTS - 1));
        assert_eq!(slot_of(placeholder(SLOTS - 1).to_bits().wrapping_add(1).into()), None);
        assert_eq!(slot_of(Ipv4Addr::new(240, 0, 0, 0)), None);
        assert_eq!(slot_of(Ipv4Addr::new(239, 255, 255, 255)), None);
        assert!(!is_placeholder(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[cfg(not(miri))]
    mod shared {
        use super::super::*;
        use std::time::Instant;

        #[test]
        fn same_name_same_placeholder_and_back() {
            let a = placeholder_for("files.internal").unwrap();
            assert!(is_placeholder(a));
            assert!(!a.is_multicast());
            assert_eq!(placeholder_for("FILES.internal.").unwrap(), a);
            assert_eq!(name_for(a), Ok(Some("files.internal".into())));
            assert_eq!(find("files.internal"), Ok(Some(a)));
            assert_ne!(placeholder_for("other.internal").unwrap(), a);
            assert_eq!(name_for(Ipv4Addr::new(240, 0, 255, 255)), Ok(None));
            assert_eq!(placeholder_for(&"x".repeat(254)), Err(PoolError::NameTooLong));
        }

        /// Forks a child that runs `body` and exits 0 if it returns true; returns its pid.
        fn fork_child(body: impl FnOnce() -> bool) -> libc::pid_t {
            // SAFETY: the child only runs `body` (the shared table, no allocation-heavy work
            // that could meet a lock another test thread held at fork) and leaves with _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
            if pid == 0 {
                let ok = body();
                // SAFETY: leaving the forked child without running the test harness's teardown.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            pid
        }

        fn exit_code(pid: libc::pid_t) -> i32 {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -libc::WTERMSIG(status) }
        }

        #[test]
        fn forked_child_sees_parent_names_and_parent_sees_childs() {
            let parent_ip = placeholder_for("parent.example").unwrap();
            let pid = fork_child(|| {
                find("parent.example") == Ok(Some(parent_ip)) && placeholder_for("child.example").is_ok()
            });
            assert_eq!(exit_code(pid), 0);
            let child_ip = find("child.example").unwrap().expect("the parent sees the name its child added");
            assert_eq!(name_for(child_ip), Ok(Some("child.example".into())));
            assert_ne!(child_ip, parent_ip);
        }

        /// Writes `n<i>.concurrent` into `buf` without allocating (a forked child must not:
        /// another test thread may have held malloc's lock at the fork).
        fn concurrent_name(buf: &mut [u8; 24], i: usize) -> &str {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            write!(cursor, "n{i}.concurrent").unwrap();
            let len = cursor.position() as usize;
            std::str::from_utf8(&buf[..len]).unwrap()
        }

        /// Forks a child that takes `table`'s lock, says so on a pipe and then holds it until
        /// killed (or for `hold`); returns its pid once it holds the lock.
        fn holder(table: &'static Table, hold: Option<Duration>) -> libc::pid_t {
            let mut pipe = [0 as libc::c_int; 2];
            // SAFETY: a writable array of two descriptors.
            assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
            let pid = fork_child(|| {
                let Ok(_held) = table.lock_names() else { return false };
                // SAFETY: writing one byte from a valid buffer to our pipe.
                unsafe { libc::write(pipe[1], b"L".as_ptr().cast(), 1) };
                match hold {
                    Some(d) => std::thread::sleep(d),
                    None => loop {
                        // SAFETY: pause has no preconditions; SIGKILL ends it.
                        unsafe { libc::pause() };
                    },
                }
                true
            });
            let mut byte = 0u8;
            // SAFETY: reading one byte into a valid buffer; the child writes once it holds the lock.
            let n = unsafe { libc::read(pipe[0], (&raw mut byte).cast(), 1) };
            // SAFETY: our own pipe.
            unsafe {
                libc::close(pipe[0]);
                libc::close(pipe[1]);
            }
            assert_eq!(n, 1, "the holder did not get the lock");
            pid
        }

        /// A table of its own (not the process's): a test holding its lock stops no other test.
        fn private_table() -> &'static Table {
            Table::create().expect("mapping")
        }

        /// A process killed while it holds the lock: the next locker recovers it at once, and
        /// the parent and new children go on resolving, each name with one placeholder.
        #[test]
        fn a_holder_killed_with_the_lock_does_not_wedge_the_tree() {
            let table = private_table();
            let before = table.placeholder_for("before.death").unwrap();
            let pid = holder(table, None);
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            assert_eq!(exit_code(pid), -libc::SIGKILL);

            let started = Instant::now();
            let after = table.placeholder_for("after.death").unwrap();
            assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
            assert_eq!(table.name_for(before), Ok(Some("before.death".into())));
            assert_eq!(table.name_for(after), Ok(Some("after.death".into())));
            assert_eq!(table.placeholder_for("before.death"), Ok(before));

            // Several processes add overlapping names at once; each checks its answers agree.
            let children: Vec<_> = (0..4)
                .map(|c| {
                    fork_child(move || {
                        let mut buf = [0u8; 24];
                        (0..300).all(|i| {
                            let name = concurrent_name(&mut buf, (i * 7 + c * 13) % 100);
                            let ip = table.placeholder_for(name);
                            ip.is_ok() && table.find(name) == ip.map(Some)
                        })
                    })
                })
                .collect();
            for pid in children {
                assert_eq!(exit_code(pid), 0);
            }
            let mut seen = std::collections::HashSet::new();
            let mut buf = [0u8; 24];
            for i in 0..100 {
                let name = concurrent_name(&mut buf, i);
                let ip = table.find(name).unwrap().expect("stored by a child");
                assert_eq!(table.name_for(ip), Ok(Some(name.to_owned())));
                assert!(seen.insert(ip), "two names share {ip}");
            }
        }

        /// A holder that does not let go (alive, not dead) makes lookups fail after LOCK_WAIT,
        /// never go ahead unlocked.
        #[test]
        fn a_stuck_holder_makes_lookups_fail_not_hang() {
            let table = private_table();
            let known = table.placeholder_for("stuck.example").unwrap();
            let pid = holder(table, Some(LOCK_WAIT * 3));
            let started = Instant::now();
            assert_eq!(table.placeholder_for("while.stuck"), Err(PoolError::Busy));
            assert_eq!(table.name_for(known), Err(PoolError::Busy));
            let waited = started.elapsed();
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            exit_code(pid);
            assert!(waited >= LOCK_WAIT * 2 - Duration::from_millis(100), "{waited:?}");
            assert!(waited < LOCK_WAIT * 3, "{waited:?}");
            assert!(table.placeholder_for("after.stuck").is_ok());
        }
    }
}
