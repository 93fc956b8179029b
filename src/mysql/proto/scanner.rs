//! Sans-IO scanner of the client → server byte stream after login: finds where each command
//! starts, so that the splice can take a `COM_CHANGE_USER` out of the stream, count the commands
//! the server will answer, and know the sequence id an answer of its own would take. Everything it
//! is not sure is a command (16 MiB continuations, `LOAD DATA LOCAL` file contents whose sequence
//! ids wrap) passes as data.

use super::ComChangeUser;
use super::command::COM_QUIT;
use super::packet::{HEADER_LEN, MAX_PAYLOAD_LEN, peek_header};

/// `COM_STMT_SEND_LONG_DATA`: parameter data; the server never answers it.
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;

/// `COM_STMT_CLOSE`: frees a prepared statement; the server never answers it.
const COM_STMT_CLOSE: u8 = 0x19;

/// Whether the server answers `command` (the first payload byte of a command packet).
pub fn expects_answer(command: u8) -> bool {
    !matches!(
        command,
        COM_QUIT | COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE | ComChangeUser::COMMAND
    )
}

/// Largest COM_CHANGE_USER accepted (user, auth data, database, attributes).
pub const MAX_CHANGE_USER: usize = 128 * 1024;

/// What to do with the front of the client's unforwarded bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Forward this many bytes as they are.
    Forward(usize),
    /// Nothing can be decided until more bytes arrive.
    NeedMore,
    /// A complete COM_CHANGE_USER packet of this many bytes (header included) is at the front.
    ChangeUser(usize),
}

/// Sans-IO scanner of the client → server byte stream that finds command boundaries.
#[derive(Debug, Default)]
pub struct CommandScanner {
    /// Bytes of the current packet (header included) still to pass.
    remaining: usize,
    /// The previous packet was 16 MiB − 1 bytes, so the next one continues it whatever its seq id.
    continuation: bool,
    /// Inside the file data of a `LOAD DATA LOCAL` (packets with seq != 0 until an empty one):
    /// sequence ids wrap there, so a seq 0 packet is data, not a command.
    in_file_data: bool,
    /// The client has sent COM_QUIT: whatever closes next, the client ended the session.
    pub quit: bool,
    /// Commands the server will answer, passed since the caller last reset this count (a command
    /// counts once its first bytes are forwarded; the empty packet that ends a `LOAD DATA LOCAL`
    /// file counts too, since the server answers it with the statement's OK or ERR).
    pub commands: usize,
    /// Command packets (sequence id 0, answered or not) passed since the caller last reset this
    /// count: a compressed database leg restarts its frame counter at each.
    pub started: usize,
    /// Sequence id of the last packet header passed: an answer the proxy writes for the server
    /// takes the next one (a 16 MiB command spans several packets; a `LOAD DATA LOCAL` file ends
    /// at whatever id its empty packet had).
    pub last_seq: u8,
}

