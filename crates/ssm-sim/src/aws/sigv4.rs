//! The service side of SigV4 header authentication: reading the `Authorization` header (its
//! credential scope names the service a request is for, which is how one endpoint serves them
//! all) and, when the world holds an access key, recomputing the signature independently of any
//! client library.
//!
//! <https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method, Uri};
use sha2::{Digest, Sha256};

/// The only algorithm AWS services accept in header authentication here.
pub(crate) const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Authorization<'a> {
    /// The access key id.
    pub access_key: &'a str,
    /// The scope date, `YYYYMMDD`.
    pub date: &'a str,
    /// The scope region.
    pub region: &'a str,
    /// The scope service (the signing name: `ecs`, `rds`, `cloudformation`…).
    pub service: &'a str,
    /// Lower-case header names, as listed (`content-type;host;x-amz-date`).
    pub signed_headers: Vec<&'a str>,
    /// Hex signature.
    pub signature: &'a str,
}

/// Why a request's signature was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// The header lacks a part, or a part is malformed (IncompleteSignature); the text says
    /// which.
    Incomplete(String),
    /// The access key is not the world's (InvalidClientTokenId and kin).
    UnknownAccessKey,
    /// The recomputed signature differs (SignatureDoesNotMatch and kin); the text says why when
    /// it is more than a mismatch.
    Mismatch(Option<String>),
}

/// Parses an `Authorization` header value.
pub(crate) fn parse(header: &str) -> Result<Authorization<'_>, Rejection> {
    let rest = header
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| {
            Rejection::Incomplete(format!(
                "Unsupported AWS 'algorithm': expected {ALGORITHM} in the Authorization header"
            ))
        })?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let missing = |name: &str| {
        Rejection::Incomplete(format!("Authorization header requires '{name}' parameter."))
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope[..] else {
        return Err(Rejection::Incomplete(
            "Credential should be scoped to a valid region, service and date, as \
             ACCESS_KEY/YYYYMMDD/REGION/SERVICE/aws4_request."
                .to_owned(),
        ));
    };
    if access_key.is_empty() || region.is_empty() || service.is_empty() || date.len() != 8 {
        return Err(Rejection::Incomplete(
            "Credential should be scoped to a valid region, service and date.".to_owned(),
        ));
    }
    Ok(Authorization {
        access_key,
        date,
        region,
        service,
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

/// The request parts a signature covers.
pub(crate) struct Signed<'a> {
    /// Method.
    pub method: &'a Method,
    /// Path and query as received.
    pub uri: &'a Uri,
    /// Headers as received.
    pub headers: &'a HeaderMap,
    /// The whole body.
    pub body: &'a [u8],
}

/// Checks `auth` against the request with the world's key.
pub(crate) fn verify(
    auth: &Authorization<'_>,
    req: &Signed<'_>,
    access_key_id: &str,
    secret: &str,
) -> Result<(), Rejection> {
    if auth.access_key != access_key_id {
        return Err(Rejection::UnknownAccessKey);
    }
    let amz_date = req
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            Rejection::Incomplete(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
                 header."
                    .to_owned(),
            )
        })?;
    let time = parse_amz_date(amz_date).ok_or_else(|| {
        Rejection::Incomplete(format!(
            "X-Amz-Date {amz_date:?} is not YYYYMMDD'T'HHMMSS'Z'."
        ))
    })?;
    if amz_date.get(..8) != Some(auth.date) {
        return Err(Rejection::Mismatch(Some(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from \
             HTTP: '{}' != '{}', from '{amz_date}'.",
            auth.date,
            &amz_date[..8]
        ))));
    }
    if !auth.signed_headers.contains(&"host") {
        return Err(Rejection::Incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".to_owned(),
        ));
    }
    let canonical =
        canonical_request(req, &auth.signed_headers).ok_or(Rejection::Mismatch(None))?;
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical.as_bytes())
    );
    let key = aws_sigv4::sign::v4::generate_signing_key(secret, time, auth.region, auth.service);
    let expected = aws_sigv4::sign::v4::calculate_signature(key, string_to_sign.as_bytes());
    if expected != auth.signature {
        return Err(Rejection::Mismatch(None));
    }
    Ok(())
}

