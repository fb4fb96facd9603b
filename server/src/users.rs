//! The SOCKS5 users file (`users_file`): `name:hash` lines with bcrypt
//! hashes as `htpasswd -B` writes them, and the password check, which costs
//! the same whether the user exists or not.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::config::ConfigError;

/// A users file larger than this is refused: a million users is far beyond
/// what a flat file is for, and a mistaken path (a device, a log) must not
/// be read without end.
const MAX_FILE_BYTES: u64 = 64 << 20;
/// bcrypt's cost when the file has no user to copy it from (htpasswd -B's default).
const DEFAULT_COST: u32 = 5;
/// The highest cost accepted (htpasswd's own limit): each step doubles the
/// time of a check, and cost 31 would take hours per login (and at load,
/// for the dummy hash).
const MAX_COST: u32 = 17;
/// Fixed, so that loading the same file twice gives an equal value (the dummy
/// hash protects timing, not a secret).
const DUMMY_SALT: [u8; 16] = *b"socks4d-no-user!";

/// The users of a users file, by name.
#[derive(Clone, PartialEq, Eq)]
pub struct Users {
    pub path: PathBuf,
    hashes: HashMap<Vec<u8>, String>,
    /// Checked for a name that is not in the file, so that an unknown user
    /// takes as long as a wrong password: a hash of the cost most users have.
    dummy: String,
}

impl fmt::Debug for Users {
    /// Names only: hashes stay out of logs and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.hashes.keys().map(|n| String::from_utf8_lossy(n)).collect();
        names.sort();
        f.debug_struct("Users").field("path", &self.path).field("names", &names).finish()
    }
}

impl Users {
    /// Reads and checks a users file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] if it cannot be read (or is not a regular file,
    /// or is too large); [`ConfigError::Invalid`] naming the users file's
    /// own line for a bad line.
    pub fn load(path: &Path) -> Result<Users, ConfigError> {
        let text = read_capped(path, MAX_FILE_BYTES)
            .map_err(|source| ConfigError::Read { file: path.display().to_string(), source })?;
        Users::parse(&text, path)
    }

    /// Parses the text of a users file; `path` names it in errors.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] with the line of the first bad entry.
    pub fn parse(text: &str, path: &Path) -> Result<Users, ConfigError> {
        let mut hashes = HashMap::new();
        let mut costs: HashMap<u32, usize> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let bad = |message: String| ConfigError::Invalid {
                file: path.display().to_string(),
                line: i + 1,
                key: "users_file".into(),
                message,
            };
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let (name, hash) = line.split_once(':').ok_or_else(|| bad("expected `name:hash`".into()))?;
            if name.is_empty() || name.len() > 255 {
                return Err(bad("a user name is 1 to 255 bytes (RFC 1929)".into()));
            }
            let cost = bcrypt_cost(hash).ok_or_else(|| {
                bad(format!(
                    "user {name:?}: not a bcrypt hash (`$2y$`, as `htpasswd -B` writes; other schemes are refused)"
                ))
            })?;
            if cost > MAX_COST {
                return Err(bad(format!("user {name:?}: bcrypt cost {cost} is above {MAX_COST} (htpasswd's limit)")));
            }
            if hashes.insert(name.as_bytes().to_vec(), hash.to_string()).is_some() {
                return Err(bad(format!("user {name:?} appears twice")));
            }
            *costs.entry(cost).or_default() += 1;
        }
        let cost = costs.into_iter().max_by_key(|&(cost, n)| (n, cost)).map_or(DEFAULT_COST, |(cost, _)| cost);
        let dummy = bcrypt::hash_with_salt(b"no such user", cost, DUMMY_SALT)
            .map_err(|e| ConfigError::Invalid {
                file: path.display().to_string(),
                line: 1,
                key: "users_file".into(),
                message: format!("bcrypt: {e}"),
            })?
            .format_for_version(bcrypt::Version::TwoY);
        Ok(Users { path: path.to_path_buf(), hashes, dummy })
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `password` is `name`'s. Slow on purpose (bcrypt): call it off
    /// the session threads. A name that is not in the file is checked
    /// against the dummy hash, so it costs the same time and says no.
    pub fn verify(&self, name: &[u8], password: &[u8]) -> bool {
        match self.hashes.get(name) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, &self.dummy);
                false
            }
        }
    }
}

/// The text of a regular file of at most `cap` bytes (a larger one, or a
/// FIFO or a device, is an error, never a hang or a huge read).
fn read_capped(path: &Path, cap: u64) -> std::io::Result<String> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(path)?.take(cap + 1).read_to_string(&mut text)?;
    if text.len() as u64 > cap {
        return Err(std::io::Error::other(format!("larger than {cap} bytes")));
    }
    Ok(text)
}

