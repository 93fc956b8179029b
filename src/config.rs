//! Turns the parsed command line into a validated [`Config`]: endpoint and dial address parsed,
//! region resolved (flag, else the endpoint name, else the AWS config), listen address checked.
//! Every error names the flag to fix.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::cli::ServeArgs;
use crate::iam;
use crate::mysql::scramble::PasswordVerifier;
use crate::proxy::ProxyConfig;
use crate::tls::CaSource;

/// The default MySQL port, used when an endpoint omits it.
pub const DEFAULT_PORT: u16 = 3306;

/// Where the proxy listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3306";

/// A configuration error, worded as the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// `--db-endpoint` is not HOST[:PORT].
    #[error(
        "--db-endpoint `{0}` is not HOST:PORT (for example mydb.cluster-abc.eu-west-1.rds.amazonaws.com:3306)"
    )]
    BadEndpoint(String),
    /// No region could be found.
    #[error("cannot tell which AWS region `{0}` is in: pass --region (or set AWS_REGION)")]
    NoRegion(String),
    /// `--listen` is not an IP:PORT.
    #[error("--listen `{0}` is not IP:PORT (for example 127.0.0.1:3306)")]
    BadListen(String),
    /// `--listen` is not a loopback address.
    #[error(
        "--listen {0} is not a loopback address: anyone who can reach it would get into the \
         database as you. Listen on 127.0.0.1 (or ::1), or add --allow-remote together with \
         --local-password"
    )]
    NotLoopback(SocketAddr),
    /// `--allow-remote` without a password.
    #[error("--allow-remote needs --local-password: remote clients must prove who they are")]
    RemoteWithoutPassword,
    /// `--health-addr` is not an IP:PORT.
    #[error("--health-addr `{0}` is not IP:PORT (for example 127.0.0.1:9801)")]
    BadHealthAddr(String),
    /// No endpoint given.
    #[error("--db-endpoint is required")]
    NoEndpoint,
}

/// Everything `main` needs to run the proxy.
#[derive(Debug, Clone)]
pub struct Config {
    /// Local TCP listen address (`None`: only the Unix socket).
    pub listen: Option<SocketAddr>,
    /// Local Unix-domain socket, if one was asked for.
    pub unix_socket: Option<PathBuf>,
    /// Health and metrics address, if enabled.
    pub health: Option<SocketAddr>,
    /// Where TCP connections go.
    pub dial: String,
    /// AWS profile, if one was named.
    pub profile: Option<String>,
    /// The SSM target, when the transport is Session Manager.
    pub ssm_target: Option<String>,
    /// Warm SSM sessions (default chosen by the pool).
    pub ssm_sessions: Option<usize>,
    /// The engine configuration.
    pub proxy: ProxyConfig,
}

