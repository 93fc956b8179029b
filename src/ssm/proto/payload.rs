//! The payloads AgentMessages carry, and the OpenDataChannel text frame (spec §2.2, §4, §6).
//!
//! JSON field names and key order follow the Go structs of `aws/session-manager-plugin`
//! (`src/message/clientmessage.go`, `src/message/handshakemessage.go`, `src/service/service.go`)
//! and `aws/amazon-ssm-agent` (`agent/session/contracts/model.go`), so our encoder's output is
//! byte-identical to Go's `encoding/json` for the same values (the golden tests check this against
//! digests the reference produced) — except that Go escapes `<`, `>`, `&`, U+2028 and U+2029 inside
//! strings and serde_json does not, which every JSON parser reads the same. Decoding is as tolerant as Go's where it matters: unknown keys are
//! ignored, missing keys take zero values, and `null` lists read as empty. Every decoder refuses
//! inputs over [`MAX_JSON_PAYLOAD_LEN`] before parsing; serde_json's recursion limit bounds nesting.
//!
//! This file knows nothing of sequence numbers or of which side sends what; see
//! [`super::reliable`] and [`super::handshake`].

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::Error;
use super::message::AgentMessage;

/// Largest JSON payload any decoder here accepts (64 KiB). The largest real one, a HandshakeRequest,
/// is a few hundred bytes.
pub const MAX_JSON_PAYLOAD_LEN: usize = 64 * 1024;

/// `MessageSchemaVersion` of OpenDataChannel.
pub const MESSAGE_SCHEMA_VERSION: &str = "1.0";

/// The plugin release whose behaviour we implement and advertise in OpenDataChannel and
/// HandshakeResponse (spec §6.5): signed upgrade, smux mode, smux keep-alive off.
pub const CLIENT_VERSION: &str = "1.2.764.0";

/// `ActionType` of the session-type action every HandshakeRequest carries.
pub const ACTION_SESSION_TYPE: &str = "SessionType";

/// `ActionType` of the KMS encryption action (never requested for port sessions, spec §6.6).
pub const ACTION_KMS_ENCRYPTION: &str = "KMSEncryption";

/// `SessionType` of port-forwarding sessions.
pub const SESSION_TYPE_PORT: &str = "Port";

/// Port property `type` that selects port forwarding (basic or smux mode) on both ends.
pub const PORT_TYPE_LOCAL_PORT_FORWARDING: &str = "LocalPortForwarding";

/// Parses a bounded JSON payload.
fn decode_json<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, Error> {
    if bytes.len() > MAX_JSON_PAYLOAD_LEN {
        return Err(Error::PayloadTooLarge {
            what,
            len: bytes.len(),
            max: MAX_JSON_PAYLOAD_LEN,
        });
    }
    serde_json::from_slice(bytes).map_err(|source| Error::Json { what, source })
}

/// Serializes a payload; our types have string keys only, so this cannot fail.
fn encode_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value)
        .expect("payload types serialize to JSON infallibly (string keys only)")
}

/// Reads `null` (what Go writes for a nil slice) or a missing key as an empty list.
fn null_as_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// Adds `encode() -> Bytes` and bounded `decode(&[u8])` to a JSON payload type.
macro_rules! json_payload {
    ($ty:ty, $what:literal) => {
        impl $ty {
            /// Serializes to the JSON bytes a reference implementation would send.
            pub fn encode(&self) -> Bytes {
                Bytes::from(encode_json(self))
            }

            /// Parses a payload of at most [`MAX_JSON_PAYLOAD_LEN`] bytes.
            pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
                decode_json($what, bytes)
            }
        }
    };
}

