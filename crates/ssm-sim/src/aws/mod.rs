//! A local AWS API mock for discovery and admin calls, served by the SSM simulator
//! ([`crate`]) on its one port, so a single `AWS_ENDPOINT_URL=<sim url>` reaches every
//! service. It speaks the real wire formats, checked with botocore by `tests/aws_mock.rs` of this
//! crate:
//!
//! | service (signing name) | protocol | operations | modelled errors |
//! |---|---|---|---|
//! | `cloudformation` | Query, `<member>` lists | DescribeStacks | ValidationError "Stack with id X does not exist" (400) |
//! | `rds` | Query, `<DBCluster>`/`<DBInstance>` lists | DescribeDBClusters, DescribeDBInstances | DBClusterNotFoundFault, DBInstanceNotFound (404) |
//! | `sts` | Query | GetCallerIdentity | |
//! | `ec2` | EC2 Query, `<item>` lists | DescribeInstances (`InstanceId.N`; filters `tag:KEY`, `tag-key`, `instance-id`, `instance-state-name`, with `*`/`?` wildcards) | InvalidInstanceID.NotFound / .Malformed, InvalidParameterValue |
//! | `ecs` | awsJson1_1 | ListTasks (`cluster`, `serviceName`, `desiredStatus`), DescribeTasks | ClusterNotFoundException, ServiceNotFoundException, InvalidParameterException, `failures[]` MISSING |
//! | `secretsmanager` | awsJson1_1 | GetSecretValue (by name, ARN or partial ARN) | ResourceNotFoundException |
//! | `ssm` | awsJson1_1 | handed to the simulator's SSM API | |
//!
//! Every service also answers, as AWS does: AccessDenied (`AccessDenied` 403 for Query,
//! `UnauthorizedOperation` 403 for EC2, `AccessDeniedException` 400 for JSON; the message names
//! caller, action and resource) for actions listed in [`AwsWorld::denied`]; its "unknown
//! operation" error (`InvalidAction`, `UnknownOperationException`) for anything else; a
//! `MissingAuthenticationToken` error for unsigned requests; and, when the world holds
//! [`AwsWorld::credentials`], the invalid-token and signature-mismatch errors after recomputing
//! the SigV4 signature (module `sigv4`).
//!
//! **Routing.** API calls are `POST /` (body bounded by the simulator). The service is the one
//! named in the credential scope of the `Authorization` header
//! (`Credential=AKID/DATE/REGION/SERVICE/aws4_request`), as each real endpoint only ever sees its
//! own. The region of that scope matters too: a request signed for a region other
//! than [`AwsWorld::region`] sees an account with no resources (STS answers everywhere).
//!
//! **The world** is an [`AwsWorld`]: serde types, loadable from JSON with
//! [`AwsWorld::from_json`] (`ssm-sim --aws-world FILE.json`), changeable while the simulator
//! runs through [`crate::SimServer::aws_world`]. Field names are snake_case; unknown
//! fields are errors; everything but identifiers has a default. A complete example (also
//! [`EXAMPLE_WORLD`], and a world someone can try the tool against without AWS):
//!
//! ```json
#![doc = include_str!("example-world.json")]
//! ```
//!
//! Field by field (the type documentation has the details and defaults):
//!
//! * `account` (`"123456789012"`), `region` (`"us-east-1"`), `caller.arn`, `caller.user_id`:
//!   who `sts:GetCallerIdentity` says is calling, and whose ARNs these are;
//! * `credentials` (absent: accept any signed request): the access key requests must be signed
//!   with;
//! * `stacks`: stack name → `status` (`CREATE_COMPLETE`), `outputs` (key → value),
//!   `description`;
//! * `db_clusters[]`: `identifier`, `endpoint`, `reader_endpoint`, `port` (3306),
//!   `iam_database_authentication_enabled` (true), `status` (`available`), `resource_id`
//!   (derived), `engine` (`aurora-mysql`), `engine_version`, `master_username` (`admin`),
//!   `master_user_secret_arn`;
//! * `db_instances[]`: `identifier`, `endpoint` (address), `port`,
//!   `iam_database_authentication_enabled`, `status`, `resource_id`, `cluster`, `engine`,
//!   `instance_class`, `master_username`;
//! * `ecs_clusters`: cluster name → `services`: service name → `tasks[]`: `id`, `last_status`
//!   and `desired_status` (`RUNNING`), `enable_execute_command` (true), `stopped_reason`,
//!   `containers[]`: `name`, `runtime_id`, `last_status` (`RUNNING`), `managed_agents[]`
//!   (`name`, `last_status`; one RUNNING `ExecuteCommandAgent` when absent);
//! * `ec2_instances[]`: `id`, `state` (`running`), `tags` (key → value);
//! * `secrets[]`: `name`, `arn`, `secret_string`;
//! * `denied[]`: `service:Action` strings (`ecs:ListTasks`, `rds:Describe*`, `ssm:StartSession`).
//!
//! **Coupling with Session Manager.** With a world configured, `StartSession` to
//! `ecs:<cluster>_<taskId>_<runtimeId>` succeeds only while that task runs with a running
//! `ExecuteCommandAgent`, and to `i-…` only while the instance is `running` (when the world lists
//! instances); otherwise it answers `TargetNotConnected`. Changing the world ends the live
//! sessions whose target it no longer lets connect ([`AwsWorld::target_state`]).
//!
//! Module map: [`world`] (the data and its lookups), `sigv4` (the Authorization header),
//! `query` and `json` (the two protocol families), and one module per service.

