//! The re-entrancy guard: a hook called from inside the shim (our own std::fs, getpwuid_r, dlsym, ...)
//! must go straight to libc instead of deciding anything again.

use std::cell::Cell;

thread_local! {
    // const-initialised and without a destructor, so it is usable before any constructor ran and
    // while the thread is being torn down.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Held while the shim works on a hooked call; dropping it lets the next call in.
pub struct Guard(());

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = INSIDE.try_with(|c| c.set(false));
    }
}

/// The guard, or None when this thread is already inside the shim (or its thread-locals are gone):
/// the caller then passes the call through to libc.
pub fn enter() -> Option<Guard> {
    match INSIDE.try_with(|c| c.replace(true)) {
        Ok(false) => Some(Guard(())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_entry_is_refused_until_the_guard_drops() {
        let g = enter().expect("first entry");
        assert!(enter().is_none());
        drop(g);
        assert!(enter().is_some());
    }
}
