//! From what a person names (a stack, a DB cluster or instance, an ECS service, an EC2 tag) to what
//! the proxy needs: the endpoint the token is signed for, the port, the IAM database user, the
//! region, and the SSM target of the bastion.
//!
//! - [`describe_stack`]: `cloudformation:DescribeStacks`, outputs keyed as in [`super::stack`].
//! - [`db_cluster`] / [`db_instance`]: `rds:DescribeDBClusters` / `rds:DescribeDBInstances`; a
//!   database without IAM database authentication is refused with the command that enables it.
//! - [`ecs_target`]: `ecs:ListTasks` + `ecs:DescribeTasks` → `ecs:<cluster>_<taskId>_<runtimeId>`
//!   of a RUNNING task whose `ExecuteCommandAgent` is RUNNING. [`TargetSpec::resolve`] runs it
//!   again before every new SSM session (`launch` hands it to the session pool), so a replaced
//!   task is followed.
//! - [`instance_by_tag`]: `ec2:DescribeInstances` with `tag:KEY` and `instance-state-name`.
//! - [`caller_identity`]: `sts:GetCallerIdentity`, for `doctor`.
//! - [`resolve`]: all of the above for one [`Source`].

use std::collections::BTreeMap;

use serde_json::json;

use super::api::{self, Api, CLOUDFORMATION, EC2, ECS, RDS, STS, Xml};
use super::stack;

/// A discovery failure, worded as the fix.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An AWS call failed (the text names the call, the AWS error and, for a denial, the
    /// permission).
    #[error(transparent)]
    Api(#[from] api::Error),
    /// The stack does not exist in the region.
    #[error(
        "CloudFormation stack `{name}` does not exist in {region}: deploy it with `aws \
         cloudformation deploy --template-file deploy/secure-db-connection.yaml --stack-name \
         {name} --capabilities CAPABILITY_IAM`, or name another with --stack / --region"
    )]
    StackNotFound {
        /// Stack name.
        name: String,
        /// Region searched.
        region: String,
    },
    /// The stack exists but is not in a usable state.
    #[error(
        "CloudFormation stack `{name}` is {status}: wait for it to finish, or fix and redeploy it"
    )]
    StackNotReady {
        /// Stack name.
        name: String,
        /// Its StackStatus.
        status: String,
    },
    /// The stack lacks an output this tool reads.
    #[error(
        "CloudFormation stack `{name}` has no output `{key}`: it was not deployed from this \
         repository's template (deploy/secure-db-connection.yaml) or is older; update it, or pass \
         --db-endpoint and the SSM target yourself"
    )]
    MissingOutput {
        /// Stack name.
        name: String,
        /// The missing key.
        key: &'static str,
    },
    /// An output holds a value that cannot be used.
    #[error("CloudFormation stack `{name}`: output `{key}` is `{value}`, which is not valid")]
    BadOutput {
        /// Stack name.
        name: String,
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// No such DB cluster or instance.
    #[error(
        "there is no RDS DB {kind} `{id}` in {region}: check the name (`aws rds describe-db-{kind}s`) and --region"
    )]
    DbNotFound {
        /// `cluster` or `instance`.
        kind: &'static str,
        /// Identifier.
        id: String,
        /// Region searched.
        region: String,
    },
    /// IAM database authentication is off.
    #[error(
        "IAM database authentication is disabled on RDS DB {kind} `{id}`, so no IAM token can log \
         in: enable it with `aws rds modify-db-{kind} --db-{kind}-identifier {id} \
         --enable-iam-database-authentication --apply-immediately`"
    )]
    IamAuthDisabled {
        /// `cluster` or `instance`.
        kind: &'static str,
        /// Identifier.
        id: String,
    },
    /// The ECS service has no task that can take an SSM session.
    #[error(
        "ECS service `{service}` in cluster `{cluster}` has no RUNNING task with a RUNNING \
         ExecuteCommandAgent{container_note}: start one (`aws ecs update-service --cluster \
         {cluster} --service {service} --desired-count 1`) and check that ECS Exec is enabled \
         on the service"
    )]
    NoRunningTask {
        /// ECS cluster.
        cluster: String,
        /// ECS service.
        service: String,
        /// " in container X" when a container was named.
        container_note: String,
    },
    /// The ECS cluster or service does not exist.
    #[error(
        "ECS {what} does not exist in {region}: check --ecs-cluster / --ecs-service (or the stack's outputs)"
    )]
    EcsNotFound {
        /// What was missing (`cluster X` / `service X in cluster Y`).
        what: String,
        /// Region searched.
        region: String,
    },
    /// No running EC2 instance carries the tag.
    #[error(
        "no running EC2 instance tagged {key}={value} in {region}: check --instance-tag and --region"
    )]
    NoInstance {
        /// Tag key.
        key: String,
        /// Tag value.
        value: String,
        /// Region searched.
        region: String,
    },
    /// AWS answered without a field this tool needs.
    #[error("{call}: the answer lacks {what}")]
    Incomplete {
        /// The call.
        call: &'static str,
        /// What was missing.
        what: String,
    },
}

