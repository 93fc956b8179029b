// PostgreSQL client check for rds-iam-proxy tests, using pgx v4 (Debian's
// golang-github-jackc-pgx-v4-dev, built in GOPATH mode against /usr/share/gocode).
//
// pg_check --host H --port P --user U --dbname D [--copy-rows N]: connects with no password
// (sslmode=disable), runs a fixed set of checks and prints one JSON report on stdout (the fields
// of PgReport in tests/common/postgres.rs). Any failure prints a message on stderr and exits 2.
package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
)

// The same SQL as every PostgreSQL client check (tests/common/postgres.rs has the reference).
const blobSQL = "SELECT b, md5(b) FROM (SELECT decode(string_agg(md5('rds-iam-proxy:' || i), '' ORDER BY i)," +
	" 'hex') AS b FROM generate_series(1, 262144) i) s"

type report struct {
	Client           string `json:"client"`
	User             string `json:"user"`
	SSL              bool   `json:"ssl"`
	BackendPIDMatch  bool   `json:"backend_pid_match"`
	Param            string `json:"param"`
	BlobLen          int    `json:"blob_len"`
	BlobMD5Client    string `json:"blob_md5_client"`
	BlobMD5Server    string `json:"blob_md5_server"`
	CopyOutBytes     int    `json:"copy_out_bytes"`
	CopyOutMD5Client string `json:"copy_out_md5_client"`
	CopyOutMD5Server string `json:"copy_out_md5_server"`
	CopyInRows       int64  `json:"copy_in_rows"`
	CopyInMD5Client  string `json:"copy_in_md5_client"`
	CopyInMD5Server  string `json:"copy_in_md5_server"`
	CancelSQLState   string `json:"cancel_sqlstate"`
}

func sum(b []byte) string {
	d := md5.Sum(b)
	return hex.EncodeToString(d[:])
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "pg_check.go: %v\n", err)
		os.Exit(2)
	}
}

func run() error {
	host := flag.String("host", "", "")
	port := flag.Int("port", 0, "")
	user := flag.String("user", "", "")
	dbname := flag.String("dbname", "", "")
	rows := flag.Int("copy-rows", 100000, "")
	flag.Parse()
	ctx := context.Background()
	dsn := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable connect_timeout=30",
		*host, *port, *user, *dbname)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	r := report{Client: "pgx"}
	var pid uint32
	var ssl *bool
	if err := conn.QueryRow(ctx, "SELECT current_user::text, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), pg_backend_pid()::int8").
		Scan(&r.User, &ssl, &pid); err != nil {
		return err
	}
	r.SSL = ssl != nil && *ssl
	r.BackendPIDMatch = conn.PgConn().PID() == pid
	var s int32
	var t string
	if err := conn.QueryRow(ctx, "SELECT $1::int + $2::int, $3::text", 40, 2, "hello").Scan(&s, &t); err != nil {
		return err
	}
	r.Param = fmt.Sprintf("%d|%s", s, t)
	var blob []byte
	if err := conn.QueryRow(ctx, blobSQL).Scan(&blob, &r.BlobMD5Server); err != nil {
		return err
	}
	r.BlobLen = len(blob)
	r.BlobMD5Client = sum(blob)
	var out bytes.Buffer
	if _, err := conn.PgConn().CopyTo(ctx, &out, fmt.Sprintf("COPY (SELECT i, md5(i::text) FROM generate_series(1, %d) i) TO STDOUT", *rows)); err != nil {
		return err
	}
	r.CopyOutBytes = out.Len()
	r.CopyOutMD5Client = sum(out.Bytes())
	if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT md5(string_agg(i || E'\\t' || md5(i::text) || E'\\n', '' ORDER BY i)) FROM generate_series(1, %d) i", *rows)).
		Scan(&r.CopyOutMD5Server); err != nil {
		return err
	}
	var in bytes.Buffer
	for i := 1; i <= *rows; i++ {
		n := strconv.Itoa(i)
		in.WriteString(n + "\t" + sum([]byte(n)) + "\n")
	}
	r.CopyInMD5Client = sum(in.Bytes())
	if _, err := conn.Exec(ctx, "CREATE TEMP TABLE copy_in (i int, s text)"); err != nil {
		return err
	}
	if _, err := conn.PgConn().CopyFrom(ctx, bytes.NewReader(in.Bytes()), "COPY copy_in FROM STDIN"); err != nil {
		return err
	}
	if err := conn.QueryRow(ctx, "SELECT count(*), md5(string_agg(i || E'\\t' || s || E'\\n', '' ORDER BY i)) FROM copy_in").
		Scan(&r.CopyInRows, &r.CopyInMD5Server); err != nil {
		return err
	}
	r.CancelSQLState, err = cancel(ctx, conn, dsn, pid)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// pg_sleep(30) in a goroutine, then pgconn's CancelRequest (a CancelRequest with the key the
// connection was given) once the server shows it running; the SQLSTATE the query ended with.
func cancel(ctx context.Context, conn *pgx.Conn, dsn string, pid uint32) (string, error) {
	done := make(chan string, 1)
	go func() {
		_, err := conn.Exec(ctx, "SELECT pg_sleep(30)")
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			done <- "completed"
		case errors.As(err, &pgErr):
			done <- pgErr.Code
		default:
			done <- err.Error()
		}
	}()
	watcher, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	for i := 0; i < 400; i++ {
		var n int
		err := watcher.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE 'SELECT pg_sleep%'", int64(pid)).Scan(&n)
		if err != nil {
			return "", err
		}
		if n == 1 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	watcher.Close(ctx)
	if err := conn.PgConn().CancelRequest(ctx); err != nil {
		return "", err
	}
	select {
	case s := <-done:
		return s, nil
	case <-time.After(60 * time.Second):
		return "still running", nil
	}
}
