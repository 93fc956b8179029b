//! The TOML config file: any number of named databases, served by one process.
//!
//! ```toml
//! # Settings of the process.
//! health-addr = "127.0.0.1:9801"
//! max-sigterm-delay = "30s"
//!
//! # Keys every database inherits unless it sets them itself.
//! [defaults]
//! profile = "dev"
//!
//! [databases.app]
//! stack = "SecureDbConnectionStack"
//! listen = "127.0.0.1:3306"
//!
//! [databases.reporting]
//! db-cluster = "reporting"
//! reader = true
//! ecs-cluster = "bastion"
//! ecs-service = "bastion"
//! db-user = "analyst"
//! listen = "127.0.0.1:3307"
//! ```
//!
//! A database's keys are the proxy's flags without the dashes in front ([`ServeArgs`]), so what
//! works on the command line works in the file. Precedence is flags, then `RDS_IAM_PROXY_*`
//! variables, then the database's table, then `[defaults]`. Unknown keys are refused with the
//! file, line, column and key; a misspelt key never silently does nothing.
//!
//! The default location is `$XDG_CONFIG_HOME/rds-iam-proxy/config.toml`, else
//! `~/.config/rds-iam-proxy/config.toml`; a missing default file is not an error, a missing
//! `--config` file is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::ServeArgs;

/// A config file problem, naming the file (and line and key when the TOML is at fault).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file cannot be read.
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (shown in the message, so not chained as a source too).
        source: std::io::Error,
    },
    /// The TOML is invalid or has an unknown key or a wrong type.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong (names the key).
        message: String,
    },
    /// A key is in the wrong place or a value makes no sense.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `init` would overwrite a file.
    #[error("{} already exists; pass --force to replace it", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// `init` could not write.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why (shown in the message, so not chained as a source too).
        source: std::io::Error,
    },
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct File {
    /// Health and metrics address of the process.
    pub health_addr: Option<String>,
    /// Drain time on SIGINT/SIGTERM.
    #[serde(deserialize_with = "crate::cli::duration")]
    pub max_sigterm_delay: Option<Duration>,
    /// How long to keep accepting after SIGTERM.
    #[serde(deserialize_with = "crate::cli::duration")]
    pub min_sigterm_delay: Option<Duration>,
    /// Keys every database inherits.
    pub defaults: ServeArgs,
    /// The databases, by name.
    pub databases: BTreeMap<String, ServeArgs>,
    /// Where it was read from (set by [`load`]).
    #[serde(skip)]
    pub path: PathBuf,
}

/// The default config path, if a home or XDG directory is known.
pub fn default_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".config"),
    };
    Some(base.join("rds-iam-proxy").join("config.toml"))
}

/// Reads the file named by `--config`, or the default one if it exists.
pub fn load(explicit: Option<&Path>) -> Result<Option<File>, Error> {
    let path = match explicit {
        Some(p) => p.to_owned(),
        None => match default_path() {
            Some(p) if p.exists() => p,
            _ => return Ok(None),
        },
    };
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    parse(&text, &path).map(Some)
}

/// Parses and checks a file's text.
pub fn parse(text: &str, path: &Path) -> Result<File, Error> {
    let mut file: File = toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|s| line_column(text, s.start))
            .unwrap_or((1, 1));
        Error::Parse {
            path: path.to_owned(),
            line,
            column,
            message: e.message().trim_end().to_owned(),
        }
    })?;
    file.path = path.to_owned();
    let invalid = |message: String| Error::Invalid {
        path: path.to_owned(),
        message,
    };
    for (name, db) in std::iter::once(("[defaults]".to_owned(), &file.defaults)).chain(
        file.databases
            .iter()
            .map(|(n, d)| (format!("[databases.{n}]"), d)),
    ) {
        if db.health_addr.is_some()
            || db.max_sigterm_delay.is_some()
            || db.min_sigterm_delay.is_some()
        {
            return Err(invalid(format!(
                "{name}: health-addr, max-sigterm-delay and min-sigterm-delay are settings of the \
                 whole process; put them at the top of the file, before any [table]"
            )));
        }
    }
    for name in file.databases.keys() {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(format!(
                "database name `{name}` may only use letters, digits, - and _"
            )));
        }
    }
    Ok(file)
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The commented example `init` writes.
pub const EXAMPLE: &str = r#"# rds-iam-proxy configuration (the README's "Config file" section explains it).
#
# Each [databases.NAME] table is one local MySQL endpoint. Its keys are the command-line flags
# without the leading dashes (`rds-iam-proxy --help` lists them). Flags and RDS_IAM_PROXY_*
# variables override the file; `rds-iam-proxy NAME` serves only NAME, `rds-iam-proxy` all.

# Settings of the whole process.
# health-addr = "127.0.0.1:9801"    # /startup, /readiness, /liveness, /metrics, POST /quitquitquit
# max-sigterm-delay = "30s"         # let open sessions finish on SIGTERM/SIGINT
# min-sigterm-delay = "10s"         # keep accepting new connections this long after SIGTERM

