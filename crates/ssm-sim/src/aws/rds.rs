//! RDS `DescribeDBClusters` and `DescribeDBInstances` (Query protocol; lists named after their
//! members: `<DBClusters><DBCluster>`, `<DBInstances><DBInstance>`).
//!
//! <https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DescribeDBClusters.html>,
//! <https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DescribeDBInstances.html>

use http::StatusCode;

use super::query::{Params, Xml, timestamp};
use super::world::{CREATED_EPOCH_SECS, DbCluster, DbInstance};
use super::{AwsWorld, Ctx, Fault};

/// The hosted zone of RDS endpoints (the one eu-west-1 uses; clients do not look at it).
const HOSTED_ZONE_ID: &str = "Z29XKXDKYMONMX";

/// Runs `action`; the XML inside `<ActionResult>`.
pub(super) fn call(ctx: &Ctx<'_>, action: &str, params: &Params) -> Result<String, Fault> {
    match action {
        "DescribeDBClusters" => describe_db_clusters(ctx, params),
        "DescribeDBInstances" => describe_db_instances(ctx, params),
        other => Err(ctx.unknown_operation(other)),
    }
}

/// The mock lists everything or one identifier; it does not filter.
fn refuse_filters(params: &Params) -> Result<(), Fault> {
    if params.has_prefix("Filters.") {
        return Err(Fault::bad_request(
            "InvalidParameterValue",
            "the simulator does not support Filters; name the DB cluster or instance instead",
        ));
    }
    Ok(())
}

fn describe_db_clusters(ctx: &Ctx<'_>, params: &Params) -> Result<String, Fault> {
    let w = ctx.world;
    let wanted = params.non_empty("DBClusterIdentifier");
    ctx.check(
        "DescribeDBClusters",
        Some(&w.db_cluster_arn(wanted.unwrap_or("*"))),
    )?;
    refuse_filters(params)?;
    let clusters: Vec<&DbCluster> = match wanted {
        Some(id) => vec![w.db_cluster(id).ok_or_else(|| {
            Fault::new(
                StatusCode::NOT_FOUND,
                "DBClusterNotFoundFault",
                format!("DBCluster {id} not found."),
            )
        })?],
        None => w.db_clusters.iter().collect(),
    };
    let mut x = Xml::default();
    x.open("DBClusters");
    for c in clusters {
        write_cluster(&mut x, w, c);
    }
    x.close("DBClusters");
    Ok(x.into_string())
}

fn write_cluster(x: &mut Xml, w: &AwsWorld, c: &DbCluster) {
    x.open("DBCluster")
        .leaf("AllocatedStorage", 1)
        .open("AvailabilityZones");
    for az in ["a", "b", "c"] {
        x.leaf("AvailabilityZone", format!("{}{az}", w.region));
    }
    x.close("AvailabilityZones")
        .leaf("BackupRetentionPeriod", 1)
        .leaf("DBClusterIdentifier", &c.identifier)
        .leaf("DBClusterParameterGroup", "default.aurora-mysql8.0")
        .leaf("DBSubnetGroup", format!("{}-subnets", c.identifier))
        .leaf("Status", &c.status)
        .leaf("EarliestRestorableTime", timestamp(CREATED_EPOCH_SECS))
        .leaf("Endpoint", &c.endpoint)
        .leaf_opt("ReaderEndpoint", c.reader_endpoint.as_deref())
        .leaf("MultiAZ", false)
        .leaf("Engine", &c.engine)
        .leaf("EngineVersion", &c.engine_version)
        .leaf("Port", c.port)
        .leaf("MasterUsername", &c.master_username)
        .leaf("PreferredBackupWindow", "03:00-03:30")
        .leaf("PreferredMaintenanceWindow", "sun:04:00-sun:04:30")
        .open("DBClusterMembers");
    for (i, member) in w.db_cluster_members(&c.identifier).enumerate() {
        x.open("DBClusterMember")
            .leaf("DBInstanceIdentifier", &member.identifier)
            .leaf("IsClusterWriter", i == 0)
            .leaf("DBClusterParameterGroupStatus", "in-sync")
            .leaf("PromotionTier", 1)
            .close("DBClusterMember");
    }
    x.close("DBClusterMembers")
        .leaf("HostedZoneId", HOSTED_ZONE_ID)
        .leaf("StorageEncrypted", true)
        .leaf("DbClusterResourceId", c.resource_id())
        .leaf("DBClusterArn", w.db_cluster_arn(&c.identifier))
        .leaf(
            "IAMDatabaseAuthenticationEnabled",
            c.iam_database_authentication_enabled,
        )
        .leaf("ClusterCreateTime", timestamp(CREATED_EPOCH_SECS))
        .leaf("EngineMode", "provisioned")
        .leaf("DeletionProtection", true)
        .leaf("HttpEndpointEnabled", false)
        .leaf("CopyTagsToSnapshot", true)
        .leaf("CrossAccountClone", false);
    if let Some(arn) = &c.master_user_secret_arn {
        x.open("MasterUserSecret")
            .leaf("SecretArn", arn)
            .leaf("SecretStatus", "active")
            .close("MasterUserSecret");
    }
    x.close("DBCluster");
}

