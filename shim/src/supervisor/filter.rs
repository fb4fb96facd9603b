//! The seccomp filter the program runs under, what the kernel must offer for it, and the child's
//! side of the start: install the filter with a listener, hand the listener to the supervisor,
//! exec the program.
//!
//! The filter sends to the supervisor only the calls it must see: connect, bind, listen, accept,
//! accept4, getsockname, getpeername, sendto with an address or MSG_FASTOPEN, and recvfrom asking
//! for the source address (remote DNS). Everything else, data included, runs at full speed.
//! io_uring_setup fails with ENOSYS so no socket call can slip past through a ring; a foreign
//! system-call ABI (32-bit or x32 code) kills the process rather than run unsupervised.

use std::ffi::{CString, c_int};

use crate::sys::Errno;

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
/// x32 system calls share x86_64's audit arch, with this bit set in the number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Offsets into struct seccomp_data.
const NR: u32 = 0;
const ARCH: u32 = 4;
const fn arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
const fn arg_hi(i: u32) -> u32 {
    20 + 8 * i
}

/// The calls the supervisor answers.
pub const NOTIFIED: [i64; 7] = [
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
];

/// One instruction with symbolic jump targets, resolved by `assemble`.
#[derive(Clone, Copy)]
enum Op {
    Load(u32),
    /// if A == k goto target (else fall through)
    JumpIfEq(u32, Label),
    /// if A != k goto target
    JumpIfNe(u32, Label),
    /// if A >= k goto target
    JumpIfGe(u32, Label),
    /// if A & k goto target
    JumpIfSet(u32, Label),
    Ret(u32),
    Mark(Label),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Label {
    Notify,
    Kill,
    Enosys,
    Allow,
    SendTo,
    RecvFrom,
}

fn program() -> Vec<Op> {
    use Label::*;
    use Op::*;
    let mut p = vec![Load(ARCH), JumpIfNe(NATIVE_ARCH, Kill), Load(NR)];
    if cfg!(target_arch = "x86_64") {
        p.push(JumpIfGe(X32_SYSCALL_BIT, Kill));
    }
    p.push(JumpIfEq(libc::SYS_io_uring_setup as u32, Enosys));
    for nr in NOTIFIED {
        p.push(JumpIfEq(nr as u32, Notify));
    }
    p.push(JumpIfEq(libc::SYS_sendto as u32, SendTo));
    p.push(JumpIfEq(libc::SYS_recvfrom as u32, RecvFrom));
    p.extend([
        Mark(Allow),
        Ret(libc::SECCOMP_RET_ALLOW),
        // sendto(fd, buf, len, flags, dest_addr, addrlen): a TCP Fast Open connect, or a datagram
        // with an address (a DNS query); plain send() passes no address.
        Mark(SendTo),
        Load(arg_lo(3)),
        JumpIfSet(libc::MSG_FASTOPEN as u32, Notify),
        Load(arg_lo(4)),
        JumpIfNe(0, Notify),
        Load(arg_hi(4)),
        JumpIfNe(0, Notify),
        Ret(libc::SECCOMP_RET_ALLOW),
        // recvfrom(fd, buf, len, flags, src_addr, addrlen): only when the source is asked for
        // (resolvers check it); recv() passes none.
        Mark(RecvFrom),
        Load(arg_lo(4)),
        JumpIfNe(0, Notify),
        Load(arg_hi(4)),
        JumpIfNe(0, Notify),
        Ret(libc::SECCOMP_RET_ALLOW),
        // Jumps only go forward: the shared returns come last.
        Mark(Notify),
        Ret(libc::SECCOMP_RET_USER_NOTIF),
        Mark(Enosys),
        Ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        Mark(Kill),
        Ret(libc::SECCOMP_RET_KILL_PROCESS),
    ]);
    p
}

/// Classic BPF: jumps are forward offsets from the next instruction.
fn assemble(ops: &[Op]) -> Vec<libc::sock_filter> {
    let mut at = Vec::new();
    let mut n = 0usize;
    for op in ops {
        match op {
            Op::Mark(l) => at.push((*l, n)),
            _ => n += 1,
        }
    }
    let target = |l: Label, from: usize| -> u8 {
        let to = at.iter().find(|(m, _)| *m == l).expect("label").1;
        u8::try_from(to.checked_sub(from + 1).expect("forward jump")).expect("short jump")
    };
    let mut out = Vec::new();
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    for op in ops {
        let i = out.len();
        let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter { code: code as u16, jt, jf, k };
        let ins = match *op {
            Op::Mark(_) => continue,
            Op::Load(off) => stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, off),
            Op::Ret(k) => stmt(libc::BPF_RET | libc::BPF_K, k),
            Op::JumpIfEq(k, l) => jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, k, target(l, i), 0),
            Op::JumpIfNe(k, l) => jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, k, 0, target(l, i)),
            Op::JumpIfGe(k, l) => jump(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K, k, target(l, i), 0),
            Op::JumpIfSet(k, l) => jump(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, k, target(l, i), 0),
        };
        out.push(ins);
    }
    out
}

