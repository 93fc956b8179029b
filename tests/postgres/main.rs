//! The PostgreSQL engine: the RDS-shaped PostgreSQL fixture and the codec against real peers, and
//! the engine end to end with real clients.
//!
//! One test binary of the suite; each module below is one subject, with its own `//!` opening.

#[path = "../common/mod.rs"]
mod common;

mod engine;
mod postgres_fixture;
