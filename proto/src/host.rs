//! Host names, checked and compared in one place: the names SOCKS4A and SOCKS5
//! requests carry, the server's rules (`to = ["*.example.com"]`) and the
//! shim's `direct_names` and lookups all go through here.
//!
//! A host name is ASCII letters, digits, `-`, `_` and dots between labels: no
//! empty label, except that one trailing dot (the DNS root) may end the name
//! and then names the same host as the name without it. Letters compare
//! without regard to case (RFC 4343). Nothing else is accepted, so a name can
//! be logged and matched against rules without surprises.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

/// Why some text is not a host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostNameError {
    #[error("host name is empty")]
    Empty,
    #[error("host name is not a valid DNS name (letters, digits, `-`, `_`, and dots between labels)")]
    Invalid,
}

/// Checks a name as it came (off the wire, out of a file) and returns it as
/// text, case and trailing dot kept.
///
/// Every check is about a prefix (a bad byte, a leading dot, two dots in a
/// row), so a decoder may call this on the part of a name received so far
/// and refuse garbage before the rest arrives.
///
/// # Errors
///
/// [`HostNameError::Empty`], [`HostNameError::Invalid`].
pub fn validate(bytes: &[u8]) -> Result<&str, HostNameError> {
    if bytes.is_empty() {
        return Err(HostNameError::Empty);
    }
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
    if !bytes.iter().all(allowed) || bytes[0] == b'.' || bytes.windows(2).any(|w| w == b"..") {
        return Err(HostNameError::Invalid);
    }
    std::str::from_utf8(bytes).map_err(|_| HostNameError::Invalid)
}

