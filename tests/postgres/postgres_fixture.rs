//! The RDS-shaped PostgreSQL fixture (`tests/upstream/postgres/rds-like-postgres`), proved with
//! real peers, and the sans-IO PostgreSQL codec (`rds_iam_proxy::postgres::proto`) speaking to
//! them:
//!
//! - psql logs in as the IAM user with a token minted by the project's presigner, over
//!   `sslmode=verify-full` against the endpoint name while dialing 127.0.0.1; a wrong token,
//!   plaintext, and verification against the dial address are refused;
//! - the codec's SSLRequest / StartupMessage / PasswordMessage / CancelRequest, over a plain
//!   socket and the project's rustls config, get the real server's answers, which it decodes;
//! - an upstream set to SCRAM or MD5 asks for them (what the proxy must refuse clearly);
//! - libpq's SCRAM client logs in to the codec's SCRAM verifier, and shows its ErrorResponse.

use std::num::NonZeroU32;
use std::process::Stdio;
use std::time::Duration;

use crate::common::postgres::{PgAuth, PgStartOptions, RdsLikePostgres};
use bytes::{Bytes, BytesMut};
use rds_iam_proxy::postgres::proto::frame::{
    self, MAX_LOGIN_MESSAGE_LEN, MAX_STARTUP_LEN, take_message, take_startup,
};
use rds_iam_proxy::postgres::proto::{
    Authentication, BackendKeyData, BackendMessage, CancelRequest, EncryptionResponse,
    ErrorResponse, GssEncRequest, Message, ParameterStatus, PasswordMessage, ProtocolVersion,
    ReadyForQuery, SaslInitialResponse, SaslResponse, SslRequest, StartupMessage, StartupPacket,
    TransactionStatus, scram, sqlstate,
};
use rds_iam_proxy::tls::{self, CaSource};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

/// Bound on every wait for the server.
const GUARD: Duration = Duration::from_secs(30);

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------------
// A tiny async driver around the sans-IO codec.

struct Conn<S> {
    io: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(io: S) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// Reads until the buffer holds at least one byte; `None` at end of stream.
    async fn fill(&mut self) -> Option<()> {
        let n = tokio::time::timeout(GUARD, self.io.read_buf(&mut self.buf))
            .await
            .expect("the peer answered in time")
            .unwrap_or(0);
        (n > 0).then_some(())
    }

    async fn byte(&mut self) -> u8 {
        if self.buf.is_empty() {
            self.fill().await.expect("a one-byte answer");
        }
        let b = self.buf[0];
        let _ = self.buf.split_to(1);
        b
    }

    async fn message(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = take_message(&mut self.buf, MAX_LOGIN_MESSAGE_LEN).unwrap() {
                return Some(m);
            }
            self.fill().await?;
        }
    }

    async fn backend(&mut self) -> BackendMessage {
        let m = self.message().await.expect("a backend message");
        BackendMessage::decode(&m).unwrap()
    }

    async fn startup(&mut self) -> StartupPacket {
        loop {
            if let Some(body) = take_startup(&mut self.buf, MAX_STARTUP_LEN).unwrap() {
                return StartupPacket::decode(&body).unwrap();
            }
            self.fill().await.expect("a startup packet");
        }
    }

    /// Reads backend messages up to ReadyForQuery or an ErrorResponse.
    async fn until_ready(&mut self) -> Vec<BackendMessage> {
        let mut out = Vec::new();
        loop {
            let m = self.backend().await;
            let end = matches!(
                m,
                BackendMessage::ReadyForQuery(_) | BackendMessage::ErrorResponse(_)
            );
            out.push(m);
            if end {
                return out;
            }
        }
    }
}

