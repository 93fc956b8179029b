//! The SQL that `admin` runs: a file split into statements the way the mysql client splits it
//! (`;` ends a statement, except inside `'…'`, `"…"`, `` `…` `` and comments: `-- `, `#`,
//! `/* … */`), and the IAM user name put in safely.
//!
//! **The user name.** A SQL file names the IAM database user as the string literal `'iam_user'`
//! (deploy/bootstrap-iam-user.sql does, so it also runs as is for the stack's default user). Each
//! such literal, and only a whole literal, is replaced with the real name, which must pass
//! [`check_user_name`] and is then written as a quoted string literal ([`quote_string`]): a name is
//! never spliced into SQL raw.

use std::ops::Range;

/// The string literal that stands for the IAM database user in a SQL file.
pub const USER_PLACEHOLDER: &str = "iam_user";

/// The default SQL: `deploy/bootstrap-iam-user.sql`, written for Aurora MySQL and RDS for MySQL.
pub const BOOTSTRAP_SQL: &str = include_str!("../../deploy/bootstrap-iam-user.sql");

/// Longest user name accepted (MySQL 8's limit).
pub const MAX_USER_LEN: usize = 32;

/// A script that cannot be run, worded as the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A quote or comment is never closed.
    #[error("line {line}: {what} opened here is never closed")]
    Unterminated {
        /// What is open (`a '…' string`, `a /* comment`).
        what: &'static str,
        /// Where it opens (1-based).
        line: usize,
    },
    /// A mysql-client `DELIMITER` command.
    #[error(
        "line {line}: DELIMITER is a command of the mysql client, not SQL; rds-iam-proxy admin \
         splits statements on `;` only. Run such a file with the mysql client through \
         `rds-iam-proxy exec -- mysql`"
    )]
    Delimiter {
        /// Where (1-based).
        line: usize,
    },
    /// Nothing to run.
    #[error("the SQL holds no statement")]
    Empty,
    /// The user name cannot be used.
    #[error(
        "the IAM database user name `{name}` {reason}: use 1 to 32 letters, digits, `_`, `-`, `.` \
         or `$`"
    )]
    BadUserName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// One statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The text sent to the server: from its first token to before its `;` (comments inside
    /// kept, comments before it dropped).
    pub text: String,
    /// The line it starts on (1-based).
    pub line: usize,
    /// Byte ranges of its single-quoted string literals in `text`, quotes included.
    literals: Vec<Range<usize>>,
}

impl Statement {
    /// The statement on one line, whitespace runs collapsed, cut at `max` characters: for
    /// progress lines.
    pub fn one_line(&self, max: usize) -> String {
        let flat = self.text.split_whitespace().collect::<Vec<_>>().join(" ");
        if flat.chars().count() <= max {
            flat
        } else {
            let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
            format!("{cut}…")
        }
    }

    /// The statement with every `'<placeholder>'` literal replaced by `literal` (already quoted).
    fn substitute(&self, placeholder: &str, literal: &str) -> Statement {
        let mut text = String::with_capacity(self.text.len());
        let mut literals = Vec::with_capacity(self.literals.len());
        let mut at = 0;
        for r in &self.literals {
            text.push_str(&self.text[at..r.start]);
            let start = text.len();
            let inner = &self.text[r.start + 1..r.end - 1];
            text.push_str(if inner == placeholder {
                literal
            } else {
                &self.text[r.clone()]
            });
            literals.push(start..text.len());
            at = r.end;
        }
        text.push_str(&self.text[at..]);
        Statement {
            text,
            line: self.line,
            literals,
        }
    }
}

