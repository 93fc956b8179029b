//! STS `GetCallerIdentity` (Query protocol).
//!
//! <https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html>

use super::query::{Params, Xml};
use super::{Ctx, Fault};

/// Runs `action`; the XML inside `<ActionResult>`.
pub(super) fn call(ctx: &Ctx<'_>, action: &str, _params: &Params) -> Result<String, Fault> {
    match action {
        "GetCallerIdentity" => {
            // AWS never denies GetCallerIdentity; the mock does when told to, for tests of the
            // error path.
            ctx.check("GetCallerIdentity", Some("*"))?;
            let w = ctx.world;
            let mut x = Xml::default();
            x.leaf("Arn", w.caller_arn())
                .leaf("UserId", w.caller_user_id())
                .leaf("Account", &w.account);
            Ok(x.into_string())
        }
        other => Err(ctx.unknown_operation(other)),
    }
}