/// Dials the fixture, sends the codec's SSLRequest, and upgrades to TLS verified against the
/// endpoint name with the project's own rustls configuration.
async fn tls_conn(pg: &RdsLikePostgres) -> Conn<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut tcp = Conn::new(TcpStream::connect(pg.dial_addr()).await.unwrap());
    let mut out = BytesMut::new();
    SslRequest.encode(&mut out);
    tcp.send(&out).await;
    assert_eq!(
        EncryptionResponse::decode(tcp.byte().await, false).unwrap(),
        EncryptionResponse::Accept
    );
    assert!(tcp.buf.is_empty(), "nothing before the TLS handshake");
    let connector =
        TlsConnector::from(tls::upstream_client_config(&CaSource::File(pg.ca.clone())).unwrap());
    let name = tls::server_name(&pg.endpoint_host).unwrap();
    let stream = connector.connect(name, tcp.io).await.unwrap();
    Conn::new(stream)
}

fn startup(user: &str, version: ProtocolVersion, more: &[(&str, &str)]) -> BytesMut {
    let mut out = BytesMut::new();
    StartupMessage::new(version, user, more)
        .encode(&mut out)
        .unwrap();
    out
}

fn password(p: &str) -> BytesMut {
    let mut out = BytesMut::new();
    PasswordMessage {
        password: Bytes::copy_from_slice(p.as_bytes()),
    }
    .encode(&mut out)
    .unwrap();
    out
}

