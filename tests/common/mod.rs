//! The one home of the test helpers, a file per subject: the RDS-shaped upstreams (`upstream`,
//! `postgres`), real client checks (`clients`), the proxy in process (`proxy`, `logged_proxy`) and as
//! a process (`process`), the scripted MySQL upstream (`fake`), the SSM simulator's helpers (`ssm`)
//! and the AWS account (`aws_sim`), and the soak (`soak`, shared with `examples/soak.rs`).
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod aws_sim;
pub mod clients;
pub mod compression;
pub mod fake;
pub mod logged_proxy;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod soak;
pub mod ssm;
pub mod upstream;
