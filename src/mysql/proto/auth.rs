//! The upstream authentication exchange, sans-IO: the one place that decides what the proxy sends
//! the database after its HandshakeResponse41 (or COM_CHANGE_USER), and what the outcome means.
//!
//! Given a [`Credential`] — an RDS IAM token, a database password (`--secret`, the admin client) or
//! nothing (the logins the proxy completes on connections no client will use) — [`Exchange::start`]
//! says which plugin and auth data the first packet carries, and [`Exchange::next`] takes each
//! login reply of the server and says: send this answer, wait for the next packet, done (the
//! server's OK), or failed (an [`Error`]). The caller owns the socket, the sequence ids and the
//! timeouts, and runs the exchange only over TLS verified against the endpoint name: an IAM token
//! goes only in the first packet as `mysql_clear_password` data (token first, the default: one
//! round trip less) or in answer to a switch to `mysql_clear_password` (once), and a password leaves in clear only for `mysql_clear_password` and
//! `caching_sha2_password`'s full authentication.
//!
//! The words the proxy's client is told when it fails live here too, once: [`IamLogin::refusal`]
//! (access denied with the IAM checklist, not an IAM user, a second factor) and
//! [`PasswordLogin::refusal`]. Whether the kept credential must be thrown away is
//! [`Error::rejects_credential`]; the caller does the throwing. Also here: the caching_sha2 rule for
//! the local leg ([`local_success`]).

use std::fmt;

use bytes::Bytes;

use super::handshake::plugin;
use super::scramble::{native_scramble, sha2_scramble};
use super::{AuthMoreData, ErrPacket, LoginReply, codes};
use crate::secret::Secret;
use crate::text::printable;

/// Replies a login may take after its first packet (switch, more data, fast-auth, OK).
pub const MAX_ROUNDS: usize = 4;

/// Largest auth data a first packet carries without `PLUGIN_AUTH_LENENC_CLIENT_DATA`.
const MAX_SHORT_AUTH_DATA: usize = 250;

/// What the proxy logs in with.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    /// An RDS IAM token: answers a switch to `mysql_clear_password` only, once.
    IamToken(&'a str),
    /// A database password: `mysql_native_password`, `caching_sha2_password` (fast and full
    /// authentication) and `mysql_clear_password`.
    Password(&'a Secret),
    /// Nothing: every question gets an empty answer (a login meant to be refused).
    Nothing,
}

impl fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credential::IamToken(_) => "IamToken(<redacted>)",
            Credential::Password(_) => "Password(<redacted>)",
            Credential::Nothing => "Nothing",
        })
    }
}

/// Auth data for the database: may hold a token or a password, so its `Debug` shows the length
/// only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Answer(Vec<u8>);

impl Answer {
    /// The bytes to send (the payload of an AuthSwitchResponse, or a first packet's auth data).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Answer(<{} bytes>)", self.0.len())
    }
}

/// What the first packet (HandshakeResponse41 or COM_CHANGE_USER) carries.
#[derive(Debug)]
pub struct FirstPacket {
    /// `auth_plugin_name`.
    pub plugin: Bytes,
    /// `auth_response`.
    pub auth_response: Answer,
}

/// What to do after a login reply.
#[derive(Debug)]
pub enum Next {
    /// Send this payload, at the sequence id after the reply's, then read the next reply.
    Send(Answer),
    /// Send nothing; read the next reply (caching_sha2's fast-auth success comes before the OK).
    Wait,
    /// Logged in: the server's OK payload, unchanged.
    Done(Bytes),
    /// The login failed.
    Failed(Error),
}

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server refused the login with this ERR.
    #[error("the server refused the login: {}", .0.message_str())]
    Refused(ErrPacket),
    /// The server's reply is not a valid login reply.
    #[error("malformed login reply: {0}")]
    Malformed(#[from] super::Error),
    /// The server switched to a plugin this credential cannot answer.
    #[error("the server asked for the '{}' authentication plugin", String::from_utf8_lossy(.plugin))]
    Plugin {
        /// The plugin asked for.
        plugin: Bytes,
    },
    /// The token went in the first packet and the server switched to another plugin: the user
    /// does not exist (servers invent an account for unknown users) or is not an IAM user, and
    /// the reply cannot tell which.
    #[error("the server asked for the '{}' authentication plugin after the token", String::from_utf8_lossy(.plugin))]
    PluginAfterToken {
        /// The plugin asked for.
        plugin: Bytes,
    },
    /// The server asked for more data of a plugin that takes none from this credential.
    #[error("the server asked for more '{}' authentication data", String::from_utf8_lossy(.plugin))]
    MoreData {
        /// The plugin in force.
        plugin: Bytes,
    },
    /// `caching_sha2_password` sent a step other than fast-auth success or full authentication.
    #[error("caching_sha2_password sent an unexpected step")]
    Sha2Step,
    /// A second switch: after the IAM token was sent, or after a password answered one switch.
    #[error("a second authentication switch")]
    SecondSwitch {
        /// The plugin in force before it.
        plugin: Bytes,
    },
    /// MySQL 8.0.27+ multi-factor authentication asked for the next factor.
    #[error("the server asked for a second authentication factor")]
    NextFactor,
    /// The login did not end within [`MAX_ROUNDS`] replies.
    #[error("the login did not end after {MAX_ROUNDS} round trips")]
    TooManyRounds,
    /// The first packet's auth data is too long for a server without
    /// `PLUGIN_AUTH_LENENC_CLIENT_DATA`.
    #[error("the server cannot take {len} bytes of auth data in the first packet")]
    FirstAnswerTooLong {
        /// The auth data's length.
        len: usize,
    },
}

