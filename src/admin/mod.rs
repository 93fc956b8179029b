//! `rds-iam-proxy admin`: create the IAM database user after deploy without anyone typing, seeing
//! or storing the master password.
//!
//! The steps, one progress line each (stderr), then one line per statement:
//!
//! 1. the SQL: `deploy/bootstrap-iam-user.sql` (built in) or `--sql FILE`, split and checked before
//!    anything touches AWS ([`script`]); the IAM user name (`--db-user`, else the stack's `DbUser`)
//!    goes in for every `'iam_user'` literal, checked and quoted;
//! 2. discovery as for serving ([`launch::prepare`]: the stack by default);
//! 3. the master credentials: `secretsmanager:GetSecretValue` of `--master-secret`, else of the
//!    stack's `DbMasterSecretArn` (or the DB cluster's managed master secret)
//!    ([`crate::aws::secrets`]);
//! 4. one connection through the same transport as serving (an SSM session to the bastion, or
//!    `--dial`), TLS verified against the endpoint name, login as the master user
//!    ([`client`]);
//! 5. each statement in order, stopping at the first failure (the SQL is idempotent: fix it and run
//!    again);
//! 6. the check: a new connection logs in as the IAM user with an IAM token from the same token
//!    cache the proxy uses, and `SELECT CURRENT_USER()` must name that user (`--no-verify` skips
//!    it).
//!
//! `--dry-run` prints the statements (stdout) after step 1 and connects to nothing.

pub mod client;
pub mod script;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio_rustls::TlsConnector;

use crate::aws::secrets;
use crate::cli::AdminArgs;
use crate::config::{Config, Planned};
use crate::iam::{TokenCache, TokenRequest, TokenSource};
use crate::launch::{self, Prepared};
use crate::progress::Progress;
use crate::secret::Secret;
use crate::tls;
use crate::tunnel::{Connector, Direct};
use client::Client;

use script::Statement;

/// Time allowed for each packet of a statement's answer (DDL on a big table can take a while).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Rows of a result set printed after a statement (`SHOW GRANTS` in a custom file, say).
const PRINTED_ROWS: usize = 20;

/// What `admin` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The master secret (ARN or name), instead of the one discovery finds.
    pub master_secret: Option<String>,
    /// The SQL file, instead of the built-in bootstrap SQL.
    pub sql: Option<PathBuf>,
    /// Print the statements and stop.
    pub dry_run: bool,
    /// Log in as the IAM user afterwards.
    pub verify: bool,
}

impl From<&AdminArgs> for Options {
    fn from(a: &AdminArgs) -> Self {
        Options {
            master_secret: a.master_secret.clone().filter(|s| !s.is_empty()),
            sql: a.sql.clone(),
            dry_run: a.dry_run,
            verify: !a.no_verify,
        }
    }
}

