//! Protocol compression on the database leg (issue 12, DESIGN.md decision 12).
//!
//! Scripted MySQL-8.4-shaped upstream (`common::fake`): zstd negotiation and the level byte, the
//! frame and inner sequence-id rules a real MariaDB cannot be made to show (a reply cut over
//! frames, a multi-statement answer restarting its ids, LOAD DATA LOCAL turns, COM_CHANGE_USER),
//! stored frames for what does not compress, and hostile compressed frames that each end one
//! connection with a clear error while the proxy keeps serving. The frames the fake server sends
//! and reads are made and checked with `flate2`/`zstd` directly (`common::compression`), not
//! with the proxy's codec.
//!
//! Real MariaDB (zlib) through the SSM simulator: the suite's real clients, 64 MiB checksummed
//! reads and uploads, LOAD DATA LOCAL, COM_CHANGE_USER, KILL QUERY, and the metrics.

use std::sync::atomic::Ordering;

use crate::common::compression::*;
use crate::common::fake::*;
use bytes::{BufMut, Bytes, BytesMut};
use rds_iam_proxy::mysql::proto::buf::put_lenenc_bytes;
use rds_iam_proxy::mysql::proto::{Capabilities, ComChangeUser, HandshakeResponse41, HandshakeV10};
use rds_iam_proxy::proxy::config::Compression;

// ---------------------------------------------------------------------------------------------
// Scripted upstream
// ---------------------------------------------------------------------------------------------

/// One frame the proxy sent, as the fake server reads it.
#[derive(Debug)]
struct SentFrame {
    seq: u8,
    /// The payload was compressed (not stored).
    compressed: bool,
    /// The packet-stream bytes it carried.
    plain: Vec<u8>,
}

async fn read_frame(server: &mut ServerConn, algo: Algo) -> SentFrame {
    let (clen, seq, ulen) = parse_header(&server.read_exact_raw(7).await);
    let payload = server.read_exact_raw(clen).await;
    SentFrame {
        seq,
        compressed: ulen != 0,
        plain: if ulen == 0 {
            payload.to_vec()
        } else {
            decompress(algo, &payload, ulen)
        },
    }
}

/// Reads frames until they carry `len` packet-stream bytes.
async fn read_frames(server: &mut ServerConn, algo: Algo, len: usize) -> Vec<SentFrame> {
    let mut frames = Vec::new();
    let mut got = 0;
    while got < len {
        let f = read_frame(server, algo).await;
        got += f.plain.len();
        frames.push(f);
    }
    assert_eq!(got, len, "frames carried more than expected");
    frames
}

/// A MariaDB-shaped greeting for the compression tests: the MySQL 8.4 one without zstd.
fn zlib_only_greeting() -> HandshakeV10 {
    let mut g = mysql84_greeting();
    g.capabilities = g.capabilities - Capabilities::ZSTD_COMPRESSION_ALGORITHM;
    g
}

/// A client logged in through the proxy against `greeting`; returns both ends and the
/// HandshakeResponse41 the server read.
async fn login(
    h: &Harness,
    greeting: &HandshakeV10,
) -> (TestClient, ServerConn, HandshakeResponse41) {
    let (mut client, mut server) = h.pair().await;
    server.greet(greeting).await;
    let (local, _) = client.read_greeting().await;
    assert!(
        !local
            .capabilities
            .intersects(Capabilities::COMPRESS | Capabilities::ZSTD_COMPRESSION_ALGORITHM),
        "the local leg is never offered compression: {:?}",
        local.capabilities
    );
    let mut response = client_response("iamuser", "mysql_native_password", b"");
    // A client that asks for compression anyway does not get it on its leg.
    response.capabilities = response.capabilities | Capabilities::COMPRESS;
    client.send_response(&response).await;
    server.read_ssl_request().await;
    server.start_tls(h.pki.good.clone()).await.expect("TLS");
    let upstream = server.read_response().await;
    server.switch_to_clear_password(3).await;
    verify_token(&server.read_token(4).await, "iamuser");
    // The OK that ends the login is not compressed; everything after it is.
    server.send(5, PLAIN_OK).await;
    let ok = client.expect_packet("OK").await;
    assert_eq!((ok.seq, &ok.payload[..]), (2, PLAIN_OK));
    (client, server, upstream)
}

