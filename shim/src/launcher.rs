//! The logic of `socks4-run`: find libsocks4.so, build LD_PRELOAD, and say when preloading cannot
//! work (static binaries, setuid programs).

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub const LIBRARY: &str = "libsocks4.so";

/// libsocks4.so next to the launcher, in `deps/` next to it (cargo's layout), in `../lib/`, or
/// in the system's library directory (the Debian package's place, e.g. /usr/lib/x86_64-linux-gnu).
pub fn find_library(exe_dir: &Path) -> Option<PathBuf> {
    [exe_dir.join(LIBRARY), exe_dir.join("deps").join(LIBRARY), exe_dir.join("../lib").join(LIBRARY)]
        .into_iter()
        .chain(system_library_dir().map(|d| d.join(LIBRARY)))
        .find(|p| p.is_file())
        .map(|p| p.canonicalize().unwrap_or(p))
}

/// The directory this process's libc was loaded from: the loader's library directory for this
/// architecture (multiarch on Debian, /usr/lib64 elsewhere), learned at run time, so the launcher
/// needs no list of architecture names and never picks another architecture's library.
fn system_library_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(Path::new)
        .find(|p| p.file_name().is_some_and(|n| n.as_encoded_bytes().starts_with(b"libc.so")))
        .and_then(Path::parent)
        .map(Path::to_path_buf)
}

/// LD_PRELOAD with `lib` first (so it interposes before anything else) and what was there kept.
pub fn preload_value(lib: &Path, existing: Option<&OsStr>) -> OsString {
    let mut value = OsString::from(lib);
    if let Some(existing) = existing {
        let lib_bytes = lib.as_os_str().as_encoded_bytes();
        let rest: Vec<&[u8]> = existing
            .as_encoded_bytes()
            .split(|&b| b == b':' || b == b' ')
            .filter(|p| !p.is_empty() && *p != lib_bytes)
            .collect();
        for part in rest {
            value.push(":");
            value.push(OsStr::from_bytes(part));
        }
    }
    value
}

/// The program as execvp would find it.
pub fn resolve_program(program: &OsStr, path_var: Option<&OsStr>) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.as_os_str().as_encoded_bytes().contains(&b'/') {
        return Some(p.to_path_buf());
    }
    std::env::split_paths(path_var?).map(|dir| dir.join(p)).find(|c| c.is_file())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linkage {
    /// Has an ELF interpreter: LD_PRELOAD applies.
    Dynamic,
    /// ELF without PT_INTERP (static or static-pie): LD_PRELOAD does nothing.
    Static,
    /// A `#!` script; the interpreter's linkage is what matters.
    Script(PathBuf),
    /// Neither; exec will decide.
    Unknown,
}

/// Reads the ELF program headers to find PT_INTERP.
pub fn linkage(path: &Path) -> std::io::Result<Linkage> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(64 * 1024).read_to_end(&mut bytes)?;
    if let Some(rest) = bytes.strip_prefix(b"#!") {
        let line = rest.split(|&b| b == b'\n').next().unwrap_or(b"");
        let line = String::from_utf8_lossy(line);
        return Ok(line.split_whitespace().next().map_or(Linkage::Unknown, |i| Linkage::Script(i.into())));
    }
    Ok(elf_has_interp(&bytes)
        .map_or(Linkage::Unknown, |interp| if interp { Linkage::Dynamic } else { Linkage::Static }))
}

/// Some(true) if the ELF image has a PT_INTERP program header; None if it is not ELF.
fn elf_has_interp(b: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if b.len() < 52 || &b[..4] != b"\x7fELF" {
        return None;
    }
    let is64 = b[4] == 2;
    let le = b[5] == 1;
    let u16_at = |o: usize| {
        b.get(o..o + 2).map(|s| if le { u16::from_le_bytes([s[0], s[1]]) } else { u16::from_be_bytes([s[0], s[1]]) })
    };
    let u32_at = |o: usize| {
        b.get(o..o + 4).map(|s| {
            let a = [s[0], s[1], s[2], s[3]];
            if le { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) }
        })
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8).map(|s| {
            let a: [u8; 8] = s.try_into().expect("8 bytes");
            if le { u64::from_le_bytes(a) } else { u64::from_be_bytes(a) }
        })
    };
    let (phoff, phentsize, phnum) = if is64 {
        (u64_at(0x20)? as usize, u16_at(0x36)? as usize, u16_at(0x38)? as usize)
    } else {
        (u32_at(0x1c)? as usize, u16_at(0x2a)? as usize, u16_at(0x2c)? as usize)
    };
    // Program headers sit near the start; a header outside what was read counts as "no interp".
    Some((0..phnum).any(|i| u32_at(phoff + i * phentsize) == Some(PT_INTERP)))
}