/// The SigV4 canonical request; `None` when a signed header is missing or not text.
fn canonical_request(req: &Signed<'_>, signed_headers: &[&str]) -> Option<String> {
    let mut out = String::new();
    out.push_str(req.method.as_str());
    out.push('\n');
    out.push_str(&uri_encode(req.uri.path(), false));
    out.push('\n');
    let mut query: Vec<(String, String)> =
        url::form_urlencoded::parse(req.uri.query().unwrap_or_default().as_bytes())
            .map(|(k, v)| (uri_encode(&k, true), uri_encode(&v, true)))
            .collect();
    query.sort();
    let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    out.push_str(&query.join("&"));
    out.push('\n');
    for name in signed_headers {
        let mut values = Vec::new();
        for v in req.headers.get_all(*name) {
            values.push(
                v.to_str()
                    .ok()?
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        if values.is_empty() {
            return None;
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(&hex_sha256(req.body));
    Some(out)
}

/// SigV4 URI encoding: everything but unreserved characters (and `/` in paths) as `%XX`.
fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else if b == b'/' && !encode_slash {
            out.push('/');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `20240101T000000Z` → time.
pub(crate) fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";

    #[test]
    fn parses_the_credential_scope() {
        let a = parse(AUTH).unwrap();
        assert_eq!(
            a,
            Authorization {
                access_key: "AKIDEXAMPLE",
                date: "20150830",
                region: "us-east-1",
                service: "iam",
                signed_headers: vec!["content-type", "host", "x-amz-date"],
                signature: "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            }
        );
    }

    #[test]
    fn malformed_headers_are_incomplete_not_panics() {
        for h in [
            "",
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA256x Credential=a/b/c/d/aws4_request",
            "Bearer abc",
            "AWS4-HMAC-SHA256 Credential=a/20150830/r/s/aws4_request, SignedHeaders=host",
            "AWS4-HMAC-SHA256 Credential=a/2015/r/s/aws4_request, SignedHeaders=host, Signature=x",
            "AWS4-HMAC-SHA256 Credential=a/20150830/r/s, SignedHeaders=host, Signature=x",
            "AWS4-HMAC-SHA256 Credential=/20150830//s/aws4_request, SignedHeaders=host, Signature=x",
        ] {
            assert!(
                matches!(parse(h), Err(Rejection::Incomplete(_))),
                "{h:?} → {:?}",
                parse(h)
            );
        }
    }

    /// AWS's published example (IAM ListUsers, GET with a query, from the SigV4 documentation
    /// "Examples of the complete Signature Version 4 signing process"): the signature this
    /// module recomputes must be the one AWS documents.
    #[test]
    fn verifies_the_documented_example_signature() {
        let uri: Uri = "/?Action=ListUsers&Version=2010-05-08".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        headers.insert("host", "iam.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        let req = Signed {
            method: &Method::GET,
            uri: &uri,
            headers: &headers,
            body: b"",
        };
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let auth = parse(AUTH).unwrap();
        assert_eq!(verify(&auth, &req, "AKIDEXAMPLE", secret), Ok(()));
        assert_eq!(
            verify(&auth, &req, "AKIDOTHER", secret),
            Err(Rejection::UnknownAccessKey)
        );
        assert_eq!(
            verify(&auth, &req, "AKIDEXAMPLE", "wrong"),
            Err(Rejection::Mismatch(None))
        );
        let tampered = Signed { body: b"x", ..req };
        assert_eq!(
            verify(&auth, &tampered, "AKIDEXAMPLE", secret),
            Err(Rejection::Mismatch(None))
        );
        let mut no_date = headers.clone();
        no_date.remove("x-amz-date");
        let req = Signed {
            headers: &no_date,
            ..tampered
        };
        assert!(matches!(
            verify(&auth, &req, "AKIDEXAMPLE", secret),
            Err(Rejection::Incomplete(_))
        ));
    }

    #[test]
    fn amz_dates() {
        assert_eq!(
            parse_amz_date("20240101T000000Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_704_067_200))
        );
        assert_eq!(
            parse_amz_date("20231114T221320Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        for bad in [
            "",
            "2023-11-14",
            "20241301T000000Z",
            "2024010T0000000Z",
            "20240101T250000Z",
            "x".repeat(16).as_str(),
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }
}