/// Runs `admin` for one planned database.
pub async fn run(planned: &Planned, opts: &Options, progress: &Progress) -> Result<()> {
    let (sql, origin) = match &opts.sql {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the SQL file {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (
            script::BOOTSTRAP_SQL.to_owned(),
            "deploy/bootstrap-iam-user.sql (built in)".to_owned(),
        ),
    };
    // Syntax first: a broken file fails before any AWS call.
    script::split(&sql).with_context(|| format!("cannot run {origin}"))?;

    if opts.dry_run {
        let user = match planned.args.db_user.clone().filter(|u| !u.is_empty()) {
            Some(u) => u,
            None => iam_user(&launch::prepare(planned, progress).await?.cfg)?,
        };
        let statements = script::prepare(&sql, &user).with_context(|| origin.clone())?;
        println!("-- {origin}, for the IAM database user {user}");
        for s in &statements {
            println!("{};", s.text);
        }
        return Ok(());
    }

    let prepared = launch::prepare(planned, progress).await?;
    let user = iam_user(&prepared.cfg)?;
    let statements = script::prepare(&sql, &user).with_context(|| origin.clone())?;
    let arn = match opts
        .master_secret
        .clone()
        .or(prepared.resolved.master_secret_arn.clone())
    {
        Some(a) => a,
        None => bail!(
            "no master secret to log in with: the stack (or DB cluster) names none. Pass \
             --master-secret with the ARN of the Secrets Manager secret that holds the master \
             user's `username` and `password`"
        ),
    };

    let step = progress.step(format!("Reading the master secret {arn}"));
    let api = match secret_region(&arn) {
        Some(region) => prepared.api.with_region(region),
        None => prepared.api.clone(),
    };
    let master = match secrets::master_credentials(&api, &arn).await {
        Ok(m) => {
            step.ok(format!("master user {}", m.username));
            m
        }
        Err(e @ secrets::Error::Denied { .. }) => {
            step.fail("");
            return Err(match &prepared.resolved.admin_policy_arn {
                Some(policy) => anyhow::anyhow!("{e} (AdminPolicyArn: {policy})"),
                None => e.into(),
            });
        }
        Err(e) => {
            step.fail("");
            return Err(e.into());
        }
    };

    let (connector, ssm): (Arc<dyn Connector>, _) = match &prepared.target {
        Some(target) => {
            let mut one = prepared.cfg.clone();
            one.ssm_sessions = Some(1);
            let ssm = launch::open_ssm(&one, &prepared.resolved, target, &prepared.api).await?;
            if !launch::wait_first_session(&ssm, target, progress, "").await {
                let why = ssm.pool().last_error().unwrap_or_default();
                ssm.shutdown().await;
                bail!("no SSM session to {target}: {why}");
            }
            (Arc::new(ssm.clone()), Some(ssm))
        }
        None => (Arc::new(Direct::new(prepared.cfg.dial.clone())), None),
    };
    let result = bootstrap(
        &prepared,
        connector.as_ref(),
        &master,
        &user,
        &statements,
        &origin,
        opts,
        progress,
    )
    .await;
    if let Some(ssm) = ssm {
        ssm.shutdown().await;
    }
    result?;
    println!(
        "IAM database user {user} is ready: run `rds-iam-proxy` and connect as {user} with no \
         password"
    );
    Ok(())
}

/// Steps 4 to 6 over `connector`.
#[allow(clippy::too_many_arguments)]
async fn bootstrap(
    prepared: &Prepared,
    connector: &dyn Connector,
    master: &secrets::MasterCredentials,
    user: &str,
    statements: &[Statement],
    origin: &str,
    opts: &Options,
    progress: &Progress,
) -> Result<()> {
    let cfg = &prepared.cfg.proxy;
    let endpoint = cfg.endpoint();
    let options = client::Options {
        tls: TlsConnector::from(tls::upstream_client_config(&cfg.ca_source)?),
        server_name: tls::server_name(&cfg.endpoint_host)?,
        timeout: cfg.handshake_timeout,
    };
    let hop = Hop {
        endpoint: &endpoint,
        via: connector.describe(),
        host: &cfg.endpoint_host,
        ca: cfg.ca_source.to_string(),
    };

    let step = progress.step(format!(
        "Logging in as master user {} (TLS verified for {})",
        master.username, cfg.endpoint_host
    ));
    let mut admin = match login(connector, &options, &master.username, &master.password).await {
        Ok(c) => {
            step.ok(format!("server {}", c.server_version()));
            c
        }
        Err(e) => {
            step.fail("");
            return Err(
                hop.explain(e, &format!("the master user {}", master.username), || {
                    "The master password in Secrets Manager may have just been rotated (run \
                 admin again), or the master user was renamed or locked."
                        .to_owned()
                }),
            );
        }
    };

    let n = statements.len();
    for (i, s) in statements.iter().enumerate() {
        let step = progress.step(format!("[{}/{n}] {}", i + 1, s.one_line(100)));
        match admin.query(&s.text, STATEMENT_TIMEOUT).await {
            Ok(r) => {
                step.ok(summary(&r));
                print_rows(&r);
            }
            Err(e) => {
                step.fail("");
                admin.quit().await;
                let said = match &e {
                    client::Error::Server(_) => format!("the server said: {e}"),
                    _ => format!("it failed on the way: {e}"),
                };
                bail!(
                    "statement {} of {n} (line {} of {origin}) failed:\n  {}\n{said}\nThe \
                     statements before it have run; fix this one and run admin again (the SQL \
                     should be idempotent: IF NOT EXISTS).",
                    i + 1,
                    s.line,
                    s.text
                );
            }
        }
    }
    admin.quit().await;

    if !opts.verify {
        return Ok(());
    }
    let step = progress.step(format!("Logging in as {user} with an IAM token"));
    match verify(prepared, connector, &options, user).await {
        Ok(current) => {
            step.ok(format!("CURRENT_USER() is {current}"));
            Ok(())
        }
        Err(Verify::Token(e)) => {
            step.fail("");
            Err(e.context(format!(
                "the statements ran, but no IAM token could be made to check the login of {user}"
            )))
        }
        Err(Verify::Login(e)) => {
            step.fail("");
            Err(hop.explain(e, &format!("the IAM user {user}"), || {
                format!(
                    "The statements ran. Check that your AWS identity may rds-db:connect as \
                     {user} (the stack's ConnectPolicyArn policy), that IAM database \
                     authentication is enabled, and that {user} is an IAM user (IDENTIFIED WITH \
                     AWSAuthenticationPlugin: an existing user with a password is left as it \
                     is by IF NOT EXISTS). Pass --no-verify to skip this check."
                )
            }))
        }
        Err(Verify::WrongUser(current)) => {
            step.fail("");
            bail!(
                "the IAM token logged in, but as {current}, not {user}: an anonymous or wildcard \
                 account matches first; drop it or make {user} more specific"
            )
        }
    }
}

/// Why the check failed.
enum Verify {
    Token(anyhow::Error),
    Login(LoginError),
    WrongUser(String),
}

/// Logs in as `user` with a token and returns `CURRENT_USER()`.
async fn verify(
    prepared: &Prepared,
    connector: &dyn Connector,
    options: &client::Options,
    user: &str,
) -> Result<String, Verify> {
    let cfg = &prepared.cfg;
    let tokens = TokenCache::new(prepared.provider.clone(), cfg.profile.clone());
    let request = TokenRequest {
        host: cfg.proxy.endpoint_host.clone(),
        port: cfg.proxy.endpoint_port,
        user: user.to_owned(),
        region: cfg.proxy.region.clone(),
    };
    let token = tokens
        .token(&request)
        .await
        .map_err(|e| Verify::Token(e.into()))?;
    let password = Secret::new(token.expose());
    let mut c = login(connector, options, user, &password)
        .await
        .map_err(Verify::Login)?;
    let r = c
        .query("SELECT CURRENT_USER()", options.timeout)
        .await
        .map_err(|e| Verify::Login(e.into()))?;
    c.quit().await;
    let current = r
        .sets
        .first()
        .and_then(|s| s.rows.first())
        .and_then(|row| row.first().cloned().flatten())
        .unwrap_or_default();
    match current.rsplit_once('@') {
        Some((name, _)) if name == user => Ok(current),
        _ => Err(Verify::WrongUser(current)),
    }
}

/// One connection through `connector`, logged in.
async fn login(
    connector: &dyn Connector,
    options: &client::Options,
    user: &str,
    password: &Secret,
) -> Result<Client, LoginError> {
    let stream = connector.connect().await.map_err(LoginError::Reach)?;
    Client::login(stream, options, user, password)
        .await
        .map_err(LoginError::Client)
}

/// A login that failed before or after the stream opened.
#[derive(Debug)]
enum LoginError {
    Reach(crate::tunnel::Error),
    Client(client::Error),
}

impl From<client::Error> for LoginError {
    fn from(e: client::Error) -> Self {
        LoginError::Client(e)
    }
}

/// The hop a login goes over, for messages that say which part failed.
struct Hop<'a> {
    endpoint: &'a str,
    via: String,
    host: &'a str,
    ca: String,
}