impl Error {
    /// The server refused the credential itself (access denied): a kept token may be stale (clock
    /// skew, rotated AWS credentials), a kept password rotated. The caller drops what it keeps so
    /// that the next login fetches a fresh one.
    pub fn rejects_credential(&self) -> bool {
        matches!(self, Error::Refused(err) if err.code == codes::ACCESS_DENIED)
    }
}

/// One upstream login in progress.
#[derive(Debug)]
pub struct Exchange<'a> {
    /// What answers the server's questions.
    credential: Credential<'a>,
    /// The plugin in force.
    plugin: Bytes,
    /// A switch was answered already (the token sent, or a password switched once).
    switched: bool,
    /// The token went in the first packet.
    token_first: bool,
    /// Replies taken so far.
    rounds: usize,
}

impl<'a> Exchange<'a> {
    /// Starts a login. `announced` is the plugin of the server's greeting (or of the session, for
    /// COM_CHANGE_USER), `nonce` its scramble. With `token_first` an IAM token goes in the first
    /// packet as `mysql_clear_password` (a server that still switches to `mysql_clear_password`
    /// gets it once more, and [`Exchange::declined_token_first`] says so); otherwise a token waits
    /// for the switch and the first packet names the announced plugin with empty auth data. `lenenc`: the server
    /// takes auth data over 250 bytes in the first packet (`PLUGIN_AUTH_LENENC_CLIENT_DATA`).
    pub fn start(
        credential: Credential<'a>,
        announced: Option<&[u8]>,
        nonce: &[u8],
        token_first: bool,
        lenenc: bool,
    ) -> Result<(Self, FirstPacket), Error> {
        let announced = match announced.filter(|p| !p.is_empty()) {
            Some(p) => Bytes::copy_from_slice(p),
            None => Bytes::from_static(plugin::MYSQL_NATIVE_PASSWORD.as_bytes()),
        };
        let token_first = token_first && matches!(credential, Credential::IamToken(_));
        let (plugin, auth_response) = match credential {
            Credential::IamToken(token) if token_first => (
                Bytes::from_static(plugin::MYSQL_CLEAR_PASSWORD.as_bytes()),
                nul_terminated(token),
            ),
            Credential::IamToken(_) | Credential::Nothing => (announced, Answer::default()),
            Credential::Password(password) => {
                let first = password_answer(&announced, nonce, password).unwrap_or_default();
                (announced, first)
            }
        };
        let len = auth_response.0.len();
        if len > MAX_SHORT_AUTH_DATA && !lenenc {
            return Err(Error::FirstAnswerTooLong { len });
        }
        let exchange = Exchange {
            credential,
            plugin: plugin.clone(),
            switched: false,
            token_first,
            rounds: 0,
        };
        Ok((
            exchange,
            FirstPacket {
                plugin,
                auth_response,
            },
        ))
    }

    /// The token went first and the server asked for it again with a switch to
    /// `mysql_clear_password`: this endpoint wants the classic order (the caller remembers it).
    pub fn declined_token_first(&self) -> bool {
        self.token_first && self.switched
    }

    /// Takes the server's next login reply (a whole packet's payload) and says what to do.
    pub fn next(&mut self, reply: Bytes) -> Next {
        self.rounds += 1;
        if self.rounds > MAX_ROUNDS {
            return Next::Failed(Error::TooManyRounds);
        }
        let reply = match LoginReply::decode(reply) {
            Ok(r) => r,
            Err(e) => return Next::Failed(Error::Malformed(e)),
        };
        match reply {
            LoginReply::Ok(ok) => Next::Done(ok),
            LoginReply::Err(err) => Next::Failed(Error::Refused(err)),
            LoginReply::NextFactor => Next::Failed(Error::NextFactor),
            LoginReply::AuthSwitch(_) | LoginReply::MoreData(_)
                if matches!(self.credential, Credential::Nothing) =>
            {
                Next::Send(Answer::default())
            }
            LoginReply::AuthSwitch(switch) => self.switch(switch.plugin_name, &switch.plugin_data),
            LoginReply::MoreData(more) => self.more_data(&more),
        }
    }

