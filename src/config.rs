//! Turns the parsed command line into a validated [`Config`]: endpoint and dial address parsed,
//! region resolved (flag, else the endpoint name, else the AWS config), listen address checked.
//! Every error names the flag to fix.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::aws::discover::{DbSource, Resolved, Source, TargetSpec};
use crate::aws::stack::DEFAULT_STACK_NAME;
use crate::cli::ServeArgs;
use crate::config_file::File;
use crate::iam;
use crate::proxy::{Engine, LocalPassword, ProxyConfig};
use crate::tls::CaSource;

/// The default MySQL port, used when an endpoint omits it.
pub const DEFAULT_PORT: u16 = 3306;

/// Where the proxy listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3306";

/// `--secret auto`: the secret that discovery finds (the stack's `DbMasterSecretArn` output, or the
/// RDS-managed master secret of the DB cluster or instance). A secret literally named `auto` is
/// named by its ARN.
pub const SECRET_AUTO: &str = "auto";

/// A configuration error, worded as the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// `--db-endpoint` is not HOST or HOST:PORT.
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
    /// `--health-addr` is not loopback and `--allow-remote` was not given.
    #[error(
        "--health-addr {0} is not a loopback address: the health endpoint has no authentication \
         and tells anyone who reaches it about this proxy. Use 127.0.0.1 (or ::1), or add \
         --allow-remote (with --local-password) to serve it on other addresses"
    )]
    HealthNotLoopback(SocketAddr),
    /// No endpoint given.
    #[error("--db-endpoint is required")]
    NoEndpoint,
    /// No region for the discovery calls.
    #[error(
        "cannot tell which AWS region to look in: pass --region (or set AWS_REGION, or `region` \
         in your AWS profile)"
    )]
    NoApiRegion,
    /// More than one database source.
    #[error("{0}: give only one of --db-endpoint, --stack, --db-cluster, --db-instance")]
    TwoSources(String),
    /// More than one way to the database.
    #[error(
        "{0}: give only one of --dial, --ssm-target, --instance, --instance-tag, --ecs-cluster/--ecs-service"
    )]
    TwoTargets(String),
    /// Half of the ECS pair.
    #[error("--ecs-cluster and --ecs-service go together")]
    EcsHalf,
    /// `--instance-tag` is not KEY=VALUE.
    #[error("--instance-tag `{0}` is not KEY=VALUE (for example Role=bastion)")]
    BadInstanceTag(String),
    /// `--reader` without a cluster.
    #[error(
        "--reader needs --stack or --db-cluster (a reader endpoint belongs to an Aurora cluster)"
    )]
    ReaderWithoutCluster,
    /// `--ssm-sessions` without SSM.
    #[error(
        "--ssm-sessions needs an SSM target (--ssm-target, --instance, --instance-tag, --ecs-cluster/--ecs-service, or a stack)"
    )]
    SessionsWithoutSsm,
    /// A database name that the config file does not have.
    #[error("{}", unknown_database(.name, .file, .known))]
    UnknownDatabase {
        /// The name asked for.
        name: String,
        /// The config file, if any.
        file: Option<PathBuf>,
        /// The names it has.
        known: Vec<String>,
    },
    /// `--secret auto` and discovery found no secret.
    #[error(
        "--secret auto: {0} names no Secrets Manager secret (a stack's DbMasterSecretArn output, \
         or the MasterUserSecret RDS manages for a DB cluster or instance created with \
         --manage-master-user-password): pass --secret ARN|NAME"
    )]
    NoSecretFound(String),
    /// Two databases on one address.
    #[error("databases `{0}` and `{1}` both listen on {2}: give each its own `listen`")]
    SameListen(String, String, String),
    /// A local password SCRAM-SHA-256 would not carry unchanged.
    #[error(
        "--local-password must be printable ASCII with --engine postgres (PostgreSQL clients \
         normalise other passwords with SASLprep before proving them)"
    )]
    LocalPasswordNotAscii,
}