/// The canned `SELECT 1` result set with inner ids from `first` on.
fn result_set(first: u8) -> Vec<u8> {
    let canned = canned_result_set();
    let mut out = canned.to_vec();
    let mut at = 0;
    let mut id = first;
    while at < out.len() {
        let len = u32::from_le_bytes([out[at], out[at + 1], out[at + 2], 0]) as usize;
        out[at + 3] = id;
        id = id.wrapping_add(1);
        at += 4 + len;
    }
    out
}

/// The inner packets' sequence ids in `stream`.
fn inner_ids(stream: &[u8]) -> Vec<u8> {
    let mut ids = Vec::new();
    let mut at = 0;
    while at + 4 <= stream.len() {
        let len = u32::from_le_bytes([stream[at], stream[at + 1], stream[at + 2], 0]) as usize;
        ids.push(stream[at + 3]);
        at += 4 + len;
    }
    assert_eq!(at, stream.len(), "whole packets");
    ids
}

fn change_user_packet(user: &str) -> Bytes {
    let mut p = BytesMut::new();
    p.put_u8(ComChangeUser::COMMAND);
    p.put_slice(user.as_bytes());
    p.put_u8(0);
    put_lenenc_bytes(&mut p, b"");
    p.put_slice(b"appdb\0");
    p.put_u16_le(255);
    p.put_slice(b"mysql_native_password\0");
    p.freeze()
}