# Keys every database inherits unless it sets them.
[defaults]
# profile = "dev"                   # AWS profile (SSO, role, keys)
# region = "eu-west-1"
# compression = "auto"              # database leg over SSM: zstd or zlib; "off" never

# The stack deployed from deploy/secure-db-connection.yaml: endpoint, IAM user, region and the
# ECS bastion all come from its outputs.
[databases.main]
stack = "SecureDbConnectionStack"
listen = "127.0.0.1:3306"

# A database found through RDS, reached through an ECS Exec bastion, read-only endpoint.
# [databases.reporting]
# db-cluster = "reporting-cluster"
# reader = true
# ecs-cluster = "bastion"
# ecs-service = "bastion"
# db-user = "analyst"
# listen = "127.0.0.1:3307"

# A known endpoint through an EC2 instance with the SSM agent, found by tag.
# [databases.legacy]
# db-endpoint = "legacy.abc123.eu-west-1.rds.amazonaws.com:3306"
# instance-tag = "Role=bastion"
# db-user = "app"
# listen = "127.0.0.1:3308"

# A database without IAM authentication: log in with the password of a Secrets Manager secret
# ("auto": the MasterUserSecret RDS manages for the cluster, or a stack's DbMasterSecretArn).
# [databases.nologin]
# db-cluster = "old-cluster"
# secret = "auto"                   # or the secret's ARN or name
# ecs-cluster = "bastion"
# ecs-service = "bastion"
# listen = "127.0.0.1:3309"
"#;

/// Writes [`EXAMPLE`] to `path` (creating its directory), refusing to overwrite unless `force`.
pub fn write_example(path: &Path, force: bool) -> Result<(), Error> {
    if path.exists() && !force {
        return Err(Error::Exists {
            path: path.to_owned(),
        });
    }
    let write = |r: std::io::Result<()>| {
        r.map_err(|source| Error::Write {
            path: path.to_owned(),
            source,
        })
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        write(std::fs::create_dir_all(dir))?;
    }
    write(std::fs::write(path, EXAMPLE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<File, Error> {
        parse(text, Path::new("test.toml"))
    }

    #[test]
    fn compression_is_a_key_with_four_values() {
        let f = p("[defaults]\ncompression = \"zstd\"\n[databases.a]\ncompression = \"off\"\n")
            .unwrap();
        assert_eq!(
            f.defaults.compression,
            Some(crate::cli::CompressionMode::Zstd)
        );
        assert_eq!(
            f.databases["a"].compression,
            Some(crate::cli::CompressionMode::Off)
        );
        assert!(p("[defaults]\ncompression = \"fast\"\n").is_err());
    }

    #[test]
    fn the_example_parses() {
        let f = p(EXAMPLE).unwrap();
        assert_eq!(f.databases.len(), 1);
        assert_eq!(
            f.databases["main"].stack.as_deref(),
            Some("SecureDbConnectionStack")
        );
    }

    #[test]
    fn databases_defaults_and_durations() {
        let f = p(r#"
health-addr = "127.0.0.1:9801"
max-sigterm-delay = "45s"
[defaults]
profile = "dev"
[databases.a]
db-endpoint = "a.example:3306"
handshake-timeout = "5s"
reader = true
[databases.b]
stack = "S"
"#)
        .unwrap();
        assert_eq!(f.max_sigterm_delay, Some(Duration::from_secs(45)));
        assert_eq!(f.defaults.profile.as_deref(), Some("dev"));
        assert_eq!(
            f.databases["a"].handshake_timeout,
            Some(Duration::from_secs(5))
        );
        assert!(f.databases["a"].reader);
        assert_eq!(f.databases["b"].stack.as_deref(), Some("S"));
    }

    #[test]
    fn unknown_keys_name_file_line_and_key() {
        let e = p("[databases.a]\ndb-endpoint = \"x:1\"\nlisten-addr = \"127.0.0.1:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("test.toml:3:1: "), "{e}");
        assert!(e.contains("listen-addr"), "{e}");
        let e = p("colour = 1\n").unwrap_err().to_string();
        assert!(
            e.starts_with("test.toml:1:1: ") && e.contains("colour"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_and_places_are_refused() {
        let e = p("[databases.a]\nreader = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("test.toml:2:"), "{e}");
        let e = p("[databases.a]\nhandshake-timeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("soon") && e.contains("test.toml:2:"), "{e}");
        let e = p("[databases.a]\nhealth-addr = \"127.0.0.1:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("top of the file"), "{e}");
        let e = p("[databases.\"a b\"]\n").unwrap_err().to_string();
        assert!(e.contains("may only use"), "{e}");
        assert!(p("[databases.a\n").is_err());
    }

    #[test]
    fn line_columns() {
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("", 9), (1, 1));
    }
}
