//! Shared test support: the RDS-shaped upstream, real client checks, an in-process proxy.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod aws_sim;
pub mod clients;
pub mod compression;
pub mod logged_proxy;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod upstream;