mod cloudformation;
mod ec2;
mod ecs;
mod json;
mod query;
mod rds;
mod secretsmanager;
pub(crate) mod sigv4;
mod sts;
pub mod world;

use http::{HeaderMap, Method, StatusCode, Uri};

pub use world::{
    AccessKey, AwsWorld, Caller, DbCluster, DbInstance, Ec2Instance, EcsCluster, EcsContainer,
    EcsService, EcsTask, ManagedAgent, Secret, SecretText, Stack, TargetState, WorldError,
};

/// The example world of the module documentation.
pub const EXAMPLE_WORLD: &str = include_str!("example-world.json");

/// The services the mock tells apart, by SigV4 signing name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// `cloudformation`.
    CloudFormation,
    /// `rds`.
    Rds,
    /// `sts`.
    Sts,
    /// `ec2`.
    Ec2,
    /// `ecs`.
    Ecs,
    /// `secretsmanager`.
    SecretsManager,
    /// `ssm`: answered by the simulator's SSM API, not here.
    Ssm,
}

impl Service {
    /// Every service, SSM last.
    pub const ALL: [Service; 7] = [
        Service::CloudFormation,
        Service::Rds,
        Service::Sts,
        Service::Ec2,
        Service::Ecs,
        Service::SecretsManager,
        Service::Ssm,
    ];

    /// The service a SigV4 credential scope names (for these services the signing name is the
    /// IAM prefix).
    pub fn from_signing_name(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.iam_prefix() == name)
    }

    /// The IAM prefix of the service's actions (`ecs` in `ecs:ListTasks`), also its SigV4
    /// signing name.
    pub fn iam_prefix(self) -> &'static str {
        match self {
            Service::CloudFormation => "cloudformation",
            Service::Rds => "rds",
            Service::Sts => "sts",
            Service::Ec2 => "ec2",
            Service::Ecs => "ecs",
            Service::SecretsManager => "secretsmanager",
            Service::Ssm => "ssm",
        }
    }

    fn protocol(self) -> Protocol {
        match self {
            Service::CloudFormation => Protocol::Query {
                namespace: "http://cloudformation.amazonaws.com/doc/2010-05-15/",
                version: "2010-05-15",
            },
            Service::Rds => Protocol::Query {
                namespace: "http://rds.amazonaws.com/doc/2014-10-31/",
                version: "2014-10-31",
            },
            Service::Sts => Protocol::Query {
                namespace: "https://sts.amazonaws.com/doc/2011-06-15/",
                version: "2011-06-15",
            },
            Service::Ec2 => Protocol::Ec2,
            Service::Ecs => Protocol::Json {
                target_prefix: "AmazonEC2ContainerServiceV20141113",
                message_key: "message",
            },
            Service::SecretsManager => Protocol::Json {
                target_prefix: "secretsmanager",
                message_key: "Message",
            },
            Service::Ssm => Protocol::Json {
                target_prefix: "AmazonSSM",
                message_key: "message",
            },
        }
    }
}

