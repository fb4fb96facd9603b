//! close, close_range, dup* and fcntl(F_DUPFD*): keep the registry true to the descriptor table.

use std::ffi::c_int;

use crate::registry::{self, Registry};
use crate::sys;

/// The registry, unless there is nothing in it or this is a vfork child (another process sharing
/// the parent's memory, whose descriptor changes are not the parent's).
fn ours() -> Option<&'static Registry> {
    let registry = registry::global();
    (!registry.is_empty() && !registry.is_foreign(sys::pid())).then_some(registry)
}

/// Called before the real close, so a descriptor number reused by another thread right after is
/// never mistaken for the old socket.
pub fn closing(fd: c_int) {
    // close is frequent: look the descriptor up before paying for getpid.
    let registry = registry::global();
    if registry.contains(fd) && !registry.is_foreign(sys::pid()) {
        registry.remove(fd);
    }
}

pub fn closing_range(first: u32, last: u32, flags: c_int) {
    // CLOSE_RANGE_CLOEXEC only marks descriptors; nothing is closed.
    if flags & (libc::CLOSE_RANGE_CLOEXEC as c_int) == 0 {
        let clamp = |n: u32| n.min(i32::MAX as u32) as c_int;
        if let Some(registry) = ours() {
            registry.remove_range(clamp(first), clamp(last));
        }
    }
}

/// `new` now refers to the same socket as `old`.
pub fn duplicated(old: c_int, new: c_int) {
    if let Some(registry) = ours() {
        registry.duplicate(old, new);
    }
}
