//! Memory of a server and all its descendants, read from /proc: danted
//! forks dozens of children, so one PID's RSS would flatter it.
//!
//! Summed RSS counts shared pages (code, copy-on-write heap) once per
//! process, as `ps` would; PSS divides each shared page among its sharers,
//! so the PSS sum is what the tree really costs. Both are reported.

use std::collections::{BTreeSet, HashMap};
use std::fs;

/// Memory of a process tree, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeMemory {
    pub processes: usize,
    pub rss_kib: u64,
    pub pss_kib: u64,
}

/// The parent PID from the text of `/proc/PID/stat`. The command name in
/// parentheses may itself hold spaces or parentheses, so parse after the
/// last `)`.
pub fn parent_from_stat(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    // " S PPID ..."
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The value in kB of a `Key:   123 kB` line of a /proc status-like file.
pub fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix(key)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
}

/// `roots` and every live descendant.
pub fn tree(roots: &[u32]) -> BTreeSet<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if let Some(ppid) =
                fs::read_to_string(format!("/proc/{pid}/stat")).ok().as_deref().and_then(parent_from_stat)
            {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut todo: Vec<u32> = roots.to_vec();
    while let Some(pid) = todo.pop() {
        if seen.insert(pid) {
            todo.extend(children.get(&pid).into_iter().flatten().copied());
        }
    }
    seen
}

/// Sums RSS and PSS over `roots` and their descendants. A process that
/// exits while we read it is skipped.
pub fn measure(roots: &[u32]) -> TreeMemory {
    let mut total = TreeMemory::default();
    for pid in tree(roots) {
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
        let Some(rss) = kib_field(&status, "VmRSS") else { continue };
        let pss = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|s| kib_field(&s, "Pss"))
            .unwrap_or(rss);
        total.processes += 1;
        total.rss_kib += rss;
        total.pss_kib += pss;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_survives_odd_command_names() {
        assert_eq!(parent_from_stat("1234 (dan ted) S 77 1234 1234 0"), Some(77));
        assert_eq!(parent_from_stat("9 (a) b)) R 1 9 9"), Some(1));
        assert_eq!(parent_from_stat("garbage"), None);
    }

    #[test]
    fn reads_kib_fields() {
        let status = "Name:\tdanted\nVmRSS:\t    4312 kB\nVmSwap:\t0 kB\n";
        assert_eq!(kib_field(status, "VmRSS"), Some(4312));
        assert_eq!(kib_field(status, "VmHWM"), None);
        assert_eq!(kib_field("Pss_Anon:  1 kB\nPss:  20 kB\n", "Pss"), Some(20));
    }

    #[test]
    fn measures_this_process() {
        let me = measure(&[std::process::id()]);
        assert!(me.processes >= 1);
        assert!(me.rss_kib > 100, "{me:?}");
        assert!(me.pss_kib > 0 && me.pss_kib <= me.rss_kib, "{me:?}");
    }
}
