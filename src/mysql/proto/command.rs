//! The command-phase packets a small client needs to run SQL text: [`ComQuery`], the first packet of
//! its answer ([`QueryResponse`]), [`ColumnDefinition41`], text result rows ([`TextRow`]) and the
//! [`EofPacket`] that ends column definitions and rows.
//!
//! Spec: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query.html> and
//! <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response_text_resultset.html>.
//! Only the layout without `DEPRECATE_EOF`, `QUERY_ATTRIBUTES` and
//! `OPTIONAL_RESULTSET_METADATA` is handled: the client that uses this module does not ask for
//! them. The proxy itself never parses the command phase (it splices), so this is the admin
//! client's codec. Decoders never panic and bound what they allocate by the payload they get.

use bytes::{BufMut, Bytes, BytesMut};

use super::Error;
use super::buf::Reader;
use super::response::{ErrPacket, OkPacket};

/// `SERVER_MORE_RESULTS_EXISTS`: another result follows this one (multi-results, `CALL`).
pub const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;

/// Most columns a result set may announce (MySQL's own table limit is 4096).
pub const MAX_COLUMNS: u64 = 4096;

/// `COM_QUERY` (`0x03`) with the statement text, without query attributes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ComQuery<'a> {
    /// `string<EOF>` the statement.
    pub query: &'a str,
}

impl ComQuery<'_> {
    /// Command byte.
    pub const COMMAND: u8 = 0x03;

    /// Writes the payload.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(Self::COMMAND);
        dst.put_slice(self.query.as_bytes());
    }
}

/// `COM_QUIT` (`0x01`): the client is leaving; the server answers nothing.
pub const COM_QUIT: u8 = 0x01;

/// The first packet of the answer to a `COM_QUERY`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum QueryResponse {
    /// `0x00`: done, no rows (DDL, DML, `SET`).
    Ok(OkPacket),
    /// `0xFF`: the statement failed.
    Err(ErrPacket),
    /// `0xFB`: the server asks the client to send a local file (`LOAD DATA LOCAL`).
    LocalInfile,
    /// `int<lenenc>` column count: a text result set follows.
    ResultSet {
        /// How many column definitions follow (1 to [`MAX_COLUMNS`]).
        column_count: u64,
    },
}

impl QueryResponse {
    /// Classifies the first answer packet.
    pub fn decode(payload: &[u8]) -> Result<Self, Error> {
        match payload.first() {
            Some(0x00) => Ok(QueryResponse::Ok(OkPacket::decode(payload)?)),
            Some(&ErrPacket::HEADER) => Ok(QueryResponse::Err(ErrPacket::decode(payload)?)),
            Some(0xFB) => Ok(QueryResponse::LocalInfile),
            Some(_) => {
                let mut r = Reader::new(payload);
                let column_count = r.lenenc_int("column_count")?;
                if !r.is_empty() {
                    return Err(Error::Malformed {
                        field: "column_count",
                        reason: "bytes after the column count",
                    });
                }
                if column_count == 0 || column_count > MAX_COLUMNS {
                    return Err(Error::Malformed {
                        field: "column_count",
                        reason: "a result set has 1 to 4096 columns",
                    });
                }
                Ok(QueryResponse::ResultSet { column_count })
            }
            None => Err(Error::Truncated {
                field: "query_response",
            }),
        }
    }
}

/// `Protocol::ColumnDefinition41`, as far as a text client needs it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ColumnDefinition41 {
    /// `string<lenenc>` schema.
    pub schema: Bytes,
    /// `string<lenenc>` virtual table name.
    pub table: Bytes,
    /// `string<lenenc>` virtual column name (what a client shows as the header).
    pub name: Bytes,
    /// `int<2>` collation id.
    pub character_set: u16,
    /// `int<1>` column type (`MYSQL_TYPE_*`).
    pub column_type: u8,
}

impl ColumnDefinition41 {
    /// Parses a column definition payload.
    pub fn decode(payload: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(payload);
        let catalog = r.lenenc_bytes("catalog")?;
        if catalog != b"def" {
            return Err(Error::Malformed {
                field: "catalog",
                reason: "a 4.1 column definition starts with the catalog \"def\"",
            });
        }
        let schema = Bytes::copy_from_slice(r.lenenc_bytes("schema")?);
        let table = Bytes::copy_from_slice(r.lenenc_bytes("table")?);
        r.lenenc_bytes("org_table")?;
        let name = Bytes::copy_from_slice(r.lenenc_bytes("name")?);
        r.lenenc_bytes("org_name")?;
        let fixed = r.lenenc_int("length_of_fixed_length_fields")?;
        if fixed < 0x0C {
            return Err(Error::Malformed {
                field: "length_of_fixed_length_fields",
                reason: "shorter than the 12 bytes of a 4.1 column definition",
            });
        }
        let character_set = r.u16("character_set")?;
        r.u32("column_length")?;
        let column_type = r.u8("type")?;
        Ok(ColumnDefinition41 {
            schema,
            table,
            name,
            character_set,
            column_type,
        })
    }
}

/// `EOF_Packet` (`0xFE`, shorter than 9 bytes): the end of column definitions or of rows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EofPacket {
    /// `int<2>` warnings.
    pub warnings: u16,
    /// `int<2>` status flags.
    pub status_flags: u16,
}

impl EofPacket {
    /// Header byte.
    pub const HEADER: u8 = 0xFE;

    /// True when `payload` is an EOF packet rather than a row (a row that starts with `0xFE`, an
    /// 8-byte length prefix, is always at least 9 bytes long).
    pub fn matches(payload: &[u8]) -> bool {
        payload.first() == Some(&Self::HEADER) && payload.len() < 9
    }