/// The first WebSocket frame, sent as **text** right after the upgrade (spec §2.2).
///
/// Key order covers both senders: the plugin writes MessageSchemaVersion, RequestId, TokenValue,
/// ClientId, ClientVersion; the agent writes ClientInstanceId before ClientId and no ClientVersion.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OpenDataChannel {
    /// Always [`MESSAGE_SCHEMA_VERSION`].
    #[serde(rename = "MessageSchemaVersion", default)]
    pub message_schema_version: String,
    /// A fresh lowercase hyphenated UUIDv4 per open, reconnects included.
    #[serde(rename = "RequestId", default)]
    pub request_id: String,
    /// The session token from StartSession or the latest ResumeSession. Secret: never logged.
    #[serde(rename = "TokenValue", default)]
    pub token_value: String,
    /// Agent only: its instance id.
    #[serde(
        rename = "ClientInstanceId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_instance_id: Option<String>,
    /// One UUIDv4 per client process, reused on reconnect.
    #[serde(rename = "ClientId", default)]
    pub client_id: String,
    /// Client only: the plugin version we claim ([`CLIENT_VERSION`]).
    #[serde(
        rename = "ClientVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_version: Option<String>,
}

impl std::fmt::Debug for OpenDataChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenDataChannel")
            .field("message_schema_version", &self.message_schema_version)
            .field("request_id", &self.request_id)
            .field("token_value", &"<redacted>")
            .field("client_instance_id", &self.client_instance_id)
            .field("client_id", &self.client_id)
            .field("client_version", &self.client_version)
            .finish()
    }
}

impl OpenDataChannel {
    /// Serializes to the text of the WebSocket text frame.
    pub fn encode(&self) -> String {
        String::from_utf8(encode_json(self)).expect("serde_json writes UTF-8")
    }

    /// Parses the text frame (at most [`MAX_JSON_PAYLOAD_LEN`] bytes).
    pub fn decode(text: &str) -> Result<Self, Error> {
        decode_json("OpenDataChannel", text.as_bytes())
    }
}

/// The payload of an `acknowledge` message (spec §4.3). Only the sequence number is used by
/// receivers; the rest echoes the acknowledged message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcknowledgeContent {
    /// The acknowledged message's MessageType.
    #[serde(rename = "AcknowledgedMessageType", default)]
    pub acknowledged_message_type: String,
    /// The acknowledged message's id, lowercase hyphenated.
    #[serde(rename = "AcknowledgedMessageId", default)]
    pub acknowledged_message_id: String,
    /// The acknowledged message's SequenceNumber: the only field receivers act on (required).
    #[serde(rename = "AcknowledgedMessageSequenceNumber")]
    pub acknowledged_message_sequence_number: i64,
    /// Always true.
    #[serde(rename = "IsSequentialMessage", default)]
    pub is_sequential_message: bool,
}

json_payload!(AcknowledgeContent, "acknowledge");

impl AcknowledgeContent {
    /// The content acknowledging `message`.
    pub fn for_message(message: &AgentMessage) -> Self {
        Self {
            acknowledged_message_type: message.message_type.to_string(),
            acknowledged_message_id: message.message_id.to_string(),
            acknowledged_message_sequence_number: message.sequence_number,
            is_sequential_message: true,
        }
    }
}

/// The payload of `channel_closed` (spec §4.4), in the plugin's key order. The agent's struct has
/// no `Output`. Nobody parses `CreatedDate`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelClosed {
    /// Id of the closing message.
    #[serde(rename = "MessageId")]
    pub message_id: String,
    /// Free-form creation time (format unspecified).
    #[serde(rename = "CreatedDate")]
    pub created_date: String,
    /// The target (instance or ECS task) of the session.
    #[serde(rename = "DestinationId")]
    pub destination_id: String,
    /// The session being closed.
    #[serde(rename = "SessionId")]
    pub session_id: String,
    /// `"channel_closed"`.
    #[serde(rename = "MessageType")]
    pub message_type: String,
    /// 1.
    #[serde(rename = "SchemaVersion")]
    pub schema_version: i64,
    /// Reason text shown to the user; empty for a normal end.
    #[serde(rename = "Output")]
    pub output: String,
}

json_payload!(ChannelClosed, "channel_closed");

/// The payload of `agent_session_state`, agent → service (spec §4.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentSessionState {
    /// 1.
    #[serde(rename = "SchemaVersion")]
    pub schema_version: i64,
    /// `"Connected"` or `"Terminating"`.
    #[serde(rename = "SessionState")]
    pub session_state: String,
    /// The session.
    #[serde(rename = "SessionId")]
    pub session_id: String,
}

