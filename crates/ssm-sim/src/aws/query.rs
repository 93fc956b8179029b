//! The AWS Query protocol (CloudFormation, RDS, STS) and its EC2 variant, as the services speak
//! it: a form-encoded body `Action=…&Version=…&Name.1=…`, an XML answer
//! `<ActionResponse xmlns="…"><ActionResult>…</ActionResult><ResponseMetadata>…`, and errors as
//! `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>` (EC2:
//! `<Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>`).
//!
//! Owns parsing the form ([`Params`]), writing XML ([`Xml`]) and the two envelopes; what goes
//! inside them is each service module's business.

use std::collections::BTreeMap;

/// The request parameters of a Query call: the form body and the URL query, merged.
#[derive(Debug, Default)]
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    /// Decodes `application/x-www-form-urlencoded` text (body, then URL query; the body wins).
    pub(crate) fn parse(body: &[u8], query: Option<&str>) -> Params {
        let mut map = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            map.insert(k.into_owned(), v.into_owned());
        }
        for (k, v) in url::form_urlencoded::parse(body) {
            map.insert(k.into_owned(), v.into_owned());
        }
        Params(map)
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The value of `key`, unless absent or empty.
    pub(crate) fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    /// The members of list `prefix`, in index order: `prefix.1`, `prefix.2`, …
    pub(crate) fn list(&self, prefix: &str) -> Vec<&str> {
        let mut items: Vec<(u32, &str)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let n = k.strip_prefix(prefix)?.strip_prefix('.')?.parse().ok()?;
                Some((n, v.as_str()))
            })
            .collect();
        items.sort_by_key(|(n, _)| *n);
        items.into_iter().map(|(_, v)| v).collect()
    }

    /// The distinct indices `N` of keys `prefix.N.…`, in order.
    pub(crate) fn indices(&self, prefix: &str) -> Vec<u32> {
        let mut ns: Vec<u32> = self
            .0
            .keys()
            .filter_map(|k| {
                let rest = k.strip_prefix(prefix)?.strip_prefix('.')?;
                rest.split_once('.')?.0.parse().ok()
            })
            .collect();
        ns.sort_unstable();
        ns.dedup();
        ns
    }

    /// Whether any key starts with `prefix`.
    pub(crate) fn has_prefix(&self, prefix: &str) -> bool {
        self.0.keys().any(|k| k.starts_with(prefix))
    }
}

/// A small XML writer: elements and escaped text, nothing else.
#[derive(Debug, Default)]
pub(crate) struct Xml(String);

impl Xml {
    /// `<tag>`.
    pub(crate) fn open(&mut self, tag: &str) -> &mut Self {
        self.0.push('<');
        self.0.push_str(tag);
        self.0.push('>');
        self
    }

    /// `</tag>`.
    pub(crate) fn close(&mut self, tag: &str) -> &mut Self {
        self.0.push_str("</");
        self.0.push_str(tag);
        self.0.push('>');
        self
    }

    /// `<tag>text</tag>`, with `text` escaped.
    pub(crate) fn leaf(&mut self, tag: &str, text: impl std::fmt::Display) -> &mut Self {
        self.open(tag);
        escape_into(&mut self.0, &text.to_string());
        self.close(tag)
    }

    /// `<tag>text</tag>` when there is a text.
    pub(crate) fn leaf_opt(&mut self, tag: &str, text: Option<&str>) -> &mut Self {
        if let Some(t) = text {
            self.leaf(tag, t);
        }
        self
    }

