#!/usr/bin/env node
// Client check for rds-iam-proxy tests, using the mysql2 driver.
//
// Usage: node client_check.js --host H --port P --user U [--password PW]
//                             [--ssl-ca PATH | --ssl] [--checks all|login] [--expect-error]
//
// Prints one JSON report on stdout and exits 0; on failure prints a message on
// stderr and exits non-zero.  TLS to the endpoint under test:
//   (default)      plain TCP (mysql2 never starts TLS unless `ssl` is set).
//   --ssl          TLS without certificate verification.
//   --ssl-ca PATH  TLS, chain verified against PATH (mysql2 skips the host name
//                  check when the host is an IP address).
// --expect-error: the login must fail; prints {"error_code":N,"error_message":"..."}
// (error_code is 0 when the failure was not a MySQL error, e.g. a reset socket).
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const mysql = require('mysql2/promise');

// Same blob as the other client checks (tests/common/clients.rs has a copy): the
// 32-byte SHA-256 digests of 512 x 256 distinct strings, 4194304 bytes in all.
const BLOB_SETUP = [
  'SET SESSION group_concat_max_len = 16777216',
  'SET @blob = (WITH RECURSIVE a(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM a WHERE i < 511), ' +
    'b(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM b WHERE j < 255) ' +
    "SELECT GROUP_CONCAT(UNHEX(SHA2(CONCAT('rds-iam-proxy:', a.i, ':', b.j), 256)) " +
    "ORDER BY a.i, b.j SEPARATOR '') FROM a CROSS JOIN b)",
];
const SLEEP_SECONDS = 30;
const POLL_LIMIT_MS = 10000;

