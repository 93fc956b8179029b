//! The simulated AWS account: what the mock services answer from ([`AwsWorld`]), loadable from
//! JSON (the format is documented, with an example, in [`super`]).
//!
//! This module owns the data and the questions asked of it (find a stack, a DB cluster, a task;
//! is an action denied; may a Session Manager session reach a target). It knows nothing of wire
//! formats: the `query` and `json` protocol modules and the per-service modules turn its answers
//! into AWS responses.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The name ECS gives the Session Manager agent it runs in each container of a task with
/// `enableExecuteCommand` (`DescribeTasks` → `containers[].managedAgents[].name`).
pub const EXECUTE_COMMAND_AGENT: &str = "ExecuteCommandAgent";

/// ECS and managed-agent status of something up (`lastStatus`, `desiredStatus`).
pub const RUNNING: &str = "RUNNING";

/// ECS status of a stopped task, container or agent.
pub const STOPPED: &str = "STOPPED";

/// Creation time reported for every resource (2024-01-01T00:00:00Z, seconds since the epoch):
/// a fixed value keeps responses reproducible.
pub const CREATED_EPOCH_SECS: u64 = 1_704_067_200;

/// One simulated AWS account in one region, as the mock APIs see it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AwsWorld {
    /// The 12-digit account id (`GetCallerIdentity` → `Account`, and every ARN).
    pub account: String,
    /// The region the resources live in. A request signed for another region sees an empty
    /// account, as it would on AWS (only STS answers the same everywhere).
    pub region: String,
    /// Who is calling (`GetCallerIdentity`, and the `User:` of AccessDenied messages).
    pub caller: Caller,
    /// When set, every API call (SSM's included) must be SigV4-signed with this key, or gets
    /// the real "invalid token" / "signature does not match" errors. When absent, any signed
    /// request is accepted without checking the signature.
    pub credentials: Option<AccessKey>,
    /// CloudFormation stacks by stack name.
    pub stacks: BTreeMap<String, Stack>,
    /// RDS DB clusters (Aurora).
    pub db_clusters: Vec<DbCluster>,
    /// RDS DB instances (cluster members or standalone).
    pub db_instances: Vec<DbInstance>,
    /// ECS clusters by cluster name.
    pub ecs_clusters: BTreeMap<String, EcsCluster>,
    /// EC2 instances. When the list is not empty, Session Manager sessions to `i-…` targets
    /// need the instance listed here and `running`.
    pub ec2_instances: Vec<Ec2Instance>,
    /// Secrets Manager secrets.
    pub secrets: Vec<Secret>,
    /// IAM actions the caller may not perform, as `service:Action` (`ecs:ListTasks`); matched
    /// case-insensitively, and a trailing `*` matches any suffix (`ecs:*`, `*`). Denied calls get
    /// each service's real AccessDenied error, naming the caller, action and resource.
    pub denied: Vec<String>,
}

impl Default for AwsWorld {
    fn default() -> Self {
        AwsWorld {
            account: "123456789012".to_owned(),
            region: "us-east-1".to_owned(),
            caller: Caller::default(),
            credentials: None,
            stacks: BTreeMap::new(),
            db_clusters: Vec::new(),
            db_instances: Vec::new(),
            ecs_clusters: BTreeMap::new(),
            ec2_instances: Vec::new(),
            secrets: Vec::new(),
            denied: Vec::new(),
        }
    }
}

/// The identity behind the requests.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Caller {
    /// `arn:aws:iam::ACCOUNT:user/NAME` or `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`;
    /// `arn:aws:iam::<account>:user/sim` when absent.
    pub arn: Option<String>,
    /// The unique id (`AIDA…` for a user, `AROA…:session` for a role); `AIDASIMULATEDUSER0000`
    /// when absent.
    pub user_id: Option<String>,
}

/// A text that must never be printed: `Debug` shows `***`.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for SecretText {
    fn from(s: &str) -> Self {
        SecretText(s.to_owned())
    }
}

/// The access key requests must be signed with (see [`AwsWorld::credentials`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessKey {
    /// `AKIA…` (or any text the client sends as the access key id).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretText,
}

