//! The `ssm-sim` binary, for the tests and benchmarks of the other workspace crates that run it as
//! its own process (`scripts/demo` as a newcomer runs it, the load benchmark that measures the
//! proxy apart from the simulator). Cargo tells only this crate's own tests where its binary is
//! (`CARGO_BIN_EXE_ssm-sim`), so [`path`] builds it with cargo into the calling executable's target
//! directory and profile, once per process.
//!
//! The build selects the whole workspace and its examples as well as the binary: cargo then
//! resolves features as it does for `cargo test` (examples, like tests, bring in the
//! dev-dependencies, whose features are unified with everyone's), so the dependencies the tests
//! were built with are reused. `cargo build -p ssm-sim` alone would resolve features without
//! them and rebuild a good part of the dependency tree a second time (minutes on two cores).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of the `ssm-sim` binary, built (or found up to date) for the profile of the running
/// test or benchmark: `target/debug/ssm-sim` beside `target/debug/deps/<test>`,
/// `target/release/ssm-sim` for benchmarks.
///
/// # Panics
///
/// When the build fails or the binary is not where cargo puts it: a test cannot go on without it.
pub fn path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(build).clone()
}

fn build() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the running executable");
    let profile_dir = profile_dir(&exe);
    let target_dir = profile_dir
        .parent()
        .unwrap_or_else(|| panic!("{} has no parent directory", profile_dir.display()));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build",
            "--workspace",
            "--bin",
            "ssm-sim",
            "--examples",
            "--target-dir",
        ])
        .arg(target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
        None => panic!("{} names no cargo profile", profile_dir.display()),
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
    let bin = profile_dir.join("ssm-sim");
    assert!(
        bin.is_file(),
        "{cmd:?} succeeded but {} is missing",
        bin.display()
    );
    bin
}

/// `target/<profile>` from `target/<profile>/deps/<executable>` (tests, benches) or
/// `target/<profile>/<executable>` (binaries, examples).
fn profile_dir(exe: &Path) -> PathBuf {
    let dir = exe
        .parent()
        .unwrap_or_else(|| panic!("{} has no parent directory", exe.display()));
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("deps" | "examples") => dir.parent().unwrap_or(dir).to_owned(),
        _ => dir.to_owned(),
    }
}