/// MySQL 8.4 offers zstd: the proxy asks for it with its level byte, frames small packets stored
/// and large ones compressed, and keeps both sequence-id rules: frame ids run on across both
/// directions within a command and restart at each, and the inner ids the client sees follow its
/// own packets however the server numbered them (a reply cut over frames, a multi-statement
/// answer restarting at the frame counter, LOAD DATA LOCAL, COM_CHANGE_USER).
#[tokio::test]
async fn zstd_with_a_mysql84_upstream_follows_the_sequence_rules() {
    let h = Harness::start(|c| c.compression = Compression::ANY).await;
    let (mut client, mut server, upstream) = login(&h, &mysql84_greeting()).await;
    let caps = upstream.capabilities;
    assert!(
        caps.contains(Capabilities::ZSTD_COMPRESSION_ALGORITHM),
        "{caps:?}"
    );
    assert!(
        !caps.contains(Capabilities::COMPRESS),
        "one algorithm: {caps:?}"
    );
    assert_eq!(
        upstream.zstd_level,
        Some(3),
        "the level the server compresses with"
    );
    let z = Algo::Zstd;

    // A small command: one stored frame, id 0. The answer, cut over two frames (ids 1 and 2)
    // with inner ids from 1, reaches the client whole and unchanged.
    let query = frame(0, b"\x03\x00\x01SELECT 1");
    client.send_raw(&query).await;
    let f = read_frame(&mut server, z).await;
    assert_eq!((f.seq, f.compressed, &f.plain[..]), (0, false, &query[..]));
    let answer = result_set(1);
    let (a, b) = answer.split_at(9);
    server.send_raw(&compressed_frame(z, 1, a)).await;
    server.send_raw(&stored_frame(2, b)).await;
    assert_eq!(client.read_exact_raw(answer.len()).await, answer);

    // A multi-statement answer: the server numbers its second result from its frame counter
    // (2 …), the client expects 5 … after the first result's 1 … 4.
    client
        .send_raw(&frame(0, b"\x03\x00\x01SELECT 1; SELECT 1"))
        .await;
    let f = read_frame(&mut server, z).await;
    assert_eq!(f.seq, 0, "a new command restarts the frame ids");
    server
        .send_raw(&compressed_frame(z, 1, &result_set(1)))
        .await;
    server
        .send_raw(&compressed_frame(z, 2, &result_set(2)))
        .await;
    let both = client.read_exact_raw(2 * answer.len()).await;
    assert_eq!(inner_ids(&both), (1..=8).collect::<Vec<u8>>());

    // LOAD DATA LOCAL: the file's frames go on from the server's last frame id; the server's
    // OK (inner id from its frame counter) reaches the client after its own last packet.
    client
        .send_raw(&frame(
            0,
            b"\x03LOAD DATA LOCAL INFILE 'orders.csv' INTO TABLE t",
        ))
        .await;
    assert_eq!(read_frame(&mut server, z).await.seq, 0);
    server
        .send_raw(&stored_frame(1, &frame(1, b"\xfborders.csv")))
        .await;
    let request = client.expect_packet("LOCAL INFILE request").await;
    assert_eq!(
        (request.seq, &request.payload[..]),
        (1, &b"\xfborders.csv"[..])
    );
    let rows = business_rows(200_000);
    let file = [frame(2, &rows).to_vec(), frame(3, b"").to_vec()].concat();
    client.send_raw(&file).await;
    let frames = read_frames(&mut server, z, file.len()).await;
    let ids: Vec<u8> = frames.iter().map(|f| f.seq).collect();
    assert_eq!(ids, (2..2 + frames.len() as u8).collect::<Vec<u8>>());
    assert!(frames[0].compressed, "rows are compressed");
    let carried: Vec<u8> = frames.iter().flat_map(|f| f.plain.clone()).collect();
    assert_eq!(carried, file);
    let last = *ids.last().unwrap();
    let ok = frame(last + 1, PLAIN_OK);
    server.send_raw(&stored_frame(last + 1, &ok)).await;
    let ok = client.expect_packet("LOAD DATA OK").await;
    assert_eq!(ok.seq, 4, "after the client's empty packet (3)");

    // What does not compress goes stored, even when large; a one-packet query cut over frames
    // is still answered at inner id 1.
    let blob = noise(150_000, 7);
    let mut q = b"\x03\x00\x01SELECT '".to_vec();
    q.extend_from_slice(&blob);
    let q = frame(0, &q);
    client.send_raw(&q).await;
    let frames = read_frames(&mut server, z, q.len()).await;
    assert!(
        frames.iter().all(|f| !f.compressed),
        "random bytes are stored"
    );
    assert_eq!(frames[0].seq, 0);
    let next = frames.last().unwrap().seq + 1;
    server
        .send_raw(&stored_frame(next, &frame(next, PLAIN_OK)))
        .await;
    assert_eq!(client.expect_packet("OK").await.seq, 1);

    // COM_CHANGE_USER: replayed upstream in frame 0; the auth turns go on 1, 2, 3.
    client.send(0, &change_user_packet("iamuser2")).await;
    let f = read_frame(&mut server, z).await;
    assert_eq!(f.seq, 0);
    assert_eq!(f.plain[3], 0, "COM_CHANGE_USER inner id");
    assert_eq!(f.plain[4], ComChangeUser::COMMAND);
    let mut switch = vec![0xfe];
    switch.extend_from_slice(b"mysql_clear_password\0");
    switch.extend_from_slice(UPSTREAM_SCRAMBLE);
    switch.push(0);
    // The server's reply numbered from its frame counter, as MySQL does.
    server.send_raw(&stored_frame(1, &frame(1, &switch))).await;
    let f = read_frame(&mut server, z).await;
    assert_eq!(
        (f.seq, f.plain[3]),
        (2, 2),
        "the token: frame 2, inner id 2"
    );
    verify_token(&token_from_auth(&f.plain[4..]), "iamuser2");
    server.send_raw(&stored_frame(3, &frame(3, PLAIN_OK))).await;
    let ok = client.expect_packet("change user OK").await;
    assert_eq!((ok.seq, &ok.payload[..]), (1, PLAIN_OK));

    // The session goes on as before, then ends with COM_QUIT in frame 0.
    client.send_raw(&query).await;
    assert_eq!(read_frame(&mut server, z).await.seq, 0);
    server.send_raw(&compressed_frame(z, 1, &answer)).await;
    assert_eq!(client.read_exact_raw(answer.len()).await, answer);
    client.send(0, &[0x01]).await;
    let quit = read_frame(&mut server, z).await;
    assert_eq!((quit.seq, &quit.plain[..]), (0, &[1, 0, 0, 0, 1][..]));
    client.shutdown_write().await;
    drop(server);
    client.expect_closed("after COM_QUIT").await;

    let c = &h.proxy.stats().compression;
    assert_eq!(c.zstd_logins.load(Ordering::Relaxed), 1);
    assert_eq!(c.zlib_logins.load(Ordering::Relaxed), 0);
    let (up, up_wire) = (
        c.up_uncompressed.load(Ordering::Relaxed),
        c.up_compressed.load(Ordering::Relaxed),
    );
    let (down, down_wire) = (
        c.down_uncompressed.load(Ordering::Relaxed),
        c.down_compressed.load(Ordering::Relaxed),
    );
    assert!(up > 350_000 && up_wire < up, "up: {up_wire} for {up}");
    assert!(down > 0 && down_wire > 0, "down: {down_wire} for {down}");
    h.finish().await;
}