impl Hop<'_> {
    /// Words a failed login of `who` as its fix; `refused` explains an access denial.
    fn explain(
        &self,
        e: impl Into<LoginError>,
        who: &str,
        refused: impl FnOnce() -> String,
    ) -> anyhow::Error {
        let (endpoint, via) = (self.endpoint, &self.via);
        match e.into() {
            LoginError::Reach(e) => anyhow::anyhow!(
                "cannot reach the database {endpoint} via {via}: {e}. Check that the database is \
                 running and that the bastion can reach it"
            ),
            LoginError::Client(e) if e.is_certificate_error() => anyhow::anyhow!(
                "TLS verification of {endpoint} failed: {e}. The server certificate must name {} \
                 and chain to {}; for a region missing from the embedded bundle pass --ca-bundle \
                 with AWS's global-bundle.pem",
                self.host,
                self.ca
            ),
            LoginError::Client(e) if e.tls_error().is_some_and(tls::is_version_mismatch) => {
                anyhow::anyhow!(
                    "the TLS handshake with {endpoint} failed: {e}. The database offers no TLS \
                     version rds-iam-proxy accepts: it needs TLS 1.2 or 1.3"
                )
            }
            LoginError::Client(e @ client::Error::Refused { .. }) => {
                anyhow::anyhow!("{endpoint}: {e}. {}", refused())
            }
            LoginError::Client(e @ client::Error::NoTls) => anyhow::anyhow!(
                "{endpoint}: {e}. Enable TLS on the server (RDS and Aurora always offer it)"
            ),
            LoginError::Client(e) => {
                anyhow::anyhow!("logging in as {who} at {endpoint} via {via} failed: {e}")
            }
        }
    }
}

