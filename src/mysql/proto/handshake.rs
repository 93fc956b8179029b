//! Connection-phase packets, each with `decode` and `encode`: [`HandshakeV10`], [`SslRequest`],
//! [`HandshakeResponse41`], [`AuthSwitchRequest`], [`AuthMoreData`] and [`ComChangeUser`].
//!
//! Spec: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase.html> and
//! MariaDB's <https://mariadb.com/kb/en/connection/>. Field comments give the wire type. Decoders
//! never panic and never trust a peer's length beyond the payload they were handed.

use bytes::{BufMut, Bytes, BytesMut};

use super::Error;
use super::buf::{Reader, put_lenenc_bytes, put_lenenc_int, put_nul_bytes};
use super::capabilities::Capabilities;

/// Size of the fixed part shared by SSLRequest and HandshakeResponse41.
pub const SSL_REQUEST_LEN: usize = 32;

/// Plugin names the proxy deals with.
pub mod plugin {
    /// The cleartext client plugin RDS IAM authentication switches to.
    pub const MYSQL_CLEAR_PASSWORD: &str = "mysql_clear_password";
    /// MySQL 8's default; what the local greeting announces.
    pub const CACHING_SHA2_PASSWORD: &str = "caching_sha2_password";
    /// The pre-8.0 default.
    pub const MYSQL_NATIVE_PASSWORD: &str = "mysql_native_password";
}

/// `Protocol::HandshakeV10`, the server greeting (sequence id 0).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HandshakeV10 {
    /// `string<NUL>` server version, e.g. `8.0.39` or `5.5.5-10.11.19-MariaDB`.
    pub server_version: Bytes,
    /// `int<4>` connection (thread) id.
    pub connection_id: u32,
    /// The scramble: `string[8]` part 1 followed by part 2, without part 2's trailing NUL.
    pub auth_plugin_data: Bytes,
    /// `int<2>` low + `int<2>` high capability flags, plus MariaDB's `int<4>` extension in the
    /// reserved bytes when `LONG_PASSWORD` is clear.
    pub capabilities: Capabilities,
    /// `int<1>` default collation id.
    pub character_set: u8,
    /// `int<2>` status flags.
    pub status_flags: u16,
    /// `string<NUL>` auth plugin name, present with `PLUGIN_AUTH`.
    pub auth_plugin_name: Option<Bytes>,
}

impl HandshakeV10 {
    /// Parses a greeting payload. An ERR payload (first byte `0xFF`) must be checked by the caller.
    pub fn decode(payload: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(payload);
        let version = r.u8("protocol_version")?;
        if version != 10 {
            return Err(Error::Unsupported {
                what: "protocol version other than 10",
            });
        }
        let server_version = Bytes::copy_from_slice(r.nul_bytes("server_version")?);
        let connection_id = r.u32("connection_id")?;
        let part1 = r.bytes(8, "auth_plugin_data_part_1")?;
        r.u8("filler")?;
        let low = u32::from(r.u16("capability_flags_1")?);
        if r.is_empty() {
            // Pre-4.1 short greeting; callers refuse it for lack of PROTOCOL_41.
            return Ok(HandshakeV10 {
                server_version,
                connection_id,
                auth_plugin_data: Bytes::copy_from_slice(part1),
                capabilities: Capabilities::from_parts(low, 0),
                character_set: 0,
                status_flags: 0,
                auth_plugin_name: None,
            });
        }
        let character_set = r.u8("character_set")?;
        let status_flags = r.u16("status_flags")?;
        let lower = low | (u32::from(r.u16("capability_flags_2")?) << 16);
        let data_len = r.u8("auth_plugin_data_len")?;
        let reserved = r.bytes(10, "reserved")?;
        let mut capabilities = Capabilities::from_parts(lower, 0);
        if capabilities.uses_mariadb_ext() {
            let ext = u32::from_le_bytes([reserved[6], reserved[7], reserved[8], reserved[9]]);
            capabilities = Capabilities::from_parts(lower, ext);
        }
        let mut scramble = BytesMut::from(part1);
        if capabilities.contains(Capabilities::SECURE_CONNECTION) {
            let part2 = r.bytes(part2_len(capabilities, data_len), "auth_plugin_data_part_2")?;
            // Servers NUL-terminate part 2 (and pad a short one with NULs); scrambles hold no NUL.
            let end = part2.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            scramble.extend_from_slice(&part2[..end]);
        }
        let auth_plugin_name = if capabilities.contains(Capabilities::PLUGIN_AUTH) {
            Some(Bytes::copy_from_slice(r.nul_bytes_or_rest()))
        } else {
            None
        };
        Ok(HandshakeV10 {
            server_version,
            connection_id,
            auth_plugin_data: scramble.freeze(),
            capabilities,
            character_set,
            status_flags,
            auth_plugin_name,
        })
    }

