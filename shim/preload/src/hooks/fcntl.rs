//! fcntl(2) and fcntl64 (what Python calls): F_DUPFD and F_DUPFD_CLOEXEC make duplicates.
//!
//! fcntl is variadic and Rust cannot define variadic functions on stable. On the Linux ABIs we
//! build for (x86_64 SysV, AArch64), a variadic int, long or pointer travels in the same integer
//! register as a fixed argument, so a third `usize` parameter receives it unchanged.

use std::ffi::c_int;

use socks4_shim::{ops, sys::real};

fn after(fd: c_int, cmd: c_int, ret: c_int) -> c_int {
    if ret >= 0 && (cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC) {
        super::note(|| ops::fds::duplicated(fd, ret));
    }
    ret
}

/// # Safety
///
/// The fcntl(2) contract for `cmd` and its argument.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: the program's own arguments, forwarded unchanged.
    after(fd, cmd, unsafe { real::fcntl(fd, cmd, arg) })
}

/// # Safety
///
/// The fcntl(2) contract for `cmd` and its argument.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: the program's own arguments, forwarded unchanged.
    after(fd, cmd, unsafe { real::fcntl64(fd, cmd, arg) })
}