/// The IAM database user: `--db-user`, else the stack's `DbUser`.
fn iam_user(cfg: &Config) -> Result<String> {
    cfg.proxy.db_user.clone().context(
        "admin needs the IAM database user to create: pass --db-user (or `db-user` in the config \
         file), or use a stack, whose DbUser output names it",
    )
}

/// The region in a Secrets Manager ARN (`arn:PARTITION:secretsmanager:REGION:…`).
fn secret_region(arn: &str) -> Option<&str> {
    secrets::region_of(arn)
}

/// `OK, 1 row affected, 1 warning` / `2 rows`.
fn summary(r: &client::QueryResult) -> String {
    let mut parts = Vec::new();
    if r.sets.is_empty() {
        parts.push(format!(
            "OK, {} row{} affected",
            r.affected_rows,
            if r.affected_rows == 1 { "" } else { "s" }
        ));
    }
    for s in &r.sets {
        parts.push(format!(
            "{} row{}",
            s.rows.len(),
            if s.rows.len() == 1 { "" } else { "s" }
        ));
    }
    if r.warnings > 0 {
        parts.push(format!(
            "{} warning{}",
            r.warnings,
            if r.warnings == 1 { "" } else { "s" }
        ));
    }
    parts.join(", ")
}

/// The rows of a statement's result sets, tab-separated, on stdout.
fn print_rows(r: &client::QueryResult) {
    for s in &r.sets {
        println!("{}", s.columns.join("\t"));
        for row in s.rows.iter().take(PRINTED_ROWS) {
            let cells: Vec<&str> = row.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
            println!("{}", cells.join("\t"));
        }
        if s.rows.len() > PRINTED_ROWS {
            println!("… {} more rows", s.rows.len() - PRINTED_ROWS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_regions_come_from_arns_only() {
        assert_eq!(
            secret_region("arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!cluster-1-Ab"),
            Some("eu-west-1")
        );
        assert_eq!(
            secret_region("arn:aws-cn:secretsmanager:cn-north-1:1:secret:x"),
            Some("cn-north-1")
        );
        assert_eq!(secret_region("my-secret-name"), None);
        assert_eq!(secret_region("arn:aws:s3:::bucket"), None);
    }

    #[test]
    fn summaries_read_well() {
        let mut r = client::QueryResult::default();
        assert_eq!(summary(&r), "OK, 0 rows affected");
        r.affected_rows = 1;
        r.warnings = 2;
        assert_eq!(summary(&r), "OK, 1 row affected, 2 warnings");
        r.sets.push(client::ResultSet {
            columns: vec!["a".into()],
            rows: vec![vec![None]],
        });
        assert_eq!(summary(&r), "1 row, 2 warnings");
    }
}