    /// The server switched plugins.
    fn switch(&mut self, to: Bytes, data: &[u8]) -> Next {
        match self.credential {
            Credential::IamToken(token) => {
                if &to[..] != plugin::MYSQL_CLEAR_PASSWORD.as_bytes() {
                    return Next::Failed(if self.token_first {
                        Error::PluginAfterToken { plugin: to }
                    } else {
                        Error::Plugin { plugin: to }
                    });
                }
                if self.switched {
                    return Next::Failed(Error::SecondSwitch {
                        plugin: self.plugin.clone(),
                    });
                }
                self.switched = true;
                self.plugin = to;
                Next::Send(nul_terminated(token))
            }
            Credential::Password(password) => {
                if self.switched {
                    return Next::Failed(Error::SecondSwitch {
                        plugin: self.plugin.clone(),
                    });
                }
                self.switched = true;
                self.plugin = to;
                // The switch's scramble is NUL-terminated on the wire.
                let nonce = data.strip_suffix(&[0]).unwrap_or(data);
                match password_answer(&self.plugin, nonce, password) {
                    Some(answer) => Next::Send(answer),
                    None => Next::Failed(Error::Plugin {
                        plugin: self.plugin.clone(),
                    }),
                }
            }
            Credential::Nothing => Next::Send(Answer::default()),
        }
    }

    /// The server sent more data for the plugin in force.
    fn more_data(&mut self, more: &AuthMoreData) -> Next {
        let Credential::Password(password) = self.credential else {
            return Next::Failed(Error::MoreData {
                plugin: self.plugin.clone(),
            });
        };
        if &self.plugin[..] != plugin::CACHING_SHA2_PASSWORD.as_bytes() {
            return Next::Failed(Error::MoreData {
                plugin: self.plugin.clone(),
            });
        }
        match more.data.first() {
            // The OK follows.
            Some(&AuthMoreData::FAST_AUTH_SUCCESS) => Next::Wait,
            // Full authentication: the password in clear, inside the verified TLS.
            Some(&AuthMoreData::PERFORM_FULL_AUTHENTICATION) => {
                Next::Send(nul_terminated(password.expose()))
            }
            _ => Next::Failed(Error::Sha2Step),
        }
    }
}

/// The answer of `password` to `plugin_name`'s challenge `nonce`, or `None` for a plugin the proxy
/// lacks. An empty password answers empty, as MySQL clients do.
fn password_answer(plugin_name: &[u8], nonce: &[u8], password: &Secret) -> Option<Answer> {
    let pw = password.expose();
    if plugin_name == plugin::MYSQL_NATIVE_PASSWORD.as_bytes() {
        Some(Answer(if pw.is_empty() {
            Vec::new()
        } else {
            native_scramble(pw, nonce).to_vec()
        }))
    } else if plugin_name == plugin::CACHING_SHA2_PASSWORD.as_bytes() {
        Some(Answer(if pw.is_empty() {
            Vec::new()
        } else {
            sha2_scramble(pw, nonce).to_vec()
        }))
    } else if plugin_name == plugin::MYSQL_CLEAR_PASSWORD.as_bytes() {
        Some(nul_terminated(pw))
    } else {
        None
    }
}

/// `secret\0`: the cleartext answer (`mysql_clear_password`, caching_sha2 full authentication).
fn nul_terminated(secret: &str) -> Answer {
    let mut v = Vec::with_capacity(secret.len() + 1);
    v.extend_from_slice(secret.as_bytes());
    v.push(0);
    Answer(v)
}

/// The payloads that finish a local login once the upstream one succeeded with `ok`: a client that
/// sent a caching_sha2_password scramble (the plugin the proxy's greeting announces) waits for
/// fast-auth success before the OK; any other client gets the OK alone.
pub fn local_success(
    client_plugin: Option<&[u8]>,
    client_auth_response: &[u8],
    ok: Bytes,
) -> Vec<Bytes> {
    let scrambled = !client_auth_response.is_empty() && client_auth_response != [0];
    let mut out = Vec::with_capacity(2);
    if client_plugin == Some(plugin::CACHING_SHA2_PASSWORD.as_bytes()) && scrambled {
        out.push(Bytes::from_static(&[
            AuthMoreData::HEADER,
            AuthMoreData::FAST_AUTH_SUCCESS,
        ]));
    }
    out.push(ok);
    out
}

/// What the proxy's client is told about a failed upstream login.
#[derive(Debug)]
pub struct Refusal {
    /// A stable label for metrics (`access_denied`, `not_iam_user`, `upstream_protocol`, ...).
    pub reason: &'static str,
    /// The ERR packet for the client.
    pub reply: ErrPacket,
    /// Detail for the log line.
    pub detail: String,
}

impl Refusal {
    /// The proxy's own ERR: `msg` prefixed with the proxy's name.
    fn new(reason: &'static str, code: u16, state: &[u8; 5], msg: String) -> Self {
        Refusal {
            reason,
            reply: ErrPacket::new(code, state, format!("rds-iam-proxy: {msg}")),
            detail: msg,
        }
    }

