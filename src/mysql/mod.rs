//! The MySQL engine: everything of MySQL's wire protocol the proxy speaks (DESIGN.md decision 14).
//!
//! [`proto`] is the sans-IO part (packet framing, the connection-phase packets, OK/ERR, capability
//! rules, scrambles); the modules beside it are the I/O around it: [`framed`] reads and writes
//! whole packets during login, [`login`] bridges one client's login to the database, and
//! [`splice`] relays bytes after login. What every engine shares (the listener, limits, the
//! token and password sources, TLS, transports) lives outside this folder.

pub mod framed;
pub mod login;
pub mod proto;
pub mod splice;