json_payload!(AgentSessionState, "agent_session_state");

/// HandshakeRequest, agent → client, PayloadType 5 (spec §6.2).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HandshakeRequest {
    /// The agent's version; four dot-separated numbers (it selects smux vs basic mode, spec §7.2).
    #[serde(rename = "AgentVersion", default)]
    pub agent_version: String,
    /// What the agent asks the client to do; every action gets one answer in the response.
    #[serde(
        rename = "RequestedClientActions",
        default,
        deserialize_with = "null_as_empty"
    )]
    pub requested_client_actions: Vec<RequestedClientAction>,
}

json_payload!(HandshakeRequest, "HandshakeRequest");

/// One action of a HandshakeRequest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawRequestedClientAction")]
pub struct RequestedClientAction {
    /// [`ACTION_SESSION_TYPE`], [`ACTION_KMS_ENCRYPTION`] or something this client does not know.
    #[serde(rename = "ActionType")]
    pub action_type: String,
    /// The action's parameters.
    #[serde(rename = "ActionParameters")]
    pub action_parameters: ActionParameters,
}

/// The wire shape of [`RequestedClientAction`] before its parameters are typed.
#[derive(Deserialize)]
struct RawRequestedClientAction {
    #[serde(rename = "ActionType", default)]
    action_type: String,
    #[serde(rename = "ActionParameters", default)]
    action_parameters: Value,
}

impl From<RawRequestedClientAction> for RequestedClientAction {
    fn from(raw: RawRequestedClientAction) -> Self {
        let action_parameters = if raw.action_type == ACTION_SESSION_TYPE {
            match serde_json::from_value(raw.action_parameters.clone()) {
                Ok(request) => ActionParameters::SessionType(request),
                Err(_) => ActionParameters::Other(raw.action_parameters),
            }
        } else {
            ActionParameters::Other(raw.action_parameters)
        };
        Self {
            action_type: raw.action_type,
            action_parameters,
        }
    }
}

/// The parameters of a requested action.
#[derive(Clone, Debug, PartialEq)]
pub enum ActionParameters {
    /// A well-formed `SessionType` action.
    SessionType(SessionTypeRequest),
    /// Any other action, or a `SessionType` action whose parameters are malformed (the handshake
    /// answers it with status Failed, as the plugin does).
    Other(Value),
}

impl Default for ActionParameters {
    fn default() -> Self {
        Self::Other(Value::Null)
    }
}

impl Serialize for ActionParameters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::SessionType(request) => request.serialize(s),
            Self::Other(value) => value.serialize(s),
        }
    }
}

/// The parameters of the `SessionType` action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionTypeRequest {
    /// [`SESSION_TYPE_PORT`] for port forwarding; the plugin also knows `Standard_Stream`,
    /// `InteractiveCommands` and `NonInteractiveCommands`.
    #[serde(rename = "SessionType", default)]
    pub session_type: String,
    /// The session document's resolved properties (for port sessions see [`PortProperties`]).
    /// A JSON map serializes with sorted keys, as Go marshals maps.
    #[serde(rename = "Properties", default)]
    pub properties: Value,
}

/// The `Properties` of a `Port` session: the resolved parameters of the port-forwarding documents
/// (spec §1.2, §7.1). All values are strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortProperties {
    /// Remote host to dial (the `...ToRemoteHost` document); absent means `localhost`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `"unix"` makes the plugin listen on `local_unix_socket` instead of TCP.
    #[serde(
        rename = "localConnectionType",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_connection_type: Option<String>,
    /// Local listening port; `""` or `"0"` means ephemeral.
    #[serde(rename = "localPortNumber", skip_serializing_if = "Option::is_none")]
    pub local_port_number: Option<String>,
    /// Unix socket path for `localConnectionType = "unix"`.
    #[serde(rename = "localUnixSocket", skip_serializing_if = "Option::is_none")]
    pub local_unix_socket: Option<String>,
    /// Remote port the agent dials.
    #[serde(rename = "portNumber", skip_serializing_if = "Option::is_none")]
    pub port_number: Option<String>,
    /// [`PORT_TYPE_LOCAL_PORT_FORWARDING`] for port forwarding.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
}

