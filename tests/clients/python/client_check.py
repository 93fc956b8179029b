#!/usr/bin/env python3
"""Client check for rds-iam-proxy tests, using PyMySQL.

Connects as --user (no password unless --password is given), runs a fixed set of
checks and prints one JSON report on stdout.  Exit status 0 means the report was
printed; any failure prints a message on stderr and exits non-zero.

TLS to the endpoint under test:
  (default)      plain TCP.  PyMySQL >= 1.2 would otherwise try TLS ("PREFERRED")
                 whenever the server offers it, so we pass ssl_disabled=True.
  --ssl          TLS without certificate verification.
  --ssl-ca PATH  TLS, chain verified against PATH and the host name/IP checked.

--expect-error: the login is expected to fail; print
  {"error_code": N, "error_message": "..."} and exit 0.  Exit 1 if the login
  succeeds.
"""

import argparse
import hashlib
import json
import sys
import threading
import time

import pymysql

# A 4 MiB (4194304-byte) pseudo-random blob built server-side: the 32-byte SHA-256
# digests of 512 x 256 distinct strings, concatenated in a fixed order.  The same
# SQL is used by every client check (tests/common/clients.rs has a copy).
BLOB_LEN = 4194304
BLOB_SETUP = [
    "SET SESSION group_concat_max_len = 16777216",
    "SET @blob = (WITH RECURSIVE a(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM a WHERE i < 511), "
    "b(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM b WHERE j < 255) "
    "SELECT GROUP_CONCAT(UNHEX(SHA2(CONCAT('rds-iam-proxy:', a.i, ':', b.j), 256)) "
    "ORDER BY a.i, b.j SEPARATOR '') FROM a CROSS JOIN b)",
]

SLEEP_SECONDS = 30
POLL_LIMIT_SECONDS = 10


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", required=True)
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--user", required=True)
    p.add_argument("--password", default=None)
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--ssl-ca", default=None, metavar="PATH")
    tls.add_argument("--ssl", action="store_true")
    p.add_argument("--checks", choices=["all", "login"], default="all")
    p.add_argument("--expect-error", action="store_true")
    return p.parse_args(argv)


def connect(args):
    kw = dict(
        host=args.host,
        port=args.port,
        user=args.user,
        password=args.password or "",
        connect_timeout=10,
        read_timeout=120,
        write_timeout=120,
        autocommit=True,
        # The client-side cap on packets; 64 MiB leaves room for the 4 MiB blob row.
        max_allowed_packet=64 * 1024 * 1024,
    )
    if args.ssl_ca:
        kw["ssl"] = {"ca": args.ssl_ca}  # verify chain and host name
    elif args.ssl:
        kw["ssl"] = {"verify_mode": False}  # encrypt, no verification
    else:
        kw["ssl_disabled"] = True
    return pymysql.connect(**kw)


def scalar(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
    if row is None:
        raise RuntimeError(f"no row from {sql!r}")
    return row[0]


def as_text(v):
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "replace")
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if hasattr(v, "is_integer") and hasattr(v, "to_integral_value"):  # Decimal
        if v == v.to_integral_value():
            return str(int(v))
    return str(v)


def login_checks(conn, report):
    report["current_user"] = as_text(scalar(conn, "SELECT CURRENT_USER()"))
    with conn.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        row = cur.fetchone()
    report["ssl_cipher"] = as_text(row[1]) if row else ""
    report["greeting_conn_id"] = int(conn.server_thread_id[0])
    report["query_conn_id"] = int(scalar(conn, "SELECT CONNECTION_ID()"))


def prepared_check(conn):
    # PyMySQL has no binary-protocol prepare; use SQL-level PREPARE/EXECUTE, which
    # still makes the server prepare the statement and bind parameters.
    with conn.cursor() as cur:
        cur.execute("PREPARE s FROM 'SELECT ? + 1, ?'")
        cur.execute("SET @a = 41, @b = 'hello'")
        cur.execute("EXECUTE s USING @a, @b")
        row = cur.fetchone()
        cur.execute("DEALLOCATE PREPARE s")
    return "|".join(as_text(v) for v in row)


