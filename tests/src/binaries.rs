//! Builds socks4d, libsocks4.so and socks4-run once per test process and says where they are.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Paths of the project's own programs, freshly built in the running test's profile.
#[derive(Debug)]
pub struct Binaries {
    pub socks4d: PathBuf,
    /// target/<profile>/libsocks4.so
    pub shim: PathBuf,
    pub socks4_run: PathBuf,
}

static BINARIES: OnceLock<Binaries> = OnceLock::new();
static SOCKS4D: OnceLock<PathBuf> = OnceLock::new();

/// Runs `cargo build -p socks4-server -p socks4-shim -p socks4-preload` once per process, so no test ever runs a
/// stale binary or .so (a test binary's dev-dependencies do not rebuild the bins or the cdylib
/// on their own in every case). Nested cargo is fine during `cargo test`: the outer cargo holds
/// no build lock while the tests run.
///
/// # Panics
/// When the build fails (with cargo's output), or a product is missing afterwards.
pub fn binaries() -> &'static Binaries {
    BINARIES.get_or_init(|| {
        let profile_dir = cargo_build(&["socks4-server", "socks4-shim", "socks4-preload"]);
        let binaries = Binaries {
            socks4d: profile_dir.join("socks4d"),
            shim: profile_dir.join("libsocks4.so"),
            socks4_run: profile_dir.join("socks4-run"),
        };
        for p in [&binaries.socks4d, &binaries.shim] {
            assert!(p.exists(), "{} missing after cargo build", p.display());
        }
        binaries
    })
}

/// socks4d alone, freshly built: tests that need only the server do not depend on the shim
/// compiling.
///
/// # Panics
/// When the build fails.
pub fn socks4d_binary() -> &'static PathBuf {
    if let Some(b) = BINARIES.get() {
        return &b.socks4d;
    }
    SOCKS4D.get_or_init(|| {
        let path = cargo_build(&["socks4-server"]).join("socks4d");
        assert!(path.exists(), "{} missing after cargo build", path.display());
        path
    })
}

/// Builds `packages` in the running test's profile; returns target/<profile>.
fn cargo_build(packages: &[&str]) -> PathBuf {
    // target/<profile>/deps/<test-binary> -> target/<profile>
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("test binary under target/<profile>/deps");
    let target_dir = profile_dir.parent().expect("target dir");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--manifest-path", manifest]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    cmd.arg("--target-dir").arg(target_dir);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    profile_dir.to_path_buf()
}
