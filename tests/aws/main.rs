//! The AWS side: discovery, admin, Secrets Manager, corporate HTTP proxies, secrets kept out of output.
//!
//! One test binary of the suite; each module below is one subject, with its own `//!` opening.

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod discovery;
mod http_proxy;
mod secret_mode;
mod secrets;
