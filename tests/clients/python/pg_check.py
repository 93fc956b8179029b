#!/usr/bin/env python3
"""PostgreSQL client check for rds-iam-proxy tests, using psycopg 3.

Connects as --user with no password (sslmode=disable unless --sslmode is given), runs a fixed
set of checks and prints one JSON report on stdout (the fields of PgReport in
tests/common/postgres.rs). Exit status 0 means the report was printed; any failure prints a
message on stderr and exits non-zero.

--expect-error: the login is expected to fail; print {"sqlstate": "...", "message": "..."} and
exit 0. Exit 1 if the login succeeds.
"""

import argparse
import hashlib
import json
import sys
import threading
import time

import psycopg

# The same SQL as every PostgreSQL client check (tests/common/postgres.rs has the reference):
# a 4 MiB pseudo-random bytea built server-side, with the server's MD5 of it.
BLOB_SQL = (
    "SELECT b, md5(b) FROM (SELECT decode(string_agg(md5('rds-iam-proxy:' || i), '' ORDER BY i),"
    " 'hex') AS b FROM generate_series(1, 262144) i) s"
)
POLL_LIMIT_SECONDS = 20


def copy_out_sql(rows):
    return f"COPY (SELECT i, md5(i::text) FROM generate_series(1, {rows}) i) TO STDOUT"


def copy_out_md5_sql(rows):
    return (
        "SELECT md5(string_agg(i || E'\\t' || md5(i::text) || E'\\n', '' ORDER BY i)) "
        f"FROM generate_series(1, {rows}) i"
    )


def rows_text(rows, chunk=10000):
    """The COPY text of rows (i, md5(i)), in chunks."""
    for start in range(1, rows + 1, chunk):
        end = min(rows, start + chunk - 1)
        yield "".join(
            f"{i}\t{hashlib.md5(str(i).encode()).hexdigest()}\n" for i in range(start, end + 1)
        ).encode()


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", required=True)
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--user", required=True)
    p.add_argument("--dbname", required=True)
    p.add_argument("--sslmode", default="disable")
    p.add_argument("--sslnegotiation", default=None, help="libpq 17+: postgres or direct")
    p.add_argument("--copy-rows", type=int, default=100000)
    p.add_argument("--expect-error", action="store_true")
    return p.parse_args(argv)


def connect(args):
    extra = {}
    if args.sslnegotiation:
        extra["sslnegotiation"] = args.sslnegotiation
    return psycopg.connect(
        host=args.host,
        port=args.port,
        user=args.user,
        dbname=args.dbname,
        sslmode=args.sslmode,
        gssencmode="disable",
        connect_timeout=30,
        application_name="pg_check.py",
        **extra,
    )


def one(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()


def cancel_check(args, conn):
    """Runs pg_sleep(30) and cancels it with psycopg's cancel API once the server shows it
    running; returns the SQLSTATE the query ended with."""
    pid = conn.info.backend_pid
    outcome = {}

    def sleeper():
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_sleep(30)")
            outcome["sqlstate"] = "completed"
        except psycopg.Error as e:
            outcome["sqlstate"] = e.sqlstate or type(e).__name__

    t = threading.Thread(target=sleeper)
    t.start()
    with connect(args) as watcher:
        watcher.autocommit = True
        deadline = time.monotonic() + POLL_LIMIT_SECONDS
        while time.monotonic() < deadline:
            row = one(
                watcher,
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND state = 'active' "
                "AND query LIKE 'SELECT pg_sleep%%'",
                (pid,),
            )
            if row[0] == 1:
                break
            time.sleep(0.05)
    conn.cancel_safe()
    t.join(60)
    return outcome.get("sqlstate", "still running")


def main(argv):
    args = parse_args(argv)
    if args.expect_error:
        try:
            conn = connect(args)
        except psycopg.Error as e:
            diag = getattr(e, "diag", None)
            state = (diag.sqlstate if diag else None) or ""
            print(json.dumps({"sqlstate": state, "message": str(e)}))
            return 0
        conn.close()
        print("the login succeeded although it should have failed", file=sys.stderr)
        return 1

    with connect(args) as conn:
        conn.autocommit = True
        r = {"client": "psycopg"}
        r["local_tls"] = conn.pgconn.ssl_in_use
        user, ssl, server_pid = one(
            conn,
            "SELECT current_user::text, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()),"
            " pg_backend_pid()",
        )
        r["user"] = user
        r["ssl"] = bool(ssl)
        r["backend_pid_match"] = conn.info.backend_pid == server_pid
        # Extended protocol with parameters (psycopg 3 binds server-side).
        row = one(conn, "SELECT %s::int + %s::int, %s::text", (40, 2, "hello"))
        r["param"] = f"{row[0]}|{row[1]}"
        blob, server_md5 = one(conn, BLOB_SQL)
        blob = bytes(blob)
        r["blob_len"] = len(blob)
        r["blob_md5_client"] = hashlib.md5(blob).hexdigest()
        r["blob_md5_server"] = server_md5
        # COPY out.
        h = hashlib.md5()
        n = 0
        with conn.cursor() as cur:
            with cur.copy(copy_out_sql(args.copy_rows)) as copy:
                for data in copy:
                    h.update(data)
                    n += len(data)
        r["copy_out_bytes"] = n
        r["copy_out_md5_client"] = h.hexdigest()
        r["copy_out_md5_server"] = one(conn, copy_out_md5_sql(args.copy_rows))[0]
        # COPY in.
        h = hashlib.md5()
        with conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE copy_in (i int, s text)")
            with cur.copy("COPY copy_in FROM STDIN") as copy:
                for data in rows_text(args.copy_rows):
                    h.update(data)
                    copy.write(data)
        r["copy_in_md5_client"] = h.hexdigest()
        count, md5 = one(
            conn,
            "SELECT count(*), md5(string_agg(i || E'\\t' || s || E'\\n', '' ORDER BY i)) FROM copy_in",
        )
        r["copy_in_rows"] = count
        r["copy_in_md5_server"] = md5
        r["cancel_sqlstate"] = cancel_check(args, conn)
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as e:  # noqa: BLE001 - report anything on stderr
        print(f"pg_check.py: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(2)