    /// Writes the greeting payload.
    pub fn encode(&self, dst: &mut BytesMut) {
        let caps = self.capabilities;
        dst.put_u8(10);
        put_nul_bytes(dst, &self.server_version);
        dst.put_u32_le(self.connection_id);
        let mut part1 = [0u8; 8];
        let n = self.auth_plugin_data.len().min(8);
        part1[..n].copy_from_slice(&self.auth_plugin_data[..n]);
        dst.put_slice(&part1);
        dst.put_u8(0);
        dst.put_u16_le(caps.lower() as u16);
        dst.put_u8(self.character_set);
        dst.put_u16_le(self.status_flags);
        dst.put_u16_le((caps.lower() >> 16) as u16);
        let part2 = self.auth_plugin_data.get(8..).unwrap_or_default();
        let data_len = if caps.contains(Capabilities::PLUGIN_AUTH) {
            (8 + part2.len() + 1).min(255) as u8
        } else {
            0
        };
        dst.put_u8(data_len);
        dst.put_bytes(0, 6);
        if caps.uses_mariadb_ext() {
            dst.put_u32_le(caps.mariadb_ext());
        } else {
            dst.put_bytes(0, 4);
        }
        if caps.contains(Capabilities::SECURE_CONNECTION) {
            // Exactly the length a reader takes: the scramble, then NUL padding (at least the
            // terminator while it fits).
            let n = part2_len(caps, data_len);
            let part2 = &part2[..part2.len().min(n)];
            dst.put_slice(part2);
            dst.put_bytes(0, n - part2.len());
        }
        if let Some(name) = &self.auth_plugin_name {
            put_nul_bytes(dst, name);
        }
    }
}

/// Length of `auth_plugin_data_part_2` in a greeting: `MAX(13, auth_plugin_data_len - 8)` with
/// `PLUGIN_AUTH`, else 13 (the length byte is 0 then).
fn part2_len(caps: Capabilities, data_len: u8) -> usize {
    if caps.contains(Capabilities::PLUGIN_AUTH) {
        usize::from(data_len).saturating_sub(8).max(13)
    } else {
        13
    }
}

/// `Protocol::SSLRequest`: the 32-byte fixed head of HandshakeResponse41 with `SSL` set; TLS follows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SslRequest {
    /// `int<4>` client flags (+ MariaDB extension at offset 28).
    pub capabilities: Capabilities,
    /// `int<4>` max packet size.
    pub max_packet_size: u32,
    /// `int<1>` collation id.
    pub character_set: u8,
}

impl SslRequest {
    /// Parses a 32-byte SSLRequest payload.
    pub fn decode(payload: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(payload);
        let (capabilities, max_packet_size, character_set) = decode_fixed_head(&mut r)?;
        if !r.is_empty() {
            return Err(Error::Malformed {
                field: "ssl_request",
                reason: "trailing bytes after the 32-byte SSLRequest",
            });
        }
        Ok(SslRequest {
            capabilities,
            max_packet_size,
            character_set,
        })
    }

    /// Writes the 32-byte payload.
    pub fn encode(&self, dst: &mut BytesMut) {
        encode_fixed_head(
            dst,
            self.capabilities,
            self.max_packet_size,
            self.character_set,
        );
    }

    /// True when `payload` is an SSLRequest rather than a full HandshakeResponse41.
    pub fn matches(payload: &[u8]) -> bool {
        payload.len() == SSL_REQUEST_LEN
            && u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]])
                & (Capabilities::SSL.0 as u32)
                != 0
    }
}

fn decode_fixed_head(r: &mut Reader<'_>) -> Result<(Capabilities, u32, u8), Error> {
    let lower = r.u32("client_flag")?;
    let max_packet_size = r.u32("max_packet_size")?;
    let character_set = r.u8("character_set")?;
    let filler = r.bytes(23, "filler")?;
    let mut caps = Capabilities::from_parts(lower, 0);
    if caps.uses_mariadb_ext() {
        let ext = u32::from_le_bytes([filler[19], filler[20], filler[21], filler[22]]);
        caps = Capabilities::from_parts(lower, ext);
    }
    Ok((caps, max_packet_size, character_set))
}

