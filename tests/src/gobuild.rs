//! Builds the tests' Go programs (tests/go/NAME) as static binaries: CGO_ENABLED=0, standard
//! library only, offline, once per test process, with the Go build cache under cargo's target dir.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

static BUILT: OnceLock<Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();

/// The static binary of tests/go/`name`, built on first use.
///
/// # Panics
/// When `go build` fails (with its output).
pub fn go_binary(name: &str) -> PathBuf {
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let source = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/go")).join(name);
    // target/<profile>/deps/<test-binary> -> target/go: kept across runs, so the cache is warm.
    let exe = std::env::current_exe().expect("current_exe");
    let work = exe.ancestors().nth(3).expect("test binary under target/<profile>/deps").join("go");
    let out = work.join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("create the Go work dir");
    let result = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg(".")
        .current_dir(&source)
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOCACHE", work.join("cache"))
        .env("GOPATH", work.join("gopath"))
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap_or_else(|e| panic!("run go build (is golang-go installed? scripts/test installs it): {e}"));
    assert!(
        result.status.success(),
        "go build of {} failed:\n{}{}",
        source.display(),
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    built.push((name.to_string(), out.clone()));
    out
}
