//! The handshake of a port-forwarding session (spec §6, §7.2), as pure decisions on both sides.
//!
//! The agent opens with a HandshakeRequest naming the session type and its properties
//! ([`port_request`]); the client answers every requested action in a HandshakeResponse and
//! decides from the agent's version how the session carries streams ([`respond`]); the agent
//! decides the same from the client's version ([`agent_accepts`]) and sends HandshakeComplete.
//! Both ends choose [`Mode`] independently and must agree, which they do for any agent and our
//! [`CLIENT_VERSION`](super::payload::CLIENT_VERSION) (the tests below check it).
//!
//! [`respond`] is what our session task ([`crate::ssm::session`]) does with a HandshakeRequest;
//! [`port_request`] and [`agent_accepts`] are the agent's half, which the simulator's agent uses.
//! Nothing here reads a clock or touches a socket: sending, timeouts and HandshakeComplete stay
//! with the callers.

use super::payload::{
    ACTION_SESSION_TYPE, ActionParameters, ActionStatus, HandshakeRequest, HandshakeResponse,
    PORT_TYPE_LOCAL_PORT_FORWARDING, PortProperties, ProcessedClientAction, RequestedClientAction,
    SESSION_TYPE_PORT, SessionTypeRequest,
};
use super::version;

/// How the session carries streams, as agreed in the handshake (spec §7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// smux v1: many streams per session.
    Mux,
    /// One raw byte stream per session (agents up to 3.0.196.0).
    Basic,
}

/// What the handshake settled, on our side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeInfo {
    /// The agent's version.
    pub agent_version: String,
    /// Mux or basic.
    pub mode: Mode,
    /// Whether we send smux keep-alives.
    pub keepalive: bool,
}

/// Our answer to the agent's HandshakeRequest, and what it settles.
///
/// Every requested action gets one entry in the response, in order: a well-formed `Port`
/// session type succeeds, anything else fails with a reason. The response is to be sent whatever
/// the outcome (the agent then cancels a session it cannot use). The outcome is the session's
/// [`HandshakeInfo`], or why a port-forwarding client cannot use this session.
pub fn respond(
    request: HandshakeRequest,
    client_version: &str,
) -> (HandshakeResponse, Result<HandshakeInfo, String>) {
    let mut processed = Vec::new();
    let mut session: Option<PortProperties> = None;
    let mut problem = None;
    for action in &request.requested_client_actions {
        let (status, error) = match (&action.action_type[..], &action.action_parameters) {
            (ACTION_SESSION_TYPE, ActionParameters::SessionType(st))
                if st.session_type == SESSION_TYPE_PORT =>
            {
                match PortProperties::from_value(&st.properties) {
                    Ok(p) => {
                        session = Some(p);
                        (ActionStatus::SUCCESS, String::new())
                    }
                    Err(e) => (ActionStatus::FAILED, e.to_string()),
                }
            }
            (ACTION_SESSION_TYPE, ActionParameters::SessionType(st)) => {
                let msg = format!(
                    "session type {:?} is not port forwarding; start the session with a port-forwarding document",
                    st.session_type
                );
                problem = Some(msg.clone());
                (ActionStatus::FAILED, msg)
            }
            (other, _) => {
                let msg = format!("unsupported action {other:?}");
                problem.get_or_insert(msg.clone());
                (ActionStatus::FAILED, msg)
            }
        };
        processed.push(ProcessedClientAction {
            action_type: action.action_type.clone(),
            action_status: status,
            action_result: serde_json::Value::Null,
            error,
        });
    }
    let response = HandshakeResponse {
        client_version: client_version.to_owned(),
        processed_client_actions: processed,
        errors: problem.clone().map(|p| vec![p]),
    };
    (response, settle(request.agent_version, session, problem))
}

/// Our side's verdict once every action is answered.
fn settle(
    agent_version: String,
    session: Option<PortProperties>,
    problem: Option<String>,
) -> Result<HandshakeInfo, String> {
    if let Some(p) = problem {
        return Err(p);
    }
    let Some(props) = session else {
        return Err("the HandshakeRequest has no SessionType action".to_owned());
    };
    if props.r#type.as_deref() != Some(PORT_TYPE_LOCAL_PORT_FORWARDING) {
        return Err(format!(
            "the session properties have type {:?}, not {PORT_TYPE_LOCAL_PORT_FORWARDING}",
            props.r#type
        ));
    }
    let mode = if version::agent_supports_mux(&agent_version) {
        Mode::Mux
    } else {
        Mode::Basic
    };
    Ok(HandshakeInfo {
        keepalive: mode == Mode::Mux && version::agent_wants_keepalive(&agent_version),
        agent_version,
        mode,
    })
}