impl CommandScanner {
    /// Looks at `buf` (client bytes not yet forwarded) and says what to do with its front.
    pub fn step(&mut self, buf: &[u8]) -> Result<Step, super::Error> {
        let mut pos = 0;
        loop {
            if self.remaining > 0 {
                let n = self.remaining.min(buf.len() - pos);
                pos += n;
                self.remaining -= n;
                if self.remaining > 0 {
                    break;
                }
                continue;
            }
            let rest = &buf[pos..];
            let Some((len, seq)) = peek_header(rest) else {
                break;
            };
            let is_command = seq == 0 && !self.continuation && !self.in_file_data;
            let mut answered = false;
            if is_command && len > 0 {
                let Some(&command) = rest.get(HEADER_LEN) else {
                    break;
                };
                answered = expects_answer(command);
                if command == COM_QUIT {
                    self.quit = true;
                }
                if command == ComChangeUser::COMMAND {
                    if pos > 0 {
                        break;
                    }
                    if len > MAX_CHANGE_USER {
                        return Err(super::Error::PacketTooLarge {
                            len,
                            max: MAX_CHANGE_USER,
                        });
                    }
                    if rest.len() < HEADER_LEN + len {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::ChangeUser(HEADER_LEN + len));
                }
            }
            if !self.continuation {
                // Outside a command's first packet the client only sends LOAD DATA LOCAL file
                // contents (seq 2, 3, …), ended by an empty packet.
                if self.in_file_data {
                    self.in_file_data = len != 0;
                    // The empty packet ends the file: the server now answers the statement.
                    answered = len == 0;
                } else if seq != 0 && len != 0 {
                    self.in_file_data = true;
                } else if seq != 0 {
                    // An empty file (the first data packet is the terminator).
                    answered = true;
                }
            }
            self.started += usize::from(is_command);
            self.last_seq = seq;
            self.continuation = len == MAX_PAYLOAD_LEN;
            self.remaining = HEADER_LEN + len;
            if answered {
                self.commands += 1;
            }
        }
        Ok(if pos > 0 {
            Step::Forward(pos)
        } else {
            Step::NeedMore
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::proto::packet;
    use bytes::BytesMut;

    fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        packet::encode(seq, payload, &mut b);
        b.to_vec()
    }

    /// Feeds `stream` to a scanner in chunks of `chunk` bytes, as reads would deliver it; returns
    /// the forwarded bytes and the change-user packets found.
    fn drive(stream: &[u8], chunk: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut sc = CommandScanner::default();
        let mut buf = BytesMut::new();
        let (mut fwd, mut cu) = (Vec::new(), Vec::new());
        for part in stream.chunks(chunk) {
            buf.extend_from_slice(part);
            loop {
                match sc.step(&buf).unwrap() {
                    Step::Forward(n) => fwd.extend_from_slice(&buf.split_to(n)),
                    Step::ChangeUser(n) => cu.push(buf.split_to(n).to_vec()),
                    Step::NeedMore => break,
                }
            }
        }
        fwd.extend_from_slice(&buf);
        (fwd, cu)
    }

    #[test]
    fn finds_change_user_between_commands_at_any_chunking() {
        let query = pkt(0, b"\x03SELECT 1");
        let load_data = [pkt(2, b"\x11looks like change user but seq 2"), pkt(3, b"")].concat();
        let change = pkt(0, b"\x11iamuser2\0\0proxytest\0");
        let quit = pkt(0, b"\x01");
        let stream = [
            query.clone(),
            load_data.clone(),
            change.clone(),
            quit.clone(),
        ]
        .concat();
        for chunk in 1..=stream.len() {
            let (fwd, cu) = drive(&stream, chunk);
            assert_eq!(cu, vec![change.clone()], "chunk {chunk}");
            assert_eq!(
                fwd,
                [query.clone(), load_data.clone(), quit.clone()].concat()
            );
        }
    }
    #[test]
    fn load_data_file_packets_are_data_even_after_the_sequence_id_wraps() {
        let query = pkt(0, b"\x03LOAD DATA LOCAL INFILE 'f' INTO TABLE t");
        // seq 2..=255, then 0 (starting with 0x11), 1, then the empty terminator.
        let mut file = Vec::new();
        for i in 0..257u32 {
            let seq = (2 + i) as u8;
            let body: &[u8] = if seq == 0 { b"\x11data" } else { b"row\n" };
            file.extend_from_slice(&pkt(seq, body));
        }
        file.extend_from_slice(&pkt(3, b""));
        let change = pkt(0, b"\x11iamuser2\0\0\0");
        let stream = [query.clone(), file.clone(), change.clone()].concat();
        for chunk in [1, 7, 4096, stream.len()] {
            let (fwd, cu) = drive(&stream, chunk);
            assert_eq!(cu, vec![change.clone()], "chunk {chunk}");
            assert_eq!(fwd, [query.clone(), file.clone()].concat());
        }
    }
    #[test]
    fn sixteen_mib_continuation_with_seq_zero_is_not_a_command() {
        // A 256-packet command wraps the sequence id to 0; the continuation must not be taken for
        // a new command even if it starts with 0x11.
        let mut sc = CommandScanner::default();
        let mut head = vec![0xFF, 0xFF, 0xFF, 255];
        head.push(0x03);
        assert_eq!(sc.step(&head).unwrap(), Step::Forward(5));
        sc.remaining = 0; // pretend the rest of the 16 MiB payload passed
        let cont = pkt(0, b"\x11not a command");
        assert_eq!(sc.step(&cont).unwrap(), Step::Forward(cont.len()));
    }
    #[test]
    fn counts_each_answered_command_once_at_any_chunking() {
        let stream = [
            pkt(0, b"\x03SELECT 1"),
            pkt(0, b"\x19\x01\x00\x00\x00"), // COM_STMT_CLOSE: no answer
            pkt(0, b"\x18\x01\x00\x00\x00\x00\x00data"), // COM_STMT_SEND_LONG_DATA: none
            pkt(0, b"\x03LOAD DATA LOCAL INFILE 'f' INTO TABLE t"),
            pkt(2, b"\x03file data that looks like a query"),
            pkt(3, b""),
            pkt(0, b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00"), // COM_STMT_EXECUTE
            pkt(0, b"\x11iamuser2\0\0\0"), // COM_CHANGE_USER: answered by the proxy's replay
            pkt(0, b"\x01"),               // COM_QUIT
        ]
        .concat();
        for chunk in 1..=stream.len() {
            let mut sc = CommandScanner::default();
            let mut buf = BytesMut::new();
            let mut total = 0;
            let mut started = 0;
            for part in stream.chunks(chunk) {
                buf.extend_from_slice(part);
                loop {
                    let step = sc.step(&buf).unwrap();
                    total += std::mem::take(&mut sc.commands);
                    started += std::mem::take(&mut sc.started);
                    match step {
                        Step::Forward(n) | Step::ChangeUser(n) => {
                            let _ = buf.split_to(n);
                        }
                        Step::NeedMore => break,
                    }
                }
            }
            // SELECT, the LOAD DATA statement and its file's end, STMT_EXECUTE.
            assert_eq!(total, 4, "chunk {chunk}");
            // Every command packet but the COM_CHANGE_USER (taken out of the stream): not the
            // file data, answered or not.
            assert_eq!(started, 6, "chunk {chunk}");
        }
    }
    /// The proxy's ERR for a command follows the command's last packet: seq 1 after a one-packet
    /// command, N after an N-packet (16 MiB+) one, and after a LOAD DATA file's empty packet.
    #[test]
    fn the_reply_sequence_id_follows_the_commands_last_packet() {
        let mut sc = CommandScanner::default();
        let q = pkt(0, b"\x03SELECT 1");
        assert_eq!(sc.step(&q).unwrap(), Step::Forward(q.len()));
        assert_eq!(sc.last_seq.wrapping_add(1), 1);

        // A 3-packet command: two full 16 MiB − 1 packets (seq 0, 1), then the rest (seq 2).
        let mut sc = CommandScanner::default();
        let full = [0xFF, 0xFF, 0xFF];
        let mut head = full.to_vec();
        head.extend_from_slice(&[0, 0x03]);
        assert_eq!(sc.step(&head).unwrap(), Step::Forward(5));
        sc.remaining = 0;
        let mut second = full.to_vec();
        second.push(1);
        assert_eq!(sc.step(&second).unwrap(), Step::Forward(4));
        sc.remaining = 0;
        let last = pkt(2, b"tail");
        assert_eq!(sc.step(&last).unwrap(), Step::Forward(last.len()));
        assert_eq!(sc.commands, 1);
        assert_eq!(
            sc.last_seq.wrapping_add(1),
            3,
            "the answer to a 3-packet command is seq 3"
        );

        // LOAD DATA LOCAL: the statement (seq 0), file packets 2 and 3, the empty packet at 4;
        // the server's OK is seq 5, and the end of the file counts as a command to answer.
        let mut sc = CommandScanner::default();
        let stream = [
            pkt(0, b"\x03LOAD DATA LOCAL INFILE 'f' INTO TABLE t"),
            pkt(2, b"a\n"),
            pkt(3, b"b\n"),
            pkt(4, b""),
        ]
        .concat();
        assert_eq!(sc.step(&stream).unwrap(), Step::Forward(stream.len()));
        assert_eq!(sc.commands, 2);
        assert_eq!(sc.last_seq.wrapping_add(1), 5);
    }
    #[test]
    fn oversized_change_user_is_refused() {
        let mut sc = CommandScanner::default();
        let head = [0x00, 0x00, 0x10, 0x00, 0x11];
        assert!(sc.step(&head).is_err());
    }
}