/// Setuid or setgid: the dynamic loader ignores LD_PRELOAD paths for those.
pub fn is_set_id(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o6000 != 0)
}

/// How socks4-run socksifies a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// LD_PRELOAD=libsocks4.so: no context switch per hooked call.
    Preload,
    /// The seccomp supervisor: reaches static programs, Go and raw system calls.
    Supervise,
}

/// The mode for `program`: the supervisor when the loader would ignore LD_PRELOAD because there
/// is no loader (a static ELF, or a script whose interpreter is one), else the shim.
pub fn pick_mode(program: &OsStr, path_var: Option<&OsStr>) -> Mode {
    let Some(path) = resolve_program(program, path_var) else { return Mode::Preload };
    let target = match linkage(&path) {
        Ok(Linkage::Script(interp)) => interp,
        _ => path,
    };
    match linkage(&target) {
        Ok(Linkage::Static) => Mode::Supervise,
        _ => Mode::Preload,
    }
}

/// Warnings to print before exec'ing `program`, so the shim never silently does nothing.
pub fn warnings(program: &OsStr, path_var: Option<&OsStr>) -> Vec<String> {
    let Some(path) = resolve_program(program, path_var) else { return Vec::new() };
    let mut out = Vec::new();
    let mut target = path.clone();
    if let Ok(Linkage::Script(interp)) = linkage(&path) {
        target = interp;
    }
    if linkage(&target).is_ok_and(|l| l == Linkage::Static) {
        out.push(format!(
            "{} is statically linked: LD_PRELOAD cannot intercept it, its connections will NOT go through SOCKS",
            target.display()
        ));
    }
    if is_set_id(&target) {
        out.push(format!(
            "{} is setuid/setgid: the loader ignores LD_PRELOAD for it, its connections will NOT go through SOCKS",
            target.display()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_puts_ours_first_and_keeps_the_rest() {
        let lib = Path::new("/opt/lib/libsocks4.so");
        assert_eq!(preload_value(lib, None), "/opt/lib/libsocks4.so");
        assert_eq!(preload_value(lib, Some(OsStr::new("/a.so /b.so"))), "/opt/lib/libsocks4.so:/a.so:/b.so");
        assert_eq!(preload_value(lib, Some(OsStr::new("/opt/lib/libsocks4.so:/a.so"))), "/opt/lib/libsocks4.so:/a.so");
    }

    #[test]
    fn recognises_dynamic_elf_and_scripts() {
        assert_eq!(linkage(Path::new("/bin/sh")).unwrap(), Linkage::Dynamic);
        let dir = std::env::temp_dir().join(format!("socks4-launcher-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("s");
        std::fs::write(&script, "#!/bin/sh -e\necho\n").unwrap();
        assert_eq!(linkage(&script).unwrap(), Linkage::Script("/bin/sh".into()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn elf_without_interp_is_static() {
        // A minimal 64-bit little-endian header with one PT_LOAD program header.
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x20] = 64;
        b[0x36] = 56;
        b[0x38] = 1;
        b[64] = 1;
        assert_eq!(elf_has_interp(&b), Some(false));
        b[64] = 3;
        assert_eq!(elf_has_interp(&b), Some(true));
        assert_eq!(elf_has_interp(b"#!/bin/sh"), None);
    }

    /// The library directory is where this architecture's libc is, e.g. /usr/lib/x86_64-linux-gnu
    /// on Debian (the package installs libsocks4.so there).
    #[test]
    fn system_library_dir_holds_libc() {
        let dir = system_library_dir().expect("libc is mapped");
        assert!(
            std::fs::read_dir(&dir).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("libc.so"))
        );
        let empty = std::env::temp_dir().join(format!("socks4-nolib-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let found = find_library(&empty);
        std::fs::remove_dir_all(&empty).unwrap();
        assert_eq!(found.is_some(), dir.join(LIBRARY).is_file());
    }

    #[test]
    fn finds_programs_on_path() {
        assert_eq!(resolve_program(OsStr::new("sh"), Some(OsStr::new("/nonexistent:/bin"))), Some("/bin/sh".into()));
        assert_eq!(resolve_program(OsStr::new("./x"), None), Some("./x".into()));
    }

    #[test]
    fn warns_about_setuid() {
        let dir = std::env::temp_dir().join(format!("socks4-setuid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let prog = dir.join("prog");
        std::fs::copy("/bin/true", &prog).unwrap();
        assert!(warnings(prog.as_os_str(), None).is_empty());
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let w = warnings(prog.as_os_str(), None);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("setuid"), "{w:?}");
    }
}