fn unknown_database(name: &str, file: &Option<PathBuf>, known: &[String]) -> String {
    match file {
        None => format!(
            "there is no config file, so there is no database `{name}`: write one with \
             `rds-iam-proxy init` or pass --config"
        ),
        Some(f) if known.is_empty() => {
            format!("{} defines no databases, so not `{name}`", f.display())
        }
        Some(f) => format!(
            "{} has no database `{name}`; it has: {}",
            f.display(),
            known.join(", ")
        ),
    }
}

/// One database to serve: its name (from the config file, or `default`) and its merged flags.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The name.
    pub name: String,
    /// File defaults, the database's table, then environment and flags on top.
    pub args: ServeArgs,
}

/// The name of the database given by flags alone.
pub const ADHOC_NAME: &str = "default";

/// Decides which databases to serve, and with which settings.
///
/// - names given: those databases of the file, flags on top;
/// - the flags name a database themselves (`--db-endpoint`, `--stack`, ...): that one only, with
///   the file's `[defaults]` under it;
/// - otherwise every database of the file, flags on top;
/// - with no file (or an empty one) either: the stack `SecureDbConnectionStack`.
pub fn plan(cli: &ServeArgs, names: &[String], file: Option<&File>) -> Result<Vec<Planned>, Error> {
    let defaults = file.map(|f| f.defaults.clone()).unwrap_or_default();
    let cli_names_a_source = cli.db_endpoint.is_some()
        || cli.stack.is_some()
        || cli.db_cluster.is_some()
        || cli.db_instance.is_some();
    let mut planned = Vec::new();
    if !names.is_empty() {
        for name in names {
            let db =
                file.and_then(|f| f.databases.get(name))
                    .ok_or_else(|| Error::UnknownDatabase {
                        name: name.clone(),
                        file: file.map(|f| f.path.clone()),
                        known: file
                            .map(|f| f.databases.keys().cloned().collect())
                            .unwrap_or_default(),
                    })?;
            planned.push(Planned {
                name: name.clone(),
                args: overlay(overlay(defaults.clone(), db), cli),
            });
        }
    } else if !cli_names_a_source && file.is_some_and(|f| !f.databases.is_empty()) {
        for (name, db) in &file.expect("checked above").databases {
            planned.push(Planned {
                name: name.clone(),
                args: overlay(overlay(defaults.clone(), db), cli),
            });
        }
    } else {
        planned.push(Planned {
            name: ADHOC_NAME.to_owned(),
            args: overlay(defaults, cli),
        });
    }
    for p in &mut planned {
        let a = &mut p.args;
        if a.db_endpoint.is_none()
            && a.stack.is_none()
            && a.db_cluster.is_none()
            && a.db_instance.is_none()
        {
            a.stack = Some(DEFAULT_STACK_NAME.to_owned());
        }
        if let Some(f) = file {
            if a.health_addr.is_none() {
                a.health_addr = f.health_addr.clone();
            }
            if a.max_sigterm_delay.is_none() {
                a.max_sigterm_delay = f.max_sigterm_delay;
            }
            if a.min_sigterm_delay.is_none() {
                a.min_sigterm_delay = f.min_sigterm_delay;
            }
        }
    }
    // Where each database listens: its TCP address (the default unless only a socket is asked
    // for) and its socket path.
    let places = |a: &ServeArgs| {
        let tcp = match (&a.listen, &a.unix_socket) {
            (Some(l), _) => Some(l.clone()),
            (None, None) => Some(engine_hint(a).default_listen().to_owned()),
            (None, Some(_)) => None,
        };
        let socket = a.unix_socket.as_ref().map(|p| p.display().to_string());
        tcp.into_iter()
            .filter(|l| !l.ends_with(":0"))
            .chain(socket)
            .collect::<Vec<String>>()
    };
    for (i, a) in planned.iter().enumerate() {
        for b in &planned[..i] {
            let pb = places(&b.args);
            if let Some(same) = places(&a.args).into_iter().find(|p| pb.contains(p)) {
                return Err(Error::SameListen(b.name.clone(), a.name.clone(), same));
            }
        }
    }
    Ok(planned)
}

