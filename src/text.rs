//! Text that peers chose (user names, plugin names, server messages), made fit to show: the one
//! escaping rule every log line and ERR message applies to it, for every engine.

/// `s` fit for a log line or an ERR message: control characters (newlines, escape sequences) and
/// backslashes are escaped, everything else is kept as is. Client-chosen text such as a user name
/// goes through this before it is shown anywhere.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || c == '\\') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}