/// The cost of a well-formed bcrypt hash (`$2a$`, `$2b$`, `$2x$`, `$2y$`,
/// two-digit cost 4-31, 53 characters of salt and hash), else `None`.
fn bcrypt_cost(hash: &str) -> Option<u32> {
    let rest = ["$2a$", "$2b$", "$2x$", "$2y$"].iter().find_map(|p| hash.strip_prefix(p))?;
    let (cost, tail) = rest.split_once('$')?;
    let cost: u32 = cost.parse().ok().filter(|c| (4..=31).contains(c) && cost.len() == 2)?;
    let b64 = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '/';
    (tail.len() == 53 && tail.chars().all(b64)).then_some(cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    // `htpasswd -nbB fred s3cret` (cost 5).
    const FRED: &str = "fred:$2y$05$0cURcgVZ4lxAQ450..dGAeCZDnIKrJDHZroKJFVzmjSMIUYm/vVOS";

    fn users(text: &str) -> Result<Users, ConfigError> {
        Users::parse(text, Path::new("users"))
    }

    fn line_of(text: &str) -> usize {
        match users(text) {
            Err(ConfigError::Invalid { line, key, .. }) => {
                assert_eq!(key, "users_file");
                line
            }
            other => panic!("expected an error: {other:?}"),
        }
    }

    /// A well-formed hash of cost `cost` (never verified here, so any salt and hash will do).
    fn hash_of_cost(cost: &str) -> String {
        format!("$2y${cost}${}", "a".repeat(53))
    }

    #[test]
    fn limits_of_names_costs_and_hashes() {
        let name = |len: usize| format!("{}:{}\n", "n".repeat(len), hash_of_cost("04"));
        assert_eq!(users(&name(255)).map(|u| u.len()).ok(), Some(1));
        assert_eq!(line_of(&format!("{}{}", name(1), name(256))), 2);
        // Two cheap users besides: the dummy hash then costs 4, not 17 (seconds).
        let cheap = format!("b:{}\nc:{}\n", hash_of_cost("04"), hash_of_cost("04"));
        assert_eq!(users(&format!("a:{}\n{cheap}", hash_of_cost("17"))).map(|u| u.len()).ok(), Some(3));
        assert_eq!(line_of(&format!("{cheap}a:{}\n", hash_of_cost("18"))), 3);
        for bad in ["4", "03", "32", "99", "004"] {
            assert_eq!(line_of(&format!("a:{}\n", hash_of_cost(bad))), 1, "cost {bad:?}");
        }
        assert_eq!(line_of("a:$2y$04$short\n"), 1);
        assert!(users("# nobody yet\n").unwrap().is_empty());
        assert!(!users(FRED).unwrap().is_empty());
    }

    /// The dummy hash an unknown name is checked against has the cost most users have, so that
    /// it takes as long as most wrong passwords.
    #[test]
    fn the_dummy_hash_has_the_commonest_cost() {
        let text = format!("a:{}\nb:{}\nc:{}\n", hash_of_cost("04"), hash_of_cost("06"), hash_of_cost("04"));
        assert!(users(&text).unwrap().dummy.starts_with("$2y$04$"));
        let text = format!("a:{}\nb:{}\nc:{}\n", hash_of_cost("06"), hash_of_cost("04"), hash_of_cost("06"));
        assert!(users(&text).unwrap().dummy.starts_with("$2y$06$"));
    }

    /// Debug (panics, logs) shows the names, never a hash.
    #[test]
    fn debug_shows_names_not_hashes() {
        let shown = format!("{:?}", users(FRED).unwrap());
        assert!(shown.contains("\"fred\"") && !shown.contains("$2y$"), "{shown}");
    }

    #[test]
    fn file_size_is_capped_exactly() {
        let dir = std::env::temp_dir().join(format!("socks4d-users-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users");
        std::fs::write(&path, "x".repeat(100)).unwrap();
        assert_eq!(read_capped(&path, 100).map(|t| t.len()).ok(), Some(100));
        assert!(read_capped(&path, 99).is_err());
        assert!(read_capped(&dir, 100).is_err(), "a directory");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn verifies_htpasswd_hashes() {
        let hash = bcrypt::hash_with_salt(b"s3cret", 5, *b"0123456789abcdef")
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        let u = users(&format!("# comment\n\nfred:{hash}\r\n{}\n", FRED.replace("fred", "htfred"))).unwrap();
        assert_eq!(u.len(), 2);
        assert!(u.verify(b"htfred", b"s3cret"), "htpasswd's own hash");
        assert!(u.verify(b"fred", b"s3cret"));
        assert!(!u.verify(b"fred", b"s3cre"));
        assert!(!u.verify(b"bob", b"s3cret"));
        assert!(u.dummy.starts_with("$2y$05$"), "{}", u.dummy);
        // Debug shows names, never hashes.
        assert!(!format!("{u:?}").contains('$'), "{u:?}");
        assert_eq!(bcrypt_cost(FRED.split_once(':').unwrap().1), Some(5));
    }

    #[test]
    fn names_the_line_of_a_bad_entry() {
        assert_eq!(line_of("fred\n"), 1);
        assert_eq!(line_of(&format!("{FRED}\n\nbob:{{SHA}}abc\n")), 3);
        assert_eq!(line_of(&format!("{FRED}\nbob:$apr1$x$y\n")), 2);
        assert_eq!(line_of(&format!("{FRED}\n{FRED}\n")), 2);
        assert_eq!(line_of(":$2y$05$0cURcgVZ4lxAQ450..dGAeCZDnIKrJDHZroKJFVzmjSMIUYm/vVOS\n"), 1);
        assert_eq!(line_of("fred:$2y$05$short\n"), 1);
        // Cheap users first: were cost 31 ever taken, the dummy hash would still cost 4, so a
        // regression fails here at once instead of hashing for hours.
        let cheap = format!("b:{}\nc:{}\n", hash_of_cost("04"), hash_of_cost("04"));
        assert_eq!(line_of(&format!("{cheap}fred:$2y$31$0cURcgVZ4lxAQ450..dGAeCZDnIKrJDHZroKJFVzmjSMIUYm/vVOS\n")), 3);
        assert_eq!(line_of("fred:$2y$99$0cURcgVZ4lxAQ450..dGAeCZDnIKrJDHZroKJFVzmjSMIUYm/vVOS\n"), 1);
    }

    #[test]
    fn loading_twice_gives_the_same_users() {
        assert_eq!(users(FRED).unwrap(), users(FRED).unwrap());
        assert!(users("").unwrap().is_empty());
    }
}