fn encode_fixed_head(dst: &mut BytesMut, caps: Capabilities, max_packet: u32, charset: u8) {
    dst.put_u32_le(caps.lower());
    dst.put_u32_le(max_packet);
    dst.put_u8(charset);
    dst.put_bytes(0, 19);
    if caps.uses_mariadb_ext() {
        dst.put_u32_le(caps.mariadb_ext());
    } else {
        dst.put_bytes(0, 4);
    }
}

/// Connection attributes: ordered `(key, value)` pairs of `string<lenenc>`.
pub type ConnectAttrs = Vec<(Bytes, Bytes)>;

/// `Protocol::HandshakeResponse41`, the client's login packet.
#[derive(Clone, PartialEq, Eq)]
pub struct HandshakeResponse41 {
    /// `int<4>` client flags (+ MariaDB extension).
    pub capabilities: Capabilities,
    /// `int<4>` max packet size.
    pub max_packet_size: u32,
    /// `int<1>` collation id.
    pub character_set: u8,
    /// `string<NUL>` user name.
    pub username: Bytes,
    /// Auth response (`string<lenenc>`, 1-byte-length or `string<NUL>` depending on the flags).
    pub auth_response: Bytes,
    /// `string<NUL>` schema, with `CONNECT_WITH_DB`.
    pub database: Option<Bytes>,
    /// `string<NUL>` client plugin name, with `PLUGIN_AUTH`.
    pub auth_plugin_name: Option<Bytes>,
    /// Connection attributes, with `CONNECT_ATTRS`.
    pub connect_attrs: Option<ConnectAttrs>,
    /// `int<1>` zstd level, with `ZSTD_COMPRESSION_ALGORITHM`.
    pub zstd_level: Option<u8>,
}

impl std::fmt::Debug for HandshakeResponse41 {
    // The auth response is a password hash or a token: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeResponse41")
            .field("capabilities", &self.capabilities)
            .field("max_packet_size", &self.max_packet_size)
            .field("character_set", &self.character_set)
            .field("username", &String::from_utf8_lossy(&self.username))
            .field("auth_response_len", &self.auth_response.len())
            .field(
                "database",
                &self.database.as_ref().map(|d| String::from_utf8_lossy(d)),
            )
            .field(
                "auth_plugin_name",
                &self
                    .auth_plugin_name
                    .as_ref()
                    .map(|d| String::from_utf8_lossy(d)),
            )
            .field("connect_attrs", &self.connect_attrs.as_ref().map(Vec::len))
            .field("zstd_level", &self.zstd_level)
            .finish()
    }
}

/// Bound on the connection attributes block (MySQL servers cap it at 64 KiB).
pub const MAX_CONNECT_ATTRS_LEN: usize = 64 * 1024;

impl HandshakeResponse41 {
    /// Parses a HandshakeResponse41 payload. Clients without `PROTOCOL_41` are refused.
    pub fn decode(payload: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(payload);
        let (capabilities, max_packet_size, character_set) = decode_fixed_head(&mut r)?;
        if !capabilities.contains(Capabilities::PROTOCOL_41) {
            return Err(Error::Unsupported {
                what: "clients without the 4.1 protocol (CLIENT_PROTOCOL_41)",
            });
        }
        let username = Bytes::copy_from_slice(r.nul_bytes("username")?);
        let auth_response = if capabilities.contains(Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA) {
            r.lenenc_bytes("auth_response")?
        } else if capabilities.contains(Capabilities::SECURE_CONNECTION) {
            let n = r.u8("auth_response_length")?;
            r.bytes(usize::from(n), "auth_response")?
        } else {
            r.nul_bytes_or_rest()
        };
        let auth_response = Bytes::copy_from_slice(auth_response);
        let database = if capabilities.contains(Capabilities::CONNECT_WITH_DB) && !r.is_empty() {
            Some(Bytes::copy_from_slice(r.nul_bytes_or_rest()))
        } else {
            None
        };
        let auth_plugin_name = if capabilities.contains(Capabilities::PLUGIN_AUTH) && !r.is_empty()
        {
            Some(Bytes::copy_from_slice(r.nul_bytes_or_rest()))
        } else {
            None
        };
        let connect_attrs = if capabilities.contains(Capabilities::CONNECT_ATTRS) && !r.is_empty() {
            Some(decode_attrs(&mut r)?)
        } else {
            None
        };
        let zstd_level =
            if capabilities.contains(Capabilities::ZSTD_COMPRESSION_ALGORITHM) && !r.is_empty() {
                Some(r.u8("zstd_compression_level")?)
            } else {
                None
            };
        Ok(HandshakeResponse41 {
            capabilities,
            max_packet_size,
            character_set,
            username,
            auth_response,
            database,
            auth_plugin_name,
            connect_attrs,
            zstd_level,
        })
    }

