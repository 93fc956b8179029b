//! SCRAM-SHA-256, server side (RFC 5802 with RFC 7677's hash; PostgreSQL's flavour, section
//! "SASL Authentication" of the protocol chapter), for the proxy's optional local password: the
//! client proves it knows the password without sending it, and the proxy keeps only the derived
//! keys, never the password.
//!
//! Sans-IO and deterministic: the caller supplies the salt and the server nonce (fresh random
//! bytes for each exchange, e.g. [`nonce_from_random`]). The exchange:
//!
//! 1. the proxy sends `AuthenticationSASL` offering [`MECHANISM`] (never `-PLUS`: the proxy does
//!    no channel binding, so a client asking for it (`p=`) is refused);
//! 2. [`ScramVerifier::server_first`] reads the client-first message of the client's
//!    `SASLInitialResponse` and gives the server-first message for `AuthenticationSASLContinue`;
//! 3. [`ScramExchange::server_final`] checks the proof in the client-final message of the
//!    client's `SASLResponse` and gives the server-final message for `AuthenticationSASLFinal`,
//!    after which `AuthenticationOk` follows.
//!
//! [`ScramClient`] is the other side, for logging in upstream with a `--secret` password when
//! the server asks for SCRAM-SHA-256.
//!
//! PostgreSQL clients normalise the password with SASLprep, which leaves printable ASCII as it
//! is; [`ScramVerifier::new`] accepts only printable ASCII so both sides hash the same bytes.

use std::num::NonZeroU32;

use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use subtle::ConstantTimeEq;

use super::Error;

/// The one mechanism offered.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// PostgreSQL's default iteration count (`scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Longest client nonce accepted (libpq sends 24 base64 characters).
const MAX_NONCE_LEN: usize = 256;

const KEY_LEN: usize = 32;

fn scram_err(reason: &'static str) -> Error {
    Error::Scram { reason }
}

/// The stored form of the local password: salt, iteration count, `StoredKey`, `ServerKey`.
#[derive(Clone)]
pub struct ScramVerifier {
    salt: Vec<u8>,
    iterations: NonZeroU32,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramVerifier(<redacted>)")
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    let tag = ctx.sign();
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

/// `SaltedPassword := Hi(password, salt, i)`, PBKDF2 with HMAC-SHA-256.
fn salted_password(password: &[u8], salt: &[u8], iterations: NonZeroU32) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password,
        &mut out,
    );
    out
}

/// A server nonce from fresh random bytes (18 give 24 base64 characters, as PostgreSQL uses).
pub fn nonce_from_random(random: &[u8]) -> String {
    B64.encode(random)
}

