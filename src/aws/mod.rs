//! AWS discovery: what rds-iam-proxy learns from AWS before it can connect.
//!
//! - [`api`]: a small SigV4-signed client for the calls below (no SDK crate per service).
//! - [`stack`]: the CloudFormation outputs of the stack in `deploy/` that `--stack NAME` reads (the
//!   RDS endpoint and port, the IAM database user, the ECS cluster and service of the bastion, the
//!   region). The template and the code agree through that one module: `tests/deploy/deploy.rs` checks
//!   the template's `Outputs` against [`stack::ALL`].
//! - [`discover`]: from a [`discover::Source`] (stack, DB cluster or instance, or a plain
//!   endpoint; an ECS service, an EC2 instance or tag, or a fixed SSM target) to the endpoint, user,
//!   region and SSM target to use, following a replaced bastion task on every new session.
//! - [`loader`]: the AWS configuration of the commands, with the region looked up once.
//! - [`secrets`]: database credentials from Secrets Manager, for `admin` (the master secret) and
//!   `--secret` (upstream password logins; `--secret auto` takes the secret discovery found).
//!
//! The AWS API mock that tests and newcomers run instead of AWS is not here: it is the `aws`
//! module of the `ssm-sim` crate (`crates/ssm-sim`), served by the SSM simulator.
//!
//! # Why SSM alone uses an SDK crate
//!
//! The six services here (CloudFormation, RDS, STS, EC2, ECS, Secrets Manager) go through the
//! hand-rolled SigV4 client in [`api`]: a few small, stable calls each, for which an `aws-sdk-*`
//! crate per service would cost minutes of compile time on two cores (see [`api`]). SSM is
//! different (DESIGN.md decision 8): its calls, StartSession, ResumeSession and TerminateSession
//! in [`crate::ssm::api`], are part of the transport itself, made again for every new session and
//! every resume for as long as the proxy runs. They go through `aws-sdk-ssm`, whose client is
//! built from the same `SdkConfig` that supplies the credentials signing the data-channel
//! WebSocket, and brings the SDK's retries and its error codes, which [`crate::ssm::api`] turns
//! into errors that name the fix (`TargetNotConnected`, access denials).

pub mod api;
pub mod discover;
pub mod loader;
pub mod secrets;
pub mod stack;