/// `name` without its one trailing dot: `example.com.` and `example.com`
/// are the same host.
pub fn strip_root(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// Whether `a` and `b` name the same host: case and a trailing dot aside.
pub fn same_name(a: &str, b: &str) -> bool {
    strip_root(a).eq_ignore_ascii_case(strip_root(b))
}

/// Whether `name` is `domain` itself or a name below it: `example.com` and
/// `www.example.com` are within `example.com`; `badexample.com` is not.
pub fn is_within(name: &str, domain: &str) -> bool {
    same_name(name, domain) || is_below(name, domain)
}

/// Whether `name` is strictly below `domain`, as `*.example.com` means in
/// the server's rules: `www.example.com` is, `example.com` itself is not.
pub fn is_below(name: &str, domain: &str) -> bool {
    let (name, domain) = (strip_root(name).as_bytes(), strip_root(domain).as_bytes());
    // Bytes, not str slicing: a caller's name may hold any UTF-8, and a
    // byte index into it must not panic on a character boundary.
    name.len() > domain.len() + 1
        && name[name.len() - domain.len() - 1] == b'.'
        && name[name.len() - domain.len()..].eq_ignore_ascii_case(domain)
}

/// A validated host name in its one spelling: lower case, no trailing dot.
/// Equal values name the same host, so it can be compared, hashed and
/// printed (in the `--check` output, say) as is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostName(String);

impl HostName {
    /// Validates `s` (see [`validate`]) and normalizes it.
    ///
    /// # Errors
    ///
    /// [`HostNameError::Empty`], [`HostNameError::Invalid`].
    pub fn parse(s: &str) -> Result<HostName, HostNameError> {
        let name = validate(s.as_bytes())?;
        Ok(HostName(strip_root(name).to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HostName {
    type Err = HostNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostName::parse(s)
    }
}

impl Deref for HostName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<HostName> for String {
    fn from(name: HostName) -> String {
        name.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_accepts_dns_names_as_they_came() {
        for ok in ["a", "example.com", "Files.Internal", "_sip._tcp.example.com", "x-1.y_2", "example.com.", "1.2.3.4"]
        {
            assert_eq!(validate(ok.as_bytes()), Ok(ok), "{ok:?}");
        }
        let longest = "a".repeat(255);
        assert_eq!(validate(longest.as_bytes()), Ok(longest.as_str()));
    }

    #[test]
    fn validate_rejects_empty() {
        assert_eq!(validate(b""), Err(HostNameError::Empty));
    }

    #[test]
    fn validate_rejects_bad_bytes_leading_dot_and_empty_labels() {
        for bad in [&b"a b"[..], b"a/b", b"a:80", b"a\0", b"\xff", b"\xc3\xa9", b".", b"..", b".x", b"a..b", b"a.."] {
            assert_eq!(validate(bad), Err(HostNameError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn validate_refuses_a_bad_prefix_already() {
        // What a decoder relies on to refuse garbage early.
        for prefix in [&b"."[..], b"a..", b"a b"] {
            assert_eq!(validate(prefix), Err(HostNameError::Invalid), "{prefix:?}");
        }
    }

    #[test]
    fn strip_root_removes_one_trailing_dot() {
        assert_eq!(strip_root("example.com."), "example.com");
        assert_eq!(strip_root("example.com"), "example.com");
        assert_eq!(strip_root("."), "");
        assert_eq!(strip_root("a.."), "a.");
    }

    #[test]
    fn same_name_ignores_case_and_root_dot() {
        assert!(same_name("LocalHost.", "localhost"));
        assert!(same_name("localhost", "LOCALHOST."));
        assert!(same_name("a.b", "a.b"));
        assert!(!same_name("localhost", "localhost2"));
        assert!(!same_name("a.b", "b"));
        assert!(!same_name("a..", "a"));
    }

    #[test]
    fn is_within_is_the_domain_or_below() {
        for (name, domain) in [
            ("example.com", "example.com"),
            ("Example.COM.", "example.com"),
            ("www.example.com", "example.com"),
            ("a.b.Example.com.", "EXAMPLE.com."),
            ("x.localhost", "localhost"),
        ] {
            assert!(is_within(name, domain), "{name:?} within {domain:?}");
        }
        for (name, domain) in
            [("badexample.com", "example.com"), ("com", "example.com"), ("example.com.evil", "example.com"), ("", "a")]
        {
            assert!(!is_within(name, domain), "{name:?} within {domain:?}");
        }
    }

    #[test]
    fn is_below_is_strictly_below() {
        for (name, domain) in [("www.example.com", "example.com"), ("A.B.Example.Com.", "example.com"), ("x.c", "c")] {
            assert!(is_below(name, domain), "{name:?} below {domain:?}");
        }
        for (name, domain) in [
            ("example.com", "example.com"),
            ("example.com.", "example.com"),
            ("badexample.com", "example.com"),
            (".example.com", "example.com"),
            ("com", "example.com"),
            ("", "example.com"),
        ] {
            assert!(!is_below(name, domain), "{name:?} below {domain:?}");
        }
    }

    #[test]
    fn matching_never_panics_on_multibyte_names() {
        assert!(!is_below("é.example.com", "xample.com"));
        assert!(!is_below("ééé", "é"));
        assert!(!is_within("xé", "é"));
        assert!(is_below("é.x", "x"));
    }

    #[test]
    fn host_name_has_one_spelling() {
        let name = HostName::parse("Files.Internal.").unwrap();
        assert_eq!(name.as_str(), "files.internal");
        assert_eq!(name.to_string(), "files.internal");
        assert_eq!(name, "FILES.internal".parse().unwrap());
        assert_eq!(&*name, "files.internal");
        assert_eq!(String::from(name), "files.internal");
    }

    #[test]
    fn host_name_parse_errors() {
        assert_eq!(HostName::parse(""), Err(HostNameError::Empty));
        assert_eq!(HostName::parse("."), Err(HostNameError::Invalid));
        assert_eq!(HostName::parse("a..b"), Err(HostNameError::Invalid));
        assert_eq!(HostName::parse("a b"), Err(HostNameError::Invalid));
        assert_eq!("*.a".parse::<HostName>(), Err(HostNameError::Invalid));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(HostNameError::Empty.to_string(), "host name is empty");
        assert!(HostNameError::Invalid.to_string().starts_with("host name is not a valid DNS name"));
    }
}
