//! The binary as people run it: command line, completions, the demo, lifecycle, operations, a quiet start, Unix sockets.
//!
//! One test binary of the suite; each module below is one subject, with its own `//!` opening.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod completions;
mod demo;
mod lifecycle;
mod ops;
mod quiet_start;
mod unix_socket;