/// Where the database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbSource {
    /// A known endpoint.
    Endpoint {
        /// Host name (signed for, verified by TLS).
        host: String,
        /// Port.
        port: u16,
    },
    /// The outputs of a CloudFormation stack of this repository's template.
    Stack(String),
    /// An Aurora DB cluster.
    Cluster(String),
    /// An RDS DB instance.
    Instance(String),
}

/// How to find the SSM target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// A fixed target (`i-…`, `mi-…`, `ecs:…`).
    Fixed(String),
    /// The current task of an ECS service.
    Ecs {
        /// ECS cluster name or ARN.
        cluster: String,
        /// ECS service name.
        service: String,
        /// Container whose runtime id completes the target (default: the first with a running
        /// ExecuteCommandAgent).
        container: Option<String>,
    },
    /// The running EC2 instance with this tag.
    InstanceTag {
        /// Tag key.
        key: String,
        /// Tag value.
        value: String,
    },
}

impl std::fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetSpec::Fixed(t) => f.write_str(t),
            TargetSpec::Ecs {
                cluster, service, ..
            } => write!(f, "ECS service {service} (cluster {cluster})"),
            TargetSpec::InstanceTag { key, value } => {
                write!(f, "EC2 instance tagged {key}={value}")
            }
        }
    }
}

/// What to discover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The database.
    pub db: DbSource,
    /// Use the cluster's reader endpoint.
    pub reader: bool,
    /// The SSM target, when given explicitly (a stack supplies its own otherwise).
    pub target: Option<TargetSpec>,
    /// Whether the bytes go directly (`--dial`), so a stack's bastion is not used.
    pub direct: bool,
    /// Whether logins use a Secrets Manager password (`--secret`) instead of IAM tokens: a
    /// database without IAM database authentication is then not refused, and the master secret
    /// of a DB instance's cluster is looked up when the instance names none.
    pub password_login: bool,
}

/// What discovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Endpoint host.
    pub host: String,
    /// Endpoint port.
    pub port: u16,
    /// The IAM database user the stack names.
    pub db_user: Option<String>,
    /// The region the stack names.
    pub region: Option<String>,
    /// The SSM target spec, if the bytes go through SSM.
    pub target: Option<TargetSpec>,
    /// The DB cluster identifier, when known (for the IAM authentication check).
    pub cluster_id: Option<String>,
    /// The master user secret (for `admin`).
    pub master_secret_arn: Option<String>,
    /// The stack's connect policy (for hints).
    pub connect_policy_arn: Option<String>,
    /// The stack's admin policy (for the hint when the master secret may not be read).
    pub admin_policy_arn: Option<String>,
    /// The engine RDS reports for the DB cluster or instance (`Engine`: `aurora-mysql`,
    /// `postgres`, ...), when looked up; `config` maps it to the proxy's engine.
    pub engine: Option<String>,
}

/// The caller's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// The ARN.
    pub arn: String,
    /// The account.
    pub account: String,
}

