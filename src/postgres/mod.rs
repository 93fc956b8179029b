//! The PostgreSQL engine (issue 15; DESIGN.md decision 14: engines share the listener, transports,
//! token, TLS rules, discovery, config and metrics, and each owns only its connection-phase codec,
//! login bridge and post-login relay).
//!
//! Today this holds the sans-IO connection-phase codec, [`proto`]; the login bridge and the relay
//! come next and live beside it.

pub mod proto;