    /// The server's own ERR, passed on as it worded it (unknown database, too many connections).
    fn forward(err: ErrPacket) -> Self {
        Refusal {
            reason: "server_error",
            detail: err.message_str(),
            reply: err,
        }
    }

    /// Access denied, in the proxy's words `msg` (ending before "The server said"), keeping the
    /// server's SQLSTATE.
    fn denied(msg: String, err: &ErrPacket) -> Self {
        let mut reply = ErrPacket::new(
            codes::ACCESS_DENIED,
            b"28000",
            format!(
                "rds-iam-proxy: {msg} The server said: {}",
                err.message_str()
            ),
        );
        reply.sql_state = err.sql_state.or(reply.sql_state);
        Refusal {
            reason: "access_denied",
            detail: err.message_str(),
            reply,
        }
    }

    /// The database's reply is not a login reply.
    fn malformed(endpoint: &str, e: &super::Error) -> Self {
        Refusal::new(
            "upstream_protocol",
            codes::HANDSHAKE_ERROR,
            b"08S01",
            format!("the database {endpoint} sent a malformed login reply: {e}"),
        )
    }

    /// The database kept asking.
    fn too_many_rounds(endpoint: &str) -> Self {
        Refusal::new(
            "upstream_protocol",
            codes::HANDSHAKE_ERROR,
            b"08S01",
            format!("the database {endpoint} did not finish the login in four round trips"),
        )
    }
}

/// Which login the proxy was making.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The connection's login.
    Login,
    /// A `COM_CHANGE_USER` replayed for the client; a failure ends the connection.
    ChangeUser,
}

/// An IAM login, as the proxy's messages describe it.
#[derive(Clone, Copy, Debug)]
pub struct IamLogin<'a> {
    /// The endpoint (`host:port`).
    pub endpoint: &'a str,
    /// The database user (as the client chose it: escaped here before it is shown).
    pub user: &'a str,
    /// The region the token is signed for.
    pub region: &'a str,
    /// Which login.
    pub phase: Phase,
}

impl IamLogin<'_> {
    /// `" on change user"` or nothing.
    fn on(&self) -> &'static str {
        match self.phase {
            Phase::Login => "",
            Phase::ChangeUser => " on change user",
        }
    }

    /// `msg`, and for a change user that the session does not go on.
    fn finish(&self, msg: String) -> String {
        match self.phase {
            Phase::Login => msg,
            Phase::ChangeUser => {
                let stop = if msg.ends_with('.') { "" } else { "." };
                format!("{msg}{stop} The change was not made and the connection is closed.")
            }
        }
    }

    /// No token could be made for the user (`e`: why).
    pub fn no_token(&self, e: &dyn fmt::Display) -> Refusal {
        let user = printable(self.user);
        let endpoint = self.endpoint;
        let msg = format!("cannot create an IAM token for '{user}' on {endpoint}: {e}");
        Refusal::new("token", codes::ACCESS_DENIED, b"28000", self.finish(msg))
    }

    /// What the client is told when the exchange failed with `e`.
    pub fn refusal(&self, e: Error) -> Refusal {
        let user = printable(self.user);
        let (endpoint, region, on) = (self.endpoint, self.region, self.on());
        let not_iam = |asked: &[u8]| {
            let asked = String::from_utf8_lossy(asked);
            let asked = printable(&asked);
            Refusal::new(
                "not_iam_user",
                codes::NOT_SUPPORTED_AUTH_MODE,
                b"08004",
                self.finish(format!(
                    "the database {endpoint} asked '{user}' for the '{asked}' authentication \
                     plugin{on} instead of mysql_clear_password: '{user}' is probably not an IAM \
                     database user (or does not exist). Create it with CREATE USER '{user}' \
                     IDENTIFIED WITH AWSAuthenticationPlugin AS 'RDS', or log in as an \
                     IAM-enabled user."
                )),
            )
        };
        match e {
            Error::Refused(err) if err.code == codes::ACCESS_DENIED => Refusal::denied(
                self.finish(format!(
                    "the database {endpoint} rejected the IAM token for user '{user}' (region \
                     {region}){on}. Check that your IAM identity may rds-db:connect to \
                     arn:aws:rds-db:{region}:<account>:dbuser:<DbiResourceId or cluster resource \
                     id>/{user}, that IAM database authentication is enabled, and that '{user}' \
                     exists WITH AWSAuthenticationPlugin."
                )),
                &err,
            ),
            Error::Refused(err) => Refusal::forward(err),
            Error::Plugin { plugin } | Error::MoreData { plugin } => not_iam(&plugin),
            Error::PluginAfterToken { plugin } => Refusal::new(
                "access_denied",
                codes::ACCESS_DENIED,
                b"28000",
                self.finish(format!(
                    "the database {endpoint} did not take the IAM token for user '{user}'{on}: it \
                     asked for {} instead, so '{user}' does not exist there or is not an IAM user. \
                     Check that '{user}' exists IDENTIFIED WITH AWSAuthenticationPlugin AS 'RDS' \
                     and that your IAM identity may rds-db:connect to \
                     arn:aws:rds-db:{region}:<account>:dbuser:<DbiResourceId or cluster resource \
                     id>/{user}.",
                    String::from_utf8_lossy(&plugin)
                )),
            ),
            Error::Sha2Step => not_iam(plugin::CACHING_SHA2_PASSWORD.as_bytes()),
            Error::SecondSwitch { .. } => Refusal::new(
                "upstream_protocol",
                codes::HANDSHAKE_ERROR,
                b"08S01",
                self.finish(format!(
                    "the database {endpoint} asked for a password again after the IAM \
                     token{on}; the proxy sends the token once"
                )),
            ),
            Error::NextFactor => Refusal::new(
                "mfa",
                codes::NOT_SUPPORTED_AUTH_MODE,
                b"08004",
                self.finish(format!(
                    "the database asked '{user}' for a second authentication factor{on}; \
                     rds-iam-proxy signs in with IAM only"
                )),
            ),
            Error::FirstAnswerTooLong { .. } => Refusal::new(
                "upstream_protocol",
                codes::HANDSHAKE_ERROR,
                b"08S01",
                "the database cannot take a token in the first packet (no \
                 PLUGIN_AUTH_LENENC_CLIENT_DATA); run with --switch-auth"
                    .into(),
            ),
            Error::Malformed(m) => Refusal::malformed(endpoint, &m),
            Error::TooManyRounds => Refusal::too_many_rounds(endpoint),
        }
    }
}