/// A CloudFormation stack (`DescribeStacks` → `Stacks[]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    /// `StackStatus`: `CREATE_COMPLETE` (default), `UPDATE_COMPLETE`, `ROLLBACK_COMPLETE`… A
    /// stack in `DELETE_COMPLETE` is not found by name, as on AWS.
    #[serde(default = "create_complete")]
    pub status: String,
    /// `Outputs[]` as `OutputKey → OutputValue`.
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// `Description`.
    #[serde(default)]
    pub description: Option<String>,
}

/// An RDS DB cluster (`DescribeDBClusters` → `DBClusters[]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DbCluster {
    /// `DBClusterIdentifier` (RDS stores it in lower case; lookups ignore case).
    pub identifier: String,
    /// `Endpoint`: the writer endpoint host name.
    pub endpoint: String,
    /// `ReaderEndpoint`.
    #[serde(default)]
    pub reader_endpoint: Option<String>,
    /// `Port` (3306).
    #[serde(default = "mysql_port")]
    pub port: u16,
    /// `IAMDatabaseAuthenticationEnabled` (default `true`: a world describes a cluster set up
    /// for rds-iam-proxy; set `false` to test the check).
    #[serde(default = "yes")]
    pub iam_database_authentication_enabled: bool,
    /// `Status` (`available`).
    #[serde(default = "available")]
    pub status: String,
    /// `DbClusterResourceId` (`cluster-…`); derived from the identifier when absent.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// `Engine` (`aurora-mysql`).
    #[serde(default = "aurora_mysql")]
    pub engine: String,
    /// `EngineVersion`.
    #[serde(default = "aurora_mysql_version")]
    pub engine_version: String,
    /// `MasterUsername` (`admin`).
    #[serde(default = "admin")]
    pub master_username: String,
    /// `MasterUserSecret.SecretArn`: the RDS-managed secret holding the master password.
    #[serde(default)]
    pub master_user_secret_arn: Option<String>,
}

/// An RDS DB instance (`DescribeDBInstances` → `DBInstances[]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DbInstance {
    /// `DBInstanceIdentifier`.
    pub identifier: String,
    /// `Endpoint.Address`.
    pub endpoint: String,
    /// `Endpoint.Port` (3306).
    #[serde(default = "mysql_port")]
    pub port: u16,
    /// `IAMDatabaseAuthenticationEnabled` (default `true`).
    #[serde(default = "yes")]
    pub iam_database_authentication_enabled: bool,
    /// `DBInstanceStatus` (`available`).
    #[serde(default = "available")]
    pub status: String,
    /// `DbiResourceId` (`db-…`); derived from the identifier when absent.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// `DBClusterIdentifier` of the cluster this instance belongs to.
    #[serde(default)]
    pub cluster: Option<String>,
    /// `Engine`; `aurora-mysql` for a cluster member, `mysql` otherwise, when absent.
    #[serde(default)]
    pub engine: Option<String>,
    /// `DBInstanceClass` (`db.t4g.medium`).
    #[serde(default = "instance_class")]
    pub instance_class: String,
    /// `MasterUsername` (`admin`).
    #[serde(default = "admin")]
    pub master_username: String,
}

/// An ECS cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EcsCluster {
    /// Services by service name.
    pub services: BTreeMap<String, EcsService>,
}

/// An ECS service: the tasks it started (running and, for a while, stopped ones).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EcsService {
    /// The service's tasks.
    pub tasks: Vec<EcsTask>,
}

/// An ECS task (`DescribeTasks` → `tasks[]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EcsTask {
    /// The task id (32 hex digits), the last part of the task ARN.
    pub id: String,
    /// `lastStatus` (`RUNNING`; also `PROVISIONING`, `PENDING`, `DEACTIVATING`, `STOPPED`…).
    #[serde(default = "running")]
    pub last_status: String,
    /// `desiredStatus` (`RUNNING` or `STOPPED`): what `ListTasks`'s `desiredStatus` filters on.
    #[serde(default = "running")]
    pub desired_status: String,
    /// `enableExecuteCommand` (default `true`).
    #[serde(default = "yes")]
    pub enable_execute_command: bool,
    /// `containers[]`.
    pub containers: Vec<EcsContainer>,
    /// `stoppedReason`, for stopped tasks.
    #[serde(default)]
    pub stopped_reason: Option<String>,
}

