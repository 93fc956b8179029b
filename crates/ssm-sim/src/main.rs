//! `ssm-sim`: the SSM Session Manager simulator as a process (see the `ssm_sim` library).
//!
//! ```text
//! ssm-sim --listen 127.0.0.1:0 --route mydb.example:3306=127.0.0.1:3306 [knobs]
//! ```
//! prints one line, the SSM endpoint URL (`http://127.0.0.1:PORT`), then serves until interrupted.
//! Point clients at it with `AWS_ENDPOINT_URL_SSM=<that URL>`.
//!
//! Flow-control knobs: `--uplink-rate 4MiB` (client → agent bytes per second), `--stop-acks-after
//! 30s` (each session's agent stops acknowledging that long after it starts), `--fast-agent` (the
//! older, gentler agent: 8 MiB send window, no 100 ms resend scan), `--agent-max-unacked N`.
//!
//! `--aws-world FILE.json` also serves an AWS account (CloudFormation, RDS, STS, EC2, ECS,
//! Secrets Manager; format in `ssm_sim::aws`) on the same URL: point every client
//! at it with `AWS_ENDPOINT_URL=<that URL>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ssm_sim::aws::AwsWorld;
use ssm_sim::{Faults, HandshakeBehaviour, Route, SimConfig, SimServer};

/// A local SSM API + message gateway + agent for port-forwarding sessions.
#[derive(Debug, Parser)]
#[command(name = "ssm-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Forward sessions for HOST:PORT to DIALADDR (repeatable).
    #[arg(long = "route", value_name = "HOST:PORT=DIALADDR")]
    routes: Vec<Route>,
    /// AgentVersion in the handshake (3.0.196.0 or older: basic mode).
    #[arg(long, default_value = ssm_sim::DEFAULT_AGENT_VERSION)]
    agent_version: String,
    /// Realistic agent pump: 1 KiB per message and a 1 ms pause after each.
    #[arg(long)]
    realistic: bool,
    /// Bytes per agent message when not realistic.
    #[arg(long, default_value_t = 32 * 1024)]
    agent_chunk: usize,
    /// Round-trip time added by the gateway (e.g. 20ms).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    rtt: Duration,
    /// Probability of dropping a message.
    #[arg(long, default_value_t = 0.0)]
    drop: f64,
    /// Probability of duplicating a message.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Probability of reordering a message.
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// Probability of delaying a message by up to --delay-max.
    #[arg(long, default_value_t = 0.0)]
    delay: f64,
    /// Largest random delay.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20ms")]
    delay_max: Duration,
    /// Probability of dropping an acknowledge.
    #[arg(long, default_value_t = 0.0)]
    drop_acks: f64,
    /// Probability of corrupting the digest of a message toward the client.
    #[arg(long, default_value_t = 0.0)]
    corrupt_digest: f64,
    /// RNG seed for faults (0: random).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Close every client WebSocket with 1000 "Bye" after this long (e.g. 5s).
    #[arg(long, value_parser = humantime::parse_duration)]
    ws_reset_every: Option<Duration>,
    /// Answer ResumeSession without a token.
    #[arg(long)]
    refuse_resume: bool,
    /// Answer StartSession with this error, as CODE:MESSAGE.
    #[arg(long, value_name = "CODE:MESSAGE")]
    start_session_error: Option<String>,
    /// Targets reported as not connected (repeatable).
    #[arg(long = "disconnected-target")]
    disconnected_targets: Vec<String>,
    /// Idle timeout of sessions.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20m")]
    idle_timeout: Duration,
    /// Never send the HandshakeRequest.
    #[arg(long)]
    no_handshake: bool,
    /// Verify SigV4 upgrade signatures with this secret access key.
    #[arg(long, env = "SSM_SIM_VERIFY_SECRET", hide_env_values = true)]
    verify_secret: Option<String>,
    /// Refuse unsigned WebSocket upgrades.
    #[arg(long)]
    require_signature: bool,
    /// Rate limit of the client → agent link, in bytes per second (1048576, 512KiB, 4MiB, 10MB);
    /// frames queue, nothing is dropped.
    #[arg(long, value_name = "BYTES", value_parser = ssm_sim::ssm::link::parse_bytes)]
    uplink_rate: Option<u64>,
    /// Each session's agent stops acknowledging (stops taking client messages in) this long after
    /// the session starts (e.g. 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    stop_acks_after: Option<Duration>,
    /// The older, gentler agent: an 8 MiB send window, the head resent as soon as its RTO
    /// expires, in-order input dropped while destinations are backed up.
    #[arg(long)]
    fast_agent: bool,
    /// Messages the agent keeps for retransmission before sending new ones once, untracked.
    #[arg(long, default_value_t = ssm_sim::ssm::agent::AGENT_MAX_UNACKED)]
    agent_max_unacked: usize,
    /// Serve the AWS account described in this JSON file (stacks, RDS, ECS, EC2, secrets) and
    /// let sessions reach only the targets it says are up.
    #[arg(long, value_name = "FILE.json")]
    aws_world: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let aws_world = match &a.aws_world {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the AWS world {}", path.display()))?;
            Some(
                AwsWorld::from_json(&text)
                    .with_context(|| format!("{} is not a valid AWS world", path.display()))?,
            )
        }
        None => None,
    };
    let start_session_error = match a.start_session_error {
        Some(s) => {
            let (code, message) = s.split_once(':').unwrap_or((s.as_str(), ""));
            Some((code.to_owned(), message.to_owned()))
        }
        None => None,
    };
    let config = SimConfig {
        listen: a.listen,
        routes: a.routes,
        agent_version: a.agent_version,
        faults: Faults {
            drop: a.drop,
            duplicate: a.duplicate,
            reorder: a.reorder,
            delay: a.delay,
            delay_max: a.delay_max,
            drop_acks: a.drop_acks,
            corrupt_digest: a.corrupt_digest,
            seed: a.seed,
        },
        realistic: a.realistic,
        agent_chunk: a.agent_chunk,
        rtt: a.rtt,
        ws_reset_every: a.ws_reset_every,
        refuse_resume: a.refuse_resume,
        start_session_error,
        disconnected_targets: a.disconnected_targets,
        idle_timeout: a.idle_timeout,
        handshake: if a.no_handshake {
            HandshakeBehaviour::Never
        } else {
            HandshakeBehaviour::Normal
        },
        verify_secret: a.verify_secret,
        require_signature: a.require_signature,
        aws_world,
        fast_agent: a.fast_agent,
        agent_max_unacked: a.agent_max_unacked,
        uplink_rate: a.uplink_rate,
        stop_acks_after: a.stop_acks_after,
        ..SimConfig::default()
    };
    let server = SimServer::start(config).await?;
    println!("{}", server.endpoint_url());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