/// How a service encodes requests, answers and errors.
#[derive(Clone, Copy, Debug)]
enum Protocol {
    /// AWS Query with its XML namespace and API version.
    Query {
        namespace: &'static str,
        version: &'static str,
    },
    /// EC2's Query dialect.
    Ec2,
    /// awsJson1_1 with its `X-Amz-Target` prefix and the member name of error messages.
    Json {
        target_prefix: &'static str,
        message_key: &'static str,
    },
}

/// EC2's XML namespace (the real one ends in `/`, unlike the model's metadata).
const EC2_NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// The prefix AWS's JSON front end puts on the errors it raises itself.
const CORAL: &str = "com.amazon.coral.service#";

/// An API request, as received.
#[derive(Debug)]
pub struct ApiRequest<'a> {
    /// Method.
    pub method: &'a Method,
    /// Path and query.
    pub uri: &'a Uri,
    /// Headers.
    pub headers: &'a HeaderMap,
    /// The whole body (the caller bounds its size).
    pub body: &'a [u8],
}

/// A complete answer.
#[derive(Debug)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// `x-amzn-RequestId` (also in the XML body of Query answers).
    pub request_id: String,
    /// The body.
    pub body: String,
    /// The call as `service:Operation` (`ecs:ListTasks`), once the service was known.
    pub call: Option<String>,
}

/// Where a request goes.
#[derive(Debug)]
pub enum Routed {
    /// An SSM API call (authenticated as the world requires): the simulator answers it.
    Ssm {
        /// The region of the credential scope.
        region: String,
        /// The operation (`StartSession`), from `X-Amz-Target`.
        operation: String,
    },
    /// Answered by the mock.
    Answer(ApiResponse),
}

/// Routes and answers one API request against `world`.
pub fn route(world: &AwsWorld, req: &ApiRequest<'_>) -> Routed {
    let request_id = rds_iam_proxy::ssm::proto::message::MessageId::random().to_string();
    let Some(header) = req.headers.get(http::header::AUTHORIZATION) else {
        let guessed = guess_protocol(req);
        return Routed::Answer(Fault::missing_authentication(guessed).render(guessed, request_id));
    };
    let auth = match header
        .to_str()
        .map_err(|_| sigv4::Rejection::Incomplete("Authorization is not text.".to_owned()))
        .and_then(sigv4::parse)
    {
        Ok(a) => a,
        Err(r) => {
            let guessed = guess_protocol(req);
            return Routed::Answer(Fault::rejected(guessed, r).render(guessed, request_id));
        }
    };
    let Some(service) = Service::from_signing_name(auth.service) else {
        let guessed = guess_protocol(req);
        let fault = Fault::new(
            StatusCode::BAD_REQUEST,
            match guessed {
                Protocol::Json { .. } => "UnknownOperationException",
                _ => "InvalidAction",
            },
            format!(
                "the simulator does not serve the AWS service {:?} named in the credential \
                 scope of the Authorization header",
                auth.service
            ),
        );
        return Routed::Answer(fault.render(guessed, request_id));
    };
    let protocol = service.protocol();
    let operation = match protocol {
        Protocol::Query { .. } | Protocol::Ec2 => query::Params::parse(req.body, req.uri.query())
            .get("Action")
            .unwrap_or_default()
            .to_owned(),
        Protocol::Json { target_prefix, .. } => req
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.strip_prefix(target_prefix)?.strip_prefix('.'))
            .unwrap_or_default()
            .to_owned(),
    };
    let call = Some(format!("{}:{operation}", service.iam_prefix()));
    if let Some(key) = &world.credentials {
        let signed = sigv4::Signed {
            method: req.method,
            uri: req.uri,
            headers: req.headers,
            body: req.body,
        };
        if let Err(r) = sigv4::verify(&auth, &signed, &key.access_key_id, &key.secret_access_key.0)
        {
            let mut answer = Fault::rejected(protocol, r).render(protocol, request_id);
            answer.call = call;
            return Routed::Answer(answer);
        }
    }
    if service == Service::Ssm {
        return Routed::Ssm {
            region: auth.region.to_owned(),
            operation,
        };
    }
    let view = world.seen_from(auth.region);
    let ctx = Ctx {
        world: &view,
        service,
        protocol,
    };
    let answer = match protocol {
        Protocol::Query { namespace, .. } => query_call(&ctx, &operation, req).map(|xml| {
            (
                "text/xml",
                query::envelope(namespace, &operation, &xml, &request_id),
            )
        }),
        Protocol::Ec2 => query_call(&ctx, &operation, req).map(|xml| {
            (
                "text/xml;charset=UTF-8",
                query::ec2_envelope(EC2_NAMESPACE, &operation, &xml, &request_id),
            )
        }),
        Protocol::Json { .. } => {
            json_call(&ctx, &operation, req).map(|value| (json::CONTENT_TYPE, value.to_string()))
        }
    };
    let mut answer = match answer {
        Ok((content_type, body)) => ApiResponse {
            status: StatusCode::OK,
            content_type,
            request_id,
            body,
            call: None,
        },
        Err(f) => f.render(protocol, request_id),
    };
    answer.call = call;
    Routed::Answer(answer)
}

