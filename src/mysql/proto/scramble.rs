//! Challenge-response password checks for the proxy's optional local password: the
//! `mysql_native_password` and `caching_sha2_password` (fast path) scrambles, verified from
//! stored double hashes so the clear password is never kept or compared. The client side of both
//! scrambles ([`native_scramble`], [`sha2_scramble`]) serves the admin client's password login
//! (`admin::client`).
//!
//! Spec: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_authentication_methods_native_password_authentication.html>
//! and <https://dev.mysql.com/doc/dev/mysql-server/latest/page_caching_sha2_authentication_exchanges.html>.

use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::handshake::plugin;

/// Verifies a client's scrambled password against the configured local password.
#[derive(Clone)]
pub struct PasswordVerifier {
    /// `SHA1(SHA1(password))`, what `mysql_native_password` servers store.
    native_stage2: [u8; 20],
    /// `SHA256(SHA256(password))`, what caching_sha2's fast path needs.
    sha2_stage2: [u8; 32],
}

impl std::fmt::Debug for PasswordVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordVerifier(<redacted>)")
    }
}

impl PasswordVerifier {
    /// Derives the stored hashes; the password itself is not kept.
    pub fn new(password: &str) -> Self {
        let native_stage1: [u8; 20] = Sha1::digest(password.as_bytes()).into();
        let sha2_stage1: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        PasswordVerifier {
            native_stage2: Sha1::digest(native_stage1).into(),
            sha2_stage2: Sha256::digest(sha2_stage1).into(),
        }
    }

    /// True when `response` is the scramble of the local password for `nonce` under `plugin`
    /// (clients without pluggable auth use the native scramble).
    pub fn verify(&self, plugin_name: Option<&[u8]>, nonce: &[u8], response: &[u8]) -> bool {
        match plugin_name {
            Some(p) if p == plugin::CACHING_SHA2_PASSWORD.as_bytes() => {
                self.verify_sha2(nonce, response)
            }
            Some(p) if p == plugin::MYSQL_NATIVE_PASSWORD.as_bytes() => {
                self.verify_native(nonce, response)
            }
            None => self.verify_native(nonce, response),
            Some(_) => false,
        }
    }

    fn verify_native(&self, nonce: &[u8], response: &[u8]) -> bool {
        if response.len() != 20 {
            return false;
        }
        let mask: [u8; 20] = Sha1::new()
            .chain_update(nonce)
            .chain_update(self.native_stage2)
            .finalize()
            .into();
        let mut stage1 = [0u8; 20];
        for i in 0..20 {
            stage1[i] = response[i] ^ mask[i];
        }
        let check: [u8; 20] = Sha1::digest(stage1).into();
        check.ct_eq(&self.native_stage2).into()
    }

    fn verify_sha2(&self, nonce: &[u8], response: &[u8]) -> bool {
        if response.len() != 32 {
            return false;
        }
        let mask: [u8; 32] = Sha256::new()
            .chain_update(self.sha2_stage2)
            .chain_update(nonce)
            .finalize()
            .into();
        let mut stage1 = [0u8; 32];
        for i in 0..32 {
            stage1[i] = response[i] ^ mask[i];
        }
        let check: [u8; 32] = Sha256::digest(stage1).into();
        check.ct_eq(&self.sha2_stage2).into()
    }
}

/// The client side of `mysql_native_password`:
/// `SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password)))`.
pub fn native_scramble(password: &str, nonce: &[u8]) -> [u8; 20] {
    let stage1: [u8; 20] = Sha1::digest(password.as_bytes()).into();
    let stage2: [u8; 20] = Sha1::digest(stage1).into();
    let mask: [u8; 20] = Sha1::new()
        .chain_update(nonce)
        .chain_update(stage2)
        .finalize()
        .into();
    std::array::from_fn(|i| stage1[i] ^ mask[i])
}

/// The client side of caching_sha2's fast path:
/// `SHA256(password) XOR SHA256(SHA256(SHA256(password)) + nonce)`.
pub fn sha2_scramble(password: &str, nonce: &[u8]) -> [u8; 32] {
    let stage1: [u8; 32] = Sha256::digest(password.as_bytes()).into();
    let stage2: [u8; 32] = Sha256::digest(stage1).into();
    let mask: [u8; 32] = Sha256::new()
        .chain_update(stage2)
        .chain_update(nonce)
        .finalize()
        .into();
    std::array::from_fn(|i| stage1[i] ^ mask[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &[u8; 20] = b"abcdefghij0123456789";

    #[test]
    fn right_password_verifies_under_both_plugins() {
        let v = PasswordVerifier::new("s3cret!");
        let native = native_scramble("s3cret!", NONCE);
        let sha2 = sha2_scramble("s3cret!", NONCE);
        assert!(v.verify(Some(b"mysql_native_password"), NONCE, &native));
        assert!(v.verify(None, NONCE, &native));
        assert!(v.verify(Some(b"caching_sha2_password"), NONCE, &sha2));
    }

    #[test]
    fn wrong_password_nonce_length_or_plugin_fails() {
        let v = PasswordVerifier::new("s3cret!");
        assert!(!v.verify(None, NONCE, &native_scramble("other", NONCE)));
        assert!(!v.verify(
            None,
            b"another nonce 123456",
            &native_scramble("s3cret!", NONCE)
        ));
        assert!(!v.verify(Some(b"caching_sha2_password"), NONCE, &[]));
        assert!(!v.verify(Some(b"caching_sha2_password"), NONCE, &[0u8; 31]));
        assert!(!v.verify(Some(b"mysql_clear_password"), NONCE, b"s3cret!\0"));
    }

    #[test]
    fn debug_never_shows_hashes() {
        assert_eq!(
            format!("{:?}", PasswordVerifier::new("x")),
            "PasswordVerifier(<redacted>)"
        );
    }
}