function usage(msg) {
  process.stderr.write(`client_check.js: ${msg}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = { checks: 'all', ssl: false, expectError: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--host': args.host = val(); break;
      case '--port': args.port = Number(val()); break;
      case '--user': args.user = val(); break;
      case '--password': args.password = val(); break;
      case '--ssl-ca': args.sslCa = val(); break;
      case '--ssl': args.ssl = true; break;
      case '--checks': args.checks = val(); break;
      case '--expect-error': args.expectError = true; break;
      default: usage(`unknown argument ${a}`);
    }
  }
  if (!args.host || !args.port || !args.user) usage('--host, --port and --user are required');
  if (!Number.isInteger(args.port) || args.port <= 0 || args.port > 65535) usage('bad --port');
  if (args.sslCa && args.ssl) usage('--ssl and --ssl-ca are exclusive');
  if (args.checks !== 'all' && args.checks !== 'login') usage('--checks is all or login');
  return args;
}

function connect(args) {
  const cfg = {
    host: args.host,
    port: args.port,
    user: args.user,
    connectTimeout: 10000,
    // Keep the raw bytes of BLOB/TEXT columns and big numbers as strings.
    supportBigNumbers: true,
    bigNumberStrings: true,
  };
  if (args.password !== undefined) cfg.password = args.password;
  if (args.sslCa) {
    cfg.ssl = { ca: fs.readFileSync(args.sslCa), rejectUnauthorized: true };
  } else if (args.ssl) {
    cfg.ssl = { rejectUnauthorized: false };
  }
  return mysql.createConnection(cfg);
}

function asText(v) {
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  if (typeof v === 'number' && Number.isInteger(v)) return String(v);
  if (typeof v === 'string' && /^-?\d+\.0*$/.test(v)) return v.replace(/\.0*$/, '');
  return String(v);
}

async function scalar(conn, sql, params) {
  const [rows] = await conn.query({ sql, rowsAsArray: true }, params);
  if (!rows.length) throw new Error(`no row from ${sql}`);
  return rows[0][0];
}

async function loginChecks(conn, report) {
  report.current_user = asText(await scalar(conn, 'SELECT CURRENT_USER()'));
  const [rows] = await conn.query({ sql: "SHOW SESSION STATUS LIKE 'Ssl_cipher'", rowsAsArray: true });
  report.ssl_cipher = rows.length ? asText(rows[0][1]) : '';
  // The id from the server greeting (Initial Handshake), kept by mysql2.
  report.greeting_conn_id = Number(conn.threadId);
  report.query_conn_id = Number(await scalar(conn, 'SELECT CONNECTION_ID()'));
}

async function preparedCheck(conn) {
  // execute() = COM_STMT_PREPARE + COM_STMT_EXECUTE (binary protocol).
  const [rows] = await conn.execute({ sql: 'SELECT ? + 1, ?', rowsAsArray: true }, [41, 'hello']);
  await conn.unprepare('SELECT ? + 1, ?');
  return rows[0].map(asText).join('|');
}

async function blobCheck(conn, report) {
  for (const sql of BLOB_SETUP) await conn.query(sql);
  const blob = await scalar(conn, 'SELECT @blob');
  const serverMd5 = asText(await scalar(conn, 'SELECT MD5(@blob)'));
  await conn.query('SET @blob = NULL');
  if (blob === null) throw new Error('server returned NULL for the blob (max_allowed_packet too small?)');
  const buf = Buffer.isBuffer(blob) ? blob : Buffer.from(String(blob), 'latin1');
  report.blob_len = buf.length;
  report.blob_md5_client = crypto.createHash('md5').update(buf).digest('hex');
  report.blob_md5_server = serverMd5.toLowerCase();
}

function describe(outcome) {
  if ('value' in outcome) return `SLEEP returned ${asText(outcome.value)}`;
  if ('error' in outcome) {
    const e = outcome.error;
    return `error ${e.errno ?? ''} ${e.code ?? ''}: ${e.message}`;
  }
  return 'no outcome';
}

async function killQueryCheck(args, connA) {
  const victim = Number(await scalar(connA, 'SELECT CONNECTION_ID()'));
  const outcome = {};
  let settled = false;
  const sleeping = connA
    .query({ sql: `SELECT SLEEP(${SLEEP_SECONDS})`, rowsAsArray: true })
    .then(([rows]) => { outcome.value = rows[0][0]; })
    .catch((e) => { outcome.error = e; })
    .finally(() => { settled = true; });

  const connB = await connect(args);
  try {
    let seen = false;
    const deadline = Date.now() + POLL_LIMIT_MS;
    while (Date.now() < deadline && !settled) {
      const n = Number(await scalar(
        connB,
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ? AND INFO LIKE 'SELECT SLEEP(%'",
        [victim],
      ));
      if (n > 0) { seen = true; break; }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!seen) {
      await sleeping;
      return { victim_conn_id: victim, result: `sleep never seen in processlist; outcome ${describe(outcome)}` };
    }
    await connB.query(`KILL QUERY ${victim}`);
    await sleeping;
  } finally {
    await connB.end().catch(() => {});
  }

  const interrupted =
    ('value' in outcome && asText(outcome.value) === '1') ||
    ('error' in outcome && outcome.error.errno === 1317);
  if (!interrupted) return { victim_conn_id: victim, result: describe(outcome) };
  // KILL QUERY must leave the victim's connection usable.
  try {
    const after = Number(await scalar(connA, 'SELECT CONNECTION_ID()'));
    if (after !== victim) {
      return { victim_conn_id: victim, result: `interrupted, but the connection id changed to ${after}` };
    }
  } catch (e) {
    return { victim_conn_id: victim, result: `interrupted, but the connection then failed: ${e.message}` };
  }
  return { victim_conn_id: victim, result: 'interrupted' };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.expectError) {
    let conn;
    try {
      conn = await connect(args);
    } catch (e) {
      const isServerError = typeof e.errno === 'number' && e.errno > 0 && e.sqlMessage !== undefined;
      const out = {
        error_code: isServerError ? e.errno : 0,
        error_message: isServerError ? e.sqlMessage : `${e.code ?? ''}: ${e.message}`,
      };
      process.stdout.write(`${JSON.stringify(out)}\n`);
      return 0;
    }
    await conn.end().catch(() => {});
    process.stderr.write('login unexpectedly succeeded\n');
    return 1;
  }

  const conn = await connect(args);
  try {
    const report = { client: 'mysql2' };
    await loginChecks(conn, report);
    if (args.checks === 'all') {
      report.prepared = await preparedCheck(conn);
      await blobCheck(conn, report);
      report.kill_query = await killQueryCheck(args, conn);
    }
    process.stdout.write(`${JSON.stringify(report)}\n`);
  } finally {
    await conn.end().catch(() => {});
  }
  return 0;
}

main().then(
  (code) => { process.exitCode = code; },
  (e) => {
    process.stderr.write(`client_check.js (mysql2) failed: ${e && e.stack ? e.stack : e}\n`);
    process.exitCode = 1;
  },
);