/// Checks an IAM database user name: 1 to [`MAX_USER_LEN`] ASCII letters, digits, `_`, `-`, `.`
/// or `$`. (Quoting would make any name safe; the check keeps names that tools, policies and
/// people can all handle.)
pub fn check_user_name(name: &str) -> Result<(), Error> {
    let bad = |reason| Error::BadUserName {
        name: name.escape_debug().to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name.len() > MAX_USER_LEN {
        return Err(bad("is longer than 32 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$'))
    {
        return Err(bad("has a character that is not allowed"));
    }
    Ok(())
}

/// `s` as a MySQL single-quoted string literal: `'` doubled, `\` escaped.
pub fn quote_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The statements of `sql` with the IAM user name put in for every `'iam_user'` literal.
pub fn prepare(sql: &str, user: &str) -> Result<Vec<Statement>, Error> {
    check_user_name(user)?;
    let literal = quote_string(user);
    Ok(split(sql)?
        .iter()
        .map(|s| s.substitute(USER_PLACEHOLDER, &literal))
        .collect())
}

/// Splits a script into statements.
pub fn split(sql: &str) -> Result<Vec<Statement>, Error> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    // The current statement: where its first token starts (and on which line), and its
    // single-quoted literals (absolute ranges).
    let mut start: Option<(usize, usize)> = None;
    let mut literals: Vec<Range<usize>> = Vec::new();
    let mut finish = |start: &mut Option<(usize, usize)>,
                      literals: &mut Vec<Range<usize>>,
                      end: usize|
     -> Result<(), Error> {
        if let Some((s, l)) = start.take() {
            let text = sql[s..end].trim_end();
            if starts_with_word(text, "DELIMITER") {
                return Err(Error::Delimiter { line: l });
            }
            out.push(Statement {
                text: text.to_owned(),
                line: l,
                literals: literals.drain(..).map(|r| r.start - s..r.end - s).collect(),
            });
        }
        literals.clear();
        Ok(())
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b';' => {
                finish(&mut start, &mut literals, i)?;
                i += 1;
            }
            b'#' => i = line_end(b, i),
            b'-' if b.get(i + 1) == Some(&b'-')
                && b.get(i + 2)
                    .is_none_or(|&n| n.is_ascii_whitespace() || n.is_ascii_control()) =>
            {
                i = line_end(b, i);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                // `/*!…*/` (versioned) and `/*+…*/` (optimizer hints) are SQL the server runs.
                let executable = matches!(b.get(i + 2), Some(b'!' | b'+'));
                if executable && start.is_none() {
                    start = Some((i, line));
                }
                let close = find(b, i + 2, b"*/").ok_or(Error::Unterminated {
                    what: "a /* comment",
                    line,
                })?;
                line += count_newlines(&b[i..close]);
                i = close + 2;
            }
            b'\'' | b'"' | b'`' => {
                if start.is_none() {
                    start = Some((i, line));
                }
                let end = quoted_end(b, i).ok_or(Error::Unterminated {
                    what: match c {
                        b'\'' => "a '…' string",
                        b'"' => "a \"…\" string",
                        _ => "a `…` identifier",
                    },
                    line,
                })?;
                if c == b'\'' {
                    literals.push(i..end);
                }
                line += count_newlines(&b[i..end]);
                i = end;
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                if start.is_none() {
                    start = Some((i, line));
                }
                i += 1;
            }
        }
    }
    finish(&mut start, &mut literals, b.len())?;
    if out.is_empty() {
        return Err(Error::Empty);
    }
    Ok(out)
}

/// Index of the `\n` ending the line at `i` (or the end).
fn line_end(b: &[u8], i: usize) -> usize {
    find(b, i, b"\n").unwrap_or(b.len())
}

/// Index of the next `pat` at or after `from`.
fn find(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(pat.len())
        .position(|w| w == pat)
        .map(|p| p + from)
}

fn count_newlines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

/// The index just past the quote that closes the one at `open` (a doubled quote stays inside; a
/// backslash escapes the next byte in strings, not in backtick identifiers).
fn quoted_end(b: &[u8], open: usize) -> Option<usize> {
    let q = b[open];
    let mut i = open + 1;
    while i < b.len() {
        match b[i] {
            b'\\' if q != b'`' => i += 2,
            c if c == q => {
                if b.get(i + 1) == Some(&q) {
                    i += 2;
                } else {
                    return Some(i + 1);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// True when `text` starts with `word` (any case) followed by whitespace or its end.
fn starts_with_word(text: &str, word: &str) -> bool {
    text.len() >= word.len()
        && text.as_bytes()[..word.len()].eq_ignore_ascii_case(word.as_bytes())
        && text[word.len()..]
            .chars()
            .next()
            .is_none_or(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<String> {
        split(sql).unwrap().into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn splits_on_semicolons_outside_quotes_and_comments() {
        let sql = "-- a comment; not a statement\n\
                   CREATE USER 'a;b'@'%';  # trailing; comment\n\
                   SELECT \"x;y\", `we;ird`, 'it''s;', 'back\\';slash' /* c; */ FROM t;\n\
                   /* leading; */ GRANT ALL ON app.* TO 'u'@'%'\n;;\n\
                   SELECT 1 -- last; no semicolon";
        assert_eq!(
            texts(sql),
            [
                "CREATE USER 'a;b'@'%'",
                "SELECT \"x;y\", `we;ird`, 'it''s;', 'back\\';slash' /* c; */ FROM t",
                "GRANT ALL ON app.* TO 'u'@'%'",
                "SELECT 1 -- last; no semicolon",
            ]
        );
    }

    #[test]
    fn line_numbers_point_at_the_first_token() {
        let s = split("\n-- x\n/* y\n z */\n  SELECT\n 1;\nSELECT 'a\nb';\nSELECT 3").unwrap();
        let lines: Vec<usize> = s.iter().map(|s| s.line).collect();
        assert_eq!(lines, [5, 7, 9]);
    }

    #[test]
    fn double_dash_needs_a_space_to_be_a_comment() {
        assert_eq!(texts("SELECT 1--1;SELECT 2"), ["SELECT 1--1", "SELECT 2"]);
        assert_eq!(texts("SELECT 1 --\nSELECT 2"), ["SELECT 1 --\nSELECT 2"]);
    }

    #[test]
    fn executable_comments_are_kept_as_sql() {
        assert_eq!(
            texts("/*!40101 SET NAMES utf8mb4 */;\nSELECT /*+ MAX_EXECUTION_TIME(1) */ 1;"),
            [
                "/*!40101 SET NAMES utf8mb4 */",
                "SELECT /*+ MAX_EXECUTION_TIME(1) */ 1"
            ]
        );
    }

    #[test]
    fn unterminated_quotes_and_comments_and_delimiter_are_errors() {
        assert_eq!(
            split("SELECT 1;\nSELECT 'open;").unwrap_err(),
            Error::Unterminated {
                what: "a '…' string",
                line: 2
            }
        );
        assert!(matches!(
            split("SELECT `x;"),
            Err(Error::Unterminated { line: 1, .. })
        ));
        assert!(matches!(
            split("SELECT \"x\\\";"),
            Err(Error::Unterminated { .. })
        ));
        assert!(matches!(
            split("SELECT 1 /* never closed"),
            Err(Error::Unterminated { .. })
        ));
        assert_eq!(
            split("SELECT 1;\n\ndelimiter //\n").unwrap_err(),
            Error::Delimiter { line: 3 }
        );
        assert_eq!(
            split("-- only\n/* comments */ ;\n").unwrap_err(),
            Error::Empty
        );
        assert!(split("SELECT DELIMITERS;").is_ok());
    }

    #[test]
    fn hostile_input_never_panics() {
        for sql in [
            "'", "\\", "'\\", "/*", "/", "-", "--", "#", "`", "\"\\", "'é", "é;'",
        ] {
            let _ = split(sql);
        }
    }

    #[test]
    fn the_bootstrap_sql_has_three_statements_for_the_placeholder_user() {
        let s = prepare(BOOTSTRAP_SQL, "alice.ro").unwrap();
        let t: Vec<&str> = s.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            t,
            [
                "CREATE USER IF NOT EXISTS 'alice.ro'@'%' IDENTIFIED WITH AWSAuthenticationPlugin \
                 AS 'RDS' REQUIRE SSL",
                "CREATE DATABASE IF NOT EXISTS app",
                "GRANT ALL PRIVILEGES ON app.* TO 'alice.ro'@'%'",
            ]
        );
    }

    #[test]
    fn only_whole_placeholder_literals_are_replaced() {
        let s = prepare(
            "SELECT 'iam_user', 'iam_user2', \"iam_user\", `iam_user`, iam_user, 'x iam_user', \
             'iam_user';",
            "bob",
        )
        .unwrap();
        assert_eq!(
            s[0].text,
            "SELECT 'bob', 'iam_user2', \"iam_user\", `iam_user`, iam_user, 'x iam_user', 'bob'"
        );
    }

    #[test]
    fn user_names_are_checked_and_quoted() {
        for ok in ["iam_user", "a", "app-ro.2", "x$", &"u".repeat(32)] {
            check_user_name(ok).unwrap();
        }
        for bad in [
            "",
            &"u".repeat(33),
            "a'b",
            "a\\b",
            "a b",
            "a;b",
            "a@b",
            "é",
            "a\0",
            "a\nb",
        ] {
            let e = check_user_name(bad).unwrap_err();
            assert!(matches!(e, Error::BadUserName { .. }), "{bad:?}");
            assert!(prepare("SELECT 'iam_user'", bad).is_err());
        }
        assert_eq!(quote_string("it's a \\ test"), "'it''s a \\\\ test'");
    }

    #[test]
    fn one_line_collapses_and_cuts() {
        let s = &split("GRANT ALL\n   PRIVILEGES ON app.*\n TO 'u'@'%'").unwrap()[0];
        assert_eq!(s.one_line(100), "GRANT ALL PRIVILEGES ON app.* TO 'u'@'%'");
        assert_eq!(s.one_line(10), "GRANT ALL…");
    }
}