/// `printable` of RFC 5802: `%x21-2B / %x2D-7E`.
fn is_printable_nonce(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NONCE_LEN
        && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

impl ScramVerifier {
    /// Derives the keys for `password` (printable ASCII, non-empty) with `salt` (at least 16
    /// bytes, random) and `iterations`.
    pub fn new(password: &str, salt: &[u8], iterations: NonZeroU32) -> Result<Self, Error> {
        if password.is_empty() || !password.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(scram_err(
                "the local password must be printable ASCII (what SASLprep leaves unchanged)",
            ));
        }
        if salt.len() < 16 {
            return Err(scram_err("the salt must be at least 16 bytes"));
        }
        let salted = salted_password(password.as_bytes(), salt, iterations);
        let client_key = hmac_sha256(&salted, &[b"Client Key"]);
        Ok(ScramVerifier {
            salt: salt.to_vec(),
            iterations,
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, &[b"Server Key"]),
        })
    }

    /// Reads the client-first message (the data of `SASLInitialResponse`) and answers with the
    /// server-first message, which goes in `AuthenticationSASLContinue`. `server_nonce` must be
    /// fresh for each exchange and printable (see [`nonce_from_random`]).
    pub fn server_first(
        &self,
        client_first: &[u8],
        server_nonce: &str,
    ) -> Result<(ScramExchange, String), Error> {
        if !is_printable_nonce(server_nonce) {
            return Err(scram_err("the server nonce is not printable"));
        }
        let text = std::str::from_utf8(client_first)
            .map_err(|_| scram_err("client-first-message is not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = text
            .split_once(',')
            .ok_or_else(|| scram_err("client-first-message has no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => {
                return Err(scram_err(
                    "the client requires channel binding, which the proxy does not offer",
                ));
            }
            _ => return Err(scram_err("malformed GS2 channel-binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or_else(|| scram_err("client-first-message has no GS2 header"))?;
        if !authzid.is_empty() {
            return Err(scram_err("an authorization identity is not supported"));
        }
        let gs2_header = &text[..text.len() - bare.len()];
        let mut attrs = bare.split(',');
        let user = attrs.next().unwrap_or_default();
        if user.starts_with("m=") {
            return Err(scram_err("mandatory SCRAM extensions are not supported"));
        }
        if !user.starts_with("n=") {
            return Err(scram_err("client-first-message has no user name attribute"));
        }
        // PostgreSQL clients send an empty name here: the startup packet's user counts.
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| scram_err("client-first-message has no nonce"))?;
        if !is_printable_nonce(client_nonce) {
            return Err(scram_err(
                "the client nonce is empty, too long or not printable",
            ));
        }
        // Extensions after the nonce are ignored, as PostgreSQL does, but must look like ones.
        if !attrs.all(|a| matches!(a.as_bytes(), [c, b'=', ..] if c.is_ascii_alphabetic())) {
            return Err(scram_err("malformed attribute after the nonce"));
        }
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&self.salt),
            self.iterations
        );
        Ok((
            ScramExchange {
                stored_key: self.stored_key,
                server_key: self.server_key,
                gs2_header: gs2_header.to_owned(),
                nonce,
                client_first_bare: bare.to_owned(),
                server_first: server_first.clone(),
            },
            server_first,
        ))
    }
}

/// An exchange between the server-first and the server-final message.
#[derive(Clone)]
pub struct ScramExchange {
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
    gs2_header: String,
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

impl std::fmt::Debug for ScramExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramExchange(<redacted>)")
    }
}