/// The engine `a` names, else the one its endpoint's port suggests (discovery may still name
/// another): for messages and checks before discovery.
pub fn engine_hint(a: &ServeArgs) -> Engine {
    a.engine.unwrap_or_else(|| {
        a.db_endpoint
            .as_deref()
            .and_then(|e| parse_endpoint(e).ok())
            .map_or(Engine::Mysql, |(_, port)| Engine::by_port(port))
    })
}

/// `top`'s values where it has them, `base`'s elsewhere.
pub fn overlay(base: ServeArgs, top: &ServeArgs) -> ServeArgs {
    macro_rules! pick {
        ($($opt:ident),* ; $($flag:ident),*) => {
            ServeArgs {
                $($opt: top.$opt.clone().or(base.$opt),)*
                $($flag: top.$flag || base.$flag,)*
            }
        };
    }
    pick!(
        db_endpoint, stack, db_cluster, db_instance, ecs_cluster, ecs_service, ecs_container,
        instance, instance_tag, dial, ssm_target, ssm_sessions, listen, region, db_user, profile,
        ca_bundle, handshake_timeout, max_connections, max_pending_logins, max_sigterm_delay,
        min_sigterm_delay, local_password, secret, engine,
        health_addr, unix_socket, ssm_stall_timeout, stall_spool_memory, stall_spool_disk,
        stall_spool_total, compression;
        reader, local_tls, switch_auth, direct_auth, allow_remote
    )
}