def blob_check(conn, report):
    with conn.cursor() as cur:
        for sql in BLOB_SETUP:
            cur.execute(sql)
        cur.execute("SELECT @blob")
        blob = cur.fetchone()[0]
        cur.execute("SELECT MD5(@blob)")
        server_md5 = as_text(cur.fetchone()[0])
        cur.execute("SET @blob = NULL")
    if blob is None:
        raise RuntimeError("server returned NULL for the blob (max_allowed_packet too small?)")
    if isinstance(blob, str):
        blob = blob.encode("latin1")
    report["blob_len"] = len(blob)
    report["blob_md5_client"] = hashlib.md5(blob).hexdigest()
    report["blob_md5_server"] = server_md5.lower()


def kill_query_check(args, conn_a):
    victim = int(scalar(conn_a, "SELECT CONNECTION_ID()"))
    outcome = {}

    def run_sleep():
        try:
            with conn_a.cursor() as cur:
                cur.execute(f"SELECT SLEEP({SLEEP_SECONDS})")
                outcome["value"] = cur.fetchone()[0]
        except pymysql.err.MySQLError as e:
            outcome["error"] = e
        except Exception as e:  # noqa: BLE001 - report whatever happened
            outcome["error"] = e

    conn_b = connect(args)
    try:
        t = threading.Thread(target=run_sleep, daemon=True)
        t.start()
        seen = False
        deadline = time.monotonic() + POLL_LIMIT_SECONDS
        while time.monotonic() < deadline and t.is_alive():
            with conn_b.cursor() as cur:
                cur.execute(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                    "WHERE ID = %s AND INFO LIKE 'SELECT SLEEP(%%'",
                    (victim,),
                )
                if int(cur.fetchone()[0]) > 0:
                    seen = True
                    break
            time.sleep(0.05)
        if not seen:
            t.join(timeout=SLEEP_SECONDS + 30)
            return {"victim_conn_id": victim, "result": f"sleep never seen in processlist; outcome {describe(outcome)}"}
        with conn_b.cursor() as cur:
            cur.execute(f"KILL QUERY {victim}")
        t.join(timeout=SLEEP_SECONDS + 30)
        if t.is_alive():
            return {"victim_conn_id": victim, "result": "sleep still running after KILL QUERY"}
    finally:
        conn_b.close()

    interrupted = ("value" in outcome and as_text(outcome["value"]) == "1") or (
        "error" in outcome
        and isinstance(outcome["error"], pymysql.err.MySQLError)
        and outcome["error"].args
        and outcome["error"].args[0] == 1317
    )
    if not interrupted:
        return {"victim_conn_id": victim, "result": describe(outcome)}
    # KILL QUERY must leave the victim's connection usable.
    try:
        after = int(scalar(conn_a, "SELECT CONNECTION_ID()"))
    except Exception as e:  # noqa: BLE001
        return {"victim_conn_id": victim, "result": f"interrupted, but the connection then failed: {e!r}"}
    if after != victim:
        return {"victim_conn_id": victim, "result": f"interrupted, but the connection id changed to {after}"}
    return {"victim_conn_id": victim, "result": "interrupted"}


def describe(outcome):
    if "value" in outcome:
        return f"SLEEP returned {as_text(outcome['value'])}"
    if "error" in outcome:
        return f"error {outcome['error']!r}"
    return "no outcome"


def main(argv):
    args = parse_args(argv)
    if args.expect_error:
        try:
            conn = connect(args)
        except pymysql.err.MySQLError as e:
            code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
            msg = e.args[1] if len(e.args) > 1 else str(e)
            print(json.dumps({"error_code": code, "error_message": str(msg)}))
            return 0
        conn.close()
        print("login unexpectedly succeeded", file=sys.stderr)
        return 1

    conn = connect(args)
    try:
        report = {"client": "pymysql"}
        login_checks(conn, report)
        if args.checks == "all":
            report["prepared"] = prepared_check(conn)
            blob_check(conn, report)
            report["kill_query"] = kill_query_check(args, conn)
    finally:
        conn.close()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as e:  # noqa: BLE001
        print(f"client_check.py (pymysql) failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