/// Splits `HOST[:PORT]` (IPv6 as `[addr]:port`).
pub fn parse_endpoint(s: &str) -> Result<(String, u16), Error> {
    let bad = || Error::BadEndpoint(s.to_owned());
    let s = s.trim();
    if s.is_empty() || s.contains('/') || s.contains(char::is_whitespace) {
        return Err(bad());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return Err(bad()),
        };
        return Ok((host.to_owned(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            let port: u16 = port.parse().map_err(|_| bad())?;
            if port == 0 {
                return Err(bad());
            }
            Ok((host.to_owned(), port))
        }
        Some(_) => Err(bad()),
        None => Ok((s.to_owned(), DEFAULT_PORT)),
    }
}

/// The region tokens are signed for: the flag, else the one in the endpoint name, else the AWS
/// config's.
pub fn resolve_region(
    flag: Option<String>,
    host: &str,
    aws_region: Option<String>,
) -> Result<String, Error> {
    flag.or_else(|| iam::region_from_endpoint(host))
        .or(aws_region)
        .ok_or_else(|| Error::NoRegion(host.to_owned()))
}

/// Builds the configuration. `aws_region` is the region the AWS config resolved, if any.
pub fn build(args: &ServeArgs, aws_region: Option<String>) -> Result<Config, Error> {
    let endpoint = args.db_endpoint.as_deref().ok_or(Error::NoEndpoint)?;
    let (host, port) = parse_endpoint(endpoint)?;
    let region = resolve_region(args.region.clone(), &host, aws_region)?;
    let unix_socket = args
        .unix_socket
        .clone()
        .filter(|p| !p.as_os_str().is_empty());
    // A Unix socket alone replaces the TCP listener; an explicit --listen keeps both.
    let listen_text = match (&args.listen, &unix_socket) {
        (Some(l), _) => Some(l.as_str()),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_LISTEN),
    };
    let listen: Option<SocketAddr> = listen_text
        .map(|t| t.parse().map_err(|_| Error::BadListen(t.to_owned())))
        .transpose()?;
    let local_password = args.local_password.as_ref().filter(|p| !p.is_empty());
    let remote_allowed = args.allow_remote && local_password.is_some();
    if let Some(listen) = listen
        && !listen.ip().is_loopback()
        && !remote_allowed
    {
        return Err(Error::NotLoopback(listen));
    }
    if args.allow_remote && local_password.is_none() {
        return Err(Error::RemoteWithoutPassword);
    }
    let dial = args.dial.clone().unwrap_or_else(|| {
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    });
    let mut proxy = ProxyConfig::new(host, port, region);
    proxy.db_user = args.db_user.clone().filter(|u| !u.is_empty());
    proxy.ca_source = match &args.ca_bundle {
        Some(p) => CaSource::File(PathBuf::from(p)),
        None => CaSource::Embedded,
    };
    proxy.local_tls = args.local_tls;
    proxy.local_password = local_password.map(|p| PasswordVerifier::new(p.expose()));
    proxy.direct_auth = args.direct_auth;
    if let Some(t) = args.handshake_timeout {
        proxy.handshake_timeout = t;
    }
    if let Some(n) = args.max_connections {
        proxy.max_connections = n.max(1);
    }
    if let Some(d) = args.max_sigterm_delay {
        proxy.shutdown_grace = d;
    }
    let health = match &args.health_addr {
        Some(h) => Some(h.parse().map_err(|_| Error::BadHealthAddr(h.clone()))?),
        None => None,
    };
    Ok(Config {
        listen,
        unix_socket,
        health,
        dial,
        profile: args.profile.clone(),
        ssm_target: args.ssm_target.clone().filter(|t| !t.is_empty()),
        ssm_sessions: args.ssm_sessions.map(|n| n.max(1)),
        proxy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn args(extra: &[&str]) -> ServeArgs {
        let mut v = vec!["rds-iam-proxy"];
        v.extend_from_slice(extra);
        Cli::try_parse_from(v).unwrap().serve
    }

    #[test]
    fn endpoints() {
        assert_eq!(parse_endpoint("db.x:3307").unwrap(), ("db.x".into(), 3307));
        assert_eq!(parse_endpoint("db.x").unwrap(), ("db.x".into(), 3306));
        assert_eq!(parse_endpoint("[::1]:3306").unwrap(), ("::1".into(), 3306));
        for bad in [
            "",
            "db.x:",
            "db.x:0",
            "db.x:99999",
            "mysql://db.x",
            "a b:1",
            "::1:3306",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn region_from_flag_then_endpoint_then_aws_config() {
        let a = args(&["--db-endpoint", "db.abc.eu-west-1.rds.amazonaws.com:3306"]);
        assert_eq!(
            build(&a, Some("us-east-1".into())).unwrap().proxy.region,
            "eu-west-1"
        );
        let a = args(&[
            "--db-endpoint",
            "fake-rds.test:3306",
            "--region",
            "ap-south-1",
        ]);
        assert_eq!(
            build(&a, Some("us-east-1".into())).unwrap().proxy.region,
            "ap-south-1"
        );
        let a = args(&["--db-endpoint", "fake-rds.test:3306"]);
        assert_eq!(
            build(&a, Some("us-east-1".into())).unwrap().proxy.region,
            "us-east-1"
        );
        assert!(matches!(build(&a, None), Err(Error::NoRegion(_))));
    }

    #[test]
    fn dial_defaults_to_the_endpoint() {
        let a = args(&[
            "--db-endpoint",
            "fake-rds.test:3306",
            "--region",
            "us-east-1",
        ]);
        assert_eq!(build(&a, None).unwrap().dial, "fake-rds.test:3306");
    }

    #[test]
    fn non_loopback_listen_is_refused() {
        let a = args(&[
            "--db-endpoint",
            "x:1",
            "--region",
            "r",
            "--listen",
            "0.0.0.0:3306",
        ]);
        let e = build(&a, None).unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
        let a = args(&[
            "--db-endpoint",
            "x:1",
            "--region",
            "r",
            "--listen",
            "[::1]:3306",
        ]);
        assert!(build(&a, None).is_ok());
    }
    #[test]
    fn unix_socket_alone_replaces_tcp_and_with_listen_adds_to_it() {
        let base = ["--db-endpoint", "x:1", "--region", "r"];
        let only = build(
            &args(&[&base[..], &["--unix-socket", "/run/p.sock"]].concat()),
            None,
        );
        let only = only.unwrap();
        assert_eq!(only.listen, None);
        assert_eq!(only.unix_socket, Some(PathBuf::from("/run/p.sock")));
        let both = [
            &base[..],
            &["--unix-socket", "/run/p.sock", "--listen", "127.0.0.1:3307"],
        ];
        let both = build(&args(&both.concat()), None).unwrap();
        assert_eq!(both.listen, Some("127.0.0.1:3307".parse().unwrap()));
        assert!(both.unix_socket.is_some());
        let neither = build(&args(&base), None).unwrap();
        assert_eq!(neither.listen, Some(DEFAULT_LISTEN.parse().unwrap()));
        assert_eq!(neither.unix_socket, None);
    }

    #[test]
    fn debug_of_the_cli_and_the_config_never_shows_the_local_password() {
        let password = "Tr0ub4dor&3-local";
        let cli = Cli::try_parse_from([
            "rds-iam-proxy",
            "--db-endpoint",
            "x:1",
            "--region",
            "r",
            "--local-password",
            password,
            "--allow-remote",
            "--listen",
            "0.0.0.0:3306",
        ])
        .unwrap();
        let cli_text = format!("{cli:?} {cli:#?}");
        assert!(!cli_text.contains(password), "{cli_text}");
        assert!(cli_text.contains("<redacted>"), "{cli_text}");
        let cfg = build(&cli.serve, None).unwrap();
        assert!(cfg.proxy.local_password.is_some());
        let cfg_text = format!("{cfg:?} {cfg:#?} {:?}", cfg.proxy);
        assert!(!cfg_text.contains(password), "{cfg_text}");
        assert!(cfg_text.contains("redacted"), "{cfg_text}");
    }
    #[test]
    fn allow_remote_needs_a_non_empty_local_password() {
        let base = ["--db-endpoint", "x:1", "--region", "r", "--allow-remote"];
        let remote = [&base[..], &["--listen", "0.0.0.0:3306"]].concat();
        assert_eq!(
            build(&args(&remote), None).unwrap_err(),
            Error::NotLoopback("0.0.0.0:3306".parse().unwrap())
        );
        let empty = [&remote[..], &["--local-password", ""]].concat();
        assert!(matches!(
            build(&args(&empty), None),
            Err(Error::NotLoopback(_))
        ));
        assert_eq!(
            build(&args(&base), None).unwrap_err(),
            Error::RemoteWithoutPassword
        );
        let ok = [&remote[..], &["--local-password", "pw"]].concat();
        assert!(
            build(&args(&ok), None)
                .unwrap()
                .proxy
                .local_password
                .is_some()
        );
    }

    #[test]
    fn malformed_addresses_are_refused_naming_the_flag() {
        let base = ["--db-endpoint", "x:1", "--region", "r"];
        for (flag, value) in [
            ("--listen", "localhost:3306"),
            ("--listen", "127.0.0.1"),
            ("--listen", "127.0.0.1:99999"),
            ("--health-addr", "0.0.0.0"),
            ("--health-addr", "health:9801"),
        ] {
            let err = build(&args(&[&base[..], &[flag, value]].concat()), None).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with(&format!("{flag} `{value}`")), "{text}");
            assert!(text.contains("is not IP:PORT"), "{text}");
        }
    }
}