/// A container of an ECS task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EcsContainer {
    /// `name`, as in the task definition.
    pub name: String,
    /// `runtimeId` (`<taskId>-<digits>` on Fargate), the last part of the SSM target
    /// `ecs:<cluster>_<taskId>_<runtimeId>`.
    pub runtime_id: String,
    /// `lastStatus` (`RUNNING`).
    #[serde(default = "running")]
    pub last_status: String,
    /// `managedAgents[]`; one RUNNING `ExecuteCommandAgent` when absent (write `[]` for a
    /// container without the agent).
    #[serde(default = "execute_command_agent")]
    pub managed_agents: Vec<ManagedAgent>,
}

/// An agent ECS manages inside a container.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManagedAgent {
    /// `name`: `ExecuteCommandAgent`.
    pub name: String,
    /// `lastStatus`: `PENDING`, `RUNNING` or `STOPPED`.
    pub last_status: String,
}

/// An EC2 instance (`DescribeInstances` → `Reservations[].Instances[]`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Ec2Instance {
    /// `InstanceId` (`i-…`).
    pub id: String,
    /// `State.Name`: `pending`, `running` (default), `shutting-down`, `terminated`,
    /// `stopping`, `stopped`.
    #[serde(default = "ec2_running")]
    pub state: String,
    /// `Tags[]` as `Key → Value`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A Secrets Manager secret (`GetSecretValue`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    /// `Name` (`rds!cluster-…` for an RDS-managed master secret).
    pub name: String,
    /// `ARN` (`arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX`).
    pub arn: String,
    /// `SecretString` (for an RDS master secret: `{"username":"admin","password":"…"}`).
    pub secret_string: SecretText,
}

fn create_complete() -> String {
    "CREATE_COMPLETE".to_owned()
}
fn mysql_port() -> u16 {
    3306
}
fn yes() -> bool {
    true
}
fn available() -> String {
    "available".to_owned()
}
fn aurora_mysql() -> String {
    "aurora-mysql".to_owned()
}
fn aurora_mysql_version() -> String {
    "8.0.mysql_aurora.3.08.0".to_owned()
}
fn admin() -> String {
    "admin".to_owned()
}
fn instance_class() -> String {
    "db.t4g.medium".to_owned()
}
fn running() -> String {
    RUNNING.to_owned()
}
fn ec2_running() -> String {
    "running".to_owned()
}
fn execute_command_agent() -> Vec<ManagedAgent> {
    vec![ManagedAgent {
        name: EXECUTE_COMMAND_AGENT.to_owned(),
        last_status: RUNNING.to_owned(),
    }]
}

/// Why [`AwsWorld::from_json`] refused a world file.
#[derive(Debug, thiserror::Error)]
#[error("AWS world JSON: {0}")]
pub struct WorldError(#[from] serde_json::Error);

/// What the world says about a Session Manager target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetState {
    /// The world knows the target and its agent is up.
    Connected,
    /// The world knows the target kind and the target is missing, stopped or has no running
    /// agent: StartSession answers `TargetNotConnected`.
    NotConnected,
    /// The world does not model this kind of target (no EC2 instances listed, or another
    /// target form): the simulator's other rules decide.
    Unmodelled,
}

impl AwsWorld {
    /// Parses a world from JSON (unknown fields are errors, so typos do not go unnoticed).
    pub fn from_json(json: &str) -> Result<AwsWorld, WorldError> {
        Ok(serde_json::from_str(json)?)
    }