/// Hostile compressed frames from the database: garbage, a frame inflating past its announced
/// length (a "zip bomb"), a wrong (short) uncompressed length, and a stream ending inside a frame.
/// Each ends its own connection with an ERR naming the hop and what was wrong; the proxy goes on
/// serving compressed sessions.
#[tokio::test]
async fn hostile_compressed_frames_end_one_connection_each() {
    let h = Harness::start(|c| c.compression = Compression::ANY).await;
    let z = Algo::Zlib;
    let rows = business_rows(5000);
    let good = compress(z, &rows);
    let bomb = compress(z, &vec![0u8; 16 * 1024 * 1024 - 1]);
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "garbage",
            raw_frame(1, 100, 400, &noise(100, 3)),
            "corrupt zlib data",
        ),
        (
            "bomb",
            raw_frame(1, bomb.len(), 1000, &bomb),
            "announces 1000 bytes and inflates to more",
        ),
        (
            "short",
            raw_frame(1, good.len(), rows.len() + 10, &good),
            &format!("inflates to {}", rows.len()),
        ),
        (
            "cut",
            raw_frame(1, 1000, 4000, &good[..10]),
            "ended inside a frame (17 of 1007 bytes)",
        ),
    ];
    for (what, bytes, detail) in cases {
        let (mut client, mut server, upstream) = login(&h, &zlib_only_greeting()).await;
        assert!(upstream.capabilities.contains(Capabilities::COMPRESS));
        assert_eq!(upstream.zstd_level, None);
        client.send(0, b"\x03\x00\x01SELECT 1").await;
        assert_eq!(read_frame(&mut server, z).await.seq, 0);
        server.send_raw(&bytes).await;
        if what == "cut" {
            drop(server);
        }
        let err = client.expect_err(1).await;
        let msg = err.message_str();
        assert!(
            msg.contains("bad compressed data from the database") && msg.contains(detail),
            "{what}: {msg}"
        );
        assert!(
            msg.contains("--compression off"),
            "{what}: what to do: {msg}"
        );
    }
    // Still serving, compressed.
    let (mut client, mut server, _) = login(&h, &zlib_only_greeting()).await;
    let query = frame(0, b"\x03\x00\x01SELECT 1");
    client.send_raw(&query).await;
    assert_eq!(read_frame(&mut server, z).await.plain, query.to_vec());
    let answer = result_set(1);
    server.send_raw(&compressed_frame(z, 1, &answer)).await;
    assert_eq!(client.read_exact_raw(answer.len()).await, answer);
    drop(client);
    drop(server);
    let stats = h.finish().await;
    assert_eq!(stats.logins, 5);
}

