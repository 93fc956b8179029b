//! ECS `ListTasks` and `DescribeTasks` (awsJson1_1, `X-Amz-Target:
//! AmazonEC2ContainerServiceV20141113.<Operation>`).
//!
//! <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ListTasks.html>,
//! <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeTasks.html>

use serde_json::{Map, Value, json};

use super::json::opt_str;
use super::world::{CREATED_EPOCH_SECS, EcsCluster, EcsTask, RUNNING, STOPPED, digest_hex};
use super::{AwsWorld, Ctx, Fault};

/// Most tasks one DescribeTasks may name (the API's limit).
const MAX_DESCRIBE: usize = 100;

/// Runs `operation`.
pub(super) fn call(
    ctx: &Ctx<'_>,
    operation: &str,
    input: &Map<String, Value>,
) -> Result<Value, Fault> {
    match operation {
        "ListTasks" => list_tasks(ctx, input),
        "DescribeTasks" => describe_tasks(ctx, input),
        other => Err(ctx.unknown_operation(other)),
    }
}

fn invalid(message: impl Into<String>) -> Fault {
    Fault::bad_request("InvalidParameterException", message)
}

/// A string member, or InvalidParameterException when it has another type.
fn string<'a>(input: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, Fault> {
    opt_str(input, name).map_err(|()| invalid(format!("{name} must be a string.")))
}

/// The cluster named by `cluster` (`default` when absent), with its name.
fn cluster<'w>(
    w: &'w AwsWorld,
    input: &Map<String, Value>,
) -> Result<(&'w str, &'w EcsCluster), Fault> {
    let wanted = string(input, "cluster")?.unwrap_or("default");
    w.ecs_cluster(wanted)
        .ok_or_else(|| Fault::bad_request("ClusterNotFoundException", "Cluster not found."))
}

fn list_tasks(ctx: &Ctx<'_>, input: &Map<String, Value>) -> Result<Value, Fault> {
    let w = ctx.world;
    ctx.check("ListTasks", Some("*"))?;
    for unsupported in ["containerInstance", "family", "startedBy", "launchType"] {
        if input.get(unsupported).is_some_and(|v| !v.is_null()) {
            return Err(invalid(format!(
                "the simulator does not filter ListTasks by {unsupported}; use serviceName"
            )));
        }
    }
    let (cluster, found) = cluster(w, input)?;
    let desired = string(input, "desiredStatus")?.unwrap_or(RUNNING);
    if !matches!(desired, "RUNNING" | "PENDING" | "STOPPED") {
        return Err(invalid(format!(
            "desiredStatus {desired:?} is not one of RUNNING, PENDING, STOPPED."
        )));
    }
    let services = &found.services;
    let tasks: Vec<&EcsTask> = match string(input, "serviceName")? {
        Some(name) => {
            let name = name.rsplit('/').next().unwrap_or(name);
            services
                .get(name)
                .ok_or_else(|| {
                    Fault::bad_request("ServiceNotFoundException", "Service not found.")
                })?
                .tasks
                .iter()
                .collect()
        }
        None => services.values().flat_map(|s| s.tasks.iter()).collect(),
    };
    let arns: Vec<String> = tasks
        .into_iter()
        .filter(|t| t.desired_status == desired)
        .map(|t| w.ecs_task_arn(cluster, &t.id))
        .collect();
    Ok(json!({ "taskArns": arns }))
}

fn describe_tasks(ctx: &Ctx<'_>, input: &Map<String, Value>) -> Result<Value, Fault> {
    let w = ctx.world;
    let wanted: Vec<&str> = match input.get("tasks") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or_else(|| invalid("tasks must be strings.")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("tasks must be a list of strings.")),
    };
    let cluster_name = string(input, "cluster")?.unwrap_or("default");
    let first = wanted
        .first()
        .map(|t| w.ecs_task_arn(cluster_name, t.rsplit('/').next().unwrap_or(t)));
    ctx.check("DescribeTasks", Some(first.as_deref().unwrap_or("*")))?;
    if wanted.is_empty() {
        return Err(invalid("Tasks cannot be empty."));
    }
    if wanted.len() > MAX_DESCRIBE {
        return Err(invalid(format!(
            "Too many tasks were provided ({}); at most {MAX_DESCRIBE} are allowed.",
            wanted.len()
        )));
    }
    let (cluster, _) = cluster(w, input)?;
    let mut tasks = Vec::new();
    let mut failures = Vec::new();
    for id in wanted {
        match w.ecs_task(cluster, id) {
            Some((service, task)) => tasks.push(task_json(w, cluster, service, task)),
            None => failures.push(json!({
                "arn": w.ecs_task_arn(cluster, id.rsplit('/').next().unwrap_or(id)),
                "reason": "MISSING",
            })),
        }
    }
    Ok(json!({ "tasks": tasks, "failures": failures }))
}

/// One task as DescribeTasks shows it on Fargate.
fn task_json(w: &AwsWorld, cluster: &str, service: &str, t: &EcsTask) -> Value {
    let task_arn = w.ecs_task_arn(cluster, &t.id);
    let started = CREATED_EPOCH_SECS + 30;
    let containers: Vec<Value> = t
        .containers
        .iter()
        .map(|c| {
            let h = digest_hex(&["container", &t.id, &c.name]);
            json!({
                "containerArn": format!(
                    "arn:aws:ecs:{}:{}:container/{cluster}/{}/{}-{}-{}-{}-{}",
                    w.region, w.account, t.id,
                    &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]
                ),
                "taskArn": task_arn,
                "name": c.name,
                "image": format!("{}.dkr.ecr.{}.amazonaws.com/{}:latest", w.account, w.region, c.name),
                "runtimeId": c.runtime_id,
                "lastStatus": c.last_status,
                "networkInterfaces": [],
                "healthStatus": "UNKNOWN",
                "managedAgents": c.managed_agents.iter().map(|a| json!({
                    "lastStartedAt": started,
                    "name": a.name,
                    "lastStatus": a.last_status,
                })).collect::<Vec<_>>(),
                "cpu": "0",
            })
        })
        .collect();
    let mut task = json!({
        "attachments": [],
        "attributes": [{"name": "ecs.cpu-architecture", "value": "arm64"}],
        "availabilityZone": format!("{}a", w.region),
        "clusterArn": w.ecs_cluster_arn(cluster),
        "connectivity": "CONNECTED",
        "connectivityAt": CREATED_EPOCH_SECS,
        "containers": containers,
        "cpu": "256",
        "createdAt": CREATED_EPOCH_SECS,
        "desiredStatus": t.desired_status,
        "enableExecuteCommand": t.enable_execute_command,
        "group": format!("service:{service}"),
        "healthStatus": "UNKNOWN",
        "lastStatus": t.last_status,
        "launchType": "FARGATE",
        "memory": "512",
        "platformVersion": "1.4.0",
        "platformFamily": "Linux",
        "startedAt": started,
        "startedBy": format!("ecs-svc/{}", &digest_hex(&["service", cluster, service])[..19]),
        "tags": [],
        "taskArn": task_arn,
        "taskDefinitionArn": format!(
            "arn:aws:ecs:{}:{}:task-definition/{service}:1", w.region, w.account
        ),
        "version": if t.last_status == STOPPED { 4 } else { 2 },
    });
    if t.last_status == STOPPED {
        task["stopCode"] = json!("UserInitiated");
        task["stoppedAt"] = json!(started + 60);
        task["stoppingAt"] = json!(started + 30);
    }
    if let Some(reason) = &t.stopped_reason {
        task["stoppedReason"] = json!(reason);
    }
    task
}
