//! The Session Manager half of the simulator: what stands between a client's data-channel
//! WebSocket and the destination it asked for.
//!
//! * [`gateway`]: the message gateway, relaying AgentMessages through [`faults`] and [`link`];
//! * [`agent`]: the SSM agent's side of one session, built on rds-iam-proxy's sans-IO codecs;
//! * [`faults`]: seeded drop, duplicate, reorder, delay and corruption of messages;
//! * [`link`]: the optional rate-limited client → agent link.
//!
//! The SSM API and the WebSocket upgrade are served by [`crate::http`].

pub mod agent;
pub mod faults;
pub mod gateway;
pub mod link;
