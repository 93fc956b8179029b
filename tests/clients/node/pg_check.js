#!/usr/bin/env node
// PostgreSQL client check for rds-iam-proxy tests, using node-postgres (pg).
//
// Connects as --user with no password and no TLS, runs a fixed set of checks and prints one JSON
// report on stdout (the fields of PgReport in tests/common/postgres.rs). Exit status 0 means the
// report was printed; any failure prints a message on stderr and exits non-zero.
//
// --expect-error: the login is expected to fail; print {"sqlstate": "...", "message": "..."} and
// exit 0. Exit 1 if the login succeeds.
//
// node-postgres has no COPY of its own (that is the pg-copy-streams package), so COPY is checked
// by the other clients and reported empty here. Its cancel API is `new Client(config).cancel(
// client, query)`, which sends a CancelRequest with the key the client was given.

'use strict';

const crypto = require('crypto');
const { Client, Query } = require('pg');

const BLOB_SQL =
  "SELECT b, md5(b) FROM (SELECT decode(string_agg(md5('rds-iam-proxy:' || i), '' ORDER BY i)," +
  " 'hex') AS b FROM generate_series(1, 262144) i) s";

function parseArgs(argv) {
  const a = { expectError: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--expect-error') a.expectError = true;
    else if (k.startsWith('--')) a[k.slice(2)] = argv[++i];
  }
  for (const k of ['host', 'port', 'user', 'dbname']) {
    if (!a[k]) throw new Error(`--${k} is required`);
  }
  return a;
}

function client(a) {
  return new Client({
    host: a.host,
    port: Number(a.port),
    user: a.user,
    database: a.dbname,
    ssl: false,
    connectionTimeoutMillis: 30000,
    application_name: 'pg_check.js',
  });
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  if (a.expectError) {
    const c = client(a);
    try {
      await c.connect();
    } catch (e) {
      process.stdout.write(JSON.stringify({ sqlstate: e.code || '', message: e.message }) + '\n');
      return 0;
    }
    await c.end();
    process.stderr.write('the login succeeded although it should have failed\n');
    return 1;
  }
  const c = client(a);
  await c.connect();
  const r = { client: 'node-postgres' };
  let q = await c.query(
    'SELECT current_user::text AS u, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS ssl, pg_backend_pid() AS pid',
  );
  r.user = q.rows[0].u;
  r.ssl = q.rows[0].ssl === true;
  r.backend_pid_match = c.processID === q.rows[0].pid;
  // Extended protocol with parameters (Parse/Bind/Execute).
  q = await c.query({ text: 'SELECT $1::int + $2::int AS s, $3::text AS t', values: [40, 2, 'hello'] });
  r.param = `${q.rows[0].s}|${q.rows[0].t}`;
  q = await c.query(BLOB_SQL);
  const blob = q.rows[0].b;
  r.blob_len = blob.length;
  r.blob_md5_client = crypto.createHash('md5').update(blob).digest('hex');
  r.blob_md5_server = q.rows[0].md5;
  // No COPY in node-postgres itself (see above).
  r.copy_out_bytes = 0;
  r.copy_out_md5_client = '';
  r.copy_out_md5_server = '';
  r.copy_in_rows = 0;
  r.copy_in_md5_client = '';
  r.copy_in_md5_server = '';
  // Cancel: pg_sleep(30) on this connection, CancelRequest with the key this client was given
  // once the server shows the query running.
  const query = new Query('SELECT pg_sleep(30)');
  const sleeping = new Promise((resolve) => {
    query.on('error', (e) => resolve(e.code || e.message));
    query.on('end', () => resolve('completed'));
  });
  c.query(query);
  const watcher = client(a);
  await watcher.connect();
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    const w = await watcher.query(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE 'SELECT pg_sleep%'",
      [c.processID],
    );
    if (w.rows[0].n === 1) break;
    await new Promise((res) => setTimeout(res, 50));
  }
  await watcher.end();
  client(a).cancel(c, query);
  r.cancel_sqlstate = await sleeping;
  await c.end();
  process.stdout.write(JSON.stringify(r) + '\n');
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`pg_check.js: ${e.stack || e}\n`);
    process.exit(2);
  },
);