/// What discovery must find for `args`: the database source and the way to it.
pub fn source(args: &ServeArgs) -> Result<Source, Error> {
    let mut dbs = Vec::new();
    if let Some(e) = &args.db_endpoint {
        let (host, port) = parse_endpoint(e)?;
        dbs.push((
            format!("--db-endpoint {e}"),
            DbSource::Endpoint { host, port },
        ));
    }
    if let Some(s) = &args.stack {
        dbs.push((format!("--stack {s}"), DbSource::Stack(s.clone())));
    }
    if let Some(c) = &args.db_cluster {
        dbs.push((format!("--db-cluster {c}"), DbSource::Cluster(c.clone())));
    }
    if let Some(i) = &args.db_instance {
        dbs.push((format!("--db-instance {i}"), DbSource::Instance(i.clone())));
    }
    if dbs.len() > 1 {
        let given: Vec<String> = dbs.into_iter().map(|(g, _)| g).collect();
        return Err(Error::TwoSources(given.join(" and ")));
    }
    let db = dbs.pop().map(|(_, d)| d).ok_or(Error::NoEndpoint)?;
    if args.reader && !matches!(db, DbSource::Stack(_) | DbSource::Cluster(_)) {
        return Err(Error::ReaderWithoutCluster);
    }
    let mut targets = Vec::new();
    if let Some(d) = &args.dial {
        targets.push((format!("--dial {d}"), None));
    }
    if let Some(t) = args.ssm_target.as_ref().filter(|t| !t.is_empty()) {
        targets.push((
            format!("--ssm-target {t}"),
            Some(TargetSpec::Fixed(t.clone())),
        ));
    }
    if let Some(i) = &args.instance {
        targets.push((
            format!("--instance {i}"),
            Some(TargetSpec::Fixed(i.clone())),
        ));
    }
    if let Some(tag) = &args.instance_tag {
        let (key, value) = tag
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| Error::BadInstanceTag(tag.clone()))?;
        targets.push((
            format!("--instance-tag {tag}"),
            Some(TargetSpec::InstanceTag {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
        ));
    }
    match (&args.ecs_cluster, &args.ecs_service) {
        (Some(cluster), Some(service)) => targets.push((
            format!("--ecs-cluster {cluster}"),
            Some(TargetSpec::Ecs {
                cluster: cluster.clone(),
                service: service.clone(),
                container: args.ecs_container.clone(),
            }),
        )),
        (None, None) => {}
        _ => return Err(Error::EcsHalf),
    }
    if targets.len() > 1 {
        let given: Vec<String> = targets.into_iter().map(|(g, _)| g).collect();
        return Err(Error::TwoTargets(given.join(" and ")));
    }
    let (direct, target) = match targets.pop() {
        Some((_, None)) => (true, None),
        Some((_, Some(t))) => (false, Some(t)),
        None => (false, None),
    };
    let ssm_possible = target.is_some() || (matches!(db, DbSource::Stack(_)) && !direct);
    if args.ssm_sessions.is_some() && !ssm_possible {
        return Err(Error::SessionsWithoutSsm);
    }
    Ok(Source {
        db,
        reader: args.reader,
        target,
        direct,
        password_login: secret_mode(args),
    })
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
    pub target: Option<TargetSpec>,
    /// Warm SSM sessions (default chosen by the pool).
    pub ssm_sessions: Option<usize>,
    /// How long an SSM session may make no progress before it is resumed, then replaced.
    pub ssm_stall_timeout: Option<std::time::Duration>,
    /// The Secrets Manager secret whose password logs in upstream instead of IAM (`--secret`).
    pub secret: Option<String>,
    /// `--compression`, resolved into `proxy.compression` once the transport is known
    /// ([`Config::resolve_compression`]).
    pub compression: crate::cli::CompressionMode,
    /// The engine configuration.
    pub proxy: ProxyConfig,
}

impl Config {
    /// Settles what the database leg asks for now that the transport is known: `auto`
    /// compresses over SSM only.
    pub fn resolve_compression(&mut self, over_ssm: bool) {
        self.proxy.compression = self.compression.resolve(over_ssm);
    }
}

/// Splits `HOST[:PORT]` (IPv6 as `[addr]:port`); the port defaults to MySQL's.
pub fn parse_endpoint(s: &str) -> Result<(String, u16), Error> {
    parse_endpoint_or(s, DEFAULT_PORT)
}

/// Splits `HOST[:PORT]` (IPv6 as `[addr]:port`); the port defaults to `default_port`.
pub fn parse_endpoint_or(s: &str, default_port: u16) -> Result<(String, u16), Error> {
    let bad = || Error::BadEndpoint(s.to_owned());
    let s = s.trim();
    if s.is_empty() || s.contains('/') || s.contains(char::is_whitespace) {
        return Err(bad());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => default_port,
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
        None => Ok((s.to_owned(), default_port)),
    }
}

/// `host:port`, with an IPv6 host in brackets: the form [`parse_endpoint`] reads back.
pub fn endpoint_text(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The region the AWS discovery calls go to: for a known endpoint the region its token is signed
/// for, otherwise `--region` or the AWS config's.
pub fn api_region(
    source: &Source,
    args: &ServeArgs,
    aws_region: Option<String>,
) -> Result<String, Error> {
    match &source.db {
        DbSource::Endpoint { host, .. } => resolve_region(args.region.clone(), host, aws_region),
        _ => args.region.clone().or(aws_region).ok_or(Error::NoApiRegion),
    }
}

/// Whether `args` log in upstream with a Secrets Manager password (`--secret`) instead of IAM.
pub fn secret_mode(args: &ServeArgs) -> bool {
    args.secret.as_ref().is_some_and(|s| !s.trim().is_empty())
}

/// Replaces `--secret auto` with the secret discovery found (the stack's `DbMasterSecretArn`, or
/// the cluster's or instance's `MasterUserSecret`); anything else is kept as given.
pub fn discover_secret(args: &mut ServeArgs, resolved: &Resolved) -> Result<(), Error> {
    let Some(given) = args.secret.as_deref().map(str::trim) else {
        return Ok(());
    };
    if given != SECRET_AUTO {
        return Ok(());
    }
    let found = resolved
        .master_secret_arn
        .clone()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            let what = if args.stack.is_some() {
                format!("stack {}", args.stack.as_deref().unwrap_or_default())
            } else if let Some(c) = &args.db_cluster {
                format!("DB cluster {c}")
            } else if let Some(i) = &args.db_instance {
                format!("DB instance {i}")
            } else {
                "--db-endpoint (which discovers nothing)".to_owned()
            };
            Error::NoSecretFound(what)
        })?;
    args.secret = Some(found);
    Ok(())
}