/// The filter, built before fork (the child must not allocate).
pub struct Filter {
    code: Vec<libc::sock_filter>,
}

impl Filter {
    pub fn new() -> Self {
        Filter { code: assemble(&program()) }
    }

    /// Installs the filter on the calling thread (the child, single-threaded, before exec) and
    /// returns the listener. Async-signal-safe: no allocation.
    pub fn install(&self) -> Result<c_int, Errno> {
        let prog = libc::sock_fprog { len: self.code.len() as u16, filter: self.code.as_ptr().cast_mut() };
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(crate::sys::errno());
        }
        // SAFETY: prog points at `len` valid instructions that outlive the call (the kernel copies
        // them).
        let fd = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                // SPEC_ALLOW: a filter does not also force speculative-execution mitigations on the
                // program (they cost speed, and this filter is no security boundary).
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
                &prog as *const libc::sock_fprog,
            )
        };
        if fd < 0 { Err(crate::sys::errno()) } else { Ok(fd as c_int) }
    }
}

impl Default for Filter {
    fn default() -> Self {
        Self::new()
    }
}

/// Linux 5.14: seccomp user notification (5.0), pidfd_getfd (5.6), ADDFD (5.9) with
/// SECCOMP_ADDFD_FLAG_SEND (5.14).
pub const MINIMUM_KERNEL: (u32, u32) = (5, 14);

/// Says what this kernel lacks for the supervisor, if anything.
///
/// # Errors
///
/// One sentence naming the missing feature.
pub fn check_kernel() -> Result<(), String> {
    let release = kernel_release().unwrap_or_default();
    let version: Vec<u32> =
        release.split(|c: char| !c.is_ascii_digit()).take(2).filter_map(|s| s.parse().ok()).collect();
    if let [major, minor] = version[..]
        && (major, minor) < MINIMUM_KERNEL
    {
        return Err(format!(
            "Linux {release} is older than {}.{}, which the supervisor needs (seccomp user notification with \
             SECCOMP_ADDFD_FLAG_SEND, pidfd_getfd)",
            MINIMUM_KERNEL.0, MINIMUM_KERNEL.1
        ));
    }
    let action = libc::SECCOMP_RET_USER_NOTIF;
    // SAFETY: GET_ACTION_AVAIL reads one u32.
    let avail = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_GET_ACTION_AVAIL, 0, &action as *const u32) };
    if avail != 0 {
        return Err(format!("seccomp user notification is not available ({})", std::io::Error::last_os_error()));
    }
    let mut sizes = libc::seccomp_notif_sizes { seccomp_notif: 0, seccomp_notif_resp: 0, seccomp_data: 0 };
    // SAFETY: GET_NOTIF_SIZES writes one seccomp_notif_sizes.
    if unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_GET_NOTIF_SIZES, 0, &mut sizes) } != 0 {
        return Err(format!("cannot read seccomp notification sizes ({})", std::io::Error::last_os_error()));
    }
    if usize::from(sizes.seccomp_notif) != size_of::<libc::seccomp_notif>()
        || usize::from(sizes.seccomp_notif_resp) != size_of::<libc::seccomp_notif_resp>()
    {
        return Err(format!(
            "this kernel's seccomp notification layout ({} and {} bytes) is not the one socks4-run knows",
            sizes.seccomp_notif, sizes.seccomp_notif_resp
        ));
    }
    super::program::probe_pidfd_getfd().map_err(|e| {
        format!("pidfd_getfd does not work here ({}): a newer kernel is needed", std::io::Error::from_raw_os_error(e))
    })
}

fn kernel_release() -> Option<String> {
    // SAFETY: utsname is plain bytes, valid zeroed; uname fills it or fails.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    // SAFETY: on success release is NUL-terminated within the array.
    Some(unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }.to_string_lossy().into_owned())
}

/// What the child execs, prepared before fork.
pub struct Exec {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_on_their_labels() {
        let code = assemble(&program());
        // Every jump stays inside the program and every path ends in a return.
        for (i, ins) in code.iter().enumerate() {
            if ins.code as u32 & 0x07 == libc::BPF_JMP {
                assert!(i + 1 + (ins.jt as usize) < code.len() && i + 1 + (ins.jf as usize) < code.len());
            }
        }
        assert_eq!(code.last().map(|i| i.code as u32), Some(libc::BPF_RET | libc::BPF_K));
    }
}
