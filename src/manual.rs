//! Shell completions and man pages, generated from the clap definitions in [`crate::cli`], so
//! they list exactly the flags, subcommands and value choices the binary accepts.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;

/// The binary's name, as completions and man pages call it.
pub const BIN: &str = "rds-iam-proxy";

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> std::io::Result<()> {
    // Generated in memory first: the generator panics on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut script);
    if shell == clap_complete::Shell::Bash {
        script = fix_bash_labels(&script);
    }
    out.write_all(&script)
}

/// clap_complete 4.6 names the bash `case` labels of subcommands after the binary with its dashes
/// turned into `__subcmd__` (`rds__subcmd__iam__subcmd__proxy__subcmd__doctor)`), while the
/// variable they are matched against turns them into `__` (`rds__iam__proxy__subcmd__doctor`),
/// so no subcommand's flags would complete. Renames the labels to match.
fn fix_bash_labels(script: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(script);
    let wrong = format!("{}__subcmd__", BIN.replace('-', "__subcmd__"));
    let right = format!("{}__subcmd__", BIN.replace('-', "__"));
    text.lines()
        .map(
            |line| match line.trim_start().strip_prefix(wrong.as_str()) {
                Some(rest) if line.trim_end().ends_with(')') => {
                    let indent = &line[..line.len() - line.trim_start().len()];
                    format!("{indent}{right}{rest}\n")
                }
                _ => format!("{line}\n"),
            },
        )
        .collect::<String>()
        .into_bytes()
}

/// Writes the main man page (section 1), with its list of subcommands, to `out`.
pub fn man_page(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

/// Writes `rds-iam-proxy.1` and `rds-iam-proxy-<command>.1` for each subcommand into `dir`
/// (created if missing); returns the files written.
pub fn write_man_pages(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let main = dir.join(format!("{BIN}.1"));
    man_page(&mut std::fs::File::create(&main)?)?;
    written.push(main);
    let cmd = Cli::command();
    for sub in cmd.get_subcommands() {
        let name = format!("{BIN}-{}", sub.get_name());
        let path = dir.join(format!("{name}.1"));
        let page = sub
            .clone()
            .name(name)
            .version(cmd.get_version().unwrap_or_default().to_owned());
        clap_mangen::Man::new(page).render(&mut std::fs::File::create(&path)?)?;
        written.push(path);
    }
    Ok(written)
}