    /// Writes the payload, laying out each field as `self.capabilities` says.
    pub fn encode(&self, dst: &mut BytesMut) {
        let caps = self.capabilities;
        encode_fixed_head(dst, caps, self.max_packet_size, self.character_set);
        put_nul_bytes(dst, &self.username);
        if caps.contains(Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA) {
            put_lenenc_bytes(dst, &self.auth_response);
        } else if caps.contains(Capabilities::SECURE_CONNECTION) {
            let n = self.auth_response.len().min(255);
            dst.put_u8(n as u8);
            dst.put_slice(&self.auth_response[..n]);
        } else {
            put_nul_bytes(dst, &self.auth_response);
        }
        if caps.contains(Capabilities::CONNECT_WITH_DB) {
            put_nul_bytes(dst, self.database.as_deref().unwrap_or_default());
        }
        if caps.contains(Capabilities::PLUGIN_AUTH) {
            put_nul_bytes(dst, self.auth_plugin_name.as_deref().unwrap_or_default());
        }
        if caps.contains(Capabilities::CONNECT_ATTRS) {
            encode_attrs(dst, self.connect_attrs.as_deref().unwrap_or_default());
        }
        if caps.contains(Capabilities::ZSTD_COMPRESSION_ALGORITHM) {
            dst.put_u8(self.zstd_level.unwrap_or(3));
        }
    }
}

fn decode_attrs(r: &mut Reader<'_>) -> Result<ConnectAttrs, Error> {
    let block = r.lenenc_bytes("connect_attrs")?;
    if block.len() > MAX_CONNECT_ATTRS_LEN {
        return Err(Error::Malformed {
            field: "connect_attrs",
            reason: "connection attributes larger than 64 KiB",
        });
    }
    let mut a = Reader::new(block);
    let mut out = Vec::new();
    while !a.is_empty() {
        let k = a.lenenc_bytes("connect_attr_key")?;
        let v = a.lenenc_bytes("connect_attr_value")?;
        out.push((Bytes::copy_from_slice(k), Bytes::copy_from_slice(v)));
    }
    Ok(out)
}

fn encode_attrs(dst: &mut BytesMut, attrs: &[(Bytes, Bytes)]) {
    let mut block = BytesMut::new();
    for (k, v) in attrs {
        put_lenenc_bytes(&mut block, k);
        put_lenenc_bytes(&mut block, v);
    }
    put_lenenc_int(dst, block.len() as u64);
    dst.put_slice(&block);
}

/// `Protocol::AuthSwitchRequest` (`0xFE`, plugin name, plugin data).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AuthSwitchRequest {
    /// `string<NUL>` plugin the server wants the client to use.
    pub plugin_name: Bytes,
    /// `string<EOF>` plugin data (a scramble for MySQL; empty for MariaDB PAM).
    pub plugin_data: Bytes,
}

impl AuthSwitchRequest {
    /// Header byte.
    pub const HEADER: u8 = 0xFE;

    /// Parses the payload (starting with `0xFE`). A lone `0xFE` (the pre-4.1 old-password switch) is
    /// refused.
    pub fn decode(payload: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(payload);
        if r.u8("status_tag")? != Self::HEADER {
            return Err(Error::Malformed {
                field: "status_tag",
                reason: "AuthSwitchRequest must start with 0xFE",
            });
        }
        if r.is_empty() {
            return Err(Error::Unsupported {
                what: "the pre-4.1 old-password auth switch",
            });
        }
        let plugin_name = Bytes::copy_from_slice(r.nul_bytes_or_rest());
        let plugin_data = Bytes::copy_from_slice(r.rest());
        Ok(AuthSwitchRequest {
            plugin_name,
            plugin_data,
        })
    }

