//! Shell completions and man pages, generated from the clap definitions: bash really completes
//! subcommands and flag values with the generated script, zsh and fish scripts name the binary,
//! and the man pages render with groff without warnings and carry every subcommand.

use std::process::{Command, Stdio};

use crate::common::process::BIN;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout_of(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A private directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("rdsiam-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What bash's completion offers for the words of `line` (the last one being completed), using
/// the generated script.
fn bash_complete(script: &std::path::Path, line: &[&str]) -> Vec<String> {
    let words: Vec<String> = line.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_LINE='{}'\nCOMP_POINT=${{#COMP_LINE}}\n\
         _rds__iam__proxy rds-iam-proxy '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        words.join(" "),
        line.len() - 1,
        line.join(" "),
        line[line.len() - 1],
        line[line.len().saturating_sub(2)],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completion_completes_subcommands_and_values() {
    let dir = TempDir::new("completions");
    let script = dir.0.join("rds-iam-proxy.bash");
    std::fs::write(&script, stdout_of(&["completions", "bash"])).unwrap();

    // Registered for the binary's name.
    let out = Command::new("bash")
        .args([
            "--norc",
            "--noprofile",
            "-c",
            &format!("source '{}' && complete -p rds-iam-proxy", script.display()),
        ])
        .output()
        .unwrap();
    let registered = String::from_utf8_lossy(&out.stdout);
    assert!(
        registered.contains("-F _rds__iam__proxy") && registered.contains("rds-iam-proxy"),
        "{registered}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let offered = bash_complete(&script, &["rds-iam-proxy", "do"]);
    assert_eq!(offered, ["doctor"], "{offered:?}");
    let offered = bash_complete(&script, &["rds-iam-proxy", "--log-format", ""]);
    assert!(
        offered.contains(&"text".to_owned()) && offered.contains(&"json".to_owned()),
        "{offered:?}"
    );
    let offered = bash_complete(&script, &["rds-iam-proxy", "doctor", "--st"]);
    assert!(offered.contains(&"--stack".to_owned()), "{offered:?}");
    let offered = bash_complete(&script, &["rds-iam-proxy", "completions", ""]);
    for shell in ["bash", "zsh", "fish"] {
        assert!(offered.contains(&shell.to_owned()), "{offered:?}");
    }
}

#[test]
fn zsh_and_fish_scripts_are_for_this_binary() {
    let zsh = stdout_of(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef rds-iam-proxy"), "{zsh:.200}");
    assert!(zsh.contains("'--max-sigterm-delay=[") && zsh.contains("doctor"));
    let fish = stdout_of(&["completions", "fish"]);
    assert!(fish.contains("complete -c rds-iam-proxy"), "{fish:.200}");
    assert!(fish.contains("-l health-addr"), "{fish:.400}");

    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("possible values") && err.contains("bash"),
        "{err}"
    );
}

/// groff's warnings for a man page (none expected), and its text rendering.
fn render(page: &[u8]) -> (String, String) {
    use std::io::Write;
    let mut child = Command::new("groff")
        // Plain text: no bold, underline or overstrike sequences (grotty -c -b -o -u).
        .args(["-k", "-man", "-Tutf8", "-ww", "-P-cbou"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("groff (Debian's groff-base)");
    child.stdin.take().unwrap().write_all(page).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn man_pages_render_and_cover_every_subcommand() {
    let page = run(&["man"]);
    assert!(page.status.success());
    assert!(page.stdout.starts_with(b".ie"), "a roff page");
    let (warnings, text) = render(&page.stdout);
    assert!(warnings.is_empty(), "{warnings}");
    for needle in [
        "NAME",
        "SYNOPSIS",
        "SUBCOMMANDS",
        "rds-iam-proxy-doctor(1)",
        "--max-sigterm-delay",
    ] {
        assert!(text.contains(needle), "no {needle} in:\n{text}");
    }

    let dir = TempDir::new("man");
    let out = run(&["man", "--out-dir", dir.0.to_str().unwrap()]);
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    for sub in [
        "doctor",
        "init",
        "token",
        "exec",
        "dsn",
        "wait",
        "admin",
        "completions",
        "man",
    ] {
        let path = dir.0.join(format!("rds-iam-proxy-{sub}.1"));
        assert!(listed.contains(path.to_str().unwrap()), "{listed}");
        let (warnings, _) = render(&std::fs::read(&path).unwrap());
        assert!(warnings.is_empty(), "{sub}: {warnings}");
    }
    let (_, doctor) = render(&std::fs::read(dir.0.join("rds-iam-proxy-doctor.1")).unwrap());
    assert!(doctor.contains("--stack"), "{doctor}");
    assert!(dir.0.join("rds-iam-proxy.1").is_file());
}
