//! EC2 `DescribeInstances` (EC2's Query dialect: lists as `<item>`, lower-camel element names,
//! errors as `<Response><Errors>`).
//!
//! <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeInstances.html>

use http::StatusCode;

use super::query::{Params, Xml, timestamp};
use super::world::{CREATED_EPOCH_SECS, Ec2Instance, digest_hex};
use super::{Ctx, Fault};

/// Whether `action` is one the mock routes to EC2 when a request carries no signature.
pub(super) fn is_ec2_action(action: &str) -> bool {
    action.starts_with("DescribeInstance")
}

/// Runs `action`; the XML inside `<ActionResponse>`.
pub(super) fn call(ctx: &Ctx<'_>, action: &str, params: &Params) -> Result<String, Fault> {
    match action {
        "DescribeInstances" => describe_instances(ctx, params),
        other => Err(ctx.unknown_operation(other)),
    }
}

/// One `Filter.N`: a name and the values any of which may match.
struct Filter<'a> {
    name: &'a str,
    values: Vec<&'a str>,
}

impl Filter<'_> {
    fn matches(&self, i: &Ec2Instance) -> bool {
        let any = |text: &str| self.values.iter().any(|p| glob(p, text));
        match self.name {
            "instance-id" => any(&i.id),
            "instance-state-name" => any(&i.state),
            "tag-key" => i.tags.keys().any(|k| any(k)),
            name => match name.strip_prefix("tag:") {
                Some(key) => i.tags.get(key).is_some_and(|v| any(v)),
                None => false,
            },
        }
    }
}

fn describe_instances(ctx: &Ctx<'_>, params: &Params) -> Result<String, Fault> {
    let w = ctx.world;
    ctx.check("DescribeInstances", None)?;
    if params
        .get("DryRun")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Err(Fault::new(
            StatusCode::PRECONDITION_FAILED,
            "DryRunOperation",
            "Request would have succeeded, but DryRun flag is set.",
        ));
    }
    let ids = params.list("InstanceId");
    if let Some(bad) = ids.iter().find(|id| {
        !id.strip_prefix("i-")
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
    }) {
        return Err(Fault::bad_request(
            "InvalidInstanceID.Malformed",
            format!("Invalid id: \"{bad}\""),
        ));
    }
    let missing: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| w.ec2_instance(id).is_none())
        .collect();
    match missing[..] {
        [] => {}
        [one] => {
            return Err(Fault::bad_request(
                "InvalidInstanceID.NotFound",
                format!("The instance ID '{one}' does not exist"),
            ));
        }
        _ => {
            return Err(Fault::bad_request(
                "InvalidInstanceID.NotFound",
                format!("The instance IDs '{}' do not exist", missing.join(", ")),
            ));
        }
    }
    let mut filters = Vec::new();
    for n in params.indices("Filter") {
        let name = params.get(&format!("Filter.{n}.Name")).unwrap_or_default();
        let known = matches!(name, "instance-id" | "instance-state-name" | "tag-key")
            || name.strip_prefix("tag:").is_some_and(|k| !k.is_empty());
        if !known {
            return Err(Fault::bad_request(
                "InvalidParameterValue",
                format!("The filter '{name}' is invalid"),
            ));
        }
        let values = params.list(&format!("Filter.{n}.Value"));
        if values.is_empty() {
            return Err(Fault::bad_request(
                "InvalidParameterValue",
                format!("The filter '{name}' has no values"),
            ));
        }
        filters.push(Filter { name, values });
    }
    let selected = w.ec2_instances.iter().filter(|i| {
        (ids.is_empty() || ids.contains(&i.id.as_str())) && filters.iter().all(|f| f.matches(i))
    });
    let mut x = Xml::default();
    x.open("reservationSet");
    for i in selected {
        let reservation = format!("r-{}", &digest_hex(&["reservation", &i.id])[..17]);
        x.open("item")
            .leaf("reservationId", reservation)
            .leaf("ownerId", &w.account)
            .open("groupSet")
            .close("groupSet")
            .open("instancesSet")
            .open("item")
            .leaf("instanceId", &i.id)
            .leaf("imageId", "ami-0123456789abcdef0")
            .open("instanceState")
            .leaf("code", i.state_code())
            .leaf("name", &i.state)
            .close("instanceState")
            .leaf("instanceType", "t4g.nano")
            .leaf("launchTime", timestamp(CREATED_EPOCH_SECS))
            .open("placement")
            .leaf("availabilityZone", format!("{}a", w.region))
            .close("placement")
            .open("tagSet");
        for (key, value) in &i.tags {
            x.open("item")
                .leaf("key", key)
                .leaf("value", value)
                .close("item");
        }
        x.close("tagSet")
            .close("item")
            .close("instancesSet")
            .close("item");
    }
    x.close("reservationSet");
    Ok(x.into_string())
}

/// EC2 filter wildcards: `*` any run, `?` any one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was and which text position it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn wildcards() {
        for (p, t, want) in [
            ("bastion", "bastion", true),
            ("bast*", "bastion", true),
            ("*ion", "bastion", true),
            ("b?stion", "bastion", true),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("b*n*n", "bastion", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("?", "", false),
        ] {
            assert_eq!(glob(p, t), want, "{p:?} vs {t:?}");
        }
        // Many stars against a long text stays cheap (no exponential backtracking).
        let text = "a".repeat(10_000);
        assert!(!glob(&format!("{}b", "*a".repeat(500)), &text));
    }
}
