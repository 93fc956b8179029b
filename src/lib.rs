//! rds-iam-proxy: a passwordless local MySQL endpoint for Amazon RDS / Aurora MySQL.
//!
//! (architecture tour: filled in as the modules land)

#![forbid(unsafe_code)]

pub mod iam;
pub mod ssm;
