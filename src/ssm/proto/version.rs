//! Version strings of the plugin and the agent, compared the way each end compares them: both
//! ends pick smux or basic mode, and smux keep-alive on or off, from the other end's version
//! (spec §6.5, §7.2).
//!
//! The plugin compares dotted numbers component-wise and treats a different number of components
//! as "not newer" (`src/version/versionutil.go`), which silently selects basic mode for an agent
//! version that is not four parts. The agent compares component-wise with a shorter version
//! smaller on a tie (`agent/versionutil/versionutil.go`). Both rules are here.

use std::cmp::Ordering;

/// The agent version from which the plugin (and we) run smux: strictly newer than this.
pub const AGENT_MUX_AFTER: &str = "3.0.196.0";

/// Agents strictly newer than this run smux without keep-alive; older ones want NOPs (spec §7.4).
pub const AGENT_KEEPALIVE_OFF_AFTER: &str = "3.1.1511.0";

/// Clients at or above this version get smux mode from the agent (spec §7.2).
pub const CLIENT_MUX_FROM: &str = "1.1.70";

/// Clients strictly newer than this get smux without keep-alive from the agent (spec §6.5).
pub const CLIENT_KEEPALIVE_OFF_AFTER: &str = "1.2.331.0";

/// Parses a dotted version into its numeric components; `None` if any part is not a number.
pub fn parse(v: &str) -> Option<Vec<u64>> {
    v.trim().split('.').map(|p| p.parse::<u64>().ok()).collect()
}

/// The plugin's "is `a` newer than `b`": only versions with the same number of numeric parts
/// compare; anything else is "not newer".
pub fn plugin_is_newer(a: &str, b: &str) -> bool {
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) if a.len() == b.len() => a > b,
        _ => false,
    }
}

/// The agent's comparison: component-wise, missing components count as smaller; unparsable
/// versions compare as lowest.
pub fn agent_compare(a: &str, b: &str) -> Ordering {
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => a.cmp(&b),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Client side: does an agent of this version speak smux to us?
pub fn agent_supports_mux(agent_version: &str) -> bool {
    plugin_is_newer(agent_version, AGENT_MUX_AFTER)
}

/// Client side: must we send smux NOP keep-alives to an agent of this version?
pub fn agent_wants_keepalive(agent_version: &str) -> bool {
    !plugin_is_newer(agent_version, AGENT_KEEPALIVE_OFF_AFTER)
}

/// Agent side: does a client of this version get smux mode?
pub fn client_gets_mux(client_version: &str) -> bool {
    agent_compare(client_version, CLIENT_MUX_FROM) != Ordering::Less
}

/// Agent side: does the agent run smux keep-alive with a client of this version?
pub fn client_gets_keepalive(client_version: &str) -> bool {
    agent_compare(client_version, CLIENT_KEEPALIVE_OFF_AFTER) != Ordering::Greater
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_rules() {
        assert!(agent_supports_mux("3.3.987.0"));
        assert!(agent_supports_mux("3.0.196.1"));
        assert!(!agent_supports_mux("3.0.196.0"));
        assert!(!agent_supports_mux("2.3.722.0"));
        // Not four parts: "not newer", basic mode, as the plugin does.
        assert!(!agent_supports_mux("3.3.987"));
        assert!(!agent_supports_mux("garbage"));
        assert!(agent_wants_keepalive("3.1.1511.0"));
        assert!(!agent_wants_keepalive("3.1.1511.1"));
        assert!(!agent_wants_keepalive("3.3.987.0"));
    }

    #[test]
    fn agent_rules() {
        assert!(client_gets_mux("1.2.764.0"));
        assert!(client_gets_mux("1.1.70"));
        assert!(client_gets_mux("1.1.70.0"));
        assert!(!client_gets_mux("1.1.69.0"));
        assert!(!client_gets_mux("1.1"));
        assert!(client_gets_keepalive("1.2.331.0"));
        assert!(client_gets_keepalive("1.2.0.0"));
        assert!(!client_gets_keepalive("1.2.764.0"));
    }
}