/// Fills in what discovery found (endpoint, and the stack's user and region unless the flags
/// or the file set them), ready for [`build`].
pub fn apply_discovered(args: &mut ServeArgs, resolved: &Resolved) {
    args.db_endpoint = Some(endpoint_text(&resolved.host, resolved.port));
    if args.engine.is_none() {
        args.engine = resolved.engine.as_deref().and_then(Engine::from_rds);
    }
    if args.db_user.is_none() {
        args.db_user = resolved.db_user.clone();
    }
    if args.region.is_none() {
        args.region = resolved.region.clone();
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
    let (host, port) = parse_endpoint_or(
        endpoint,
        args.engine.map_or(DEFAULT_PORT, Engine::default_port),
    )?;
    let engine = args.engine.unwrap_or_else(|| Engine::by_port(port));
    let region = resolve_region(args.region.clone(), &host, aws_region)?;
    let unix_socket = args
        .unix_socket
        .clone()
        .filter(|p| !p.as_os_str().is_empty());
    // A Unix socket alone replaces the TCP listener; an explicit --listen keeps both.
    let listen_text = match (&args.listen, &unix_socket) {
        (Some(l), _) => Some(l.as_str()),
        (None, Some(_)) => None,
        (None, None) => Some(engine.default_listen()),
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
    let dial = args
        .dial
        .clone()
        .unwrap_or_else(|| endpoint_text(&host, port));
    let local = local_password.map(|p| LocalPassword::new(p.expose()));
    if engine == Engine::Postgres && local.as_ref().is_some_and(|p| !p.fits_postgres()) {
        return Err(Error::LocalPasswordNotAscii);
    }
    let mut proxy = ProxyConfig::new(host, port, region);
    proxy.engine = engine;
    proxy.db_user = args.db_user.clone().filter(|u| !u.is_empty());
    proxy.ca_source = match &args.ca_bundle {
        Some(p) => CaSource::File(PathBuf::from(p)),
        None => CaSource::Embedded,
    };
    proxy.local_tls = args.local_tls;
    proxy.local_password = local;
    proxy.direct_auth = !args.switch_auth;
    if let Some(t) = args.handshake_timeout {
        proxy.handshake_timeout = t;
    }
    if let Some(n) = args.max_connections {
        proxy.max_connections = n.max(1);
    }
    if let Some(n) = args.max_pending_logins {
        proxy.max_pending_logins = n.max(1);
    }
    if let Some(d) = args.max_sigterm_delay {
        proxy.shutdown_grace = d;
    }
    if let Some(n) = args.stall_spool_memory {
        proxy.spool.memory = usize::try_from(n).unwrap_or(usize::MAX);
        // The process may hold as much as 32 paused connections' memory.
        proxy.spool.total_memory = proxy.spool.memory.saturating_mul(32);
    }
    if let Some(n) = args.stall_spool_disk {
        proxy.spool.disk = n;
    }
    if let Some(n) = args.stall_spool_total {
        proxy.spool.total_disk = n;
    }
    let health: Option<SocketAddr> = match &args.health_addr {
        Some(h) => Some(h.parse().map_err(|_| Error::BadHealthAddr(h.clone()))?),
        None => None,
    };
    if let Some(h) = health
        && !h.ip().is_loopback()
        && !remote_allowed
    {
        return Err(Error::HealthNotLoopback(h));
    }
    Ok(Config {
        listen,
        unix_socket,
        health,
        dial,
        profile: args.profile.clone(),
        target: None,
        ssm_sessions: args.ssm_sessions.map(|n| n.max(1)),
        ssm_stall_timeout: args.ssm_stall_timeout,
        secret: args.secret.clone().filter(|s| !s.trim().is_empty()),
        compression: args.compression.unwrap_or_default(),
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
    fn endpoint_text_is_what_parse_endpoint_reads_back() {
        for (host, port) in [("db.x", 3306), ("::1", 3307), ("10.0.0.1", 1)] {
            let text = endpoint_text(host, port);
            assert_eq!(
                parse_endpoint(&text).unwrap(),
                (host.to_owned(), port),
                "{text}"
            );
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

    fn file(text: &str) -> File {
        crate::config_file::parse(text, std::path::Path::new("c.toml")).unwrap()
    }

    #[test]
    fn plan_picks_databases_from_the_file_or_the_flags() {
        let f = file(
            "[defaults]\nprofile = \"dev\"\n[databases.a]\nstack = \"S\"\nlisten = \"127.0.0.1:3306\"\n\
             [databases.b]\ndb-cluster = \"c\"\nlisten = \"127.0.0.1:3307\"\nprofile = \"ops\"\n",
        );
        // No flags: every database, defaults under each.
        let all = plan(&args(&[]), &[], Some(&f)).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].args.profile.as_deref(), Some("dev"));
        assert_eq!(all[1].args.profile.as_deref(), Some("ops"));
        // A name: that one, flags on top.
        let b = plan(&args(&["--region", "eu-west-1"]), &["b".into()], Some(&f)).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].args.db_cluster.as_deref(), Some("c"));
        assert_eq!(b[0].args.region.as_deref(), Some("eu-west-1"));
        // Flags naming a database: only that one, with the defaults.
        let adhoc = plan(&args(&["--db-endpoint", "x:1"]), &[], Some(&f)).unwrap();
        assert_eq!(adhoc.len(), 1);
        assert_eq!(adhoc[0].name, ADHOC_NAME);
        assert_eq!(adhoc[0].args.profile.as_deref(), Some("dev"));
        assert!(adhoc[0].args.stack.is_none());
        // Nothing at all: the default stack.
        let none = plan(&args(&[]), &[], None).unwrap();
        assert_eq!(none[0].args.stack.as_deref(), Some(DEFAULT_STACK_NAME));
        // Unknown names say what exists.
        let e = plan(&args(&[]), &["zz".into()], Some(&f))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no database `zz`") && e.contains("a, b"), "{e}");
        let e = plan(&args(&[]), &["zz".into()], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rds-iam-proxy init"), "{e}");
    }

    #[test]
    fn the_engine_is_the_flag_else_discovery_else_the_port() {
        let built = |extra: &[&str]| {
            let mut a = args(&[&["--region", "r"], extra].concat());
            if a.db_endpoint.is_none() {
                a.db_endpoint = Some("db.x:3306".into());
            }
            build(&a, None).unwrap()
        };
        let mysql = built(&["--db-endpoint", "db.x:3306"]);
        assert_eq!(mysql.proxy.engine, Engine::Mysql);
        assert_eq!(mysql.listen, Some("127.0.0.1:3306".parse().unwrap()));
        // Port 5432 means PostgreSQL, and its own default listen address.
        let pg = built(&["--db-endpoint", "db.x:5432"]);
        assert_eq!(pg.proxy.engine, Engine::Postgres);
        assert_eq!(pg.listen, Some("127.0.0.1:5432".parse().unwrap()));
        // The flag wins over the port, and gives a port-less endpoint its port.
        let pg = built(&["--db-endpoint", "db.x:3306", "--engine", "postgres"]);
        assert_eq!(pg.proxy.engine, Engine::Postgres);
        let pg = built(&["--db-endpoint", "db.x", "--engine", "postgres"]);
        assert_eq!(pg.proxy.endpoint_port, 5432);
        let my = built(&["--db-endpoint", "db.x:5432", "--engine", "mysql"]);
        assert_eq!(my.proxy.engine, Engine::Mysql);
        // Discovery's RDS engine, unless the flag names one.
        let mut a = args(&["--region", "r", "--db-cluster", "c"]);
        let found = Resolved {
            host: "c.cluster-x.eu-west-1.rds.amazonaws.com".into(),
            port: 3306,
            engine: Some("aurora-postgresql".into()),
            ..Resolved::default()
        };
        apply_discovered(&mut a, &found);
        assert_eq!(build(&a, None).unwrap().proxy.engine, Engine::Postgres);
        let mut a = args(&["--region", "r", "--db-cluster", "c", "--engine", "mysql"]);
        apply_discovered(&mut a, &found);
        assert_eq!(build(&a, None).unwrap().proxy.engine, Engine::Mysql);
        // The environment and the config file name it too.
        let f = file("[databases.p]\ndb-endpoint = \"db.x:3306\"\nengine = \"postgres\"\n");
        let p = plan(&args(&[]), &[], Some(&f)).unwrap();
        assert_eq!(p[0].args.engine, Some(Engine::Postgres));
        // One file mixes engines; each gets its engine's default address, so they do not clash.
        let f = file(
            "[databases.m]\ndb-endpoint = \"m.x:3306\"\n[databases.p]\ndb-endpoint = \"p.x:5432\"\n",
        );
        let both = plan(&args(&["--region", "r"]), &[], Some(&f)).unwrap();
        let listens: Vec<_> = both
            .iter()
            .map(|p| build(&p.args, None).unwrap().listen.unwrap().to_string())
            .collect();
        assert_eq!(listens, ["127.0.0.1:3306", "127.0.0.1:5432"]);
        let e = file_err("[databases.p]\nengine = \"oracle\"\n");
        assert!(e.contains("oracle"), "{e}");
        // What the PostgreSQL engine cannot do is refused with the flag named.
        let mut a = args(&["--region", "r", "--db-endpoint", "db.x:5432"]);
        a.local_password = Some("pässword".parse().unwrap());
        let e = build(&a, None).unwrap_err().to_string();
        assert!(
            e.contains("--local-password must be printable ASCII"),
            "{e}"
        );
        a.local_password = Some("s3cret pw".parse().unwrap());
        assert!(build(&a, None).is_ok());
        a.secret = Some("arn:secret".into());
        assert!(build(&a, None).is_ok(), "--secret serves PostgreSQL too");
    }

    #[test]
    fn rds_engine_names() {
        for (rds, engine) in [
            ("postgres", Some(Engine::Postgres)),
            ("aurora-postgresql", Some(Engine::Postgres)),
            ("aurora-mysql", Some(Engine::Mysql)),
            ("mysql", Some(Engine::Mysql)),
            ("mariadb", Some(Engine::Mysql)),
            ("oracle-ee", None),
        ] {
            assert_eq!(Engine::from_rds(rds), engine, "{rds}");
        }
    }

    fn file_err(text: &str) -> String {
        crate::config_file::parse(text, std::path::Path::new("c.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn two_databases_on_one_address_are_refused() {
        let f = file("[databases.a]\nstack = \"S\"\n[databases.b]\nstack = \"T\"\n");
        let e = plan(&args(&[]), &[], Some(&f)).unwrap_err().to_string();
        assert!(
            e.contains("`a` and `b` both listen on 127.0.0.1:3306"),
            "{e}"
        );
    }

    #[test]
    fn sources_and_targets_are_checked() {
        let s = source(&args(&["--stack", "S"])).unwrap();
        assert_eq!(s.db, DbSource::Stack("S".into()));
        assert!(s.target.is_none() && !s.direct);
        let s = source(&args(&[
            "--db-cluster",
            "c",
            "--ecs-cluster",
            "k",
            "--ecs-service",
            "v",
            "--reader",
        ]))
        .unwrap();
        assert!(s.reader);
        assert!(matches!(s.target, Some(TargetSpec::Ecs { .. })));
        let s = source(&args(&[
            "--db-endpoint",
            "x:1",
            "--instance-tag",
            "Role=bastion",
        ]))
        .unwrap();
        assert_eq!(
            s.target,
            Some(TargetSpec::InstanceTag {
                key: "Role".into(),
                value: "bastion".into()
            })
        );
        for (bad, want) in [
            (
                vec!["--stack", "S", "--db-cluster", "c"],
                "only one of --db-endpoint",
            ),
            (
                vec!["--stack", "S", "--dial", "a:1", "--instance", "i-1"],
                "only one of --dial",
            ),
            (vec!["--stack", "S", "--ecs-cluster", "k"], "go together"),
            (
                vec!["--db-endpoint", "x:1", "--instance-tag", "bastion"],
                "KEY=VALUE",
            ),
            (vec!["--db-endpoint", "x:1", "--reader"], "--reader needs"),
            (
                vec!["--db-endpoint", "x:1", "--ssm-sessions", "2"],
                "--ssm-sessions needs",
            ),
        ] {
            let e = source(&args(&bad)).unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
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
    /// `--secret auto` becomes the secret discovery found; without one the error names where it
    /// looked and the flag to pass; any other value is kept; `--secret` lets discovery accept a
    /// database without IAM authentication.
    #[test]
    fn secret_auto_takes_the_discovered_secret() {
        let found = Resolved {
            master_secret_arn: Some("arn:aws:secretsmanager:r:1:secret:rds!cluster-x".into()),
            ..Resolved::default()
        };
        let mut a = args(&["--db-cluster", "x", "--secret", "auto"]);
        assert!(source(&a).unwrap().password_login);
        discover_secret(&mut a, &found).unwrap();
        assert_eq!(a.secret.as_deref(), found.master_secret_arn.as_deref());
        let mut a = args(&["--db-cluster", "x", "--secret", "auto"]);
        let e = discover_secret(&mut a, &Resolved::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("DB cluster x names no Secrets Manager secret")
                && e.contains("--secret ARN|NAME"),
            "{e}"
        );
        let mut a = args(&["--db-endpoint", "h:1", "--secret", "named"]);
        discover_secret(&mut a, &Resolved::default()).unwrap();
        assert_eq!(a.secret.as_deref(), Some("named"));
        assert!(
            !source(&args(&["--db-cluster", "x"]))
                .unwrap()
                .password_login
        );
    }

    /// `--secret` is carried to the launcher (which reads it through Secrets Manager); blank is none.
    #[test]
    fn secret_flag_is_kept_and_blank_means_none() {
        let base = ["--db-endpoint", "x:1", "--region", "r"];
        let with = [&base[..], &["--secret", "rds!cluster-1"]].concat();
        assert_eq!(
            build(&args(&with), None).unwrap().secret.as_deref(),
            Some("rds!cluster-1")
        );
        let blank = [&base[..], &["--secret", " "]].concat();
        assert_eq!(build(&args(&blank), None).unwrap().secret, None);
    }

    /// The health endpoint is loopback-only unless remote access is allowed (with a password).
    #[test]
    fn health_addr_must_be_loopback_without_allow_remote() {
        let base = ["--db-endpoint", "x:1", "--region", "r"];
        let remote = [&base[..], &["--health-addr", "0.0.0.0:9801"]].concat();
        assert_eq!(
            build(&args(&remote), None).unwrap_err(),
            Error::HealthNotLoopback("0.0.0.0:9801".parse().unwrap())
        );
        let local = [&base[..], &["--health-addr", "127.0.0.1:9801"]].concat();
        assert!(build(&args(&local), None).is_ok());
        let allowed = [&remote[..], &["--allow-remote", "--local-password", "pw"]].concat();
        assert!(build(&args(&allowed), None).is_ok());
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