/// `cloudformation:DescribeStacks` for one stack: its outputs.
pub async fn describe_stack(api: &Api, name: &str) -> Result<BTreeMap<String, String>, Error> {
    let text = match api
        .query(CLOUDFORMATION, "DescribeStacks", &[("StackName", name)])
        .await
    {
        Ok(t) => t,
        Err(e)
            if e.code() == Some("ValidationError") && e.to_string().contains("does not exist") =>
        {
            return Err(Error::StackNotFound {
                name: name.to_owned(),
                region: api.region().to_owned(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let doc = xml(&text, "cloudformation:DescribeStacks")?;
    let stack = doc
        .find_all("Stacks")
        .first()
        .and_then(|s| s.child("member"))
        .ok_or_else(|| Error::StackNotFound {
            name: name.to_owned(),
            region: api.region().to_owned(),
        })?;
    let status = stack.text("StackStatus").unwrap_or_default();
    let usable = status.ends_with("_COMPLETE")
        && !status.starts_with("DELETE")
        && !status.contains("ROLLBACK_COMPLETE")
        || status == "UPDATE_ROLLBACK_COMPLETE";
    if !usable && !status.is_empty() {
        return Err(Error::StackNotReady {
            name: name.to_owned(),
            status: status.to_owned(),
        });
    }
    let mut outputs = BTreeMap::new();
    if let Some(list) = stack.child("Outputs") {
        for member in list.children("member") {
            if let (Some(k), Some(v)) = (member.text("OutputKey"), member.text("OutputValue")) {
                outputs.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    Ok(outputs)
}

/// A DB cluster as discovery needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbCluster {
    /// Writer endpoint.
    pub endpoint: String,
    /// Reader endpoint.
    pub reader_endpoint: Option<String>,
    /// Port.
    pub port: u16,
    /// IAM database authentication on.
    pub iam_auth: bool,
    /// Status (`available`, ...).
    pub status: String,
    /// The master user secret, when managed by Secrets Manager.
    pub master_secret_arn: Option<String>,
    /// RDS's `Engine` (`aurora-mysql`, `aurora-postgresql`, ...).
    pub engine: Option<String>,
}

/// `rds:DescribeDBClusters` for one cluster.
pub async fn db_cluster(api: &Api, id: &str) -> Result<DbCluster, Error> {
    const CALL: &str = "rds:DescribeDBClusters";
    let text = match api
        .query(RDS, "DescribeDBClusters", &[("DBClusterIdentifier", id)])
        .await
    {
        Ok(t) => t,
        Err(e) if e.code() == Some("DBClusterNotFoundFault") => {
            return Err(not_found("cluster", id, api));
        }
        Err(e) => return Err(e.into()),
    };
    let doc = xml(&text, CALL)?;
    let c = doc
        .find_all("DBCluster")
        .into_iter()
        .next()
        .ok_or_else(|| not_found("cluster", id, api))?;
    Ok(DbCluster {
        endpoint: required(c.text("Endpoint"), CALL, "Endpoint")?,
        reader_endpoint: c
            .text("ReaderEndpoint")
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        port: port(c.text("Port"), CALL)?,
        iam_auth: c.text("IAMDatabaseAuthenticationEnabled") == Some("true"),
        status: c.text("Status").unwrap_or_default().to_owned(),
        master_secret_arn: c.path_text("MasterUserSecret/SecretArn").map(str::to_owned),
        engine: c.text("Engine").map(str::to_owned),
    })
}

/// A DB instance as discovery needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbInstance {
    /// Endpoint address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// IAM database authentication on.
    pub iam_auth: bool,
    /// The cluster it belongs to.
    pub cluster_id: Option<String>,
    /// The master user secret, when managed by Secrets Manager.
    pub master_secret_arn: Option<String>,
    /// RDS's `Engine` (`postgres`, `mysql`, `aurora-postgresql`, ...).
    pub engine: Option<String>,
}

/// `rds:DescribeDBInstances` for one instance.
pub async fn db_instance(api: &Api, id: &str) -> Result<DbInstance, Error> {
    const CALL: &str = "rds:DescribeDBInstances";
    let text = match api
        .query(RDS, "DescribeDBInstances", &[("DBInstanceIdentifier", id)])
        .await
    {
        Ok(t) => t,
        Err(e) if e.code() == Some("DBInstanceNotFound") => {
            return Err(not_found("instance", id, api));
        }
        Err(e) => return Err(e.into()),
    };
    let doc = xml(&text, CALL)?;
    let i = doc
        .find_all("DBInstance")
        .into_iter()
        .next()
        .ok_or_else(|| not_found("instance", id, api))?;
    Ok(DbInstance {
        address: required(i.path_text("Endpoint/Address"), CALL, "Endpoint.Address")?,
        port: port(i.path_text("Endpoint/Port"), CALL)?,
        iam_auth: i.text("IAMDatabaseAuthenticationEnabled") == Some("true"),
        cluster_id: i
            .text("DBClusterIdentifier")
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        master_secret_arn: i.path_text("MasterUserSecret/SecretArn").map(str::to_owned),
        engine: i.text("Engine").map(str::to_owned),
    })
}

/// `sts:GetCallerIdentity`.
pub async fn caller_identity(api: &Api) -> Result<CallerIdentity, Error> {
    const CALL: &str = "sts:GetCallerIdentity";
    let text = api.query(STS, "GetCallerIdentity", &[]).await?;
    let doc = xml(&text, CALL)?;
    let r = doc
        .find_all("GetCallerIdentityResult")
        .into_iter()
        .next()
        .ok_or_else(|| incomplete(CALL, "GetCallerIdentityResult"))?;
    Ok(CallerIdentity {
        arn: required(r.text("Arn"), CALL, "Arn")?,
        account: r.text("Account").unwrap_or_default().to_owned(),
    })
}

/// The SSM target of the current task of an ECS service.
pub async fn ecs_target(
    api: &Api,
    cluster: &str,
    service: &str,
    container: Option<&str>,
) -> Result<String, Error> {
    let ecs_missing = |e: api::Error| match e.code() {
        Some("ClusterNotFoundException") => Error::EcsNotFound {
            what: format!("cluster `{cluster}`"),
            region: api.region().to_owned(),
        },
        Some("ServiceNotFoundException") => Error::EcsNotFound {
            what: format!("service `{service}` in cluster `{cluster}`"),
            region: api.region().to_owned(),
        },
        _ => Error::Api(e),
    };
    let list = api
        .json(
            ECS,
            "ListTasks",
            &json!({"cluster": cluster, "serviceName": service, "desiredStatus": "RUNNING"}),
        )
        .await
        .map_err(ecs_missing)?;
    let arns: Vec<&str> = list["taskArns"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let no_task = || Error::NoRunningTask {
        cluster: cluster.to_owned(),
        service: service.to_owned(),
        container_note: container
            .map(|c| format!(" in container `{c}`"))
            .unwrap_or_default(),
    };
    if arns.is_empty() {
        return Err(no_task());
    }
    let described = api
        .json(
            ECS,
            "DescribeTasks",
            &json!({"cluster": cluster, "tasks": arns}),
        )
        .await
        .map_err(ecs_missing)?;
    let cluster_name = last_segment(cluster);
    for task in described["tasks"].as_array().into_iter().flatten() {
        if task["lastStatus"] != "RUNNING" {
            continue;
        }
        let Some(task_id) = task["taskArn"].as_str().map(last_segment) else {
            continue;
        };
        for c in task["containers"].as_array().into_iter().flatten() {
            if container.is_some_and(|want| c["name"] != want) {
                continue;
            }
            let agent_running = c["managedAgents"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["name"] == "ExecuteCommandAgent" && a["lastStatus"] == "RUNNING");
            if let (true, Some(runtime)) = (agent_running, c["runtimeId"].as_str()) {
                return Ok(format!("ecs:{cluster_name}_{task_id}_{runtime}"));
            }
        }
    }
    Err(no_task())
}

/// The id of a running EC2 instance with tag `key=value` (the first by id when several match).
pub async fn instance_by_tag(api: &Api, key: &str, value: &str) -> Result<String, Error> {
    const CALL: &str = "ec2:DescribeInstances";
    let tag = format!("tag:{key}");
    let text = api
        .query(
            EC2,
            "DescribeInstances",
            &[
                ("Filter.1.Name", tag.as_str()),
                ("Filter.1.Value.1", value),
                ("Filter.2.Name", "instance-state-name"),
                ("Filter.2.Value.1", "running"),
            ],
        )
        .await?;
    let doc = xml(&text, CALL)?;
    let mut ids: Vec<String> = doc
        .find_all("instancesSet")
        .iter()
        .flat_map(|set| set.children("item"))
        .filter(|i| {
            i.path_text("instanceState/name")
                .is_none_or(|s| s == "running")
        })
        .filter_map(|i| i.text("instanceId").map(str::to_owned))
        .collect();
    ids.sort();
    ids.into_iter().next().ok_or_else(|| Error::NoInstance {
        key: key.to_owned(),
        value: value.to_owned(),
        region: api.region().to_owned(),
    })
}

impl TargetSpec {
    /// The target string now.
    pub async fn resolve(&self, api: &Api) -> Result<String, Error> {
        match self {
            TargetSpec::Fixed(t) => Ok(t.clone()),
            TargetSpec::Ecs {
                cluster,
                service,
                container,
            } => ecs_target(api, cluster, service, container.as_deref()).await,
            TargetSpec::InstanceTag { key, value } => instance_by_tag(api, key, value).await,
        }
    }
}

/// Runs discovery for `source`.
pub async fn resolve(api: &Api, source: &Source) -> Result<Resolved, Error> {
    let mut out = Resolved {
        target: source.target.clone(),
        ..Resolved::default()
    };
    match &source.db {
        DbSource::Endpoint { host, port } => {
            out.host = host.clone();
            out.port = *port;
        }
        DbSource::Stack(name) => {
            let outputs = describe_stack(api, name).await?;
            let get = |key: &'static str| {
                outputs
                    .get(key)
                    .filter(|v| !v.is_empty())
                    .cloned()
                    .ok_or_else(|| Error::MissingOutput {
                        name: name.clone(),
                        key,
                    })
            };
            let endpoint_key = if source.reader {
                stack::DB_READER_ENDPOINT
            } else {
                stack::DB_ENDPOINT
            };
            out.host = get(endpoint_key)?;
            let port_text = get(stack::DB_PORT)?;
            out.port = port_text.parse().map_err(|_| Error::BadOutput {
                name: name.clone(),
                key: stack::DB_PORT,
                value: port_text.clone(),
            })?;
            out.db_user = get(stack::DB_USER).ok();
            out.region = get(stack::REGION).ok();
            out.cluster_id = get(stack::DB_CLUSTER_IDENTIFIER).ok();
            out.master_secret_arn = get(stack::DB_MASTER_SECRET_ARN).ok();
            out.connect_policy_arn = get(stack::CONNECT_POLICY_ARN).ok();
            out.admin_policy_arn = get(stack::ADMIN_POLICY_ARN).ok();
            if out.target.is_none() && !source.direct {
                out.target = Some(TargetSpec::Ecs {
                    cluster: get(stack::ECS_CLUSTER)?,
                    service: get(stack::ECS_SERVICE)?,
                    container: get(stack::ECS_CONTAINER).ok(),
                });
            }
        }
        DbSource::Cluster(id) => {
            let c = db_cluster(api, id).await?;
            if !c.iam_auth && !source.password_login {
                return Err(Error::IamAuthDisabled {
                    kind: "cluster",
                    id: id.clone(),
                });
            }
            out.host = if source.reader {
                c.reader_endpoint.clone().unwrap_or(c.endpoint.clone())
            } else {
                c.endpoint.clone()
            };
            out.port = c.port;
            out.engine = c.engine;
            out.cluster_id = Some(id.clone());
            out.master_secret_arn = c.master_secret_arn;
        }
        DbSource::Instance(id) => {
            let i = db_instance(api, id).await?;
            if !i.iam_auth && !source.password_login {
                return Err(Error::IamAuthDisabled {
                    kind: "instance",
                    id: id.clone(),
                });
            }
            out.host = i.address;
            out.port = i.port;
            out.engine = i.engine;
            out.master_secret_arn = i.master_secret_arn;
            // An Aurora instance's master secret belongs to its cluster.
            if out.master_secret_arn.is_none()
                && source.password_login
                && let Some(cluster) = &i.cluster_id
            {
                out.master_secret_arn = db_cluster(api, cluster).await?.master_secret_arn;
            }
            out.cluster_id = i.cluster_id;
        }
    }
    Ok(out)
}

/// Checks IAM database authentication on the cluster behind `resolved`, when one is known.
pub async fn check_iam_auth(api: &Api, cluster_id: &str) -> Result<DbCluster, Error> {
    let c = db_cluster(api, cluster_id).await?;
    if !c.iam_auth {
        return Err(Error::IamAuthDisabled {
            kind: "cluster",
            id: cluster_id.to_owned(),
        });
    }
    Ok(c)
}

fn xml<'i>(text: &'i str, call: &'static str) -> Result<Xml<'i>, Error> {
    Xml::parse(text).map_err(|e| incomplete(call, format!("valid XML ({e})")))
}

fn incomplete(call: &'static str, what: impl Into<String>) -> Error {
    Error::Incomplete {
        call,
        what: what.into(),
    }
}

fn required(v: Option<&str>, call: &'static str, what: &str) -> Result<String, Error> {
    v.filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| incomplete(call, what))
}

fn port(v: Option<&str>, call: &'static str) -> Result<u16, Error> {
    v.and_then(|p| p.parse().ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| incomplete(call, "a valid Port"))
}

fn not_found(kind: &'static str, id: &str, api: &Api) -> Error {
    Error::DbNotFound {
        kind,
        id: id.to_owned(),
        region: api.region().to_owned(),
    }
}

/// The part after the last `/` (a task id from a task ARN, a cluster name from a cluster ARN).
fn last_segment(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_segments() {
        assert_eq!(
            last_segment("arn:aws:ecs:eu-west-1:123456789012:task/bastion/0123abcd"),
            "0123abcd"
        );
        assert_eq!(last_segment("bastion"), "bastion");
        assert_eq!(
            last_segment("arn:aws:ecs:eu-west-1:123456789012:cluster/bastion"),
            "bastion"
        );
    }
}