/// A password login (`--secret`), as the proxy's messages describe it.
#[derive(Clone, Copy, Debug)]
pub struct PasswordLogin<'a> {
    /// The endpoint (`host:port`).
    pub endpoint: &'a str,
    /// The secret's user name (escaped here before it is shown).
    pub user: &'a str,
    /// Where the password comes from (`Secrets Manager secret <name>`).
    pub source: &'a str,
}

impl PasswordLogin<'_> {
    /// What the client is told when the exchange failed with `e`.
    pub fn refusal(&self, e: Error) -> Refusal {
        let user = printable(self.user);
        let (endpoint, source) = (self.endpoint, self.source);
        let unsupported = |plugin: &[u8]| {
            let plugin = String::from_utf8_lossy(plugin);
            Refusal::new(
                "unsupported_auth",
                codes::NOT_SUPPORTED_AUTH_MODE,
                b"08004",
                format!(
                    "the database asked '{user}' (from {source}) for the '{}' authentication \
                     plugin; with --secret the proxy speaks mysql_native_password and \
                     caching_sha2_password",
                    printable(&plugin)
                ),
            )
        };
        match e {
            Error::Refused(err) if err.code == codes::ACCESS_DENIED => Refusal::denied(
                format!(
                    "the database {endpoint} refused the password of '{user}' from {source}. If \
                     the secret was just rotated, the next login reads it again; otherwise check \
                     that the secret holds this database's credentials."
                ),
                &err,
            ),
            Error::Refused(err) => Refusal::forward(err),
            Error::Plugin { plugin }
            | Error::PluginAfterToken { plugin }
            | Error::MoreData { plugin }
            | Error::SecondSwitch { plugin } => unsupported(&plugin),
            Error::Sha2Step => unsupported(b"caching_sha2_password (unexpected step)"),
            Error::NextFactor => unsupported(b"a second authentication factor"),
            Error::FirstAnswerTooLong { .. } => {
                unsupported(b"a long password without PLUGIN_AUTH_LENENC_CLIENT_DATA")
            }
            Error::Malformed(m) => Refusal::malformed(endpoint, &m),
            Error::TooManyRounds => Refusal::too_many_rounds(endpoint),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::proto::scramble::PasswordVerifier;
    use bytes::BytesMut;

    const NONCE: &[u8; 20] = b"0123456789abcdefghij";
    const TOKEN: &str = "db.example:3306/?Action=connect&DBUser=alice&X-Amz-Signature=abc";
    const OK: &[u8] = &[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00];

    fn switch(plugin: &str, data: &[u8]) -> Bytes {
        let mut v = vec![0xFE];
        v.extend_from_slice(plugin.as_bytes());
        v.push(0);
        v.extend_from_slice(data);
        Bytes::from(v)
    }

    fn more(data: &[u8]) -> Bytes {
        let mut v = vec![AuthMoreData::HEADER];
        v.extend_from_slice(data);
        Bytes::from(v)
    }

    fn err(code: u16, msg: &str) -> Bytes {
        let mut b = BytesMut::new();
        ErrPacket::new(code, b"28000", msg).encode(&mut b);
        b.freeze()
    }

    fn sent(next: Next) -> Vec<u8> {
        match next {
            Next::Send(a) => a.bytes().to_vec(),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn failed(next: Next) -> Error {
        match next {
            Next::Failed(e) => e,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    fn iam(token_first: bool) -> (Exchange<'static>, FirstPacket) {
        Exchange::start(
            Credential::IamToken(TOKEN),
            Some(b"caching_sha2_password"),
            NONCE,
            token_first,
            true,
        )
        .expect("starts")
    }

    #[test]
    fn a_token_answers_the_clear_password_switch_once_and_the_ok_ends_it() {
        let (mut x, first) = iam(false);
        assert_eq!(&first.plugin[..], b"caching_sha2_password");
        assert!(
            first.auth_response.bytes().is_empty(),
            "no token before the switch"
        );
        let answer = sent(x.next(switch("mysql_clear_password", b"")));
        assert_eq!(answer, format!("{TOKEN}\0").into_bytes());
        assert!(matches!(x.next(Bytes::from_static(OK)), Next::Done(ok) if &ok[..] == OK));

        let (mut x, _) = iam(false);
        sent(x.next(switch("mysql_clear_password", b"")));
        let e = failed(x.next(switch("mysql_clear_password", b"")));
        assert!(matches!(e, Error::SecondSwitch { .. }), "{e:?}");
    }

    #[test]
    fn a_token_goes_to_no_other_plugin_and_no_more_data() {
        let (mut x, _) = iam(false);
        let e = failed(x.next(switch("caching_sha2_password", NONCE)));
        assert!(matches!(&e, Error::Plugin { plugin } if &plugin[..] == b"caching_sha2_password"));
        let (mut x, _) = iam(false);
        let e = failed(x.next(more(&[AuthMoreData::PERFORM_FULL_AUTHENTICATION])));
        assert!(
            matches!(&e, Error::MoreData { plugin } if &plugin[..] == b"caching_sha2_password")
        );
        let (mut x, _) = iam(false);
        assert!(matches!(
            failed(x.next(Bytes::from_static(&[0x02]))),
            Error::NextFactor
        ));
        let (mut x, _) = iam(false);
        assert!(matches!(
            failed(x.next(Bytes::from_static(&[0x7f]))),
            Error::Malformed(_)
        ));
    }

    #[test]
    fn token_first_puts_the_token_in_the_first_packet_and_answers_one_switch_at_most() {
        let (mut x, first) = iam(true);
        assert_eq!(&first.plugin[..], b"mysql_clear_password");
        assert_eq!(first.auth_response.bytes(), format!("{TOKEN}\0").as_bytes());
        assert!(!x.declined_token_first());
        let again = sent(x.next(switch("mysql_clear_password", b"")));
        assert_eq!(again, format!("{TOKEN}\0").as_bytes());
        assert!(
            x.declined_token_first(),
            "the caller learns to wait next time"
        );
        let e = failed(x.next(switch("mysql_clear_password", b"")));
        assert!(matches!(e, Error::SecondSwitch { .. }));
        let (mut x, _) = iam(true);
        assert!(matches!(x.next(Bytes::from_static(OK)), Next::Done(_)));
        assert!(!x.declined_token_first());

        let long = "t".repeat(300);
        let e = Exchange::start(Credential::IamToken(&long), None, NONCE, true, false)
            .expect_err("a 301-byte first answer without lenenc");
        assert!(matches!(e, Error::FirstAnswerTooLong { len: 301 }));
    }

    #[test]
    fn a_missing_or_empty_announced_plugin_means_mysql_native_password() {
        for announced in [None, Some(&b""[..])] {
            let (_, first) =
                Exchange::start(Credential::IamToken(TOKEN), announced, NONCE, false, true)
                    .expect("starts");
            assert_eq!(&first.plugin[..], b"mysql_native_password");
        }
    }

    #[test]
    fn password_scrambles_satisfy_the_servers_verifier_and_never_hold_the_password() {
        let pw = Secret::new("Master-Pa55word!");
        let server = PasswordVerifier::new("Master-Pa55word!");
        for name in [plugin::MYSQL_NATIVE_PASSWORD, plugin::CACHING_SHA2_PASSWORD] {
            let (_, first) = Exchange::start(
                Credential::Password(&pw),
                Some(name.as_bytes()),
                NONCE,
                false,
                true,
            )
            .expect("starts");
            let answer = first.auth_response.bytes();
            assert!(
                server.verify(Some(name.as_bytes()), NONCE, answer),
                "{name}"
            );
            assert!(!server.verify(Some(name.as_bytes()), b"jihgfedcba9876543210", answer));
            let other = password_answer(name.as_bytes(), NONCE, &Secret::new("x")).unwrap();
            assert!(!server.verify(Some(name.as_bytes()), NONCE, other.bytes()));
            assert!(
                !answer
                    .windows(pw.expose().len())
                    .any(|w| w == pw.expose().as_bytes())
            );
        }
        assert_eq!(
            password_answer(b"mysql_native_password", NONCE, &Secret::new("")),
            Some(Answer::default()),
            "an empty password answers empty"
        );
        assert_eq!(password_answer(b"client_ed25519", NONCE, &pw), None);
    }

    #[test]
    fn a_password_follows_one_switch_and_caching_sha2s_fast_and_full_paths() {
        let pw = Secret::new("pw");
        let server = PasswordVerifier::new("pw");
        let start = || {
            Exchange::start(
                Credential::Password(&pw),
                Some(b"mysql_native_password"),
                NONCE,
                false,
                true,
            )
            .expect("starts")
            .0
        };
        // A switch to caching_sha2 with a NUL-terminated scramble, then fast-auth success.
        let mut x = start();
        let other_nonce = b"ABCDEFGHIJ0123456789";
        let mut data = other_nonce.to_vec();
        data.push(0);
        let answer = sent(x.next(switch("caching_sha2_password", &data)));
        assert!(server.verify(Some(b"caching_sha2_password"), other_nonce, &answer));
        assert!(matches!(
            x.next(more(&[AuthMoreData::FAST_AUTH_SUCCESS])),
            Next::Wait
        ));
        assert!(matches!(x.next(Bytes::from_static(OK)), Next::Done(_)));
        // Full authentication: the password in clear.
        let mut x = start();
        sent(x.next(switch("caching_sha2_password", &data)));
        let full = sent(x.next(more(&[AuthMoreData::PERFORM_FULL_AUTHENTICATION])));
        assert_eq!(full, b"pw\0");
        // Anything else caching_sha2 says is a failure, as is a second switch.
        let mut x = start();
        sent(x.next(switch("caching_sha2_password", &data)));
        assert!(matches!(failed(x.next(more(&[0x07]))), Error::Sha2Step));
        let mut x = start();
        sent(x.next(switch("mysql_clear_password", b"")));
        let e = failed(x.next(switch("mysql_native_password", NONCE)));
        assert!(
            matches!(&e, Error::SecondSwitch { plugin } if &plugin[..] == b"mysql_clear_password")
        );
        // More data for a plugin that takes none; a plugin the proxy lacks.
        let mut x = start();
        assert!(matches!(failed(x.next(more(&[3]))), Error::MoreData { .. }));
        let mut x = start();
        assert!(matches!(
            failed(x.next(switch("client_ed25519", NONCE))),
            Error::Plugin { .. }
        ));
    }

    #[test]
    fn nothing_answers_every_question_empty_and_a_refusal_is_the_end() {
        let (mut x, first) = Exchange::start(
            Credential::Nothing,
            Some(b"caching_sha2_password"),
            NONCE,
            false,
            false,
        )
        .expect("starts");
        assert!(first.auth_response.bytes().is_empty());
        assert!(sent(x.next(switch("mysql_clear_password", b""))).is_empty());
        assert!(sent(x.next(more(&[AuthMoreData::PERFORM_FULL_AUTHENTICATION]))).is_empty());
        let e = failed(x.next(err(1045, "Access denied")));
        assert!(matches!(e, Error::Refused(_)) && e.rejects_credential());
    }

    #[test]
    fn a_server_that_keeps_asking_fails_after_four_replies() {
        let pw = Secret::new("pw");
        let (mut x, _) = Exchange::start(
            Credential::Password(&pw),
            Some(b"caching_sha2_password"),
            NONCE,
            false,
            true,
        )
        .expect("starts");
        for _ in 0..MAX_ROUNDS {
            assert!(matches!(
                x.next(more(&[AuthMoreData::FAST_AUTH_SUCCESS])),
                Next::Wait
            ));
        }
        assert!(matches!(
            failed(x.next(more(&[AuthMoreData::FAST_AUTH_SUCCESS]))),
            Error::TooManyRounds
        ));
    }

    #[test]
    fn only_access_denied_throws_the_credential_away() {
        let (mut x, _) = iam(false);
        assert!(failed(x.next(err(1045, "Access denied"))).rejects_credential());
        let (mut x, _) = iam(false);
        assert!(!failed(x.next(err(1049, "Unknown database 'x'"))).rejects_credential());
        assert!(!Error::NextFactor.rejects_credential());
    }

    #[test]
    fn the_local_ok_follows_fast_auth_success_only_for_a_caching_sha2_scramble() {
        let ok = Bytes::from_static(OK);
        let sha2 = Some(plugin::CACHING_SHA2_PASSWORD.as_bytes());
        let fast = Bytes::from_static(&[AuthMoreData::HEADER, AuthMoreData::FAST_AUTH_SUCCESS]);
        assert_eq!(
            local_success(sha2, &[7; 32], ok.clone()),
            vec![fast, ok.clone()]
        );
        for (plugin, response) in [
            (sha2, &b""[..]),
            (sha2, &b"\0"[..]),
            (Some(plugin::MYSQL_NATIVE_PASSWORD.as_bytes()), &[7; 20][..]),
            (None, &[7; 20][..]),
        ] {
            assert_eq!(
                local_success(plugin, response, ok.clone()),
                vec![ok.clone()]
            );
        }
    }

    fn login(phase: Phase) -> IamLogin<'static> {
        IamLogin {
            endpoint: "db.example:3306",
            user: "bob\n",
            region: "eu-west-1",
            phase,
        }
    }

    #[test]
    fn an_access_denied_token_gets_the_iam_checklist_with_the_servers_words() {
        let denied = ErrPacket::new(1045, b"28000", "Access denied for user 'bob'");
        for phase in [Phase::Login, Phase::ChangeUser] {
            let r = login(phase).refusal(Error::Refused(denied.clone()));
            assert_eq!(r.reason, "access_denied");
            assert_eq!((r.reply.code, r.reply.sql_state), (1045, Some(*b"28000")));
            let msg = r.reply.message_str();
            for part in [
                "rds-iam-proxy:",
                "db.example:3306",
                "'bob\\n'",
                "eu-west-1",
                "rds-db:connect",
                "AWSAuthenticationPlugin",
                "The server said: Access denied for user 'bob'",
            ] {
                assert!(msg.contains(part), "{part:?} missing: {msg}");
            }
            assert_eq!(
                msg.contains("change user") && msg.contains("connection is closed"),
                phase == Phase::ChangeUser,
                "{msg}"
            );
        }
        // Anything else the server refuses with is passed on as it worded it.
        let unknown = ErrPacket::new(1049, b"42000", "Unknown database 'x'");
        let r = login(Phase::Login).refusal(Error::Refused(unknown.clone()));
        assert_eq!((r.reason, r.reply), ("server_error", unknown));
    }

    #[test]
    fn another_plugin_after_the_token_first_is_access_denied_with_both_causes() {
        let (mut x, _) = iam(true);
        let e = failed(x.next(switch("caching_sha2_password", b"nonce")));
        assert!(matches!(&e, Error::PluginAfterToken { .. }));
        assert!(!e.rejects_credential(), "the token itself was not judged");
        let r = login(Phase::Login).refusal(e);
        assert_eq!((r.reason, r.reply.code), ("access_denied", 1045));
        let msg = r.reply.message_str();
        for part in [
            "does not exist",
            "not an IAM user",
            "rds-db:connect",
            "caching_sha2_password",
        ] {
            assert!(msg.contains(part), "{part:?} missing: {msg}");
        }
    }

    #[test]
    fn another_plugin_means_not_an_iam_user() {
        for e in [
            Error::Plugin {
                plugin: Bytes::from_static(b"caching_sha2_password"),
            },
            Error::MoreData {
                plugin: Bytes::from_static(b"caching_sha2_password"),
            },
        ] {
            let r = login(Phase::Login).refusal(e);
            assert_eq!((r.reason, r.reply.code), ("not_iam_user", 1251));
            let msg = r.reply.message_str();
            for part in [
                "'bob\\n'",
                "caching_sha2_password",
                "not an IAM database user",
            ] {
                assert!(msg.contains(part), "{part:?} missing: {msg}");
            }
        }
        let r = login(Phase::Login).refusal(Error::NextFactor);
        assert_eq!(r.reason, "mfa");
        assert!(r.reply.message_str().contains("IAM only"));
        let r = login(Phase::ChangeUser).no_token(&"run aws sso login");
        assert_eq!((r.reason, r.reply.code), ("token", 1045));
        assert!(
            r.reply.message_str().ends_with(
                "run aws sso login. The change was not made and the connection is closed."
            )
        );
    }

    #[test]
    fn a_refused_password_names_the_secret_and_the_rotation() {
        let who = PasswordLogin {
            endpoint: "db.example:3306",
            user: "app",
            source: "Secrets Manager secret db",
        };
        let denied = ErrPacket::new(1045, b"28000", "Access denied for user 'app'");
        let r = who.refusal(Error::Refused(denied));
        assert_eq!(r.reason, "access_denied");
        let msg = r.reply.message_str();
        for part in [
            "'app'",
            "Secrets Manager secret db",
            "rotated",
            "Access denied",
        ] {
            assert!(msg.contains(part), "{part:?} missing: {msg}");
        }
        let r = who.refusal(Error::Plugin {
            plugin: Bytes::from_static(b"client_ed25519"),
        });
        assert_eq!((r.reason, r.reply.code), ("unsupported_auth", 1251));
        assert!(r.reply.message_str().contains("client_ed25519"));
    }

    #[test]
    fn debug_never_shows_the_token_or_the_password() {
        let pw = Secret::new("Master-Pa55word!");
        let (x, first) = iam(true);
        let (y, second) = Exchange::start(
            Credential::Password(&pw),
            Some(b"mysql_clear_password"),
            NONCE,
            false,
            true,
        )
        .expect("starts");
        let text = format!("{x:?} {first:?} {y:?} {second:?}");
        assert!(
            !text.contains("Signature") && !text.contains("Pa55"),
            "{text}"
        );
    }
}