    /// Writes the payload.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(Self::HEADER);
        put_nul_bytes(dst, &self.plugin_name);
        dst.put_slice(&self.plugin_data);
    }
}

/// `Protocol::AuthMoreData` (`0x01` + data). `01 03` is caching_sha2 fast-auth success,
/// `01 04` asks for full authentication.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AuthMoreData {
    /// `string<EOF>` plugin data.
    pub data: Bytes,
}

impl AuthMoreData {
    /// Header byte.
    pub const HEADER: u8 = 0x01;
    /// caching_sha2_password: the scramble matched the cache.
    pub const FAST_AUTH_SUCCESS: u8 = 0x03;
    /// caching_sha2_password: send the password (over TLS) or ask for the RSA key.
    pub const PERFORM_FULL_AUTHENTICATION: u8 = 0x04;

    /// Parses the payload (starting with `0x01`).
    pub fn decode(payload: &[u8]) -> Result<Self, Error> {
        match payload.split_first() {
            Some((&Self::HEADER, data)) => Ok(AuthMoreData {
                data: Bytes::copy_from_slice(data),
            }),
            _ => Err(Error::Malformed {
                field: "status_tag",
                reason: "AuthMoreData must start with 0x01",
            }),
        }
    }

    /// Writes the payload.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(Self::HEADER);
        dst.put_slice(&self.data);
    }
}

/// `COM_CHANGE_USER` (`0x11`), read with the capabilities agreed on the leg it travels.
#[derive(Clone, PartialEq, Eq)]
pub struct ComChangeUser {
    /// `string<NUL>` new user.
    pub username: Bytes,
    /// Auth response: `int<1>` length + bytes with `SECURE_CONNECTION`, else `string<NUL>`.
    pub auth_response: Bytes,
    /// `string<NUL>` schema.
    pub database: Bytes,
    /// `int<2>` collation id, when present.
    pub character_set: Option<u16>,
    /// `string<NUL>` client plugin, with `PLUGIN_AUTH`, when present.
    pub auth_plugin_name: Option<Bytes>,
    /// Connection attributes, with `CONNECT_ATTRS`, when present.
    pub connect_attrs: Option<ConnectAttrs>,
}

impl std::fmt::Debug for ComChangeUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComChangeUser")
            .field("username", &String::from_utf8_lossy(&self.username))
            .field("auth_response_len", &self.auth_response.len())
            .field("database", &String::from_utf8_lossy(&self.database))
            .field("character_set", &self.character_set)
            .field(
                "auth_plugin_name",
                &self
                    .auth_plugin_name
                    .as_ref()
                    .map(|d| String::from_utf8_lossy(d)),
            )
            .finish()
    }
}

impl ComChangeUser {
    /// Command byte.
    pub const COMMAND: u8 = 0x11;

    /// Parses the payload (starting with `0x11`) under the capabilities `caps` of its leg.
    pub fn decode(payload: &[u8], caps: Capabilities) -> Result<Self, Error> {
        let mut r = Reader::new(payload);
        if r.u8("command")? != Self::COMMAND {
            return Err(Error::Malformed {
                field: "command",
                reason: "COM_CHANGE_USER must start with 0x11",
            });
        }
        let username = Bytes::copy_from_slice(r.nul_bytes("username")?);
        let auth_response = if caps.contains(Capabilities::SECURE_CONNECTION) {
            let n = r.u8("auth_response_length")?;
            r.bytes(usize::from(n), "auth_response")?
        } else {
            r.nul_bytes("auth_response")?
        };
        let auth_response = Bytes::copy_from_slice(auth_response);
        let database = Bytes::copy_from_slice(r.nul_bytes_or_rest());
        let character_set = if r.remaining() >= 2 {
            Some(r.u16("character_set")?)
        } else {
            None
        };
        // The plugin and the attributes follow the collation; a lone stray byte is no plugin.
        let more = character_set.is_some();
        let auth_plugin_name = if more && caps.contains(Capabilities::PLUGIN_AUTH) && !r.is_empty()
        {
            Some(Bytes::copy_from_slice(r.nul_bytes_or_rest()))
        } else {
            None
        };
        let connect_attrs = if more && caps.contains(Capabilities::CONNECT_ATTRS) && !r.is_empty() {
            Some(decode_attrs(&mut r)?)
        } else {
            None
        };
        Ok(ComChangeUser {
            username,
            auth_response,
            database,
            character_set,
            auth_plugin_name,
            connect_attrs,
        })
    }

