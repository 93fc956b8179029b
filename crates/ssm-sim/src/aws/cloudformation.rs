//! CloudFormation `DescribeStacks` (Query protocol, lists as `<member>`).
//!
//! <https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_DescribeStacks.html>

use super::query::{Params, Xml, timestamp};
use super::world::CREATED_EPOCH_SECS;
use super::{Ctx, Fault};

/// Runs `action`; the XML inside `<ActionResult>`.
pub(super) fn call(ctx: &Ctx<'_>, action: &str, params: &Params) -> Result<String, Fault> {
    match action {
        "DescribeStacks" => describe_stacks(ctx, params),
        other => Err(ctx.unknown_operation(other)),
    }
}

fn describe_stacks(ctx: &Ctx<'_>, params: &Params) -> Result<String, Fault> {
    let w = ctx.world;
    let wanted = params.non_empty("StackName");
    let resource = format!(
        "arn:aws:cloudformation:{}:{}:stack/{}/*",
        w.region,
        w.account,
        wanted.unwrap_or("*")
    );
    ctx.check("DescribeStacks", Some(&resource))?;
    let stacks: Vec<(&str, &super::Stack)> = match wanted {
        Some(name) => vec![w.stack(name).ok_or_else(|| {
            Fault::bad_request(
                "ValidationError",
                format!("Stack with id {name} does not exist"),
            )
        })?],
        None => w
            .stacks
            .iter()
            .filter(|(_, s)| s.status != "DELETE_COMPLETE")
            .map(|(n, s)| (n.as_str(), s))
            .collect(),
    };
    let mut x = Xml::default();
    x.open("Stacks");
    for (name, stack) in stacks {
        x.open("member")
            .leaf("StackId", w.stack_id(name))
            .leaf("StackName", name)
            .leaf_opt("Description", stack.description.as_deref())
            .leaf("CreationTime", timestamp(CREATED_EPOCH_SECS))
            .leaf("StackStatus", &stack.status)
            .leaf("DisableRollback", false)
            .open("NotificationARNs")
            .close("NotificationARNs")
            .open("Outputs");
        for (key, value) in &stack.outputs {
            x.open("member")
                .leaf("OutputKey", key)
                .leaf("OutputValue", value)
                .close("member");
        }
        x.close("Outputs")
            .open("Tags")
            .close("Tags")
            .leaf("EnableTerminationProtection", false)
            .open("DriftInformation")
            .leaf("StackDriftStatus", "NOT_CHECKED")
            .close("DriftInformation")
            .close("member");
    }
    x.close("Stacks");
    Ok(x.into_string())
}