impl PortProperties {
    /// Reads port properties out of [`SessionTypeRequest::properties`].
    pub fn from_value(value: &Value) -> Result<Self, Error> {
        Self::deserialize(value).map_err(|source| Error::Json {
            what: "port Properties",
            source,
        })
    }

    /// The properties as a JSON map (keys sorted, absent ones omitted).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("PortProperties has string fields only")
    }
}

/// ActionStatus of a processed action (spec §6.3). Unknown values are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActionStatus(pub i64);

impl ActionStatus {
    /// 1: done.
    pub const SUCCESS: Self = Self(1);
    /// 2: failed; the agent cancels the session.
    pub const FAILED: Self = Self(2);
    /// 3: not supported; the agent cancels the session.
    pub const UNSUPPORTED: Self = Self(3);
}

/// HandshakeResponse, client → agent, PayloadType 6 (spec §6.3).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HandshakeResponse {
    /// The client version (selects smux mode and keep-alive on the agent, spec §6.5).
    #[serde(rename = "ClientVersion", default)]
    pub client_version: String,
    /// One entry per requested action, in request order.
    #[serde(
        rename = "ProcessedClientActions",
        default,
        deserialize_with = "null_as_empty"
    )]
    pub processed_client_actions: Vec<ProcessedClientAction>,
    /// `null` or a list of error texts.
    #[serde(rename = "Errors", default)]
    pub errors: Option<Vec<String>>,
}

json_payload!(HandshakeResponse, "HandshakeResponse");

/// One answered action of a HandshakeResponse.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessedClientAction {
    /// Echo of the requested ActionType.
    #[serde(rename = "ActionType")]
    pub action_type: String,
    /// Outcome; anything but [`ActionStatus::SUCCESS`] makes the agent cancel the session.
    #[serde(rename = "ActionStatus")]
    pub action_status: ActionStatus,
    /// Action-specific result (`null` for SessionType).
    #[serde(rename = "ActionResult")]
    pub action_result: Value,
    /// Error text, empty on success.
    #[serde(rename = "Error")]
    pub error: String,
}

/// HandshakeComplete, agent → client, PayloadType 7 (spec §6.4): the signal to start forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HandshakeComplete {
    /// How long the handshake took on the agent, in nanoseconds (a Go `time.Duration`).
    #[serde(rename = "HandshakeTimeToComplete")]
    pub handshake_time_to_complete: i64,
    /// Text to show the user when non-empty.
    #[serde(rename = "CustomerMessage")]
    pub customer_message: String,
}

json_payload!(HandshakeComplete, "HandshakeComplete");

/// The payload of PayloadType 10: one big-endian u32 (spec §4.6). Flags travel as ordinary
/// sequenced stream messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Flag {
    /// Client, basic mode only: the local TCP client went away; the agent closes its connection.
    DisconnectToPort = 1,
    /// Client: the user interrupted; the agent ends the session.
    TerminateSession = 2,
    /// Agent, smux mode only: dialling the destination for a new stream failed.
    ConnectToPortError = 3,
}

impl Flag {
    /// The 4-byte payload.
    pub fn encode(self) -> Bytes {
        Bytes::copy_from_slice(&(self as u32).to_be_bytes())
    }

