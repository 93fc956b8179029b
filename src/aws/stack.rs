//! The CloudFormation output keys of the secure-access stack (`deploy/secure-db-connection.yaml`).
//!
//! `rds-iam-proxy --stack NAME` (and `rds-iam-proxy` with no arguments, which uses
//! [`DEFAULT_STACK_NAME`]) calls `cloudformation:DescribeStacks` and reads these outputs. This
//! module is the only place that spells the keys: the template's `Outputs` section must have
//! exactly the keys in [`ALL`], which `tests/deploy/deploy.rs` checks. Renaming a key means changing it
//! here and in the template together, and stacks deployed from an older template keep the old
//! key until they are updated.
//!
//! Every value is a plain string, as CloudFormation returns them (`DescribeStacks` →
//! `Stacks[0].Outputs[] {OutputKey, OutputValue}`).

/// The stack name used when neither `--stack` nor a config file names one. It matches the name
/// of the original CDK project's stack and the deploy command in `deploy/README.md`.
pub const DEFAULT_STACK_NAME: &str = "SecureDbConnectionStack";

/// The Aurora cluster's writer endpoint host name, e.g.
/// `mydb.cluster-abc123.eu-west-1.rds.amazonaws.com`. IAM tokens are signed for this name and TLS
/// verifies it, even though the bytes travel through the SSM tunnel.
pub const DB_ENDPOINT: &str = "DbEndpoint";

/// The Aurora cluster's reader endpoint host name (`….cluster-ro-….rds.amazonaws.com`), for
/// read-only connections (`--reader`).
pub const DB_READER_ENDPOINT: &str = "DbReaderEndpoint";

/// The database port, as a decimal string (`"3306"`). It applies to both endpoints.
pub const DB_PORT: &str = "DbPort";

/// The IAM database user that the stack's connect policy may log in as (`rds-db:connect`); the
/// user itself is created in the database after deploy (see `deploy/README.md`).
pub const DB_USER: &str = "DbUser";

/// The Aurora DB cluster identifier (lower case, as RDS stores it), for
/// `rds:DescribeDBClusters` checks such as "is IAM database authentication enabled".
pub const DB_CLUSTER_IDENTIFIER: &str = "DbClusterIdentifier";

/// The cluster's resource id (`cluster-ABCDEFGHIJKLMNOP…`), the part of the
/// `arn:aws:rds-db:REGION:ACCOUNT:dbuser:RESOURCE_ID/USER` resource that `rds-db:connect` is
/// granted on; for error messages and `doctor` hints.
pub const DB_CLUSTER_RESOURCE_ID: &str = "DbClusterResourceId";

/// The ARN of the Secrets Manager secret that holds the cluster's master user name and password
/// (managed by RDS, rotated by RDS). Only an administrator bootstrapping the IAM database user
/// reads it; a normal connection never does.
pub const DB_MASTER_SECRET_ARN: &str = "DbMasterSecretArn";

/// The ECS cluster name of the bastion task (the `<cluster>` in the SSM target
/// `ecs:<cluster>_<taskId>_<runtimeId>`).
pub const ECS_CLUSTER: &str = "EcsCluster";

/// The ECS service name of the bastion; its RUNNING task with a RUNNING `ExecuteCommandAgent`
/// is the SSM target, and a replaced task is found again through the service.
pub const ECS_SERVICE: &str = "EcsService";

/// The name of the container in the bastion task whose `runtimeId` completes the SSM target.
pub const ECS_CONTAINER: &str = "EcsContainer";

/// The region the stack runs in (`eu-west-1`): the region of the SSM, ECS and RDS calls and of
/// the IAM token's signature.
pub const REGION: &str = "Region";

/// The ARN of the managed IAM policy to attach to the people (users, groups, roles, SSO
/// permission sets) who may connect: discovery calls, the port-forwarding session to the bastion
/// and `rds-db:connect` for [`DB_USER`]. Shown by error messages that report a denied call.
pub const CONNECT_POLICY_ARN: &str = "ConnectPolicyArn";

/// The ARN of the managed IAM policy for administrators who run `rds-iam-proxy admin`:
/// `secretsmanager:GetSecretValue` on [`DB_MASTER_SECRET_ARN`] and `kms:Decrypt` of the stack's
/// key through Secrets Manager. Attached together with [`CONNECT_POLICY_ARN`]; named by the error
/// for a refused master-secret read.
pub const ADMIN_POLICY_ARN: &str = "AdminPolicyArn";

/// Every output key the template publishes, in the order of the template.
pub const ALL: &[&str] = &[
    DB_ENDPOINT,
    DB_READER_ENDPOINT,
    DB_PORT,
    DB_USER,
    DB_CLUSTER_IDENTIFIER,
    DB_CLUSTER_RESOURCE_ID,
    DB_MASTER_SECRET_ARN,
    ECS_CLUSTER,
    ECS_SERVICE,
    ECS_CONTAINER,
    REGION,
    CONNECT_POLICY_ARN,
    ADMIN_POLICY_ARN,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_cloudformation_logical_ids() {
        for (i, key) in ALL.iter().enumerate() {
            assert!(
                !key.is_empty()
                    && key.len() <= 255
                    && key.bytes().all(|b| b.is_ascii_alphanumeric()),
                "{key:?} is not a valid CloudFormation output key"
            );
            assert!(!ALL[..i].contains(key), "{key:?} is listed twice");
        }
    }
}