    /// Parses an EOF payload.
    pub fn decode(payload: &[u8]) -> Result<Self, Error> {
        if !Self::matches(payload) {
            return Err(Error::Malformed {
                field: "header",
                reason: "EOF packet must start with 0xFE and be shorter than 9 bytes",
            });
        }
        let mut r = Reader::new(payload);
        r.u8("header")?;
        Ok(EofPacket {
            warnings: r.u16("warnings")?,
            status_flags: r.u16("status_flags")?,
        })
    }

    /// Writes the payload.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(Self::HEADER);
        dst.put_u16_le(self.warnings);
        dst.put_u16_le(self.status_flags);
    }
}

/// `ProtocolText::ResultsetRow`: one `string<lenenc>` per column, `0xFB` for NULL.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TextRow(pub Vec<Option<Bytes>>);

impl TextRow {
    /// Parses a row of `columns` values; more or fewer values is an error.
    pub fn decode(payload: &[u8], columns: usize) -> Result<Self, Error> {
        let mut r = Reader::new(payload);
        // Each value takes at least one byte: the payload bounds the allocation.
        let mut values = Vec::with_capacity(columns.min(payload.len()));
        for _ in 0..columns {
            if r.peek() == Some(0xFB) {
                r.u8("null")?;
                values.push(None);
            } else {
                values.push(Some(Bytes::copy_from_slice(r.lenenc_bytes("value")?)));
            }
        }
        if !r.is_empty() {
            return Err(Error::Malformed {
                field: "row",
                reason: "more values than columns",
            });
        }
        Ok(TextRow(values))
    }

    /// Writes the payload.
    pub fn encode(&self, dst: &mut BytesMut) {
        for v in &self.0 {
            match v {
                Some(b) => super::buf::put_lenenc_bytes(dst, b),
                None => dst.put_u8(0xFB),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::proto::buf::{put_lenenc_bytes, put_lenenc_int};

    fn column(name: &str) -> Vec<u8> {
        let mut b = BytesMut::new();
        for part in [&b"def"[..], b"", b"", b"", name.as_bytes(), name.as_bytes()] {
            put_lenenc_bytes(&mut b, part);
        }
        put_lenenc_int(&mut b, 0x0C);
        b.put_u16_le(45);
        b.put_u32_le(308);
        b.put_u8(0xFD);
        b.put_u16_le(0);
        b.put_u8(0);
        b.put_u16_le(0);
        b.to_vec()
    }

    #[test]
    fn com_query_is_the_command_byte_and_the_text() {
        let mut b = BytesMut::new();
        ComQuery { query: "SELECT 1" }.encode(&mut b);
        assert_eq!(&b[..], b"\x03SELECT 1");
    }

    #[test]
    fn first_packet_is_classified() {
        assert!(matches!(
            QueryResponse::decode(&[0, 1, 0, 2, 0, 0, 0]).unwrap(),
            QueryResponse::Ok(OkPacket {
                affected_rows: 1,
                status_flags: 2,
                ..
            })
        ));
        let mut err = BytesMut::new();
        ErrPacket::new(1064, b"42000", "syntax").encode(&mut err);
        assert!(matches!(
            QueryResponse::decode(&err).unwrap(),
            QueryResponse::Err(e) if e.code == 1064
        ));
        assert_eq!(
            QueryResponse::decode(b"\xFBfile").unwrap(),
            QueryResponse::LocalInfile
        );
        assert_eq!(
            QueryResponse::decode(&[3]).unwrap(),
            QueryResponse::ResultSet { column_count: 3 }
        );
        for bad in [
            &[][..],
            &[0xFC, 0x01, 0x10],
            &[0xFC],
            &[2, 0],
            &[0xFD, 0, 0, 1],
        ] {
            assert!(QueryResponse::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn column_definition_gives_the_name() {
        let c = ColumnDefinition41::decode(&column("CURRENT_USER()")).unwrap();
        assert_eq!(&c.name[..], b"CURRENT_USER()");
        assert_eq!((c.character_set, c.column_type), (45, 0xFD));
        // Every truncation is an error, never a panic.
        let full = column("x");
        for n in 0..full.len() - 7 {
            assert!(ColumnDefinition41::decode(&full[..n]).is_err(), "len {n}");
        }
        let mut wrong = full.clone();
        wrong[1] = b'x';
        assert!(ColumnDefinition41::decode(&wrong).is_err());
    }

    #[test]
    fn rows_with_nulls_round_trip_and_bad_rows_fail() {
        let row = TextRow(vec![
            Some(Bytes::from_static(b"admin@%")),
            None,
            Some(Bytes::new()),
        ]);
        let mut b = BytesMut::new();
        row.encode(&mut b);
        assert_eq!(TextRow::decode(&b, 3).unwrap(), row);
        assert!(TextRow::decode(&b, 2).is_err(), "extra value");
        assert!(TextRow::decode(&b, 4).is_err(), "missing value");
        // A length past the payload.
        assert!(TextRow::decode(&[0xFC, 0xFF, 0xFF, b'a'], 1).is_err());
        // A huge column count with a tiny payload allocates by the payload, then fails.
        assert!(TextRow::decode(&[1, b'a'], usize::MAX).is_err());
    }

    #[test]
    fn eof_is_told_apart_from_a_row() {
        let mut b = BytesMut::new();
        EofPacket {
            warnings: 1,
            status_flags: SERVER_MORE_RESULTS_EXISTS,
        }
        .encode(&mut b);
        assert!(EofPacket::matches(&b));
        assert_eq!(EofPacket::decode(&b).unwrap().warnings, 1);
        let mut row = vec![0xFE];
        row.extend_from_slice(&[0u8; 8]);
        assert!(!EofPacket::matches(&row));
        assert!(EofPacket::decode(&[0xFE, 0]).is_err(), "truncated EOF");
    }
}