fn describe_db_instances(ctx: &Ctx<'_>, params: &Params) -> Result<String, Fault> {
    let w = ctx.world;
    let wanted = params.non_empty("DBInstanceIdentifier");
    ctx.check(
        "DescribeDBInstances",
        Some(&w.db_instance_arn(wanted.unwrap_or("*"))),
    )?;
    refuse_filters(params)?;
    let instances: Vec<&DbInstance> = match wanted {
        Some(id) => vec![w.db_instance(id).ok_or_else(|| {
            Fault::new(
                StatusCode::NOT_FOUND,
                "DBInstanceNotFound",
                format!("DBInstance {id} not found."),
            )
        })?],
        None => w.db_instances.iter().collect(),
    };
    let mut x = Xml::default();
    x.open("DBInstances");
    for i in instances {
        write_instance(&mut x, w, i);
    }
    x.close("DBInstances");
    Ok(x.into_string())
}

fn write_instance(x: &mut Xml, w: &AwsWorld, i: &DbInstance) {
    let engine_version = i
        .cluster
        .as_deref()
        .and_then(|c| w.db_cluster(c))
        .map_or("8.0.40", |c| c.engine_version.as_str());
    x.open("DBInstance")
        .leaf("DBInstanceIdentifier", &i.identifier)
        .leaf("DBInstanceClass", &i.instance_class)
        .leaf("Engine", i.engine())
        .leaf("DBInstanceStatus", &i.status)
        .leaf("MasterUsername", &i.master_username)
        .open("Endpoint")
        .leaf("Address", &i.endpoint)
        .leaf("Port", i.port)
        .leaf("HostedZoneId", HOSTED_ZONE_ID)
        .close("Endpoint")
        .leaf("AllocatedStorage", 1)
        .leaf("InstanceCreateTime", timestamp(CREATED_EPOCH_SECS))
        .leaf("PreferredBackupWindow", "03:00-03:30")
        .leaf("BackupRetentionPeriod", 1)
        .leaf("AvailabilityZone", format!("{}a", w.region))
        .leaf("PreferredMaintenanceWindow", "sun:04:00-sun:04:30")
        .leaf("MultiAZ", false)
        .leaf("EngineVersion", engine_version)
        .leaf("AutoMinorVersionUpgrade", true)
        .leaf("LicenseModel", "general-public-license")
        .leaf("PubliclyAccessible", false)
        .leaf("StorageType", "aurora")
        .leaf("DbInstancePort", 0)
        .leaf_opt("DBClusterIdentifier", i.cluster.as_deref())
        .leaf("StorageEncrypted", true)
        .leaf("DbiResourceId", i.resource_id())
        .leaf("CACertificateIdentifier", "rds-ca-rsa2048-g1")
        .leaf("CopyTagsToSnapshot", false)
        .leaf("PromotionTier", 1)
        .leaf("DBInstanceArn", w.db_instance_arn(&i.identifier))
        .leaf(
            "IAMDatabaseAuthenticationEnabled",
            i.iam_database_authentication_enabled,
        )
        .leaf("DeletionProtection", false)
        .close("DBInstance");
}