impl ScramExchange {
    /// Checks the client-final message (the data of `SASLResponse`). On a valid proof, returns
    /// the server-final message (`v=…`) for `AuthenticationSASLFinal`; a wrong password is
    /// `Error::Scram { reason: "wrong password" }`.
    pub fn server_final(self, client_final: &[u8]) -> Result<String, Error> {
        let text = std::str::from_utf8(client_final)
            .map_err(|_| scram_err("client-final-message is not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| scram_err("client-final-message has no proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or_else(|| scram_err("client-final-message has no channel binding"))?;
        let binding = B64
            .decode(binding)
            .map_err(|_| scram_err("channel binding is not base64"))?;
        if binding != self.gs2_header.as_bytes() {
            return Err(scram_err("channel binding does not match the GS2 header"));
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or_else(|| scram_err("client-final-message has no nonce"))?;
        if nonce != self.nonce {
            return Err(scram_err("the nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| scram_err("the proof is not base64"))?;
        if proof.len() != KEY_LEN {
            return Err(scram_err("the proof is not 32 bytes"));
        }
        let auth_message = [
            self.client_first_bare.as_bytes(),
            b",",
            self.server_first.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        let client_signature = hmac_sha256(&self.stored_key, &auth_message);
        let mut client_key = [0u8; KEY_LEN];
        for (k, (p, s)) in client_key
            .iter_mut()
            .zip(proof.iter().zip(client_signature.iter()))
        {
            *k = p ^ s;
        }
        if !bool::from(sha256(&client_key).ct_eq(&self.stored_key)) {
            return Err(scram_err("wrong password"));
        }
        let server_signature = hmac_sha256(&self.server_key, &auth_message);
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

/// Most iterations a server may ask of the client side: PostgreSQL's default is 4096; a hostile
/// server asking millions would make each login burn seconds of CPU.
pub const MAX_CLIENT_ITERATIONS: u32 = 1_000_000;

/// The client side of SCRAM-SHA-256 (RFC 5802 §3, PostgreSQL's flavour: empty `n=`, no channel
/// binding), for logging in upstream with a password (`--secret`) when the server asks for it.
/// The password stays inside; `Debug` shows nothing of it.
pub struct ScramClient {
    password: Vec<u8>,
    client_first_bare: String,
    client_nonce: String,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramClient(<redacted>)")
    }
}

/// What the client expects of the server-final message.
pub struct ScramClientFinal {
    server_signature: [u8; KEY_LEN],
}

impl ScramClient {
    /// Starts an exchange for `password` with a fresh printable `client_nonce` (see
    /// [`nonce_from_random`]); returns the client and the client-first message for
    /// `SASLInitialResponse`.
    pub fn start(password: &str, client_nonce: &str) -> Result<(Self, String), Error> {
        if !is_printable_nonce(client_nonce) {
            return Err(scram_err("the client nonce is not printable"));
        }
        let client_first_bare = format!("n=,r={client_nonce}");
        let first = format!("n,,{client_first_bare}");
        Ok((
            ScramClient {
                password: password.as_bytes().to_vec(),
                client_first_bare,
                client_nonce: client_nonce.to_owned(),
            },
            first,
        ))
    }

    /// Reads the server-first message and gives the client-final message (with the proof) for
    /// `SASLResponse`, and what the server-final message must prove.
    pub fn client_final(self, server_first: &[u8]) -> Result<(String, ScramClientFinal), Error> {
        let text = std::str::from_utf8(server_first)
            .map_err(|_| scram_err("server-first-message is not UTF-8"))?;
        let mut attrs = text.split(',');
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|n| n.starts_with(&self.client_nonce) && n.len() > self.client_nonce.len())
            .filter(|n| is_printable_nonce(n))
            .ok_or_else(|| scram_err("server-first-message has no nonce extending the client's"))?;
        let salt = attrs
            .next()
            .and_then(|a| a.strip_prefix("s="))
            .and_then(|s| B64.decode(s).ok())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| scram_err("server-first-message has no base64 salt"))?;
        let iterations = attrs
            .next()
            .and_then(|a| a.strip_prefix("i="))
            .and_then(|i| i.parse::<u32>().ok())
            .filter(|i| *i <= MAX_CLIENT_ITERATIONS)
            .and_then(NonZeroU32::new)
            .ok_or_else(|| scram_err("server-first-message has no iteration count in range"))?;
        let salted = salted_password(&self.password, &salt, iterations);
        let client_key = hmac_sha256(&salted, &[b"Client Key"]);
        let stored_key = sha256(&client_key);
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth_message = [
            self.client_first_bare.as_bytes(),
            b",",
            text.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        let signature = hmac_sha256(&stored_key, &auth_message);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature.iter())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac_sha256(&salted, &[b"Server Key"]);
        Ok((
            format!("{without_proof},p={}", B64.encode(proof)),
            ScramClientFinal {
                server_signature: hmac_sha256(&server_key, &auth_message),
            },
        ))
    }
}

impl ScramClientFinal {
    /// Checks the server-final message: the server proves it knew the password too.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), Error> {
        let v = std::str::from_utf8(server_final)
            .ok()
            .and_then(|t| t.strip_prefix("v="))
            .and_then(|v| B64.decode(v.split(',').next().unwrap_or_default()).ok())
            .ok_or_else(|| scram_err("server-final-message has no verifier"))?;
        if bool::from(v.as_slice().ct_eq(&self.server_signature)) {
            Ok(())
        } else {
            Err(scram_err("the server's signature does not match"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_logs_in_to_the_verifier_and_checks_its_signature() {
        let v = ScramVerifier::new("pw secret", &[3; 16], iterations(4096)).unwrap();
        let (client, first) = ScramClient::start("pw secret", "clientNONCE").unwrap();
        let (exchange, server_first) = v.server_first(first.as_bytes(), "serverNONCE").unwrap();
        let (final_msg, expect) = client.client_final(server_first.as_bytes()).unwrap();
        let server_final = exchange.server_final(final_msg.as_bytes()).unwrap();
        expect.verify(server_final.as_bytes()).unwrap();
        assert!(expect.verify(b"v=AAAA").is_err());
        // A wrong password is the server's refusal; a nonce not extending ours, a huge
        // iteration count or no salt are the client's.
        let (client, first) = ScramClient::start("guess", "clientNONCE").unwrap();
        let (exchange, server_first) = v.server_first(first.as_bytes(), "serverNONCE").unwrap();
        let (final_msg, _) = client.client_final(server_first.as_bytes()).unwrap();
        assert!(exchange.server_final(final_msg.as_bytes()).is_err());
        for bad in [
            "r=otherNONCE,s=AwMD,i=4096",
            "r=clientNONCEx,s=AwMD,i=4000000000",
            "r=clientNONCEx,s=,i=4096",
            "r=clientNONCEx,i=4096",
        ] {
            let (client, _) = ScramClient::start("pw", "clientNONCE").unwrap();
            assert!(client.client_final(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(
            format!("{:?}", ScramClient::start("pw", "n").unwrap().0),
            "ScramClient(<redacted>)"
        );
    }

    fn iterations(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    /// A client, written from RFC 5802 §3, to drive the server.
    fn client_final(
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        gs2_header: &str,
    ) -> String {
        let mut parts = server_first.split(',');
        let nonce = parts.next().unwrap().strip_prefix("r=").unwrap();
        let salt = B64
            .decode(parts.next().unwrap().strip_prefix("s=").unwrap())
            .unwrap();
        let i: u32 = parts.next().unwrap()[2..].parse().unwrap();
        let salted = salted_password(password.as_bytes(), &salt, iterations(i));
        let client_key = hmac_sha256(&salted, &[b"Client Key"]);
        let stored = sha256(&client_key);
        let without_proof = format!("c={},r={nonce}", B64.encode(gs2_header));
        let sig = hmac_sha256(
            &stored,
            &[
                client_first_bare.as_bytes(),
                b",",
                server_first.as_bytes(),
                b",",
                without_proof.as_bytes(),
            ],
        );
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(k, s)| k ^ s).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn rfc_7677_example() {
        // RFC 7677 §3: user "user", password "pencil".
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = ScramVerifier::new("pencil", &salt, iterations(4096)).unwrap();
        let (ex, first) = v
            .server_first(
                b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            )
            .unwrap();
        assert_eq!(
            first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let last = ex
            .server_final(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(last, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn right_and_wrong_passwords_with_y_and_n_flags() {
        let v = ScramVerifier::new("local pass", &[7u8; 16], iterations(4096)).unwrap();
        for header in ["n,,", "y,,"] {
            let bare = "n=,r=clientnonce123";
            let first_msg = format!("{header}{bare}");
            let (ex, first) = v.server_first(first_msg.as_bytes(), "srvnonce").unwrap();
            let good = client_final("local pass", bare, &first, header);
            assert!(
                ex.clone()
                    .server_final(good.as_bytes())
                    .unwrap()
                    .starts_with("v=")
            );
            let bad = client_final("local pasS", bare, &first, header);
            assert_eq!(
                ex.server_final(bad.as_bytes()).unwrap_err(),
                Error::Scram {
                    reason: "wrong password"
                }
            );
        }
    }

    #[test]
    fn malformed_exchanges_are_refused() {
        let v = ScramVerifier::new("pw-pw-pw", &[1u8; 16], iterations(4096)).unwrap();
        for first in [
            &b"p=tls-server-end-point,,n=,r=abc"[..],
            b"n,a=admin,n=,r=abc",
            b"n,,m=ext,n=,r=abc",
            b"n,,n=,r=",
            b"n,,n=",
            b"x,,n=,r=abc",
            b"n,,n=,r=a,b",
            b"\xff",
            b"",
        ] {
            assert!(v.server_first(first, "srv").is_err(), "{first:?}");
        }
        let (ex, first) = v.server_first(b"n,,n=,r=abc", "srv").unwrap();
        let good = client_final("pw-pw-pw", "n=,r=abc", &first, "n,,");
        for bad in [
            good.replace("c=biws", "c=eSws"),
            good.replace("r=abcsrv", "r=abcsrX"),
            good.replace(",p=", ",q="),
            format!("{good}AAAA"),
            "c=biws".to_owned(),
        ] {
            assert!(ex.clone().server_final(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(ex.server_final(good.as_bytes()).is_ok());
    }

    #[test]
    fn passwords_outside_printable_ascii_and_short_salts_are_refused() {
        assert!(ScramVerifier::new("pässword", &[0; 16], iterations(1)).is_err());
        assert!(ScramVerifier::new("tab\there", &[0; 16], iterations(1)).is_err());
        assert!(ScramVerifier::new("", &[0; 16], iterations(1)).is_err());
        assert!(ScramVerifier::new("ok", &[0; 8], iterations(1)).is_err());
        let v = ScramVerifier::new("secret-pw", &[0; 16], iterations(1)).unwrap();
        assert!(!format!("{v:?}").contains("secret"));
        assert_eq!(nonce_from_random(&[0u8; 18]).len(), 24);
    }
}
