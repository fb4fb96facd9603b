//! The placeholder pool for names resolved on the far side (SOCKS4A).
//!
//! With `remote_dns` on, a lookup of a name the shim will proxy is answered
//! with a placeholder address from `240.0.0.0/8` (reserved, never routed,
//! not multicast, so tools that reject multicast still accept it), and
//! `connect` to that placeholder becomes a SOCKS4A request for the name.
//!
//! The table lives in an anonymous `MAP_SHARED` mapping created on first
//! use, so a child forked after its parent resolved a name sees the same
//! mapping (and names the child adds are seen by the parent). Slot `i`
//! holds placeholder `240.0.0.0 + i + 1`; a name is stored once, so two
//! names never share a placeholder. When the table is full, lookups fail
//! rather than recycle a placeholder that some socket may still use.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// First address of the placeholder network (240.0.0.0/8).
pub const POOL_NET: Ipv4Addr = Ipv4Addr::new(240, 0, 0, 0);
/// Number of names one process tree can hold.
pub const SLOTS: usize = 4096;
/// Longest name stored (a DNS name is at most 253 characters).
pub const MAX_NAME: usize = 253;

#[repr(C)]
struct Slot {
    len: u32,
    name: [u8; MAX_NAME],
}

#[repr(C)]
struct Table {
    /// 0 = free, 1 = held. Shared across processes, so no std lock.
    lock: AtomicU32,
    used: AtomicU32,
    slots: [Slot; SLOTS],
}

static TABLE: AtomicPtr<Table> = AtomicPtr::new(ptr::null_mut());

/// Why a name could not get a placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// The shared mapping could not be created.
    NoMemory,
    /// All placeholders are in use.
    Full,
    /// Longer than a DNS name can be.
    NameTooLong,
}

/// Is `ip` a placeholder this pool could have handed out?
pub fn is_placeholder(ip: Ipv4Addr) -> bool {
    ip.octets()[0] == POOL_NET.octets()[0] && slot_of(ip).is_some()
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

/// The shared table, created on first use. Never blocks: two threads racing
/// both map, one wins, the other unmaps its copy.
fn table() -> Option<&'static Table> {
    let current = TABLE.load(Ordering::Acquire);
    if !current.is_null() {
        // SAFETY: a non-null TABLE points at a live mapping of a Table that is
        // never unmapped; all shared fields are atomics or guarded by `lock`.
        return Some(unsafe { &*current });
    }
    let size = std::mem::size_of::<Table>();
    // SAFETY: an anonymous shared mapping with no address hint; the result is
    // checked for MAP_FAILED before use. Zeroed pages are a valid empty Table.
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
    let mapped = mapped.cast::<Table>();
    match TABLE.compare_exchange(ptr::null_mut(), mapped, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: we just published this mapping; see above.
        Ok(_) => Some(unsafe { &*mapped }),
        Err(winner) => {
            // SAFETY: `mapped` is our own mapping of `size` bytes, never shared.
            unsafe { libc::munmap(mapped.cast(), size) };
            // SAFETY: the winner's mapping is live and never unmapped.
            Some(unsafe { &*winner })
        }
    }
}

/// Creates the shared table now. Called from the library constructor when remote DNS is on: a
/// table first created in a forked child (lftp resolves in one) would be that child's alone.
pub fn create() -> bool {
    table().is_some()
}

/// Holds the cross-process spin lock. A holder that died (killed between
/// lock and unlock, a few instructions) would wedge the pool, so waiting is
/// bounded and then the lock is taken over.
struct Guard<'a>(&'a Table);

impl<'a> Guard<'a> {
    fn lock(table: &'a Table) -> Self {
        for spin in 0u32.. {
            if table.lock.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                break;
            }
            if spin > 1_000_000 {
                break;
            }
            if spin > 100 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        Guard(table)
    }

    fn slots(&self) -> *mut Slot {
        ptr::addr_of!(self.0.slots).cast_mut().cast()
    }

    fn used(&self) -> usize {
        (self.0.used.load(Ordering::Relaxed) as usize).min(SLOTS)
    }