    /// The document so far.
    pub(crate) fn into_string(self) -> String {
        self.0
    }
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no way to carry other control characters, even as references.
            c if c < ' ' && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

/// The success envelope of Query services.
pub(crate) fn envelope(namespace: &str, action: &str, result: &str, request_id: &str) -> String {
    let mut x = Xml::default();
    x.0.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    x.0.push_str(&format!(r#"<{action}Response xmlns="{namespace}">"#));
    x.open(&format!("{action}Result"));
    x.0.push_str(result);
    x.close(&format!("{action}Result"))
        .open("ResponseMetadata")
        .leaf("RequestId", request_id)
        .close("ResponseMetadata")
        .close(&format!("{action}Response"));
    x.into_string()
}

/// The success envelope of EC2 (no Result wrapper; `requestId` first).
pub(crate) fn ec2_envelope(
    namespace: &str,
    action: &str,
    result: &str,
    request_id: &str,
) -> String {
    let mut x = Xml::default();
    x.0.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    x.0.push_str(&format!(r#"<{action}Response xmlns="{namespace}">"#));
    x.leaf("requestId", request_id);
    x.0.push_str(result);
    x.close(&format!("{action}Response"));
    x.into_string()
}

/// `<ErrorResponse>` of Query services. `sender` is the `Type` (Sender or Receiver).
pub(crate) fn error_document(
    namespace: &str,
    sender: bool,
    code: &str,
    message: &str,
    request_id: &str,
) -> String {
    let mut x = Xml::default();
    x.0.push_str(&format!(r#"<ErrorResponse xmlns="{namespace}">"#));
    x.open("Error")
        .leaf("Type", if sender { "Sender" } else { "Receiver" })
        .leaf("Code", code)
        .leaf("Message", message)
        .close("Error")
        .leaf("RequestId", request_id)
        .close("ErrorResponse");
    x.into_string()
}

/// `<Response><Errors>` of EC2.
pub(crate) fn ec2_error_document(code: &str, message: &str, request_id: &str) -> String {
    let mut x = Xml::default();
    x.0.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    x.open("Response")
        .open("Errors")
        .open("Error")
        .leaf("Code", code)
        .leaf("Message", message)
        .close("Error")
        .close("Errors")
        .leaf("RequestID", request_id)
        .close("Response");
    x.into_string()
}

/// An XML timestamp (`2024-01-01T00:00:00.000Z`) for seconds since the epoch.
pub(crate) fn timestamp(epoch_secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch_secs);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_lists_and_indices_follow_numeric_order() {
        let p = Params::parse(
            b"Action=DescribeInstances&InstanceId.10=i-c&InstanceId.2=i-b&InstanceId.1=i-a\
              &Filter.2.Name=tag%3ARole&Filter.2.Value.1=bastion&Filter.1.Name=x&Filter.1.Value.1=y",
            Some("Version=2016-11-15&Action=Ignored"),
        );
        assert_eq!(p.get("Action"), Some("DescribeInstances"));
        assert_eq!(p.get("Version"), Some("2016-11-15"));
        assert_eq!(p.list("InstanceId"), ["i-a", "i-b", "i-c"]);
        assert_eq!(p.indices("Filter"), [1, 2]);
        assert_eq!(p.get("Filter.2.Name"), Some("tag:Role"));
        assert_eq!(p.list("Filter.2.Value"), ["bastion"]);
        assert!(p.has_prefix("Filter."));
        assert!(p.non_empty("Nothing").is_none());
    }

    #[test]
    fn hostile_forms_parse_without_panicking() {
        for body in [
            &b"%"[..],
            b"=&=&&",
            b"InstanceId.99999999999999999999=x",
            b"Filter..Name=x&Filter.-1.Name=y",
            b"\xff\xfe=\xff",
        ] {
            let p = Params::parse(body, None);
            let _ = (p.list("InstanceId"), p.indices("Filter"));
        }
    }

    #[test]
    fn xml_text_is_escaped() {
        let mut x = Xml::default();
        x.leaf("Message", "a<b>&\"c'\0");
        assert_eq!(
            x.into_string(),
            "<Message>a&lt;b&gt;&amp;&quot;c&apos;\u{fffd}</Message>"
        );
        assert_eq!(timestamp(1_704_067_200), "2024-01-01T00:00:00.000Z");
    }
}
