"""Runs AWS API calls with botocore, the AWS SDK for Python, and prints what botocore parsed.

Driven by crates/ssm-sim/tests/aws_mock.rs: it proves the simulator's AWS mock speaks the real
wire formats, because botocore's own serializers, signer and parsers (from its service models)
are on the other end.

stdin:  {"region": R, "access_key": A, "secret_key": S,
         "calls": [{"service": "ecs", "operation": "ListTasks", "params": {...},
                    optional "unsigned": true, "region", "access_key", "secret_key"}]}
stdout: one JSON document {"botocore": VERSION, "results": [...]}, a result per call:
        {"ok": <parsed response without ResponseMetadata>, "wire": [problems]}
        or {"error": {"code", "message", "type", "http_status"}}

botocore's parsers are lenient: they skip unknown elements and read list items whatever their
element name. So every successful raw response is also checked strictly against botocore's
service model ("wire"): each element or key must be a member of its shape, under the name the
model gives it, and list items must carry the model's member name (`<member>`, `<DBCluster>`,
`<item>`).

The endpoint comes from the AWS_ENDPOINT_URL environment variable, the standard way; the script
refuses to call anything if botocore resolved any other endpoint (so a botocore too old to know
the variable cannot reach real AWS).
"""

import base64
import datetime
import json
import os
import sys
import xml.etree.ElementTree as ET

import botocore
import botocore.session
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError


def jsonable(value):
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot encode {type(value)}")


def local(tag):
    return tag.rsplit("}", 1)[-1]


def check_xml(node, shape, path, problems):
    """Checks an XML element against a botocore shape, appending what does not match."""
    kind = shape.type_name
    if kind == "structure":
        members = {m.serialization.get("name", name): m for name, m in shape.members.items()}
        for child in node:
            tag = local(child.tag)
            if tag not in members:
                problems.append(f"{path}/{tag}: not a member of {shape.name}")
            else:
                check_xml(child, members[tag], f"{path}/{tag}", problems)
    elif kind == "list":
        want = shape.member.serialization.get("name", "member")
        for child in node:
            tag = local(child.tag)
            if tag != want:
                problems.append(f"{path}/{tag}: list items of {shape.name} are <{want}>")
            check_xml(child, shape.member, f"{path}/{tag}", problems)
    elif len(node):
        problems.append(f"{path}: {shape.name} is a {kind}, not an element with children")


def check_json(value, shape, path, problems):
    """Checks a JSON value against a botocore shape, appending what does not match."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            problems.append(f"{path}: {shape.name} must be an object")
            return
        members = {m.serialization.get("name", name): m for name, m in shape.members.items()}
        for key, item in value.items():
            if key not in members:
                problems.append(f"{path}.{key}: not a member of {shape.name}")
            else:
                check_json(item, members[key], f"{path}.{key}", problems)
    elif kind == "list":
        if not isinstance(value, list):
            problems.append(f"{path}: {shape.name} must be a list")
            return
        for i, item in enumerate(value):
            check_json(item, shape.member, f"{path}[{i}]", problems)
    elif kind == "string" and not isinstance(value, str):
        problems.append(f"{path}: {shape.name} must be a string")
    elif kind == "boolean" and not isinstance(value, bool):
        problems.append(f"{path}: {shape.name} must be a boolean")
    elif kind in ("integer", "long", "timestamp") and not isinstance(value, (int, float)):
        problems.append(f"{path}: {shape.name} must be a number")


def check_wire(protocol, operation, body, problems):
    """Checks a successful raw answer against the operation's output shape."""
    shape = operation.output_shape
    if protocol == "json":
        check_json(json.loads(body or b"{}"), shape, "$", problems)
        return
    root = ET.fromstring(body)
    want_root = f"{operation.name}Response"
    if local(root.tag) != want_root:
        problems.append(f"root <{local(root.tag)}>, expected <{want_root}>")
    if protocol == "ec2":
        # EC2 puts the output members straight under the root, with requestId first.
        result = ET.Element("result")
        result.extend(child for child in root if local(child.tag) != "requestId")
        check_xml(result, shape, want_root, problems)
        return
    wrapper = f"{operation.name}Result"
    children = [local(c.tag) for c in root]
    if children != [wrapper, "ResponseMetadata"]:
        problems.append(f"<{want_root}> holds {children}, expected [{wrapper}, ResponseMetadata]")
    for child in root:
        if local(child.tag) == wrapper:
            check_xml(child, shape, f"{want_root}/{wrapper}", problems)


def main():
    job = json.load(sys.stdin)
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    session = botocore.session.get_session()
    results = []
    for call in job["calls"]:
        config = Config(
            retries={"total_max_attempts": 1},
            parameter_validation=False,
            connect_timeout=10,
            read_timeout=30,
            signature_version=UNSIGNED if call.get("unsigned") else None,
        )
        client = session.create_client(
            call["service"],
            region_name=call.get("region", job["region"]),
            aws_access_key_id=call.get("access_key", job["access_key"]),
            aws_secret_access_key=call.get("secret_key", job["secret_key"]),
            config=config,
        )
        if client.meta.endpoint_url != endpoint:
            sys.exit(
                f"botocore {botocore.__version__} resolved {client.meta.endpoint_url} for "
                f"{call['service']}, not AWS_ENDPOINT_URL={endpoint}; botocore 1.31 or newer "
                "is needed (pip install -r crates/ssm-sim/tests/aws_mock/requirements.txt)"
            )
        raw = {}
        client.meta.events.register(
            "after-call", lambda http_response, **_: raw.update(body=http_response.content)
        )
        method = getattr(client, botocore.xform_name(call["operation"]))
        try:
            response = method(**call.get("params", {}))
            response.pop("ResponseMetadata", None)
            problems = []
            operation = client.meta.service_model.operation_model(call["operation"])
            check_wire(client.meta.service_model.protocol, operation, raw["body"], problems)
            results.append({"ok": response, "wire": problems})
        except ClientError as e:
            err = e.response.get("Error", {})
            results.append(
                {
                    "error": {
                        "code": err.get("Code"),
                        "message": err.get("Message"),
                        "type": err.get("Type"),
                        "http_status": e.response["ResponseMetadata"]["HTTPStatusCode"],
                    }
                }
            )
    json.dump({"botocore": botocore.__version__, "results": results}, sys.stdout, default=jsonable)


if __name__ == "__main__":
    main()