    /// The caller's ARN.
    pub fn caller_arn(&self) -> Cow<'_, str> {
        match &self.caller.arn {
            Some(arn) => Cow::Borrowed(arn),
            None => Cow::Owned(format!("arn:aws:iam::{}:user/sim", self.account)),
        }
    }

    /// The caller's unique id.
    pub fn caller_user_id(&self) -> &str {
        self.caller
            .user_id
            .as_deref()
            .unwrap_or("AIDASIMULATEDUSER0000")
    }

    /// The world as seen by a request signed for `region`: itself in its own region; elsewhere
    /// the same account and caller with no resources.
    pub fn seen_from(&self, region: &str) -> Cow<'_, AwsWorld> {
        if region == self.region {
            return Cow::Borrowed(self);
        }
        Cow::Owned(AwsWorld {
            account: self.account.clone(),
            region: region.to_owned(),
            caller: self.caller.clone(),
            credentials: self.credentials.clone(),
            denied: self.denied.clone(),
            ..AwsWorld::default()
        })
    }

    /// Whether the caller is denied `action` (`service:Action`).
    pub fn is_denied(&self, action: &str) -> bool {
        self.denied
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => action
                    .get(..prefix.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(prefix)),
                None => pattern.eq_ignore_ascii_case(action),
            })
    }

    /// The text of an AccessDenied error for `action` on `resource`, as IAM words it for an
    /// action no identity-based policy allows.
    pub fn access_denied_message(&self, action: &str, resource: Option<&str>) -> String {
        let on = resource
            .map(|r| format!(" on resource: {r}"))
            .unwrap_or_default();
        format!(
            "User: {} is not authorized to perform: {action}{on} because no identity-based \
             policy allows the {action} action",
            self.caller_arn()
        )
    }

    /// Adds `action` (`service:Action`) to [`AwsWorld::denied`].
    pub fn deny(&mut self, action: &str) {
        self.denied.push(action.to_owned());
    }

    /// The stack called `name_or_id` (a stack name, or a stack id ARN), unless deleted.
    pub fn stack(&self, name_or_id: &str) -> Option<(&str, &Stack)> {
        self.stacks
            .iter()
            .find(|(name, _)| name.as_str() == name_or_id || self.stack_id(name) == name_or_id)
            .filter(|(_, s)| s.status != "DELETE_COMPLETE")
            .map(|(name, s)| (name.as_str(), s))
    }

    /// The stack id (ARN) of stack `name`.
    pub fn stack_id(&self, name: &str) -> String {
        let h = digest_hex(&["stack", name]);
        format!(
            "arn:aws:cloudformation:{}:{}:stack/{name}/{}-{}-{}-{}-{}",
            self.region,
            self.account,
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// The DB cluster `id` (identifier in any case, or its ARN).
    pub fn db_cluster(&self, id: &str) -> Option<&DbCluster> {
        self.db_clusters.iter().find(|c| {
            c.identifier.eq_ignore_ascii_case(id) || self.db_cluster_arn(&c.identifier) == id
        })
    }

    /// `arn:aws:rds:REGION:ACCOUNT:cluster:ID`.
    pub fn db_cluster_arn(&self, id: &str) -> String {
        format!("arn:aws:rds:{}:{}:cluster:{id}", self.region, self.account)
    }

    /// The DB instance `id` (identifier in any case, or its ARN).
    pub fn db_instance(&self, id: &str) -> Option<&DbInstance> {
        self.db_instances.iter().find(|i| {
            i.identifier.eq_ignore_ascii_case(id) || self.db_instance_arn(&i.identifier) == id
        })
    }

    /// `arn:aws:rds:REGION:ACCOUNT:db:ID`.
    pub fn db_instance_arn(&self, id: &str) -> String {
        format!("arn:aws:rds:{}:{}:db:{id}", self.region, self.account)
    }

    /// The members of DB cluster `id`, in world order.
    pub fn db_cluster_members(&self, id: &str) -> impl Iterator<Item = &DbInstance> {
        self.db_instances.iter().filter(move |i| {
            i.cluster
                .as_deref()
                .is_some_and(|c| c.eq_ignore_ascii_case(id))
        })
    }

    /// The ECS cluster `name_or_arn` with its name.
    pub fn ecs_cluster(&self, name_or_arn: &str) -> Option<(&str, &EcsCluster)> {
        let prefix = format!("arn:aws:ecs:{}:{}:cluster/", self.region, self.account);
        let name = name_or_arn.strip_prefix(&prefix).unwrap_or(name_or_arn);
        self.ecs_clusters
            .get_key_value(name)
            .map(|(n, c)| (n.as_str(), c))
    }

    /// `arn:aws:ecs:REGION:ACCOUNT:cluster/NAME`.
    pub fn ecs_cluster_arn(&self, cluster: &str) -> String {
        format!(
            "arn:aws:ecs:{}:{}:cluster/{cluster}",
            self.region, self.account
        )
    }

    /// `arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/TASKID`.
    pub fn ecs_task_arn(&self, cluster: &str, task_id: &str) -> String {
        format!(
            "arn:aws:ecs:{}:{}:task/{cluster}/{task_id}",
            self.region, self.account
        )
    }

    /// The task `id_or_arn` of ECS cluster `cluster` (a cluster name), with its service name.
    pub fn ecs_task(&self, cluster: &str, id_or_arn: &str) -> Option<(&str, &EcsTask)> {
        let id = id_or_arn.rsplit('/').next().unwrap_or(id_or_arn);
        self.ecs_clusters
            .get(cluster)?
            .services
            .iter()
            .find_map(|(svc, s)| {
                s.tasks
                    .iter()
                    .find(|t| t.id == id)
                    .map(|t| (svc.as_str(), t))
            })
    }

    /// The task `task_id` of ECS cluster `cluster`, to change it.
    pub fn ecs_task_mut(&mut self, cluster: &str, task_id: &str) -> Option<&mut EcsTask> {
        self.ecs_clusters
            .get_mut(cluster)?
            .services
            .values_mut()
            .flat_map(|s| s.tasks.iter_mut())
            .find(|t| t.id == task_id)
    }

    /// The service `service` of ECS cluster `cluster`, created empty if missing, to change it
    /// (start a replacement task: `world.ecs_service_mut("c", "s").tasks.push(task)`).
    pub fn ecs_service_mut(&mut self, cluster: &str, service: &str) -> &mut EcsService {
        self.ecs_clusters
            .entry(cluster.to_owned())
            .or_default()
            .services
            .entry(service.to_owned())
            .or_default()
    }

    /// The EC2 instance `id`.
    pub fn ec2_instance(&self, id: &str) -> Option<&Ec2Instance> {
        self.ec2_instances.iter().find(|i| i.id == id)
    }

    /// The secret `secret_id`: its name, its ARN, or its ARN without the 6-character suffix
    /// (a partial ARN), as `GetSecretValue` accepts.
    pub fn secret(&self, secret_id: &str) -> Option<&Secret> {
        self.secrets.iter().find(|s| {
            s.name == secret_id
                || s.arn == secret_id
                || (secret_id.starts_with("arn:")
                    && s.arn
                        .strip_prefix(secret_id)
                        .is_some_and(|rest| rest.len() == 7 && rest.starts_with('-')))
        })
    }

    /// What the world says about Session Manager target `target`:
    /// `ecs:<cluster>_<taskId>_<runtimeId>` is connected when that task is RUNNING with
    /// `enableExecuteCommand`, and that container is RUNNING with a RUNNING
    /// `ExecuteCommandAgent`; `i-…` is connected when the instance is listed and `running`
    /// (unmodelled when no instance is listed).
    pub fn target_state(&self, target: &str) -> TargetState {
        if let Some(ecs) = target.strip_prefix("ecs:") {
            let mut parts = ecs.rsplitn(3, '_');
            let (Some(runtime_id), Some(task_id), Some(cluster)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return TargetState::NotConnected;
            };
            let up = self.ecs_task(cluster, task_id).is_some_and(|(_, task)| {
                task.last_status == RUNNING
                    && task.enable_execute_command
                    && task
                        .containers
                        .iter()
                        .any(|c| c.runtime_id == runtime_id && c.exec_agent_running())
            });
            return if up {
                TargetState::Connected
            } else {
                TargetState::NotConnected
            };
        }
        if target.starts_with("i-") && !self.ec2_instances.is_empty() {
            return match self.ec2_instance(target) {
                Some(i) if i.state == "running" => TargetState::Connected,
                _ => TargetState::NotConnected,
            };
        }
        TargetState::Unmodelled
    }

    /// The IAM resource of a Session Manager session to `target` (for AccessDenied messages).
    pub fn session_resource(&self, target: &str) -> String {
        if let Some(ecs) = target.strip_prefix("ecs:") {
            let mut parts = ecs.rsplitn(3, '_');
            if let (Some(_), Some(task_id), Some(cluster)) =
                (parts.next(), parts.next(), parts.next())
            {
                return self.ecs_task_arn(cluster, task_id);
            }
        }
        format!(
            "arn:aws:ec2:{}:{}:instance/{target}",
            self.region, self.account
        )
    }
}

impl EcsTask {
    /// A RUNNING task with one RUNNING container whose ExecuteCommandAgent is RUNNING.
    pub fn running(id: &str, container: &str, runtime_id: &str) -> EcsTask {
        EcsTask {
            id: id.to_owned(),
            last_status: running(),
            desired_status: running(),
            enable_execute_command: true,
            containers: vec![EcsContainer {
                name: container.to_owned(),
                runtime_id: runtime_id.to_owned(),
                last_status: running(),
                managed_agents: execute_command_agent(),
            }],
            stopped_reason: None,
        }
    }

    /// Stops the task as ECS does: task, containers and agents STOPPED, with a reason.
    pub fn stop(&mut self, reason: &str) {
        self.last_status = STOPPED.to_owned();
        self.desired_status = STOPPED.to_owned();
        self.stopped_reason = Some(reason.to_owned());
        for c in &mut self.containers {
            c.last_status = STOPPED.to_owned();
            for a in &mut c.managed_agents {
                a.last_status = STOPPED.to_owned();
            }
        }
    }

    /// The Session Manager target of container `container` in this task of cluster `cluster`:
    /// `ecs:<cluster>_<taskId>_<runtimeId>`.
    pub fn ssm_target(&self, cluster: &str, container: &str) -> Option<String> {
        self.containers
            .iter()
            .find(|c| c.name == container)
            .map(|c| format!("ecs:{cluster}_{}_{}", self.id, c.runtime_id))
    }
}

impl EcsContainer {
    /// Whether the container is RUNNING with a RUNNING ExecuteCommandAgent.
    pub fn exec_agent_running(&self) -> bool {
        self.last_status == RUNNING
            && self
                .managed_agents
                .iter()
                .any(|a| a.name == EXECUTE_COMMAND_AGENT && a.last_status == RUNNING)
    }
}

impl DbCluster {
    /// `DbClusterResourceId`: the configured one, else `cluster-` and 26 characters derived
    /// from the identifier.
    pub fn resource_id(&self) -> String {
        self.resource_id
            .clone()
            .unwrap_or_else(|| format!("cluster-{}", derived_id(&["cluster", &self.identifier])))
    }
}

impl DbInstance {
    /// `DbiResourceId`: the configured one, else `db-` and 26 characters derived from the
    /// identifier.
    pub fn resource_id(&self) -> String {
        self.resource_id
            .clone()
            .unwrap_or_else(|| format!("db-{}", derived_id(&["db", &self.identifier])))
    }

    /// `Engine`: the configured one, else `aurora-mysql` for a cluster member, `mysql`.
    pub fn engine(&self) -> &str {
        match (&self.engine, &self.cluster) {
            (Some(e), _) => e,
            (None, Some(_)) => "aurora-mysql",
            (None, None) => "mysql",
        }
    }
}

impl Ec2Instance {
    /// `State.Code` for `State.Name` (the low byte EC2 documents; 0 for unknown names).
    pub fn state_code(&self) -> u16 {
        match self.state.as_str() {
            "pending" => 0,
            "running" => 16,
            "shutting-down" => 32,
            "terminated" => 48,
            "stopping" => 64,
            "stopped" => 80,
            _ => 0,
        }
    }
}

/// Lower-case hex SHA-256 of the parts, NUL-separated: stable derived ids.
pub(crate) fn digest_hex(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// 26 upper-case letters and digits derived from the parts, like RDS resource ids.
fn derived_id(parts: &[&str]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hex = digest_hex(parts);
    hex.as_bytes()
        .iter()
        .take(26)
        .map(|&b| {
            let v = (b as char).to_digit(16).unwrap_or(0) as usize;
            ALPHABET[(v * 2 + usize::from(b % 2 == 1)) % ALPHABET.len()] as char
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> AwsWorld {
        AwsWorld::from_json(super::super::EXAMPLE_WORLD).expect("the documented example parses")
    }

    #[test]
    fn the_documented_example_parses_with_defaults_filled_in() {
        let w = world();
        assert_eq!(w.account, "123456789012");
        assert_eq!(w.region, "eu-west-1");
        let c = w.db_cluster("MYDB").expect("lookups ignore case");
        assert_eq!(c.port, 3306);
        assert!(c.iam_database_authentication_enabled);
        assert_eq!(c.resource_id(), "cluster-ABCDEFGHIJKLMNOPQRSTUVWXYZ");
        let (svc, task) = w
            .ecs_task("bastion", "0123456789abcdef0123456789abcdef")
            .unwrap();
        assert_eq!(svc, "bastion");
        assert_eq!(
            task.containers[0].managed_agents[0].name,
            EXECUTE_COMMAND_AGENT
        );
        assert_eq!(task.containers[0].managed_agents[0].last_status, RUNNING);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = AwsWorld::from_json(r#"{"acount": "1"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `acount`"), "{err}");
        let err = AwsWorld::from_json(
            r#"{"ecs_clusters": {"c": {"services": {"s": {"tasks": [
                {"id": "t", "containers": [{"name": "n", "runtime_id": "r", "agent": 1}]}]}}}}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `agent`"), "{err}");
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let w = world();
        let debug = format!("{w:?}");
        assert!(!debug.contains("s3cr3t-master-password"), "{debug}");
        assert!(!debug.contains("test-secret-key"), "{debug}");
        assert!(debug.contains("***"));
    }

    #[test]
    fn ecs_targets_need_a_running_task_container_and_agent() {
        let mut w = world();
        let task_id = "0123456789abcdef0123456789abcdef";
        let target = w
            .ecs_task("bastion", task_id)
            .unwrap()
            .1
            .ssm_target("bastion", "bastion")
            .unwrap();
        assert_eq!(
            target,
            "ecs:bastion_0123456789abcdef0123456789abcdef_0123456789abcdef0123456789abcdef-3053130958"
        );
        assert_eq!(w.target_state(&target), TargetState::Connected);

        w.ecs_task_mut("bastion", task_id).unwrap().containers[0].managed_agents[0].last_status =
            "PENDING".into();
        assert_eq!(w.target_state(&target), TargetState::NotConnected);
        w.ecs_task_mut("bastion", task_id).unwrap().containers[0].managed_agents[0].last_status =
            RUNNING.into();
        w.ecs_task_mut("bastion", task_id)
            .unwrap()
            .enable_execute_command = false;
        assert_eq!(w.target_state(&target), TargetState::NotConnected);
        w.ecs_task_mut("bastion", task_id)
            .unwrap()
            .enable_execute_command = true;
        assert_eq!(w.target_state(&target), TargetState::Connected);

        w.ecs_task_mut("bastion", task_id)
            .unwrap()
            .stop("Task stopped by user");
        assert_eq!(w.target_state(&target), TargetState::NotConnected);
        let t = w.ecs_task("bastion", task_id).unwrap().1;
        assert_eq!(
            (t.last_status.as_str(), t.desired_status.as_str()),
            (STOPPED, STOPPED)
        );
        assert!(!t.containers[0].exec_agent_running());

        // A replacement task is a new target; a wrong runtime id or cluster is not connected.
        let new = EcsTask::running("fedcba9876543210fedcba9876543210", "bastion", "fedc-1");
        let new_target = new.ssm_target("bastion", "bastion").unwrap();
        w.ecs_service_mut("bastion", "bastion").tasks.push(new);
        assert_eq!(w.target_state(&new_target), TargetState::Connected);
        assert_eq!(
            w.target_state("ecs:bastion_fedcba9876543210fedcba9876543210_other"),
            TargetState::NotConnected
        );
        assert_eq!(
            w.target_state("ecs:nope_fedcba9876543210fedcba9876543210_fedc-1"),
            TargetState::NotConnected
        );
        assert_eq!(w.target_state("ecs:garbage"), TargetState::NotConnected);
    }

    #[test]
    fn ecs_cluster_names_may_contain_underscores() {
        let mut w = AwsWorld::default();
        w.ecs_service_mut("my_cluster", "svc")
            .tasks
            .push(EcsTask::running("abc", "app", "abc-1"));
        assert_eq!(
            w.target_state("ecs:my_cluster_abc_abc-1"),
            TargetState::Connected
        );
        assert_eq!(
            w.session_resource("ecs:my_cluster_abc_abc-1"),
            "arn:aws:ecs:us-east-1:123456789012:task/my_cluster/abc"
        );
    }

    #[test]
    fn instance_targets_are_modelled_only_when_instances_are_listed() {
        let mut w = AwsWorld::default();
        assert_eq!(w.target_state("i-0123"), TargetState::Unmodelled);
        assert_eq!(w.target_state("mi-0123"), TargetState::Unmodelled);
        w.ec2_instances.push(Ec2Instance {
            id: "i-0123".into(),
            state: "running".into(),
            tags: BTreeMap::new(),
        });
        assert_eq!(w.target_state("i-0123"), TargetState::Connected);
        assert_eq!(w.target_state("i-9999"), TargetState::NotConnected);
        w.ec2_instances[0].state = "stopped".into();
        assert_eq!(w.target_state("i-0123"), TargetState::NotConnected);
        assert_eq!(w.ec2_instances[0].state_code(), 80);
    }

    #[test]
    fn denials_match_actions_case_insensitively_with_trailing_wildcards() {
        let mut w = AwsWorld::default();
        assert!(!w.is_denied("ecs:ListTasks"));
        w.deny("ecs:listtasks");
        assert!(w.is_denied("ecs:ListTasks"));
        assert!(!w.is_denied("ecs:DescribeTasks"));
        w.deny("rds:Describe*");
        assert!(w.is_denied("rds:DescribeDBClusters"));
        assert!(!w.is_denied("rds-db:connect"));
        w.denied = vec!["*".into()];
        assert!(w.is_denied("sts:GetCallerIdentity"));
        assert_eq!(
            w.access_denied_message("ecs:ListTasks", Some("*")),
            "User: arn:aws:iam::123456789012:user/sim is not authorized to perform: \
             ecs:ListTasks on resource: * because no identity-based policy allows the \
             ecs:ListTasks action"
        );
        assert_eq!(
            w.access_denied_message("ec2:DescribeInstances", None),
            "User: arn:aws:iam::123456789012:user/sim is not authorized to perform: \
             ec2:DescribeInstances because no identity-based policy allows the \
             ec2:DescribeInstances action"
        );
    }

    #[test]
    fn lookups_by_name_arn_and_partial_arn() {
        let w = world();
        let id = w.stack_id("SecureDbConnectionStack");
        assert!(
            id.starts_with(
                "arn:aws:cloudformation:eu-west-1:123456789012:stack/SecureDbConnectionStack/"
            ),
            "{id}"
        );
        assert_eq!(
            id.len(),
            id.rsplit('/').next().unwrap().len() + id.rfind('/').unwrap() + 1
        );
        assert_eq!(w.stack(&id).unwrap().0, "SecureDbConnectionStack");
        assert!(w.stack("Other").is_none());

        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!cluster-1234-AbCdEf";
        assert_eq!(w.secret(arn).unwrap().name, "rds!cluster-1234");
        assert_eq!(w.secret("rds!cluster-1234").unwrap().arn, arn);
        assert!(
            w.secret("arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!cluster-1234")
                .is_some()
        );
        assert!(
            w.secret("arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!cluster-12")
                .is_none()
        );

        assert_eq!(
            w.db_cluster("arn:aws:rds:eu-west-1:123456789012:cluster:mydb")
                .unwrap()
                .identifier,
            "mydb"
        );
        assert_eq!(
            w.db_cluster_members("mydb")
                .map(|i| i.identifier.as_str())
                .collect::<Vec<_>>(),
            ["mydb-instance-1"]
        );
        let i = w.db_instance("mydb-instance-1").unwrap();
        assert_eq!(i.engine(), "aurora-mysql");
        assert!(i.resource_id().starts_with("db-") && i.resource_id().len() == 29);
        assert_eq!(
            w.ecs_cluster("arn:aws:ecs:eu-west-1:123456789012:cluster/bastion")
                .unwrap()
                .0,
            "bastion"
        );
    }

    #[test]
    fn another_region_sees_an_empty_account() {
        let w = world();
        assert!(w.seen_from("eu-west-1").db_cluster("mydb").is_some());
        let other = w.seen_from("us-west-2");
        assert!(other.db_cluster("mydb").is_none());
        assert!(other.stack("SecureDbConnectionStack").is_none());
        assert_eq!(other.account, w.account);
        assert_eq!(other.caller_arn(), w.caller_arn());
        assert_eq!(other.denied, w.denied);
    }

    #[test]
    fn deleted_stacks_are_not_found_by_name() {
        let mut w = world();
        w.stacks.get_mut("SecureDbConnectionStack").unwrap().status = "DELETE_COMPLETE".into();
        assert!(w.stack("SecureDbConnectionStack").is_none());
    }
}