    /// Writes the payload under the capabilities `caps` of the leg it will travel.
    pub fn encode(&self, dst: &mut BytesMut, caps: Capabilities) {
        dst.put_u8(Self::COMMAND);
        put_nul_bytes(dst, &self.username);
        if caps.contains(Capabilities::SECURE_CONNECTION) {
            let n = self.auth_response.len().min(255);
            dst.put_u8(n as u8);
            dst.put_slice(&self.auth_response[..n]);
        } else {
            put_nul_bytes(dst, &self.auth_response);
        }
        put_nul_bytes(dst, &self.database);
        let Some(charset) = self.character_set else {
            return;
        };
        dst.put_u16_le(charset);
        if caps.contains(Capabilities::PLUGIN_AUTH) {
            put_nul_bytes(dst, self.auth_plugin_name.as_deref().unwrap_or_default());
        }
        if let (true, Some(attrs)) = (
            caps.contains(Capabilities::CONNECT_ATTRS),
            &self.connect_attrs,
        ) {
            encode_attrs(dst, attrs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzzing (mysql_upstream): a greeting whose scramble part 2 is shorter than the 13 bytes the
    /// wire reserves (here a pre-4.1 short greeting with SECURE_CONNECTION) re-encoded with NUL
    /// padding that the decoder then took for scramble bytes.
    #[test]
    fn greeting_with_short_scramble_round_trips() {
        let short = b"\x0a\xff\x00\x28\xff\xff\xff\xff\x00\xdb\xdb\xdb\x25\xdb\x00\x00\x00\xff";
        let g = HandshakeV10::decode(short).unwrap();
        assert_eq!(g.auth_plugin_data.len(), 8);
        let mut out = BytesMut::new();
        g.encode(&mut out);
        assert_eq!(HandshakeV10::decode(&out).unwrap(), g);

        for part2 in [&b""[..], b"abcde", b"abcdefghijkl", b"abcdefghijklm"] {
            for caps in [0xdfff_ffffu32, 0xdfff_ffff & !(1 << 19)] {
                let g = HandshakeV10 {
                    server_version: Bytes::from_static(b"8.4.3"),
                    connection_id: 1,
                    auth_plugin_data: Bytes::from([&b"12345678"[..], part2].concat()),
                    capabilities: Capabilities::from_parts(caps, 0),
                    character_set: 255,
                    status_flags: 2,
                    auth_plugin_name: (caps & (1 << 19) != 0)
                        .then(|| Bytes::from_static(b"caching_sha2_password")),
                };
                let mut out = BytesMut::new();
                g.encode(&mut out);
                assert_eq!(HandshakeV10::decode(&out).unwrap(), g, "part 2 {part2:?}");
            }
        }
    }

    /// The longest scramble the length byte can announce (255 - 8 bytes of part 2, no room for a
    /// terminator) is written at exactly that length, so the plugin name after it stays aligned.
    #[test]
    fn greeting_with_longest_scramble_round_trips() {
        for len in [246usize, 247] {
            let g = HandshakeV10 {
                server_version: Bytes::from_static(b"8.4.3"),
                connection_id: 1,
                auth_plugin_data: Bytes::from(vec![b'x'; 8 + len]),
                capabilities: Capabilities::from_parts(0xdfff_ffff, 0),
                character_set: 255,
                status_flags: 2,
                auth_plugin_name: Some(Bytes::from_static(b"caching_sha2_password")),
            };
            let mut out = BytesMut::new();
            g.encode(&mut out);
            assert_eq!(HandshakeV10::decode(&out).unwrap(), g, "part 2 of {len}");
        }
    }

    /// Fuzzing (mysql_client): a COM_CHANGE_USER with one byte after the schema, too short for a
    /// collation, had that byte read as a plugin name that the encoder (rightly) never writes
    /// without a collation.
    #[test]
    fn change_user_reads_no_plugin_without_a_collation() {
        let caps = Capabilities(u64::MAX);
        let c = ComChangeUser::decode(b"\x11\x00\x00\x00\x00", caps).unwrap();
        assert_eq!(c.character_set, None);
        assert_eq!(c.auth_plugin_name, None);
        let mut out = BytesMut::new();
        c.encode(&mut out, caps);
        assert_eq!(ComChangeUser::decode(&out, caps).unwrap(), c);
    }
}
