//! The deployment files checked offline: CloudFormation, Dockerfiles, Kubernetes manifests, workflows.
//!
//! One test binary of the suite; each module below is one subject, with its own `//!` opening.

#[path = "../common/mod.rs"]
mod common;

mod deploy;
mod manifests;