fn error_of(m: &BackendMessage) -> &ErrorResponse {
    match m {
        BackendMessage::ErrorResponse(e) => e,
        other => panic!("expected an ErrorResponse, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn psql_logs_in_with_an_iam_token_over_verified_tls_only() {
    let pg = RdsLikePostgres::start();
    eprintln!(
        "PostgreSQL {} started in {} s",
        pg.server_version, pg.start_seconds
    );
    let token = pg.iam_token("iamuser");
    let out = pg.psql(
        &pg.conninfo("iamuser"),
        token.expose(),
        "SELECT current_user, s.ssl, pg_has_role(current_user, 'rds_iam', 'member') \
         FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()",
    );
    assert!(out.status.success(), "psql: {}", stderr_of(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "iamuser|t|t");
    assert!(
        pg.wait_verify_line(|l| l.contains("accept user=iamuser reason=ok"))
            .is_some(),
        "{}",
        pg.verify_log()
    );
    // The second IAM user too, with its own token.
    let out = pg.psql(
        &pg.conninfo("iamuser2"),
        pg.iam_token("iamuser2").expose(),
        "SELECT current_user",
    );
    assert!(out.status.success(), "psql: {}", stderr_of(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "iamuser2");

    // A token for another user, and one signed with the wrong secret: PAM refuses both.
    let out = pg.psql(
        &pg.conninfo("iamuser"),
        pg.iam_token("iamuser2").expose(),
        "SELECT 1",
    );
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("PAM authentication failed for user \"iamuser\""),
        "{}",
        stderr_of(&out)
    );
    let forged = aws_credential_types::Credentials::new(
        &pg.akid,
        "not-the-secret-key/000000000000000000000",
        None,
        None,
        "test",
    );
    let out = pg.psql(
        &pg.conninfo("iamuser"),
        pg.iam_token_signed_with("iamuser", &forged).expose(),
        "SELECT 1",
    );
    assert!(!out.status.success());
    assert!(
        pg.wait_verify_line(|l| l.contains("reason=wrong-user"))
            .is_some()
            && pg
                .wait_verify_line(|l| l.contains("reason=wrong-signature"))
                .is_some(),
        "{}",
        pg.verify_log()
    );
    assert!(
        !pg.verify_log().contains(token.expose()),
        "the checker never logs a token"
    );

    // Plaintext with a good token: no pg_hba.conf line for it.
    let plain = format!(
        "host=127.0.0.1 port={} user=iamuser dbname={} sslmode=disable gssencmode=disable",
        pg.port, pg.database
    );
    let out = pg.psql(&plain, pg.iam_token("iamuser").expose(), "SELECT 1");
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("no pg_hba.conf entry")
            && stderr_of(&out).contains("no encryption"),
        "{}",
        stderr_of(&out)
    );

    // verify-full against the dial address fails: the certificate names only the endpoint.
    let by_ip = format!(
        "host=127.0.0.1 port={} user=iamuser dbname={} sslmode=verify-full sslrootcert={}",
        pg.port,
        pg.database,
        pg.ca.display()
    );
    let out = pg.psql(&by_ip, pg.iam_token("iamuser").expose(), "SELECT 1");
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("does not match host name"),
        "{}",
        stderr_of(&out)
    );

    // The password user logs in with its SCRAM password (over TLS only).
    let out = pg.psql(
        &pg.conninfo(&pg.pw_user),
        &pg.pw_password,
        "SELECT current_user",
    );
    assert!(out.status.success(), "psql: {}", stderr_of(&out));
    assert_eq!(
        pg.superuser_sql("SELECT count(*) FROM pg_roles WHERE rolname = 'rds_iam'")
            .trim(),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codec_speaks_to_the_real_server() {
    let pg = tokio::task::spawn_blocking(RdsLikePostgres::start)
        .await
        .unwrap();

    // SSLRequest → S → TLS → StartupMessage → AuthenticationCleartextPassword → the token →
    // AuthenticationOk, ParameterStatus…, BackendKeyData, ReadyForQuery.
    let mut c = tls_conn(&pg).await;
    c.send(&startup(
        "iamuser",
        ProtocolVersion::V3_0,
        &[
            ("database", "proxytest"),
            ("application_name", "codec-test"),
        ],
    ))
    .await;
    assert_eq!(
        c.backend().await,
        BackendMessage::Authentication(Authentication::CleartextPassword)
    );
    c.send(&password(pg.iam_token("iamuser").expose())).await;
    let login = c.until_ready().await;
    assert_eq!(login[0], BackendMessage::Authentication(Authentication::Ok));
    let params: Vec<&ParameterStatus> = login
        .iter()
        .filter_map(|m| match m {
            BackendMessage::ParameterStatus(p) => Some(p),
            _ => None,
        })
        .collect();
    assert!(
        params
            .iter()
            .any(|p| p.name == "server_version" && pg.server_version.starts_with(&p.value))
    );
    assert!(
        params
            .iter()
            .any(|p| p.name == "application_name" && p.value == "codec-test")
    );
    let keys: Vec<&BackendKeyData> = login
        .iter()
        .filter_map(|m| match m {
            BackendMessage::BackendKeyData(k) => Some(k),
            _ => None,
        })
        .collect();
    let key = keys[0].clone();
    assert_eq!(
        login.last(),
        Some(&BackendMessage::ReadyForQuery(ReadyForQuery {
            status: TransactionStatus::Idle
        }))
    );

    // A long query, cancelled by the codec's CancelRequest on a new TLS connection.
    let mut q = BytesMut::new();
    frame::put_message(b'Q', b"SELECT pg_sleep(30)\0", &mut q);
    c.send(&q).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut cancel = tls_conn(&pg).await;
    let mut out = BytesMut::new();
    CancelRequest {
        process_id: key.process_id,
        secret_key: key.secret_key.clone(),
    }
    .encode(&mut out)
    .unwrap();
    cancel.send(&out).await;
    assert!(
        cancel.message().await.is_none(),
        "the server just closes a cancel connection"
    );
    // Skip what the query itself sent (RowDescription) up to its ErrorResponse.
    let e = loop {
        let m = c.message().await.expect("the query's answer");
        if m.tag == b'E' {
            break ErrorResponse::decode(&m.body).unwrap();
        }
    };
    assert_eq!(
        e.sqlstate().as_deref(),
        Some(sqlstate::QUERY_CANCELED),
        "{e}"
    );

    // A wrong token: FATAL 28000 from PAM.
    let mut c = tls_conn(&pg).await;
    c.send(&startup("iamuser", ProtocolVersion::V3_0, &[]))
        .await;
    assert_eq!(
        c.backend().await,
        BackendMessage::Authentication(Authentication::CleartextPassword)
    );
    c.send(&password("not-a-token")).await;
    let e = c.backend().await;
    let e = error_of(&e);
    assert_eq!(e.sqlstate().as_deref(), Some("28000"));
    assert_eq!(e.severity().as_deref(), Some("FATAL"));
    assert!(
        e.message().unwrap().contains("PAM authentication failed"),
        "{e}"
    );
    assert!(
        c.message().await.is_none(),
        "the server closes after a FATAL"
    );

    // Protocol 3.2 with a _pq_ option: a pre-18 server negotiates down, then carries on.
    let mut c = tls_conn(&pg).await;
    c.send(&startup(
        "iamuser",
        ProtocolVersion::V3_2,
        &[("_pq_.not_a_real_option", "on")],
    ))
    .await;
    match c.backend().await {
        BackendMessage::NegotiateProtocolVersion(v) => {
            assert_eq!(v.newest, ProtocolVersion::V3_0);
            assert_eq!(v.unrecognized, ["_pq_.not_a_real_option"]);
        }
        other => panic!("expected NegotiateProtocolVersion, got {other:?}"),
    }
    assert_eq!(
        c.backend().await,
        BackendMessage::Authentication(Authentication::CleartextPassword)
    );

    // Plaintext: the codec's StartupMessage straight on TCP is refused by pg_hba.conf.
    let mut plain = Conn::new(TcpStream::connect(pg.dial_addr()).await.unwrap());
    plain
        .send(&startup(
            "iamuser",
            ProtocolVersion::V3_0,
            &[("database", "proxytest")],
        ))
        .await;
    let e = plain.backend().await;
    let e = error_of(&e);
    assert_eq!(
        e.sqlstate().as_deref(),
        Some(sqlstate::INVALID_AUTHORIZATION_SPECIFICATION)
    );
    assert!(e.message().unwrap().contains("no encryption"), "{e}");

    // GSSENCRequest: Debian's server is built with GSSAPI and says G (go ahead) even with no
    // keytab; the codec reads it as the answer to a GSS request (an S would be an error).
    let mut gss = Conn::new(TcpStream::connect(pg.dial_addr()).await.unwrap());
    let mut out = BytesMut::new();
    GssEncRequest.encode(&mut out);
    gss.send(&out).await;
    let answer = gss.byte().await;
    assert_eq!(answer, b'G');
    assert_eq!(
        EncryptionResponse::decode(answer, true).unwrap(),
        EncryptionResponse::Accept
    );
    assert!(EncryptionResponse::decode(answer, false).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_set_to_scram_or_md5_asks_for_it() {
    let (scram_pg, md5_pg) = tokio::join!(
        tokio::task::spawn_blocking(|| RdsLikePostgres::start_with(&PgStartOptions {
            auth: PgAuth::Scram,
            ..Default::default()
        })),
        tokio::task::spawn_blocking(|| RdsLikePostgres::start_with(&PgStartOptions {
            auth: PgAuth::Md5,
            ..Default::default()
        })),
    );
    let (scram_pg, md5_pg) = (scram_pg.unwrap(), md5_pg.unwrap());

    let mut c = tls_conn(&scram_pg).await;
    c.send(&startup("iamuser", ProtocolVersion::V3_0, &[]))
        .await;
    match c.backend().await {
        BackendMessage::Authentication(Authentication::Sasl { mechanisms }) => {
            // Over TLS the server offers channel binding too.
            assert!(
                mechanisms.contains(&"SCRAM-SHA-256".to_owned()),
                "{mechanisms:?}"
            );
            assert!(
                mechanisms.contains(&"SCRAM-SHA-256-PLUS".to_owned()),
                "{mechanisms:?}"
            );
        }
        other => panic!("expected AuthenticationSASL, got {other:?}"),
    }

    let mut c = tls_conn(&md5_pg).await;
    c.send(&startup("iamuser", ProtocolVersion::V3_0, &[]))
        .await;
    assert!(matches!(
        c.backend().await,
        BackendMessage::Authentication(Authentication::Md5Password { .. })
    ));

    // And psql with the right password gets in: the fixture's modes are real.
    for pg in [&scram_pg, &md5_pg] {
        let out = pg.psql(
            &pg.conninfo("iamuser"),
            pg.iam_password.as_deref().unwrap(),
            "SELECT current_user",
        );
        assert!(
            out.status.success(),
            "psql ({:?}): {}",
            pg.auth,
            stderr_of(&out)
        );
    }
}

/// The codec's SCRAM-SHA-256 verifier as a server, with libpq (psql) as the client: the right
/// password logs in, a wrong one is refused with the codec's own ErrorResponse, which psql shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_logs_in_to_the_codec_scram_verifier() {
    const LOCAL_PASSWORD: &str = "local pass-w0rd";
    let verifier = scram::ScramVerifier::new(
        LOCAL_PASSWORD,
        b"a sixteen-byte salt",
        NonZeroU32::new(scram::DEFAULT_ITERATIONS).unwrap(),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();

    for (password, expect_ok) in [(LOCAL_PASSWORD, true), ("wrong password", false)] {
        let child = tokio::process::Command::new("psql")
            .args([
                "-X",
                "-c",
                "\\q",
                &format!(
                    "host=127.0.0.1 port={port} user=iamuser dbname=app sslmode=prefer \
                     gssencmode=disable connect_timeout=20"
                ),
            ])
            .env("PGPASSWORD", password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (sock, _) = tokio::time::timeout(GUARD, listener.accept())
            .await
            .unwrap()
            .unwrap();
        let mut c = Conn::new(sock);
        // sslmode=prefer: an SSLRequest first, refused with N.
        assert_eq!(c.startup().await, StartupPacket::SslRequest);
        c.send(&[EncryptionResponse::Refuse.byte(false)]).await;
        let StartupPacket::Startup(m) = c.startup().await else {
            panic!("expected a StartupMessage")
        };
        assert_eq!((m.user(), m.database()), ("iamuser", "app"));

        let mut out = BytesMut::new();
        Authentication::Sasl {
            mechanisms: vec![scram::MECHANISM.into()],
        }
        .encode(&mut out)
        .unwrap();
        c.send(&out).await;
        let initial = SaslInitialResponse::decode(&c.message().await.unwrap()).unwrap();
        assert_eq!(initial.mechanism, scram::MECHANISM);
        let (exchange, server_first) = verifier
            .server_first(&initial.data.unwrap(), &scram::nonce_from_random(&[42; 18]))
            .unwrap();
        let mut out = BytesMut::new();
        Authentication::SaslContinue(Bytes::from(server_first))
            .encode(&mut out)
            .unwrap();
        c.send(&out).await;
        let response = SaslResponse::decode(&c.message().await.unwrap()).unwrap();
        let mut out = BytesMut::new();
        match exchange.server_final(&response.data) {
            Ok(server_final) => {
                Authentication::SaslFinal(Bytes::from(server_final))
                    .encode(&mut out)
                    .unwrap();
                Authentication::Ok.encode(&mut out).unwrap();
                for (name, value) in [
                    ("server_version", "15.18"),
                    ("client_encoding", "UTF8"),
                    ("server_encoding", "UTF8"),
                    ("standard_conforming_strings", "on"),
                    ("integer_datetimes", "on"),
                ] {
                    ParameterStatus {
                        name: name.into(),
                        value: value.into(),
                    }
                    .encode(&mut out)
                    .unwrap();
                }
                BackendKeyData {
                    process_id: 1,
                    secret_key: Bytes::from_static(&[7; 4]),
                }
                .encode(&mut out)
                .unwrap();
                ReadyForQuery {
                    status: TransactionStatus::Idle,
                }
                .encode(&mut out);
            }
            Err(e) => {
                assert!(!expect_ok, "{e}");
                ErrorResponse::fatal(
                    sqlstate::INVALID_PASSWORD,
                    "password authentication failed for user \"iamuser\"",
                )
                .hint("the proxy's --local-password")
                .encode(&mut out)
                .unwrap();
            }
        }
        c.send(&out).await;
        if expect_ok {
            // psql is logged in; `\q` ends the session with Terminate.
            let m = c.message().await.expect("Terminate");
            assert_eq!(m.tag, b'X');
        }
        drop(c);
        let out = tokio::time::timeout(GUARD, child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let stderr = stderr_of(&out);
        if expect_ok {
            assert!(out.status.success(), "psql: {stderr}");
        } else {
            assert!(!out.status.success());
            assert!(
                stderr.contains("FATAL:  password authentication failed for user \"iamuser\""),
                "{stderr}"
            );
            assert!(stderr.contains("the proxy's --local-password"), "{stderr}");
        }
    }
}
