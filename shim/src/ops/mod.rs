//! The safe core behind the hooks: each function decides what one intercepted call does.
//!
//! A hook turns the answer into C once: [`Verdict::Pass`] -> the real libc call,
//! [`Verdict::Done`] -> the return value (and out-parameters), [`Verdict::Fail`] -> errno and -1.
//! The hooks and the seccomp supervisor reach the upstreams only through `connect::decide`,
//! `connect::through_proxy`, `bind::through_proxy` and `accept::second_reply`, which go through
//! [`proxy`]: one implementation of routes, failover, chains and both SOCKS versions for both.

pub mod accept;
pub mod bind;
pub mod connect;
pub mod dns;
pub mod fds;
pub mod names;
pub mod proxy;

use crate::sys::Errno;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<T> {
    /// Not ours: call libc's function with the program's own arguments.
    Pass,
    /// Handled: this is the result.
    Done(T),
    /// Handled and failed with this errno.
    Fail(Errno),
}