/// The agent's HandshakeRequest for a port session with these properties (spec §6.2): one
/// `SessionType` action of type `Port`.
pub fn port_request(agent_version: &str, properties: &PortProperties) -> HandshakeRequest {
    HandshakeRequest {
        agent_version: agent_version.to_owned(),
        requested_client_actions: vec![RequestedClientAction {
            action_type: ACTION_SESSION_TYPE.to_owned(),
            action_parameters: ActionParameters::SessionType(SessionTypeRequest {
                session_type: SESSION_TYPE_PORT.to_owned(),
                properties: properties.to_value(),
            }),
        }],
    }
}

/// What the agent settles from the client's HandshakeResponse (spec §6.3, §6.5, §7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentTerms {
    /// Mux or basic.
    pub mode: Mode,
    /// Whether the agent runs smux keep-alive (sends NOPs, and ends a mux session the client
    /// leaves silent).
    pub keepalive: bool,
}

/// The agent's verdict on the client's HandshakeResponse: the session is cancelled unless every
/// action succeeded; otherwise the client's version (and the agent's own: agents too old for smux
/// have no mux code at all) chooses the mode and keep-alive.
pub fn agent_accepts(
    response: &HandshakeResponse,
    agent_version: &str,
) -> Result<AgentTerms, String> {
    if response.processed_client_actions.is_empty()
        || response
            .processed_client_actions
            .iter()
            .any(|a| a.action_status != ActionStatus::SUCCESS)
    {
        return Err("the client failed a requested action".to_owned());
    }
    let mux = version::client_gets_mux(&response.client_version)
        && version::agent_supports_mux(agent_version);
    Ok(AgentTerms {
        mode: if mux { Mode::Mux } else { Mode::Basic },
        keepalive: mux && version::client_gets_keepalive(&response.client_version),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssm::proto::payload::{ACTION_KMS_ENCRYPTION, CLIENT_VERSION};

    fn forwarding() -> PortProperties {
        PortProperties {
            host: Some("db.internal".to_owned()),
            local_port_number: Some("0".to_owned()),
            port_number: Some("3306".to_owned()),
            r#type: Some(PORT_TYPE_LOCAL_PORT_FORWARDING.to_owned()),
            ..PortProperties::default()
        }
    }

    fn session_type(session_type: &str, properties: serde_json::Value) -> RequestedClientAction {
        RequestedClientAction {
            action_type: ACTION_SESSION_TYPE.to_owned(),
            action_parameters: ActionParameters::SessionType(SessionTypeRequest {
                session_type: session_type.to_owned(),
                properties,
            }),
        }
    }

    fn request(actions: Vec<RequestedClientAction>) -> HandshakeRequest {
        HandshakeRequest {
            agent_version: "3.3.987.0".to_owned(),
            requested_client_actions: actions,
        }
    }

    #[test]
    fn a_current_agent_gets_mux_without_keepalive_and_one_success() {
        let (response, info) = respond(port_request("3.3.987.0", &forwarding()), CLIENT_VERSION);
        assert_eq!(response.client_version, CLIENT_VERSION);
        assert_eq!(response.errors, None);
        assert_eq!(response.processed_client_actions.len(), 1);
        let action = &response.processed_client_actions[0];
        assert_eq!(action.action_type, ACTION_SESSION_TYPE);
        assert_eq!(action.action_status, ActionStatus::SUCCESS);
        assert_eq!(action.error, "");
        assert_eq!(action.action_result, serde_json::Value::Null);
        assert_eq!(
            info,
            Ok(HandshakeInfo {
                agent_version: "3.3.987.0".to_owned(),
                mode: Mode::Mux,
                keepalive: false,
            })
        );
    }

    #[test]
    fn the_agent_version_picks_mode_and_keepalive() {
        for (agent, mode, keepalive) in [
            ("3.0.196.0", Mode::Basic, false),
            ("2.3.1.0", Mode::Basic, false),
            ("3.0.196.1", Mode::Mux, true),
            ("3.1.1511.0", Mode::Mux, true),
            ("3.1.1512.0", Mode::Mux, false),
            // Not four parts: the plugin's comparison says "not newer", hence basic.
            ("3.3.987", Mode::Basic, false),
            ("", Mode::Basic, false),
        ] {
            let (_, info) = respond(port_request(agent, &forwarding()), CLIENT_VERSION);
            let info = info.unwrap();
            assert_eq!(
                (info.mode, info.keepalive),
                (mode, keepalive),
                "agent {agent}"
            );
            assert_eq!(info.agent_version, agent);
        }
    }

    #[test]
    fn a_session_type_other_than_port_is_refused_in_the_response_too() {
        let (response, info) = respond(
            request(vec![session_type("Standard_Stream", serde_json::json!({}))]),
            CLIENT_VERSION,
        );
        let why = info.unwrap_err();
        assert!(
            why.contains("\"Standard_Stream\" is not port forwarding"),
            "{why}"
        );
        assert_eq!(response.errors, Some(vec![why.clone()]));
        assert_eq!(
            response.processed_client_actions[0].action_status,
            ActionStatus::FAILED
        );
        assert_eq!(response.processed_client_actions[0].error, why);
    }

    #[test]
    fn unknown_actions_fail_and_the_first_problem_is_reported() {
        let (response, info) = respond(
            request(vec![
                RequestedClientAction {
                    action_type: ACTION_KMS_ENCRYPTION.to_owned(),
                    action_parameters: ActionParameters::default(),
                },
                session_type(SESSION_TYPE_PORT, forwarding().to_value()),
                RequestedClientAction {
                    action_type: "Mystery".to_owned(),
                    action_parameters: ActionParameters::default(),
                },
            ]),
            CLIENT_VERSION,
        );
        let statuses: Vec<_> = response
            .processed_client_actions
            .iter()
            .map(|a| (a.action_type.as_str(), a.action_status))
            .collect();
        assert_eq!(
            statuses,
            [
                (ACTION_KMS_ENCRYPTION, ActionStatus::FAILED),
                (ACTION_SESSION_TYPE, ActionStatus::SUCCESS),
                ("Mystery", ActionStatus::FAILED),
            ]
        );
        assert_eq!(info, Err("unsupported action \"KMSEncryption\"".to_owned()));
        assert_eq!(
            response.errors,
            Some(vec!["unsupported action \"KMSEncryption\"".to_owned()])
        );
    }

    #[test]
    fn no_session_type_or_unreadable_properties_leave_no_session() {
        let (response, info) = respond(request(vec![]), CLIENT_VERSION);
        assert!(response.processed_client_actions.is_empty());
        assert_eq!(response.errors, None);
        assert_eq!(
            info,
            Err("the HandshakeRequest has no SessionType action".to_owned())
        );

        let (response, info) = respond(
            request(vec![session_type(
                SESSION_TYPE_PORT,
                serde_json::json!({"portNumber": 3306}),
            )]),
            CLIENT_VERSION,
        );
        let action = &response.processed_client_actions[0];
        assert_eq!(action.action_status, ActionStatus::FAILED);
        assert!(action.error.contains("port Properties"), "{}", action.error);
        assert_eq!(
            info,
            Err("the HandshakeRequest has no SessionType action".to_owned())
        );
    }

    #[test]
    fn a_port_session_that_is_not_local_port_forwarding_is_refused() {
        let props = PortProperties {
            r#type: None,
            ..forwarding()
        };
        let (response, info) = respond(port_request("3.3.987.0", &props), CLIENT_VERSION);
        // The action itself was fine, so the agent hears success; we cannot use the session.
        assert_eq!(
            response.processed_client_actions[0].action_status,
            ActionStatus::SUCCESS
        );
        assert_eq!(
            info,
            Err("the session properties have type None, not LocalPortForwarding".to_owned())
        );
    }

    #[test]
    fn the_agent_cancels_unless_every_action_succeeded() {
        let (refused, _) = respond(
            request(vec![session_type("Standard_Stream", serde_json::json!({}))]),
            CLIENT_VERSION,
        );
        assert!(agent_accepts(&refused, "3.3.987.0").is_err());
        let empty = HandshakeResponse {
            client_version: CLIENT_VERSION.to_owned(),
            ..HandshakeResponse::default()
        };
        assert!(agent_accepts(&empty, "3.3.987.0").is_err());
    }

    #[test]
    fn the_agent_picks_mode_and_keepalive_from_the_client_version() {
        let (mut response, _) = respond(port_request("3.3.987.0", &forwarding()), CLIENT_VERSION);
        for (client, agent, mode, keepalive) in [
            (CLIENT_VERSION, "3.3.987.0", Mode::Mux, false),
            ("1.2.331.0", "3.3.987.0", Mode::Mux, true),
            ("1.1.70", "3.3.987.0", Mode::Mux, true),
            ("1.1.69", "3.3.987.0", Mode::Basic, false),
            (CLIENT_VERSION, "3.0.196.0", Mode::Basic, false),
        ] {
            response.client_version = client.to_owned();
            assert_eq!(
                agent_accepts(&response, agent),
                Ok(AgentTerms { mode, keepalive }),
                "client {client}, agent {agent}"
            );
        }
    }

    /// Spec §7.2: both ends choose the mode on their own and must agree. With our client version
    /// they do, whatever the agent's version.
    #[test]
    fn both_ends_agree_on_the_mode_with_our_client_version() {
        for agent in [
            "2.3.1.0",
            "3.0.196.0",
            "3.0.196.1",
            "3.1.1511.0",
            "3.1.1512.0",
            "3.3.987.0",
            "99.0.0.0",
        ] {
            let (response, ours) = respond(port_request(agent, &forwarding()), CLIENT_VERSION);
            let theirs = agent_accepts(&response, agent).unwrap();
            assert_eq!(ours.unwrap().mode, theirs.mode, "agent {agent}");
        }
    }
}
