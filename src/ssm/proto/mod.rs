//! The SSM data channel's sans-IO layer: codecs and state machines that take bytes and the time and
//! return bytes and events. Nothing here owns a socket, spawns a task or reads a clock.

pub mod message;
pub mod payload;
pub mod reliable;
pub mod smux;
pub mod version;

pub use super::Error;