/// Over a direct connection `auto` resolves to off: the default config asks for nothing.
#[tokio::test]
async fn without_compression_the_database_leg_is_plain() {
    let h = Harness::start(|c| assert_eq!(c.compression, Compression::OFF)).await;
    let (mut client, mut server, upstream) = login(&h, &mysql84_greeting()).await;
    assert!(
        !upstream
            .capabilities
            .intersects(Capabilities::COMPRESS | Capabilities::ZSTD_COMPRESSION_ALGORITHM)
    );
    client.send(0, b"\x03\x00\x01SELECT 1").await;
    let q = server.expect_packet("COM_QUERY").await;
    assert_eq!(q.raw, frame(0, b"\x03\x00\x01SELECT 1"));
    drop(client);
    drop(server);
    h.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Real MariaDB (zlib) through the SSM simulator
// ---------------------------------------------------------------------------------------------

mod mariadb_over_ssm {
    use std::process::Command;

    use md5::{Digest, Md5};
    use mysql_async::prelude::*;
    use ssm_sim::SimServer;

    use crate::common::aws_sim::{bare, sim_for};
    use crate::common::clients::{
        Target, assert_report_sane, mariadb_cli_check, mysql_async_check, mysql2_check,
        pymysql_check,
    };
    use crate::common::compression::*;
    use crate::common::process::{ProxyProcess, cmd_for, free_port, http_get, mariadb};
    use crate::common::upstream::RdsLikeUpstream;
    use ssm_sim::aws::AwsWorld;

    const TARGET: &str = "i-0123456789abcdef0";

    /// Bytes of the big read and upload.
    const BIG: usize = 64 * 1024 * 1024;

    /// The proxy binary with default settings (so `--compression auto`) over SSM through `sim`,
    /// with its metrics on `health`.
    fn proxy(up: &RdsLikeUpstream, sim: &SimServer, health: &str) -> ProxyProcess {
        let mut cmd: Command = cmd_for(up, true);
        cmd.env_remove("RDS_IAM_PROXY_DIAL")
            .env("AWS_ENDPOINT_URL_SSM", sim.endpoint_url())
            .args(["--ssm-target", TARGET, "--health-addr", health]);
        let p = ProxyProcess::spawn(cmd);
        assert!(
            p.start_line
                .contains("compression zstd or zlib, as the server offers"),
            "{}",
            p.start_line
        );
        p
    }

    /// The simulator routing the endpoint to `up`, with a minimal AWS account (for `doctor`).
    async fn simulator(up: &RdsLikeUpstream) -> SimServer {
        let world = serde_json::json!({
            "account": "123456789012",
            "region": up.region,
            "caller": {"arn": "arn:aws:iam::123456789012:user/dev"},
            "ec2_instances": [{"id": TARGET, "tags": {"Name": "bastion"}}],
        });
        sim_for(up, AwsWorld::from_json(&world.to_string()).unwrap()).await
    }

    fn target(port: u16, user: &str) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port,
            user: user.into(),
            password: None,
            ssl_ca: None,
        }
    }

    fn opts(t: &Target) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(t.host.clone())
            .tcp_port(t.port)
            .user(Some(t.user.clone()))
            .db_name(Some("proxytest"))
            .into()
    }

    fn hex(digest: impl AsRef<[u8]>) -> String {
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The suite's four real clients (login, TLS upstream, prepared statements, a 4 MiB
    /// checksummed blob, KILL QUERY from a second connection) over a zlib-compressed SSM leg.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_clients_over_a_zlib_compressed_ssm_leg() {
        let up = RdsLikeUpstream::start();
        let sim = simulator(&up).await;
        let health = format!("127.0.0.1:{}", free_port());
        let proxy = proxy(&up, &sim, &health);
        let t = target(proxy.port, "iamuser");
        assert_report_sane(&mysql_async_check(&t).await, "iamuser");
        for check in [pymysql_check, mysql2_check, mariadb_cli_check] {
            let t = t.clone();
            let r = tokio::task::spawn_blocking(move || check(&t))
                .await
                .unwrap();
            assert_report_sane(&r, "iamuser");
        }
        let (_, page) = http_get(&health, "/metrics");
        assert!(compressed_logins(&page, "zlib") >= 4, "{page}");
        assert_eq!(compressed_logins(&page, "zstd"), 0, "MariaDB has no zstd");
        let down = compression_metric(&page, "database_to_client", "uncompressed");
        assert!(down > 4 * 4_194_304, "the four blobs went through: {down}");
        let (status, logs) = proxy.terminate();
        assert!(status.success(), "{status:?}\n{logs}");
        assert!(!logs.contains(&up.secret), "secret in logs");
        sim.shutdown().await;
    }

    /// `doctor` over SSM says what the database leg's login got: zlib from MariaDB by default,
    /// nothing with `--compression off`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn doctor_says_whether_the_database_leg_is_compressed() {
        let up = RdsLikeUpstream::start();
        let sim = simulator(&up).await;
        for (extra, expected) in [
            (&[][..], "✓ compression: on: zlib on the database leg"),
            (&["--compression", "off"][..], "✓ compression: off ("),
        ] {
            let mut cmd = bare(&up, &sim);
            cmd.args([
                "doctor",
                "--db-endpoint",
                &up.endpoint(),
                "--ssm-target",
                TARGET,
            ])
            .args(["--db-user", "iamuser"])
            .args(extra);
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let select = text.find("✓ SELECT 1: returned 1").expect(&text);
            let said = text
                .find(expected)
                .unwrap_or_else(|| panic!("{expected:?} in:\n{text}"));
            assert!(said > select, "after the query that used it:\n{text}");
        }
        sim.shutdown().await;
    }

    /// 64 MiB of ordinary rows read and checksummed against the server's own MD5, a 64 MiB
    /// statement uploaded and checksummed by the server, a multi-statement answer, COM_CHANGE_USER,
    /// and a LOAD DATA LOCAL of rows by the mariadb CLI; the metrics show both directions
    /// compressed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn big_reads_uploads_load_data_and_change_user_over_a_zlib_ssm_leg() {
        let up = RdsLikeUpstream::start();
        let sim = simulator(&up).await;
        let health = format!("127.0.0.1:{}", free_port());
        let proxy = proxy(&up, &sim, &health);
        let t = target(proxy.port, "iamuser");
        let mut conn = mysql_async::Conn::new(opts(&t)).await.unwrap();
        conn.query_drop("SET SESSION group_concat_max_len = 134217728")
            .await
            .unwrap();

        // The read: ~70 MiB of rows (16 KiB server frames cutting packets anywhere).
        let row = "seq, CONCAT('customer', seq % 9973, '@mail.example.com'), \
                   DATE_ADD('2024-01-01', INTERVAL seq % 365 DAY), \
                   ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'returned'), \
                   CAST(seq * 37 % 1000000 / 100 AS DECIMAL(10,2)), \
                   CONCAT('{\"sku\":\"A-', seq % 977, '\",\"qty\":', 1 + seq % 9, '}')";
        let rows = 800_000;
        let mut result = conn
            .query_iter(format!("SELECT {row} FROM seq_1_to_{rows} ORDER BY seq"))
            .await
            .unwrap();
        let mut md5 = Md5::new();
        let mut read = 0usize;
        let mut first = true;
        result
            .for_each(|r| {
                let r: mysql_async::Row = r;
                let fields: Vec<String> = (0..r.len())
                    .map(|i| r.get::<String, _>(i).unwrap())
                    .collect();
                let line = fields.join(",");
                if !first {
                    md5.update(b"\n");
                }
                first = false;
                md5.update(line.as_bytes());
                read += line.len() + 1;
            })
            .await
            .unwrap();
        drop(result);
        assert!(read > BIG, "read {read} bytes of rows");
        let server: String = conn
            .query_first(format!(
                "SELECT MD5(GROUP_CONCAT(CONCAT_WS(',', {row}) ORDER BY seq SEPARATOR '\\n')) \
                 FROM seq_1_to_{rows}"
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hex(md5.finalize()), server, "the rows read");

        // The upload: one 64 MiB statement of rows (four 16 MiB packets over many frames).
        let text = business_rows(BIG);
        let mut sql = b"SELECT LENGTH(x), MD5(x) FROM (SELECT '".to_vec();
        sql.extend_from_slice(&text);
        sql.extend_from_slice(b"' AS x) AS t");
        let (len, digest): (usize, String) = conn
            .query_first(String::from_utf8(sql).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((len, digest), (text.len(), hex(Md5::digest(&text))));

        // A multi-statement answer: the second result's ids go on from the first's.
        let mut both = conn.query_iter("SELECT 1; SELECT 'two'").await.unwrap();
        let one: Vec<u8> = both.collect().await.unwrap();
        let two: Vec<String> = both.collect().await.unwrap();
        drop(both);
        assert_eq!((one, two), (vec![1], vec!["two".to_owned()]));

        // COM_CHANGE_USER: a new IAM login on the same compressed leg.
        conn.change_user(mysql_async::ChangeUserOpts::default().with_user(Some("iamuser2".into())))
            .await
            .unwrap();
        let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap();
        assert_eq!(user.as_deref(), Some("iamuser2@%"));
        conn.disconnect().await.unwrap();

        // LOAD DATA LOCAL by the mariadb CLI: 16 MiB of rows, checksummed by the server.
        let dir = std::env::temp_dir().join(format!("rds-iam-proxy-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("orders.tsv");
        let data = business_rows(16 * 1024 * 1024);
        std::fs::write(&file, &data).unwrap();
        let lines = data.iter().filter(|&&b| b == b'\n').count();
        let script = format!(
            "SET SESSION group_concat_max_len = 134217728;\n\
             CREATE TABLE proxytest.orders (id INT PRIMARY KEY, d DATE, email VARCHAR(64), \
             status VARCHAR(16), amount DECIMAL(10,2), note VARCHAR(64), doc TEXT) ENGINE=MyISAM;\n\
             LOAD DATA LOCAL INFILE '{}' INTO TABLE proxytest.orders;\n\
             SELECT COUNT(*), MD5(GROUP_CONCAT(CONCAT_WS('\\t', id, d, email, status, amount, \
             note, doc) ORDER BY id SEPARATOR '\\n')) FROM proxytest.orders;\n\
             DROP TABLE proxytest.orders;\n",
            file.display()
        );
        let port = proxy.port;
        let out = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = mariadb(port, "iamuser")
                .arg("--local-infile=1")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = hex(Md5::digest(&data[..data.len() - 1]));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{lines}\t{expected}")
        );

        // Both directions crossed the tunnel compressed, several-fold for rows.
        let (_, page) = http_get(&health, "/metrics");
        let m = |d, f| compression_metric(&page, d, f);
        let (down, down_wire) = (
            m("database_to_client", "uncompressed"),
            m("database_to_client", "compressed"),
        );
        let (up_plain, up_wire) = (
            m("client_to_database", "uncompressed"),
            m("client_to_database", "compressed"),
        );
        assert!(
            down > BIG as u64 && down_wire * 2 < down,
            "down {down_wire} for {down}"
        );
        assert!(
            up_plain > (BIG + 16 * 1024 * 1024) as u64 && up_wire * 2 < up_plain,
            "up {up_wire} for {up_plain}"
        );
        let (status, logs) = proxy.terminate();
        assert!(status.success(), "{status:?}\n{logs}");
        sim.shutdown().await;
    }
}
