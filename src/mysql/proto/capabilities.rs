//! Capability flags of the MySQL client/server protocol, with MariaDB's extended capabilities folded
//! into the upper 32 bits, and the proxy's rules for each flag on both legs.
//!
//! Spec: <https://dev.mysql.com/doc/dev/mysql-server/latest/group__group__cs__capabilities__flags.html>,
//! <https://mariadb.com/kb/en/connection/#capabilities>. The per-flag policy (copy, strip, force) is
//! the table in research/mysql-rds.md §1.3: the local greeting offers a subset of the upstream's flags,
//! and the flags that change framing after login must be identical on both legs, or splicing is unsafe.

use std::fmt;
use std::ops::{BitAnd, BitOr, Not, Sub};

/// A set of capability flags (`int<4>` on the wire, plus MariaDB's `int<4>` extension as bits 32–63).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(pub u64);

macro_rules! flags {
    ($($(#[$doc:meta])* $name:ident = $bit:expr;)*) => {
        impl Capabilities {
            $($(#[$doc])* pub const $name: Capabilities = Capabilities(1u64 << $bit);)*
            /// Every named flag with its name, for `Debug`.
            const NAMED: &'static [(&'static str, Capabilities)] = &[$((stringify!($name), Capabilities::$name)),*];
        }
    };
}

flags! {
    /// Server: supports the new password hashing. Client: uses it. MariaDB clears it in its greeting to
    /// announce extended capabilities (it calls the bit `CLIENT_MYSQL`).
    LONG_PASSWORD = 0;
    /// Client: report found rows instead of affected rows. Copied.
    FOUND_ROWS = 1;
    /// Client: wants all column flags. Copied.
    LONG_FLAG = 2;
    /// Client: a database name follows in HandshakeResponse41. Copied with the name.
    CONNECT_WITH_DB = 3;
    /// Deprecated: do not allow `db.table.column`. Copied.
    NO_SCHEMA = 4;
    /// zlib compression of the command phase. Stripped on both legs: it breaks splicing.
    COMPRESS = 5;
    /// ODBC client; no effect. Copied.
    ODBC = 6;
    /// Client: can handle `LOAD DATA LOCAL`. Copied; the exchange passes through the splice.
    LOCAL_FILES = 7;
    /// Client: parser ignores spaces before `(`. Copied.
    IGNORE_SPACE = 8;
    /// The 4.1 protocol. Required on both legs.
    PROTOCOL_41 = 9;
    /// Client: interactive (interactive_timeout applies). Copied.
    INTERACTIVE = 10;
    /// TLS. Locally only when local TLS is enabled; upstream always.
    SSL = 11;
    /// Client-only, never on the wire in a meaningful way. Dropped upstream.
    IGNORE_SIGPIPE = 12;
    /// Client: knows about transactions (status flags). Copied.
    TRANSACTIONS = 13;
    /// Old 4.1 flag. Copied.
    RESERVED = 14;
    /// 4.1 authentication (`SECURE_CONNECTION`, alias `RESERVED2`). Required on both legs.
    SECURE_CONNECTION = 15;
    /// Multiple statements per COM_QUERY. Copied.
    MULTI_STATEMENTS = 16;
    /// Multiple result sets. Copied (`CALL` needs it).
    MULTI_RESULTS = 17;
    /// Multiple result sets for prepared statements. Copied.
    PS_MULTI_RESULTS = 18;
    /// Pluggable authentication. Offered locally; forced on upstream (needed for the auth switch).
    PLUGIN_AUTH = 19;
    /// Connection attributes in HandshakeResponse41. Copied with the attributes.
    CONNECT_ATTRS = 20;
    /// Length-encoded auth response. Offered locally; forced on upstream (tokens exceed 255 bytes).
    PLUGIN_AUTH_LENENC_CLIENT_DATA = 21;
    /// Client: can handle expired passwords. Copied.
    CAN_HANDLE_EXPIRED_PASSWORDS = 22;
    /// Session state tracking in OK packets. Changes the OK format: must match on both legs.
    SESSION_TRACK = 23;
    /// OK instead of EOF after result sets. Changes framing: must match on both legs.
    DEPRECATE_EOF = 24;
    /// Result set metadata may be omitted. Changes framing: must match on both legs.
    OPTIONAL_RESULTSET_METADATA = 25;
    /// zstd compression (adds a level byte to HandshakeResponse41). Stripped on both legs.
    ZSTD_COMPRESSION_ALGORITHM = 26;
    /// Query attributes in COM_QUERY / COM_STMT_EXECUTE. Changes framing: must match on both legs.
    QUERY_ATTRIBUTES = 27;
    /// Multi-factor authentication. Stripped: the proxy does not run MFA.
    MULTI_FACTOR_AUTHENTICATION = 28;
    /// Reserved for extending the flags. Stripped.
    CAPABILITY_EXTENSION = 29;
    /// Client-only: verify the server certificate. Stripped.
    SSL_VERIFY_SERVER_CERT = 30;
    /// Client-only: remember options after a failed connect. Stripped.
    REMEMBER_OPTIONS = 31;
    /// MariaDB: progress reports. Copied (changes framing).
    MARIADB_PROGRESS = 32;
    /// MariaDB: COM_MULTI (removed in 10.6+). Copied.
    MARIADB_COM_MULTI = 33;
    /// MariaDB: bulk statement operations. Copied (changes framing).
    MARIADB_STMT_BULK_OPERATIONS = 34;
    /// MariaDB: extended metadata. Copied (changes framing).
    MARIADB_EXTENDED_METADATA = 35;
    /// MariaDB: cached metadata for prepared statements. Copied (changes framing).
    MARIADB_CACHE_METADATA = 36;
    /// MariaDB: bulk unit results. Copied (changes framing).
    MARIADB_BULK_UNIT_RESULTS = 37;
}

impl Capabilities {
    /// No flags.
    pub const EMPTY: Capabilities = Capabilities(0);

    /// Flags the proxy never lets through in either direction: compression (breaks splicing), MFA (not
    /// run by the proxy), and the client-only/reserved bits.
    pub const NEVER: Capabilities = Capabilities(
        Self::COMPRESS.0
            | Self::ZSTD_COMPRESSION_ALGORITHM.0
            | Self::MULTI_FACTOR_AUTHENTICATION.0
            | Self::CAPABILITY_EXTENSION.0
            | Self::SSL_VERIFY_SERVER_CERT.0
            | Self::REMEMBER_OPTIONS.0
            | Self::IGNORE_SIGPIPE.0,
    );

    /// Flags that change the wire format after login; they must be equal on both legs.
    pub const FRAMING: Capabilities = Capabilities(
        Self::DEPRECATE_EOF.0
            | Self::SESSION_TRACK.0
            | Self::QUERY_ATTRIBUTES.0
            | Self::OPTIONAL_RESULTSET_METADATA.0
            | Self::COMPRESS.0
            | Self::ZSTD_COMPRESSION_ALGORITHM.0
            | Self::MULTI_RESULTS.0
            | Self::PS_MULTI_RESULTS.0
            | Self::PROTOCOL_41.0
            | 0xFFFF_FFFF_0000_0000,
    );

    /// Flags the upstream greeting must carry for an IAM login.
    pub const UPSTREAM_REQUIRED: Capabilities = Capabilities(
        Self::PROTOCOL_41.0 | Self::SECURE_CONNECTION.0 | Self::PLUGIN_AUTH.0 | Self::SSL.0,
    );

    /// The low 32 bits (the standard `int<4>` capability field).
    pub fn lower(self) -> u32 {
        self.0 as u32
    }

    /// MariaDB's extended capabilities (bits 32–63).
    pub fn mariadb_ext(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Builds a set from the standard field and MariaDB's extension.
    pub fn from_parts(lower: u32, ext: u32) -> Self {
        Capabilities(u64::from(lower) | (u64::from(ext) << 32))
    }

    /// True when every flag of `other` is set.
    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when any flag of `other` is set.
    pub fn intersects(self, other: Capabilities) -> bool {
        self.0 & other.0 != 0
    }

    /// True when MariaDB's extended capability field is in use (the `CLIENT_MYSQL` bit is clear).
    pub fn uses_mariadb_ext(self) -> bool {
        !self.contains(Self::LONG_PASSWORD)
    }
}

impl BitOr for Capabilities {
    type Output = Capabilities;
    fn bitor(self, rhs: Self) -> Self {
        Capabilities(self.0 | rhs.0)
    }
}

impl BitAnd for Capabilities {
    type Output = Capabilities;
    fn bitand(self, rhs: Self) -> Self {
        Capabilities(self.0 & rhs.0)
    }
}

impl Sub for Capabilities {
    type Output = Capabilities;
    fn sub(self, rhs: Self) -> Self {
        Capabilities(self.0 & !rhs.0)
    }
}

impl Not for Capabilities {
    type Output = Capabilities;
    fn not(self) -> Self {
        Capabilities(!self.0)
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}(", self.0)?;
        let mut first = true;
        let mut rest = self.0;
        for (name, flag) in Self::NAMED {
            if self.contains(*flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
                rest &= !flag.0;
            }
        }
        if rest != 0 {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{rest:#x}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_match_the_spec_values() {
        assert_eq!(Capabilities::SSL.0, 0x0800);
        assert_eq!(Capabilities::PLUGIN_AUTH.0, 0x0008_0000);
        assert_eq!(Capabilities::DEPRECATE_EOF.0, 0x0100_0000);
        assert_eq!(Capabilities::QUERY_ATTRIBUTES.0, 0x0800_0000);
        assert_eq!(Capabilities::REMEMBER_OPTIONS.0, 0x8000_0000);
        assert_eq!(Capabilities::MARIADB_PROGRESS.0, 1 << 32);
    }

    #[test]
    fn mariadb_greeting_caps_decode_to_names() {
        // The MariaDB 10.11 greeting seen in research §1.3: 0x81fffffe with ext 0x1d.
        let c = Capabilities::from_parts(0x81ff_fffe, 0x1d);
        assert!(c.uses_mariadb_ext());
        assert!(c.contains(Capabilities::UPSTREAM_REQUIRED));
        assert!(!c.contains(Capabilities::QUERY_ATTRIBUTES));
        assert_eq!(c.mariadb_ext(), 0x1d);
        let dbg = format!("{c:?}");
        assert!(
            dbg.contains("DEPRECATE_EOF") && dbg.contains("MARIADB_CACHE_METADATA"),
            "{dbg}"
        );
    }
}
