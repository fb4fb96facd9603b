//! The `user` key: who socks4d becomes once its listeners are open when
//! started as root (a port below 1024 outside systemd), and the checks that
//! the switch really happened.

use std::ffi::CString;

/// A local user, resolved when the configuration is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: libc::uid_t,
    /// The user's primary group: socks4d's only group after the switch.
    pub gid: libc::gid_t,
}

impl User {
    /// Looks `name` up in the user database (getpwnam_r: /etc/passwd, or
    /// whatever NSS is set up to ask).
    ///
    /// # Errors
    ///
    /// No such user, or the lookup failed.
    pub fn lookup(name: &str) -> Result<User, String> {
        User::lookup_growing(name, 1024)
    }

    /// [`User::lookup`] starting with a `start`-byte buffer for the entry's
    /// strings, grown as getpwnam_r asks (up to 1 MiB).
    fn lookup_growing(name: &str, start: usize) -> Result<User, String> {
        let c_name = CString::new(name).map_err(|_| format!("{name:?}: a user name has no NUL byte"))?;
        let mut buf = vec![0u8; start];
        loop {
            // SAFETY: a zeroed passwd is a valid value for getpwnam_r to fill.
            let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
            let mut found: *mut libc::passwd = std::ptr::null_mut();
            // SAFETY: every pointer is valid for the call; buf's length is
            // passed with it, and pwd's strings point into buf, which
            // outlives their use below (only numbers are copied out).
            let rc =
                unsafe { libc::getpwnam_r(c_name.as_ptr(), &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
            if rc == libc::ERANGE && buf.len() < 1 << 20 {
                buf.resize(buf.len() * 4, 0);
                continue;
            }
            if rc != 0 {
                return Err(format!("cannot look up user {name:?}: {}", std::io::Error::from_raw_os_error(rc)));
            }
            if found.is_null() {
                return Err(format!("no such user {name:?}"));
            }
            return Ok(User { name: name.to_owned(), uid: pwd.pw_uid, gid: pwd.pw_gid });
        }
    }
}

/// What [`become_user`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Was root; now the user, with its primary group only.
    Dropped,
    /// Already running as that user and group (systemd's `User=`, say).
    AlreadyThere,
}

/// Becomes `user`: supplementary groups cleared, then the primary group,
/// then the user id (in that order: after setuid, setgid is no longer
/// allowed). glibc applies each to every thread of the process. Checked
/// afterwards, including that root cannot be taken back.
///
/// # Errors
///
/// Not root and not already that user (fail closed: socks4d does not serve
/// as anyone but the user it was told to be), or a call failed.
pub fn become_user(user: &User) -> Result<Switch, String> {
    // SAFETY (all four): these calls only read the process's credentials.
    let current = unsafe { (libc::getuid(), libc::geteuid(), libc::getgid(), libc::getegid()) };
    if current == (user.uid, user.uid, user.gid, user.gid) {
        return Ok(Switch::AlreadyThere);
    }
    if current.1 != 0 {
        return Err(format!(
            "user = {:?}: started as uid {} (not root), cannot become uid {}; start as root, or drop the `user` \
             key and let the service manager pick the user",
            user.name, current.1, user.uid
        ));
    }
    let fail = |what: &str| format!("user = {:?}: {what}: {}", user.name, std::io::Error::last_os_error());
    // SAFETY: setgroups with a zero-length list reads no memory.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        return Err(fail("setgroups"));
    }
    // SAFETY: plain credential calls with numbers.
    if unsafe { libc::setgid(user.gid) } != 0 {
        return Err(fail("setgid"));
    }
    // SAFETY: as above.
    if unsafe { libc::setuid(user.uid) } != 0 {
        return Err(fail("setuid"));
    }
    // SAFETY: reading the credentials again.
    let now = unsafe { (libc::getuid(), libc::geteuid(), libc::getgid(), libc::getegid()) };
    // SAFETY: a zero-length query only returns the count.
    let groups = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if now != (user.uid, user.uid, user.gid, user.gid) || groups != 0 {
        return Err(format!("user = {:?}: still uid/gid {now:?} with {groups} groups after the switch", user.name));
    }
    // SAFETY: as above; it must fail now unless the user is root itself.
    if user.uid != 0 && unsafe { libc::setuid(0) } == 0 {
        return Err(format!("user = {:?}: could take root back after the switch", user.name));
    }
    Ok(Switch::Dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_users_up() {
        let root = User::lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(User::lookup("no-such-user-socks4d").unwrap_err().contains("no such user"));
        assert!(User::lookup("a\0b").is_err());
    }

    /// An entry longer than the first buffer (root's strings need more than 8 bytes) is looked up
    /// again in a larger one.
    #[test]
    fn a_long_entry_grows_the_buffer() {
        // A retry loop that never ends fails the test in seconds.
        let (root, missing) = crate::test_support::on_thread_within(std::time::Duration::from_secs(5), || {
            (User::lookup_growing("root", 8), User::lookup_growing("no-such-user-socks4d", 8))
        });
        let root = root.unwrap();
        assert_eq!((root.name.as_str(), root.uid, root.gid), ("root", 0, 0));
        assert!(missing.unwrap_err().contains("no such user"));
    }

    #[test]
    fn staying_the_same_user_is_no_switch() {
        // SAFETY: reading credentials.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let me = User { name: "me".into(), uid, gid };
        // Only when uid == euid and gid == egid, as in a plain test run.
        assert_eq!(become_user(&me), Ok(Switch::AlreadyThere));
    }
}