/// Runs a Query/EC2 call: the XML inside its envelope.
fn query_call(ctx: &Ctx<'_>, action: &str, req: &ApiRequest<'_>) -> Result<String, Fault> {
    let params = query::Params::parse(req.body, req.uri.query());
    match ctx.service {
        Service::CloudFormation => cloudformation::call(ctx, action, &params),
        Service::Rds => rds::call(ctx, action, &params),
        Service::Sts => sts::call(ctx, action, &params),
        Service::Ec2 => ec2::call(ctx, action, &params),
        _ => Err(ctx.unknown_operation(action)),
    }
}

/// Runs an awsJson call.
fn json_call(
    ctx: &Ctx<'_>,
    operation: &str,
    req: &ApiRequest<'_>,
) -> Result<serde_json::Value, Fault> {
    let input = json::parse_object(req.body).ok_or_else(|| {
        Fault::new(
            StatusCode::BAD_REQUEST,
            "SerializationException",
            "The request body is not a JSON object.",
        )
    })?;
    match ctx.service {
        Service::Ecs => ecs::call(ctx, operation, &input),
        Service::SecretsManager => secretsmanager::call(ctx, operation, &input),
        _ => Err(ctx.unknown_operation(operation)),
    }
}

/// For unauthenticated or unroutable requests: the protocol the request looks like it speaks.
fn guess_protocol(req: &ApiRequest<'_>) -> Protocol {
    if let Some(target) = req
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
    {
        return match target.split('.').next() {
            Some("secretsmanager") => Service::SecretsManager.protocol(),
            _ => Service::Ecs.protocol(),
        };
    }
    let params = query::Params::parse(req.body, req.uri.query());
    let service = match params.get("Action").unwrap_or_default() {
        "DescribeStacks" => Service::CloudFormation,
        a if a.starts_with("DescribeDB") => Service::Rds,
        a if ec2::is_ec2_action(a) => Service::Ec2,
        _ => Service::Sts,
    };
    service.protocol()
}

/// What one call runs against.
pub(crate) struct Ctx<'a> {
    /// The world as seen from the request's region.
    pub world: &'a AwsWorld,
    /// The service called.
    pub service: Service,
    protocol: Protocol,
}

impl Ctx<'_> {
    /// `Err(AccessDenied)` when the world denies `action` (`Action` of this service).
    pub fn check(&self, action: &str, resource: Option<&str>) -> Result<(), Fault> {
        let action = format!("{}:{action}", self.service.iam_prefix());
        if !self.world.is_denied(&action) {
            return Ok(());
        }
        Err(match self.protocol {
            Protocol::Query { .. } => Fault::new(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                self.world.access_denied_message(&action, resource),
            ),
            Protocol::Ec2 => Fault::new(
                StatusCode::FORBIDDEN,
                "UnauthorizedOperation",
                format!(
                    "You are not authorized to perform this operation. {}",
                    self.world.access_denied_message(&action, None)
                ),
            ),
            Protocol::Json { .. } => Fault::new(
                StatusCode::BAD_REQUEST,
                "AccessDeniedException",
                self.world.access_denied_message(&action, resource),
            ),
        })
    }

    /// The service's answer to an operation it does not have (or the mock does not model).
    pub fn unknown_operation(&self, operation: &str) -> Fault {
        match self.protocol {
            Protocol::Query { version, .. } => Fault::new(
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                format!("Could not find operation {operation} for version {version}"),
            ),
            Protocol::Ec2 => Fault::new(
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                format!("The action {operation} is not valid for this web service."),
            ),
            Protocol::Json { .. } => Fault {
                status: StatusCode::BAD_REQUEST,
                code: format!("{CORAL}UnknownOperationException"),
                message: None,
            },
        }
    }
}

