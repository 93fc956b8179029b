//! Secret values that arrive as text (flags, environment variables, configuration files), such as
//! `--local-password`. [`Secret`]'s `Debug` and `Display` print a mask, so a secret stays hidden in
//! `{:?}` of the whole parsed command line or configuration, in error chains and in log fields;
//! the value itself is reached only through [`Secret::expose`], which marks each place that needs
//! it.
//!
//! IAM tokens have their own type ([`crate::iam::AuthToken`]) and AWS credentials are masked by
//! `aws-credential-types`; this module is for the secrets a user types.

use std::fmt;
use std::str::FromStr;

/// What `Debug` and `Display` print instead of the value.
pub const MASK: &str = "<redacted>";

/// A secret string that never prints itself.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must use it (deriving a verifier, sending it).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True for an empty value (an empty flag or variable means "not set").
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({MASK})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(s))
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_print_the_mask_only() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(
            format!("{:#?}", Some(&s)),
            "Some(\n    Secret(<redacted>),\n)"
        );
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn parses_from_text_and_deserializes_transparently() {
        let s: Secret = "p@ss".parse().unwrap();
        assert_eq!(s.expose(), "p@ss");
        let s: Secret = serde_json::from_str("\"from-a-file\"").unwrap();
        assert_eq!(s.expose(), "from-a-file");
        assert!(Secret::default().is_empty());
    }
}
