//! Database credentials from AWS Secrets Manager (`secretsmanager:GetSecretValue`), for
//! `rds-iam-proxy admin` (the master secret) and `--secret` (upstream logins with a password). The
//! secret is the one RDS manages for a cluster or instance created with `ManageMasterUserPassword`
//! (the stack's `DbMasterSecretArn` output, the cluster's `MasterUserSecret`) or any secret of the
//! same shape: its `SecretString` is a JSON object with `username` and `password`.
//!
//! [`Error`]'s `Display` is worded for `admin`; [`Error::for_secret_flag`] words the same failure
//! for `--secret` (which identity lacks which permission on which secret).
//!
//! The password only ever lives in a [`Secret`]; no error here quotes the secret's text (a JSON
//! parse error could, so the text is read field by field instead).

use super::api::{self, Api, SECRETS_MANAGER};
use crate::secret::Secret;

/// The master user name and password.
#[derive(Debug, Clone)]
pub struct MasterCredentials {
    /// `username`.
    pub username: String,
    /// `password`.
    pub password: Secret,
}

/// Why the master credentials could not be read, worded as the fix.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The identity may not read the secret, or may not decrypt it.
    #[error(
        "secretsmanager:GetSecretValue on {arn} was refused: {message}. Reading the master secret \
         needs `secretsmanager:GetSecretValue` on it{kms}: attach the stack's AdminPolicyArn policy \
         (deploy/README.md) or ask your AWS administrator"
    )]
    Denied {
        /// The secret.
        arn: String,
        /// AWS's words.
        message: String,
        /// The KMS part of the fix, when KMS was named.
        kms: &'static str,
    },
    /// No such secret.
    #[error(
        "secretsmanager:GetSecretValue: there is no secret {arn} in {region} ({message}): check \
         --master-secret, or the stack's DbMasterSecretArn output and --region"
    )]
    NotFound {
        /// The secret.
        arn: String,
        /// The region asked.
        region: String,
        /// AWS's words.
        message: String,
    },
    /// Any other failed call (the text names the call and AWS's error).
    #[error(transparent)]
    Api(api::Error),
    /// The secret is not the JSON RDS writes.
    #[error(
        "the secret {arn} is not an RDS master secret: {what} (expected a SecretString with the \
         JSON fields \"username\" and \"password\")"
    )]
    NotMasterSecret {
        /// The secret.
        arn: String,
        /// What is missing or wrong (never its content).
        what: &'static str,
    },
}

/// The fix for a KMS refusal: the secret is encrypted with a customer managed key.
const KMS_FIX: &str = " and `kms:Decrypt` on the KMS key that encrypts it (the stack's key)";

impl Error {
    /// The failure worded for `--secret` (serving, `doctor`, `exec`): which identity (when known)
    /// lacks which permission on which secret, `kms:Decrypt` when the secret's customer managed
    /// KMS key is the cause (and as a possibility otherwise), and the flag to change. Never the
    /// secret's content.
    pub fn for_secret_flag(&self, identity: Option<&str>) -> String {
        match self {
            Error::Denied { arn, message, kms } => {
                let who = identity.map_or_else(
                    || "the AWS identity the proxy runs as".to_owned(),
                    |i| format!("the AWS identity {i}"),
                );
                // Fix first: MySQL clients cut error messages at 512 bytes.
                let kms_fix = if kms.is_empty() {
                    " (and `kms:Decrypt` on its KMS key if that is a customer managed key)"
                } else {
                    " and `kms:Decrypt` on the customer managed KMS key that encrypts it"
                };
                format!(
                    "{who} may not read Secrets Manager secret {arn}: allow it \
                     `secretsmanager:GetSecretValue` on that secret{kms_fix} (an IAM policy, or \
                     the secret's resource policy), or name another secret with --secret. AWS \
                     said: {message}"
                )
            }
            Error::NotFound {
                arn,
                region,
                message,
            } => format!(
                "secretsmanager:GetSecretValue: there is no secret {arn} in {region} ({message}): \
                 check --secret (a full ARN carries its region; a name is looked up in {region})"
            ),
            other => other.to_string(),
        }
    }
}

/// The region in a Secrets Manager ARN (`arn:aws:secretsmanager:REGION:…`); `None` for a name.
pub fn region_of(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("secretsmanager"), Some(region)) if !region.is_empty() => {
            Some(region)
        }
        _ => None,
    }
}

/// `secretsmanager:GetSecretValue` for `arn`, read as RDS master credentials.
pub async fn master_credentials(api: &Api, arn: &str) -> Result<MasterCredentials, Error> {
    let answer = api
        .json(
            SECRETS_MANAGER,
            "GetSecretValue",
            &serde_json::json!({ "SecretId": arn }),
        )
        .await
        .map_err(|e| classify(e, arn, api.region()))?;
    parse(&answer, arn)
}

fn classify(e: api::Error, arn: &str, region: &str) -> Error {
    let api::Error::Api { code, message, .. } = &e else {
        return Error::Api(e);
    };
    let kms_named = message.contains("KMS") || message.contains("kms:");
    match code.as_str() {
        "ResourceNotFoundException" => Error::NotFound {
            arn: arn.to_owned(),
            region: region.to_owned(),
            message: message.clone(),
        },
        "DecryptionFailure" => Error::Denied {
            arn: arn.to_owned(),
            message: message.clone(),
            kms: KMS_FIX,
        },
        _ if e.is_access_denied() => Error::Denied {
            arn: arn.to_owned(),
            message: message.clone(),
            kms: if kms_named { KMS_FIX } else { "" },
        },
        _ => Error::Api(e),
    }
}

