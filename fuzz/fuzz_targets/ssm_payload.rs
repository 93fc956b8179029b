//! The payloads an AgentMessage carries (spec §4, §6) and the OpenDataChannel text frame: any
//! bytes decode to a value or an error under every decoder, and whatever decodes encodes to JSON
//! that decodes to the same value. The handshake's follow-ups run on what decodes: the port
//! properties of a SessionType action and the version rules that pick smux or basic mode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rds_iam_proxy::ssm::proto::payload::{
    AcknowledgeContent, ActionParameters, AgentSessionState, ChannelClosed, Flag,
    HandshakeComplete, HandshakeRequest, HandshakeResponse, OpenDataChannel, PortProperties,
};
use rds_iam_proxy::ssm::proto::version;

/// decode(encode(decode(bytes))) == decode(bytes) for a JSON payload type.
macro_rules! round_trip {
    ($ty:ty, $bytes:expr) => {
        match <$ty>::decode($bytes) {
            Ok(value) => {
                let json = value.encode();
                let back = <$ty>::decode(&json).expect(concat!(
                    "re-encoded ",
                    stringify!($ty),
                    " decodes"
                ));
                assert_eq!(back, value);
                Some(value)
            }
            Err(_) => None,
        }
    };
}

fuzz_target!(|data: &[u8]| {
    round_trip!(AcknowledgeContent, data);
    round_trip!(ChannelClosed, data);
    round_trip!(AgentSessionState, data);
    round_trip!(HandshakeComplete, data);

    if let Some(request) = round_trip!(HandshakeRequest, data) {
        for action in &request.requested_client_actions {
            if let ActionParameters::SessionType(st) = &action.action_parameters
                && let Ok(props) = PortProperties::from_value(&st.properties)
            {
                assert_eq!(
                    PortProperties::from_value(&props.to_value()).unwrap(),
                    props
                );
            }
        }
        let v = &request.agent_version;
        let _ = (
            version::agent_supports_mux(v),
            version::agent_wants_keepalive(v),
        );
    }
    if let Some(response) = round_trip!(HandshakeResponse, data) {
        let v = &response.client_version;
        let _ = (
            version::client_gets_mux(v),
            version::client_gets_keepalive(v),
        );
    }

    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(open) = OpenDataChannel::decode(text)
    {
        assert_eq!(OpenDataChannel::decode(&open.encode()).unwrap(), open);
    }

    if let Ok(flag) = Flag::decode(data) {
        assert_eq!(&flag.encode()[..], data);
    }
});
