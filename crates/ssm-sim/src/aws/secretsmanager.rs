//! Secrets Manager `GetSecretValue` (awsJson1_1, `X-Amz-Target: secretsmanager.<Operation>`).
//! Only the `AWSCURRENT` version of each secret exists.
//!
//! <https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html>

use serde_json::{Map, Value, json};

use super::json::opt_str;
use super::world::{CREATED_EPOCH_SECS, digest_hex};
use super::{Ctx, Fault};

/// The staging label of the current version.
const AWSCURRENT: &str = "AWSCURRENT";

/// Runs `operation`.
pub(super) fn call(
    ctx: &Ctx<'_>,
    operation: &str,
    input: &Map<String, Value>,
) -> Result<Value, Fault> {
    match operation {
        "GetSecretValue" => get_secret_value(ctx, input),
        other => Err(ctx.unknown_operation(other)),
    }
}

fn string<'a>(input: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, Fault> {
    opt_str(input, name).map_err(|()| {
        Fault::bad_request(
            "InvalidParameterException",
            format!("{name} must be a string."),
        )
    })
}

fn not_found(message: String) -> Fault {
    Fault::bad_request("ResourceNotFoundException", message)
}

fn get_secret_value(ctx: &Ctx<'_>, input: &Map<String, Value>) -> Result<Value, Fault> {
    let w = ctx.world;
    let Some(secret_id) = string(input, "SecretId")?.filter(|s| !s.is_empty()) else {
        return Err(Fault::bad_request(
            "InvalidParameterException",
            "You must provide a value for the SecretId parameter.",
        ));
    };
    let secret = w.secret(secret_id);
    ctx.check(
        "GetSecretValue",
        Some(secret.map_or(secret_id, |s| s.arn.as_str())),
    )?;
    let secret = secret
        .ok_or_else(|| not_found("Secrets Manager can't find the specified secret.".into()))?;
    let h = digest_hex(&["secret-version", &secret.arn]);
    let version_id = format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    if let Some(v) = string(input, "VersionId")?
        && v != version_id
    {
        return Err(not_found(format!(
            "Secrets Manager can't find the specified secret value for VersionId: {v}"
        )));
    }
    if let Some(stage) = string(input, "VersionStage")?
        && stage != AWSCURRENT
    {
        return Err(not_found(format!(
            "Secrets Manager can't find the specified secret value for staging label: {stage}"
        )));
    }
    Ok(json!({
        "ARN": secret.arn,
        "Name": secret.name,
        "VersionId": version_id,
        "SecretString": secret.secret_string.0,
        "VersionStages": [AWSCURRENT],
        "CreatedDate": CREATED_EPOCH_SECS,
    }))
}
