//! The MySQL engine against scripted and RDS-shaped upstreams: login, relay, hostile input, clients.
//!
//! One test binary of the suite; each module below is one subject, with its own `//!` opening.

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod clients_selftest;
mod compression;
mod link_lost;
mod login_hardening;
mod mysql8_scripted;
mod mysql_client;
mod probes;
mod proxy_e2e;
mod secret_login;
mod stall_spool;
mod upstream_harness;
