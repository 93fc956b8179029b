//! The PostgreSQL engine: the RDS-shaped PostgreSQL fixture and the codec against real peers.
//!
//! One test binary of the suite; each module below is one subject, with its own `//!` opening.

#[path = "../common/mod.rs"]
mod common;

mod postgres_fixture;
