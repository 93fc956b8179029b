// PostgreSQL client check for rds-iam-proxy tests, using pgJDBC (Debian's libpostgresql-jdbc-java).
//
// Run as a single source file: java -cp /usr/share/java/postgresql.jar PgCheck.java --host H
// --port P --user U --dbname D [--copy-rows N]. Connects with no password (sslmode=disable), runs
// a fixed set of checks and prints one JSON report on stdout (the fields of PgReport in
// tests/common/postgres.rs). Any failure prints a message on stderr and exits non-zero.

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicReference;
import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

public class PgCheck {
    // The same SQL as every PostgreSQL client check (tests/common/postgres.rs has the reference).
    static final String BLOB_SQL =
        "SELECT b, md5(b) FROM (SELECT decode(string_agg(md5('rds-iam-proxy:' || i), '' ORDER BY i),"
            + " 'hex') AS b FROM generate_series(1, 262144) i) s";

    static String hex(byte[] d) {
        StringBuilder sb = new StringBuilder();
        for (byte b : d) sb.append(String.format("%02x", b));
        return sb.toString();
    }

    static String md5(byte[] data) throws Exception {
        return hex(MessageDigest.getInstance("MD5").digest(data));
    }

    static String json(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    public static void main(String[] argv) {
        try {
            System.out.println(run(argv));
        } catch (Throwable e) {
            System.err.println("PgCheck: " + e);
            System.exit(2);
        }
    }

    static String run(String[] argv) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (int i = 0; i + 1 < argv.length; i += 2) a.put(argv[i].substring(2), argv[i + 1]);
        int rows = Integer.parseInt(a.getOrDefault("copy-rows", "100000"));
        String url = "jdbc:postgresql://" + a.get("host") + ":" + a.get("port") + "/" + a.get("dbname");
        Properties p = new Properties();
        p.setProperty("user", a.get("user"));
        p.setProperty("sslmode", "disable");
        p.setProperty("ApplicationName", "PgCheck.java");
        // Server-side prepared statements from the first use (extended protocol, named).
        p.setProperty("prepareThreshold", "1");
        StringBuilder r = new StringBuilder("{\"client\":\"pgjdbc\"");
        try (Connection c = DriverManager.getConnection(url, p)) {
            int pid;
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT current_user::text,"
                     + " (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), pg_backend_pid()")) {
                rs.next();
                pid = rs.getInt(3);
                r.append(",\"user\":").append(json(rs.getString(1)));
                r.append(",\"ssl\":").append(rs.getBoolean(2));
                r.append(",\"backend_pid_match\":").append(((PGConnection) c).getBackendPID() == pid);
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT ?::int + ?::int, ?::text")) {
                ps.setInt(1, 40);
                ps.setInt(2, 2);
                ps.setString(3, "hello");
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    r.append(",\"param\":").append(json(rs.getInt(1) + "|" + rs.getString(2)));
                }
            }
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(BLOB_SQL)) {
                rs.next();
                byte[] blob = rs.getBytes(1);
                r.append(",\"blob_len\":").append(blob.length);
                r.append(",\"blob_md5_client\":").append(json(md5(blob)));
                r.append(",\"blob_md5_server\":").append(json(rs.getString(2)));
            }
            CopyManager copy = ((PGConnection) c).getCopyAPI();
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            copy.copyOut("COPY (SELECT i, md5(i::text) FROM generate_series(1, " + rows + ") i) TO STDOUT", out);
            byte[] copied = out.toByteArray();
            r.append(",\"copy_out_bytes\":").append(copied.length);
            r.append(",\"copy_out_md5_client\":").append(json(md5(copied)));
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT md5(string_agg(i || E'\\t' || md5(i::text) || E'\\n', ''"
                     + " ORDER BY i)) FROM generate_series(1, " + rows + ") i")) {
                rs.next();
                r.append(",\"copy_out_md5_server\":").append(json(rs.getString(1)));
            }
            StringBuilder text = new StringBuilder();
            for (int i = 1; i <= rows; i++) {
                text.append(i).append('\t')
                    .append(md5(Integer.toString(i).getBytes(StandardCharsets.US_ASCII))).append('\n');
            }
            byte[] data = text.toString().getBytes(StandardCharsets.US_ASCII);
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TEMP TABLE copy_in (i int, s text)");
            }
            copy.copyIn("COPY copy_in FROM STDIN", new ByteArrayInputStream(data));
            r.append(",\"copy_in_md5_client\":").append(json(md5(data)));
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT count(*), md5(string_agg(i || E'\\t' || s || E'\\n',"
                     + " '' ORDER BY i)) FROM copy_in")) {
                rs.next();
                r.append(",\"copy_in_rows\":").append(rs.getLong(1));
                r.append(",\"copy_in_md5_server\":").append(json(rs.getString(2)));
            }
            r.append(",\"cancel_sqlstate\":").append(json(cancel(c, pid, url, p)));
        }
        return r.append("}").toString();
    }

    // pg_sleep(30) on a thread; Statement.cancel() (a CancelRequest with the connection's key)
    // once the server shows it running. Returns the SQLSTATE the query ended with.
    static String cancel(Connection c, int pid, String url, Properties p) throws Exception {
        Statement sleeper = c.createStatement();
        AtomicReference<String> outcome = new AtomicReference<>("still running");
        Thread t = new Thread(() -> {
            try {
                sleeper.execute("SELECT pg_sleep(30)");
                outcome.set("completed");
            } catch (SQLException e) {
                outcome.set(e.getSQLState());
            }
        });
        t.start();
        try (Connection w = DriverManager.getConnection(url, p);
             PreparedStatement q = w.prepareStatement("SELECT count(*) FROM pg_stat_activity WHERE pid = ?"
                 + " AND state = 'active' AND query LIKE 'SELECT pg_sleep%'")) {
            q.setInt(1, pid);
            for (int i = 0; i < 400; i++) {
                try (ResultSet rs = q.executeQuery()) {
                    rs.next();
                    if (rs.getInt(1) == 1) break;
                }
                Thread.sleep(50);
            }
        }
        sleeper.cancel();
        t.join(60000);
        return outcome.get();
    }
}
