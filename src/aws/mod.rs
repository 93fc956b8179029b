//! AWS discovery: what rds-iam-proxy learns from AWS before it can connect.
//!
//! [`stack`] names the CloudFormation outputs of the stack in `deploy/` that `--stack NAME` reads
//! (the RDS endpoint and port, the IAM database user, the ECS cluster and service of the bastion,
//! the region). The template and the code agree through that one module: `tests/deploy.rs`
//! checks the template's `Outputs` against [`stack::ALL`].

#[cfg(feature = "sim")]
pub mod mock;
pub mod stack;
