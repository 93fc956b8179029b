//! The SSM transport: streams through the simulator, healing, flow control, the proxy over SSM.
//!
//! One test binary of the suite; each module below is one subject, with its own `//!` opening.

#[path = "../common/mod.rs"]
mod common;

mod ssm_e2e;
mod ssm_endpoint_env;
mod ssm_flow;
mod ssm_healing;
mod ssm_proxy;