/// An error answer, before the protocol shapes it.
#[derive(Debug)]
pub(crate) struct Fault {
    status: StatusCode,
    code: String,
    message: Option<String>,
}

impl Fault {
    /// A sender fault.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Fault {
        Fault {
            status,
            code: code.to_owned(),
            message: Some(message.into()),
        }
    }

    /// 400 `code` (ValidationError, InvalidParameterValue, InvalidParameterException…).
    pub fn bad_request(code: &str, message: impl Into<String>) -> Fault {
        Fault::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn missing_authentication(protocol: Protocol) -> Fault {
        const TEXT: &str = "Request is missing Authentication Token";
        match protocol {
            Protocol::Json { .. } => Fault::new(
                StatusCode::BAD_REQUEST,
                &format!("{CORAL}MissingAuthenticationTokenException"),
                TEXT,
            ),
            _ => Fault::new(StatusCode::FORBIDDEN, "MissingAuthenticationToken", TEXT),
        }
    }

    fn rejected(protocol: Protocol, why: sigv4::Rejection) -> Fault {
        const MISMATCH: &str = "The request signature we calculated does not match the \
             signature you provided. Check your AWS Secret Access Key and signing method. \
             Consult the service documentation for details.";
        const INVALID_TOKEN: &str = "The security token included in the request is invalid.";
        let json = matches!(protocol, Protocol::Json { .. });
        let coral = |code: &str| format!("{CORAL}{code}");
        match (why, json) {
            (sigv4::Rejection::Incomplete(m), false) => {
                Fault::new(StatusCode::FORBIDDEN, "IncompleteSignature", m)
            }
            (sigv4::Rejection::Incomplete(m), true) => Fault::new(
                StatusCode::BAD_REQUEST,
                &coral("IncompleteSignatureException"),
                m,
            ),
            (sigv4::Rejection::UnknownAccessKey, true) => Fault::new(
                StatusCode::BAD_REQUEST,
                &coral("UnrecognizedClientException"),
                INVALID_TOKEN,
            ),
            (sigv4::Rejection::UnknownAccessKey, false) => match protocol {
                Protocol::Ec2 => Fault::new(
                    StatusCode::UNAUTHORIZED,
                    "AuthFailure",
                    "AWS was not able to validate the provided access credentials",
                ),
                _ => Fault::new(StatusCode::FORBIDDEN, "InvalidClientTokenId", INVALID_TOKEN),
            },
            (sigv4::Rejection::Mismatch(m), true) => Fault::new(
                StatusCode::BAD_REQUEST,
                &coral("InvalidSignatureException"),
                m.unwrap_or_else(|| MISMATCH.to_owned()),
            ),
            (sigv4::Rejection::Mismatch(m), false) => Fault::new(
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                m.unwrap_or_else(|| MISMATCH.to_owned()),
            ),
        }
    }

    fn render(self, protocol: Protocol, request_id: String) -> ApiResponse {
        let message = self.message.as_deref().unwrap_or_default();
        let (content_type, body) = match protocol {
            Protocol::Query { namespace, .. } => (
                "text/xml",
                query::error_document(namespace, true, &self.code, message, &request_id),
            ),
            Protocol::Ec2 => (
                "text/xml;charset=UTF-8",
                query::ec2_error_document(&self.code, message, &request_id),
            ),
            Protocol::Json { message_key, .. } => {
                // Errors raised by AWS's front end keep the lower-case key everywhere.
                let key = if self.code.starts_with(CORAL) {
                    "message"
                } else {
                    message_key
                };
                (
                    json::CONTENT_TYPE,
                    json::error_body(&self.code, key, self.message.as_deref()),
                )
            }
        };
        ApiResponse {
            status: self.status,
            content_type,
            request_id,
            body,
            call: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], body: &str) -> ApiResponse {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let uri: Uri = "/".parse().unwrap();
        let req = ApiRequest {
            method: &Method::POST,
            uri: &uri,
            headers: &map,
            body: body.as_bytes(),
        };
        match route(&AwsWorld::from_json(EXAMPLE_WORLD).unwrap(), &req) {
            Routed::Answer(a) => a,
            Routed::Ssm { .. } => panic!("routed to SSM"),
        }
    }

    /// A header signed for `service` (the world below checks no signatures).
    fn signed_for(service: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKID/20240101/eu-west-1/{service}/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=00"
        )
    }

    #[test]
    fn hostile_bodies_get_client_errors_never_panics() {
        let mut world = AwsWorld::from_json(EXAMPLE_WORLD).unwrap();
        world.credentials = None;
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let bodies: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\xff\xfe\x00garbage".to_vec(),
            b"[1,2,3]".to_vec(),
            b"{\"cluster\": {\"a\": 1}, \"tasks\": \"x\", \"SecretId\": 7}".to_vec(),
            b"{\"tasks\": [1, null]}".to_vec(),
            deep.into_bytes(),
            b"Action=DescribeInstances&InstanceId.1=i-&Filter.1.Name=tag:&Filter.1.Value.1=*"
                .to_vec(),
            b"Action=DescribeStacks&StackName=%00%ff<&>".to_vec(),
            b"Action=DescribeDBClusters&Filters.Filter.1.Name=engine".to_vec(),
            b"Action=%ff%fe".to_vec(),
        ];
        let uri: Uri = "/".parse().unwrap();
        for service in [
            "cloudformation",
            "rds",
            "sts",
            "ec2",
            "ecs",
            "secretsmanager",
        ] {
            for target in [
                "AmazonEC2ContainerServiceV20141113.DescribeTasks",
                "secretsmanager.GetSecretValue",
                "AmazonEC2ContainerServiceV20141113.ListTasks",
            ] {
                for body in &bodies {
                    let mut headers = HeaderMap::new();
                    headers.insert("authorization", signed_for(service).parse().unwrap());
                    headers.insert("x-amz-target", target.parse().unwrap());
                    let req = ApiRequest {
                        method: &Method::POST,
                        uri: &uri,
                        headers: &headers,
                        body,
                    };
                    let Routed::Answer(a) = route(&world, &req) else {
                        panic!("routed to SSM");
                    };
                    assert!(
                        a.status.is_success() || a.status.is_client_error(),
                        "{service} {target} {body:?}: {} {}",
                        a.status,
                        a.body
                    );
                    assert!(!a.body.is_empty());
                }
            }
        }
    }

    #[test]
    fn unsigned_requests_get_missing_authentication_token_in_their_protocol() {
        let a = request(&[], "Action=GetCallerIdentity&Version=2011-06-15");
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        assert!(
            a.body.contains("<Code>MissingAuthenticationToken</Code>"),
            "{}",
            a.body
        );
        assert!(
            a.body.starts_with(
                r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">"#
            )
        );
        let a = request(&[], "Action=DescribeInstances&Version=2016-11-15");
        assert!(
            a.body
                .contains("<Response><Errors><Error><Code>MissingAuthenticationToken")
        );
        let a = request(
            &[(
                "x-amz-target",
                "AmazonEC2ContainerServiceV20141113.ListTasks",
            )],
            "{}",
        );
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            a.body,
            r#"{"__type":"com.amazon.coral.service#MissingAuthenticationTokenException","message":"Request is missing Authentication Token"}"#
        );
    }

    #[test]
    fn malformed_or_foreign_signatures_are_refused_in_the_callers_protocol() {
        let a = request(
            &[("authorization", "AWS4-HMAC-SHA256 Credential=x")],
            "Action=DescribeStacks",
        );
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        assert!(
            a.body.contains("<Code>IncompleteSignature</Code>"),
            "{}",
            a.body
        );
        let a = request(
            &[(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDSIMULATOR/20240101/eu-west-1/s3/aws4_request, SignedHeaders=host, Signature=00",
            )],
            "Action=ListBuckets",
        );
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert!(
            a.body.contains("<Code>InvalidAction</Code>")
                && a.body
                    .contains("does not serve the AWS service &quot;s3&quot;"),
            "{}",
            a.body
        );
    }
}
