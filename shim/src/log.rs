//! The shim's logger: one line per message, formatted on the stack and written to fd 2 with the real
//! `write`, prefixed `socks4[pid]: `. No tracing subscriber lives inside a foreign process.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Set once when the configuration is loaded (SOCKS4_DEBUG or `debug = true`).
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// A fixed buffer that keeps what fits and drops the rest, so logging never allocates.
struct Line {
    buf: [u8; 1024],
    len: usize,
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Keep one byte for the newline.
        let room = self.buf.len() - 1 - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes `socks4[pid]: <args>\n` to stderr in one write.
pub fn line(args: fmt::Arguments<'_>) {
    let mut l = Line { buf: [0; 1024], len: 0 };
    let _ = write!(l, "socks4[{}]: ", crate::sys::pid());
    let _ = l.write_fmt(args);
    l.buf[l.len] = b'\n';
    crate::sys::write_stderr(&l.buf[..=l.len]);
}

/// A line the user must see: a refused or failed connection, a broken configuration.
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::log::line(format_args!($($t)*)) };
}

/// One line per decision, only with SOCKS4_DEBUG=1.
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => {
        if $crate::log::debug_enabled() {
            $crate::log::line(format_args!($($t)*))
        }
    };
}

pub use crate::{debug, error};