    /// Parses a flag payload: exactly four bytes holding a known value.
    pub fn decode(payload: &[u8]) -> Result<Self, Error> {
        let word: [u8; 4] = payload
            .try_into()
            .map_err(|_| Error::FlagLength { len: payload.len() })?;
        match u32::from_be_bytes(word) {
            1 => Ok(Self::DisconnectToPort),
            2 => Ok(Self::TerminateSession),
            3 => Ok(Self::ConnectToPortError),
            other => Err(Error::UnknownFlag(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssm::proto::message::{MessageId, MessageType, PayloadType};

    /// Spec §3.5 / §4.3: the acknowledge payload the plugin's serializer produced (176 bytes).
    const ACK_JSON: &str = r#"{"AcknowledgedMessageType":"output_stream_data","AcknowledgedMessageId":"dd01e56b-ff48-483e-a508-b5f073f31b16","AcknowledgedMessageSequenceNumber":0,"IsSequentialMessage":true}"#;

    /// Spec §6.2 example with the §3.5 values (AgentVersion 3.3.987.0, host db.internal, port 5432).
    const HANDSHAKE_REQUEST_JSON: &str = r#"{"AgentVersion":"3.3.987.0","RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":{"SessionType":"Port","Properties":{"host":"db.internal","localPortNumber":"0","portNumber":"5432","type":"LocalPortForwarding"}}}]}"#;

    /// Spec §6.3.
    const HANDSHAKE_RESPONSE_JSON: &str = r#"{"ClientVersion":"1.2.764.0","ProcessedClientActions":[{"ActionType":"SessionType","ActionStatus":1,"ActionResult":null,"Error":""}],"Errors":null}"#;

    /// Spec §2.2 key order (token shortened).
    const OPEN_DATA_CHANNEL_JSON: &str = r#"{"MessageSchemaVersion":"1.0","RequestId":"6b5b0a57-3b1e-4c39-9f7e-0c2f3a2b1d10","TokenValue":"AAEAAtoken","ClientId":"0f5e7c9a-1d2b-4c3d-8e9f-a0b1c2d3e4f5","ClientVersion":"1.2.764.0"}"#;

    #[test]
    fn acknowledge_golden_json() {
        let content = AcknowledgeContent {
            acknowledged_message_type: "output_stream_data".into(),
            acknowledged_message_id: "dd01e56b-ff48-483e-a508-b5f073f31b16".into(),
            acknowledged_message_sequence_number: 0,
            is_sequential_message: true,
        };
        assert_eq!(&content.encode()[..], ACK_JSON.as_bytes());
        assert_eq!(ACK_JSON.len(), 176);
        assert_eq!(
            AcknowledgeContent::decode(ACK_JSON.as_bytes()).unwrap(),
            content
        );
    }

    #[test]
    fn acknowledge_for_message_echoes_type_id_and_sequence() {
        let m = AgentMessage {
            message_type: MessageType::INPUT_STREAM_DATA,
            schema_version: 1,
            created_date: 1,
            sequence_number: 42,
            flags: 0,
            message_id: "11111111-2222-3333-4444-555555555555".parse().unwrap(),
            payload_type: PayloadType::OUTPUT,
            payload: Bytes::from_static(b"x"),
        };
        let c = AcknowledgeContent::for_message(&m);
        assert_eq!(c.acknowledged_message_type, "input_stream_data");
        assert_eq!(
            c.acknowledged_message_id,
            "11111111-2222-3333-4444-555555555555"
        );
        assert_eq!(c.acknowledged_message_sequence_number, 42);
        assert!(c.is_sequential_message);
    }

    #[test]
    fn acknowledge_requires_only_the_sequence_number() {
        let c = AcknowledgeContent::decode(br#"{"AcknowledgedMessageSequenceNumber":9,"Extra":1}"#)
            .unwrap();
        assert_eq!(c.acknowledged_message_sequence_number, 9);
        assert!(matches!(
            AcknowledgeContent::decode(br#"{"AcknowledgedMessageType":"x"}"#),
            Err(Error::Json {
                what: "acknowledge",
                ..
            })
        ));
        assert!(matches!(
            AcknowledgeContent::decode(br#"{"AcknowledgedMessageSequenceNumber":"9"}"#),
            Err(Error::Json { .. })
        ));
    }

    #[test]
    fn handshake_request_golden_json() {
        let r = HandshakeRequest::decode(HANDSHAKE_REQUEST_JSON.as_bytes()).unwrap();
        assert_eq!(r.agent_version, "3.3.987.0");
        assert_eq!(r.requested_client_actions.len(), 1);
        let action = &r.requested_client_actions[0];
        assert_eq!(action.action_type, ACTION_SESSION_TYPE);
        let ActionParameters::SessionType(st) = &action.action_parameters else {
            panic!("expected SessionType parameters, got {action:?}");
        };
        assert_eq!(st.session_type, SESSION_TYPE_PORT);
        let port = PortProperties::from_value(&st.properties).unwrap();
        assert_eq!(port.host.as_deref(), Some("db.internal"));
        assert_eq!(port.port_number.as_deref(), Some("5432"));
        assert_eq!(port.local_port_number.as_deref(), Some("0"));
        assert_eq!(
            port.r#type.as_deref(),
            Some(PORT_TYPE_LOCAL_PORT_FORWARDING)
        );
        assert_eq!(port.local_connection_type, None);
        // Re-encoding gives the same bytes (key order of structs and of the sorted map).
        assert_eq!(&r.encode()[..], HANDSHAKE_REQUEST_JSON.as_bytes());
    }

    #[test]
    fn handshake_request_keeps_unknown_actions_and_malformed_session_types() {
        let json = br#"{"AgentVersion":"3.0.196.0","RequestedClientActions":[
            {"ActionType":"KMSEncryption","ActionParameters":{"KMSKeyId":"arn:k","Challenge":"AAAA"}},
            {"ActionType":"SessionType","ActionParameters":"not an object"},
            {"ActionType":"Teleport"}]}"#;
        let r = HandshakeRequest::decode(json).unwrap();
        let a = &r.requested_client_actions;
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].action_type, ACTION_KMS_ENCRYPTION);
        assert!(
            matches!(&a[0].action_parameters, ActionParameters::Other(v) if v["KMSKeyId"] == "arn:k")
        );
        assert!(matches!(
            &a[1].action_parameters,
            ActionParameters::Other(Value::String(_))
        ));
        assert_eq!(a[2].action_parameters, ActionParameters::Other(Value::Null));
    }

    #[test]
    fn handshake_request_tolerates_null_and_missing_lists() {
        for json in [
            &br#"{"AgentVersion":"1.0.0.0","RequestedClientActions":null}"#[..],
            br#"{"AgentVersion":"1.0.0.0"}"#,
        ] {
            let r = HandshakeRequest::decode(json).unwrap();
            assert!(r.requested_client_actions.is_empty());
        }
        for not_an_object in [&b"5"[..], b"\"x\"", b"null", b"[1]"] {
            assert!(HandshakeRequest::decode(not_an_object).is_err());
        }
        assert!(HandshakeRequest::decode(b"").is_err());
    }

    #[test]
    fn handshake_response_golden_json() {
        let r = HandshakeResponse {
            client_version: CLIENT_VERSION.into(),
            processed_client_actions: vec![ProcessedClientAction {
                action_type: ACTION_SESSION_TYPE.into(),
                action_status: ActionStatus::SUCCESS,
                action_result: Value::Null,
                error: String::new(),
            }],
            errors: None,
        };
        assert_eq!(&r.encode()[..], HANDSHAKE_RESPONSE_JSON.as_bytes());
        assert_eq!(
            HandshakeResponse::decode(HANDSHAKE_RESPONSE_JSON.as_bytes()).unwrap(),
            r
        );
        // Failure form with errors.
        let failed = HandshakeResponse {
            processed_client_actions: vec![ProcessedClientAction {
                action_type: ACTION_KMS_ENCRYPTION.into(),
                action_status: ActionStatus::FAILED,
                error: "no KMS here".into(),
                ..ProcessedClientAction::default()
            }],
            errors: Some(vec!["no KMS here".into()]),
            ..r
        };
        let json = failed.encode();
        assert!(
            std::str::from_utf8(&json)
                .unwrap()
                .ends_with(r#""ActionStatus":2,"ActionResult":null,"Error":"no KMS here"}],"Errors":["no KMS here"]}"#)
        );
        assert_eq!(HandshakeResponse::decode(&json).unwrap(), failed);
    }

    #[test]
    fn handshake_response_plugin_unknown_action_quirk_parses() {
        // The plugin answers an unknown action with status 0 and ActionResult 3 (spec §6.3).
        let json = br#"{"ClientVersion":"1.2.677.0","ProcessedClientActions":[{"ActionType":"X","ActionStatus":0,"ActionResult":3,"Error":"Unsupported action X"}],"Errors":["Unsupported action X"]}"#;
        let r = HandshakeResponse::decode(json).unwrap();
        assert_eq!(r.processed_client_actions[0].action_status, ActionStatus(0));
        assert_eq!(r.processed_client_actions[0].action_result, Value::from(3));
    }

    #[test]
    fn handshake_complete_json() {
        let c = HandshakeComplete {
            handshake_time_to_complete: 1_234_567,
            customer_message: String::new(),
        };
        let json = br#"{"HandshakeTimeToComplete":1234567,"CustomerMessage":""}"#;
        assert_eq!(&c.encode()[..], json);
        assert_eq!(HandshakeComplete::decode(json).unwrap(), c);
        assert_eq!(
            HandshakeComplete::decode(
                br#"{"CustomerMessage":"This session is encrypted using AWS KMS."}"#
            )
            .unwrap()
            .customer_message,
            "This session is encrypted using AWS KMS."
        );
    }

    #[test]
    fn open_data_channel_key_order_for_both_senders() {
        let client = OpenDataChannel {
            message_schema_version: MESSAGE_SCHEMA_VERSION.into(),
            request_id: "6b5b0a57-3b1e-4c39-9f7e-0c2f3a2b1d10".into(),
            token_value: "AAEAAtoken".into(),
            client_instance_id: None,
            client_id: "0f5e7c9a-1d2b-4c3d-8e9f-a0b1c2d3e4f5".into(),
            client_version: Some(CLIENT_VERSION.into()),
        };
        assert_eq!(client.encode(), OPEN_DATA_CHANNEL_JSON);
        assert_eq!(
            OpenDataChannel::decode(OPEN_DATA_CHANNEL_JSON).unwrap(),
            client
        );

        let agent = OpenDataChannel {
            client_instance_id: Some("i-0123456789abcdef0".into()),
            client_version: None,
            ..client
        };
        assert_eq!(
            agent.encode(),
            r#"{"MessageSchemaVersion":"1.0","RequestId":"6b5b0a57-3b1e-4c39-9f7e-0c2f3a2b1d10","TokenValue":"AAEAAtoken","ClientInstanceId":"i-0123456789abcdef0","ClientId":"0f5e7c9a-1d2b-4c3d-8e9f-a0b1c2d3e4f5"}"#
        );
    }

    #[test]
    fn open_data_channel_debug_redacts_the_token() {
        let o = OpenDataChannel {
            token_value: "AAEAAsecret".into(),
            ..OpenDataChannel::default()
        };
        let s = format!("{o:?}");
        assert!(!s.contains("secret"), "{s}");
        assert!(s.contains("<redacted>"));
    }

    #[test]
    fn channel_closed_json() {
        let json = br#"{"MessageId":"a","CreatedDate":"2024-01-01T00:00:00.000Z","DestinationId":"i-1","SessionId":"s-1","MessageType":"channel_closed","SchemaVersion":1,"Output":"Session terminated"}"#;
        let c = ChannelClosed::decode(json).unwrap();
        assert_eq!(c.session_id, "s-1");
        assert_eq!(c.output, "Session terminated");
        assert_eq!(&c.encode()[..], &json[..]);
        // The agent's shape (no Output, different key order) parses too.
        let agent = br#"{"MessageType":"channel_closed","MessageId":"a","DestinationId":"i-1","SessionId":"s-1","SchemaVersion":1,"CreatedDate":"x"}"#;
        let c = ChannelClosed::decode(agent).unwrap();
        assert_eq!(c.output, "");
        assert_eq!(c.destination_id, "i-1");
    }

    #[test]
    fn agent_session_state_json() {
        let s = AgentSessionState {
            schema_version: 1,
            session_state: "Connected".into(),
            session_id: "s-1".into(),
        };
        let json = br#"{"SchemaVersion":1,"SessionState":"Connected","SessionId":"s-1"}"#;
        assert_eq!(&s.encode()[..], json);
        assert_eq!(AgentSessionState::decode(json).unwrap(), s);
    }

    #[test]
    fn flags() {
        for (flag, value) in [
            (Flag::DisconnectToPort, 1u8),
            (Flag::TerminateSession, 2),
            (Flag::ConnectToPortError, 3),
        ] {
            assert_eq!(&flag.encode()[..], &[0, 0, 0, value]);
            assert_eq!(Flag::decode(&[0, 0, 0, value]).unwrap(), flag);
        }
        assert!(matches!(
            Flag::decode(&[0, 0, 0, 4]),
            Err(Error::UnknownFlag(4))
        ));
        assert!(matches!(
            Flag::decode(&[1, 0, 0, 2]),
            Err(Error::UnknownFlag(0x0100_0002))
        ));
        for len in [0usize, 3, 5, 8] {
            assert!(matches!(
                Flag::decode(&vec![0; len]),
                Err(Error::FlagLength { len: l }) if l == len
            ));
        }
    }

    #[test]
    fn oversized_payloads_are_refused_before_parsing() {
        let mut big = br#"{"AgentVersion":""#.to_vec();
        big.resize(MAX_JSON_PAYLOAD_LEN + 1, b'x');
        assert!(matches!(
            HandshakeRequest::decode(&big),
            Err(Error::PayloadTooLarge { what: "HandshakeRequest", len, max: MAX_JSON_PAYLOAD_LEN })
                if len == MAX_JSON_PAYLOAD_LEN + 1
        ));
        let text = "x".repeat(MAX_JSON_PAYLOAD_LEN + 1);
        assert!(matches!(
            OpenDataChannel::decode(&text),
            Err(Error::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let depth = 20_000;
        let mut json = br#"{"AgentVersion":"1","RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":"#.to_vec();
        json.extend(std::iter::repeat_n(b'[', depth));
        json.extend(std::iter::repeat_n(b']', depth));
        json.extend(b"}]}");
        assert!(json.len() < MAX_JSON_PAYLOAD_LEN);
        assert!(matches!(
            HandshakeRequest::decode(&json),
            Err(Error::Json { .. })
        ));
    }

    #[test]
    fn random_and_truncated_json_never_panics() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(11);
        let goldens = [
            ACK_JSON,
            HANDSHAKE_REQUEST_JSON,
            HANDSHAKE_RESPONSE_JSON,
            OPEN_DATA_CHANNEL_JSON,
        ];
        for g in goldens {
            for len in 0..g.len() {
                let b = &g.as_bytes()[..len];
                let _ = AcknowledgeContent::decode(b);
                let _ = HandshakeRequest::decode(b);
                let _ = HandshakeResponse::decode(b);
                let _ = HandshakeComplete::decode(b);
                let _ = ChannelClosed::decode(b);
            }
        }
        for _ in 0..5_000 {
            let g = goldens[rng.random_range(0..goldens.len())];
            let mut b = g.as_bytes().to_vec();
            let i = rng.random_range(0..b.len());
            b[i] = rng.random();
            let _ = AcknowledgeContent::decode(&b);
            let _ = HandshakeRequest::decode(&b);
            let _ = HandshakeResponse::decode(&b);
            let _ = ChannelClosed::decode(&b);
            let _ = AgentSessionState::decode(&b);
            if let Ok(text) = std::str::from_utf8(&b) {
                let _ = OpenDataChannel::decode(text);
            }
        }
        // Round trip of every type through random values.
        for _ in 0..200 {
            let c = AcknowledgeContent {
                acknowledged_message_type: "output_stream_data".into(),
                acknowledged_message_id: MessageId::random().to_string(),
                acknowledged_message_sequence_number: rng.random(),
                is_sequential_message: rng.random(),
            };
            assert_eq!(AcknowledgeContent::decode(&c.encode()).unwrap(), c);
        }
    }
}
