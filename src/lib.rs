//! rds-iam-proxy: a passwordless local MySQL endpoint for Amazon RDS / Aurora MySQL.
//!
//! (architecture tour: filled in as the modules land)

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod iam;
pub mod mysql;
pub mod proxy;
pub mod shutdown;
pub mod tls;
pub mod tunnel;