    fn name(&self, slot: usize) -> &[u8] {
        // SAFETY: slot < SLOTS (callers iterate below `used`, which is capped),
        // and slots are written only while the lock is held, which we hold.
        let s = unsafe { &*self.slots().add(slot) };
        &s.name[..(s.len as usize).min(MAX_NAME)]
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.lock.store(0, Ordering::Release);
    }
}

/// The placeholder for `name`, handing out a new one if the name is new.
/// Names are compared case-insensitively, as DNS does.
///
/// # Errors
///
/// [`PoolError::NameTooLong`], [`PoolError::Full`], [`PoolError::NoMemory`].
pub fn placeholder_for(name: &str) -> Result<Ipv4Addr, PoolError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() > MAX_NAME {
        return Err(PoolError::NameTooLong);
    }
    let table = table().ok_or(PoolError::NoMemory)?;
    let guard = Guard::lock(table);
    let used = guard.used();
    if let Some(slot) = (0..used).find(|&i| guard.name(i).eq_ignore_ascii_case(name.as_bytes())) {
        return Ok(placeholder(slot));
    }
    if used == SLOTS {
        return Err(PoolError::Full);
    }
    // SAFETY: `used` < SLOTS and we hold the lock, so no one else writes it.
    let slot = unsafe { &mut *guard.slots().add(used) };
    slot.name[..name.len()].copy_from_slice(name.as_bytes());
    slot.len = name.len() as u32;
    table.used.store(used as u32 + 1, Ordering::Release);
    Ok(placeholder(used))
}

/// The placeholder already handed out for `name`, without adding one.
pub fn find(name: &str) -> Option<Ipv4Addr> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let table = TABLE.load(Ordering::Acquire);
    if table.is_null() {
        return None;
    }
    // SAFETY: a non-null TABLE is a live mapping that is never unmapped.
    let guard = Guard::lock(unsafe { &*table });
    (0..guard.used()).find(|&i| guard.name(i).eq_ignore_ascii_case(name.as_bytes())).map(placeholder)
}

/// The name behind a placeholder, if this process tree handed it out.
pub fn name_for(ip: Ipv4Addr) -> Option<String> {
    let slot = slot_of(ip)?;
    let table = TABLE.load(Ordering::Acquire);
    if table.is_null() {
        return None;
    }
    // SAFETY: a non-null TABLE is a live mapping that is never unmapped.
    let guard = Guard::lock(unsafe { &*table });
    (slot < guard.used()).then(|| String::from_utf8_lossy(guard.name(slot)).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_same_placeholder_and_back() {
        let a = placeholder_for("files.internal").unwrap();
        assert!(is_placeholder(a));
        assert_eq!(placeholder_for("FILES.internal.").unwrap(), a);
        assert_eq!(name_for(a).as_deref(), Some("files.internal"));
    }

    #[test]
    fn distinct_names_distinct_placeholders() {
        let a = placeholder_for("a.example").unwrap();
        let b = placeholder_for("b.example").unwrap();
        assert_ne!(a, b);
        assert_eq!(name_for(b).as_deref(), Some("b.example"));
    }

    #[test]
    fn pool_is_class_e_not_multicast() {
        let a = placeholder_for("c.example").unwrap();
        assert!(!a.is_multicast());
        assert_eq!(a.octets()[0], 240);
        assert!(!is_placeholder(Ipv4Addr::new(240, 0, 0, 0)));
        assert!(!is_placeholder(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(name_for(Ipv4Addr::new(240, 0, 255, 255)), None);
    }

    #[test]
    fn rejects_overlong_names() {
        assert_eq!(placeholder_for(&"x".repeat(254)), Err(PoolError::NameTooLong));
    }

    #[test]
    fn forked_child_sees_parent_names_and_parent_sees_childs() {
        let parent_ip = placeholder_for("parent.example").unwrap();
        // SAFETY: the child only touches the shared table and exits with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // No allocation here: other test threads may hold malloc's lock.
            let ok = find("parent.example") == Some(parent_ip) && placeholder_for("child.example").is_ok();
            // SAFETY: leaving the forked child without running the parent's
            // test harness teardown.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for the child we just forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(libc::WEXITSTATUS(status), 0);
        let child_ip = find("child.example").expect("the parent sees the name its child added");
        assert_eq!(name_for(child_ip).as_deref(), Some("child.example"));
        assert_ne!(child_ip, parent_ip);
    }
}