/// The credentials out of a GetSecretValue answer.
fn parse(answer: &serde_json::Value, arn: &str) -> Result<MasterCredentials, Error> {
    let bad = |what| Error::NotMasterSecret {
        arn: arn.to_owned(),
        what,
    };
    let text = answer
        .get("SecretString")
        .and_then(|s| s.as_str())
        .ok_or_else(|| bad("it has no SecretString"))?;
    let fields: serde_json::Value =
        serde_json::from_str(text).map_err(|_| bad("its SecretString is not JSON"))?;
    let field = |name| fields.get(name).and_then(|v| v.as_str());
    let username = field("username")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| bad("its JSON has no string \"username\""))?;
    let password = field("password").ok_or_else(|| bad("its JSON has no string \"password\""))?;
    Ok(MasterCredentials {
        username: username.to_owned(),
        password: Secret::new(password),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!cluster-1-AbCdEf";

    #[test]
    fn reads_the_rds_secret_shape() {
        let c = parse(
            &json!({"ARN": ARN, "SecretString": "{\"username\":\"admin\",\"password\":\"pw'\\\"x\"}"}),
            ARN,
        )
        .unwrap();
        assert_eq!(c.username, "admin");
        assert_eq!(c.password.expose(), "pw'\"x");
        assert!(!format!("{c:?}").contains("pw'"));
    }

    #[test]
    fn wrong_shapes_say_what_is_missing_without_the_content() {
        for (answer, what) in [
            (json!({"SecretBinary": "AAAA"}), "no SecretString"),
            (json!({"SecretString": "hunter2"}), "not JSON"),
            (
                json!({"SecretString": "{\"password\":\"hunter2\"}"}),
                "\"username\"",
            ),
            (
                json!({"SecretString": "{\"username\":\"a\",\"password\":7}"}),
                "\"password\"",
            ),
        ] {
            let e = parse(&answer, ARN).unwrap_err().to_string();
            assert!(e.contains(what) && e.contains(ARN), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn refusals_name_the_permission_and_kms_when_it_is_the_cause() {
        let api_error = |code: &str, message: &str| api::Error::Api {
            call: "secretsmanager:GetSecretValue".into(),
            status: 400,
            code: code.into(),
            message: message.into(),
        };
        let e = classify(
            api_error("AccessDeniedException", "User: x is not authorized"),
            ARN,
            "eu-west-1",
        )
        .to_string();
        assert!(
            e.contains("`secretsmanager:GetSecretValue`") && !e.contains("kms:Decrypt"),
            "{e}"
        );
        assert!(e.contains("AdminPolicyArn"), "{e}");
        let e = classify(
            api_error("AccessDeniedException", "Access to KMS is not allowed"),
            ARN,
            "eu-west-1",
        )
        .to_string();
        assert!(e.contains("`kms:Decrypt`"), "{e}");
        let e = classify(api_error("DecryptionFailure", "x"), ARN, "eu-west-1").to_string();
        assert!(e.contains("`kms:Decrypt`"), "{e}");
        let e = classify(
            api_error("ResourceNotFoundException", "Secrets Manager can't find it"),
            ARN,
            "eu-west-1",
        )
        .to_string();
        assert!(
            e.contains("no secret") && e.contains("--master-secret"),
            "{e}"
        );
        let e = classify(api_error("InternalServiceError", "boom"), ARN, "eu-west-1").to_string();
        assert!(
            e.contains("secretsmanager:GetSecretValue failed: InternalServiceError"),
            "{e}"
        );
    }

    /// The `--secret` wording names the identity, the permission on that ARN, KMS (as the cause or
    /// as a possibility) and --secret, never the admin policy.
    #[test]
    fn secret_flag_wording_names_identity_permission_and_kms() {
        let denied = |kms| Error::Denied {
            arn: ARN.into(),
            message: "User: x is not authorized".into(),
            kms,
        };
        let who = "arn:aws:sts::123456789012:assumed-role/dev/alice";
        let e = denied("").for_secret_flag(Some(who));
        assert!(
            e.contains(&format!(
                "the AWS identity {who} may not read Secrets Manager secret {ARN}: allow it \
                 `secretsmanager:GetSecretValue` on that secret (and `kms:Decrypt` on its KMS key \
                 if that is a customer managed key)"
            )) && e.contains("--secret")
                && !e.contains("AdminPolicyArn"),
            "{e}"
        );
        let e = denied(KMS_FIX).for_secret_flag(None);
        assert!(
            e.contains("the AWS identity the proxy runs as")
                && e.contains("and `kms:Decrypt` on the customer managed KMS key that encrypts it")
                && !e.contains("if that is"),
            "{e}"
        );
        let e = Error::NotFound {
            arn: "nope".into(),
            region: "eu-west-1".into(),
            message: "can't find it".into(),
        }
        .for_secret_flag(None);
        assert!(
            e.contains("no secret nope in eu-west-1")
                && e.contains("check --secret")
                && !e.contains("--master-secret"),
            "{e}"
        );
        assert_eq!(region_of(ARN), Some("eu-west-1"));
        assert_eq!(region_of("rds!cluster-1"), None);
    }
}
