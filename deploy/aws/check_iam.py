#!/usr/bin/env python3
"""Least privilege and bounded retries in a CloudFormation/SAM template:

1. No Allow statement grants a wildcard action ("*", "s3:*", "s3:Get*").
2. None grants an action on a data service (S3, SQS, DynamoDB, SNS, SES) over a wildcard
   resource ("*", "arn:aws:s3:::*"); object keys under one bucket ("arn:...:s3:::BUCKET/*")
   are the one wildcard allowed, and only for reads:
3. none grants an object write (s3:PutObject, s3:DeleteObject, s3:AbortMultipartUpload and
   the like) on a resource covering the whole bucket: the key after "BUCKET/" must begin with
   a fixed prefix ("results/*", or "${InputPrefix}*" where the parameter's AllowedPattern
   admits neither an empty value nor a leading wildcard), never with "*". The bucket may be
   spelled any way ("arn:aws:s3:::b/*", !Sub "arn:${AWS::Partition}:s3:::${Name}-...-${AWS::Region}/*",
   !Sub "${Bucket.Arn}/*", !Join). SAM policy templates and managed policies that write every
   key of a bucket (S3CrudPolicy, S3WritePolicy, S3FullAccessPolicy, AmazonS3FullAccess) are
   findings too.
4. Every event source mapping of a Kinesis (or DynamoDB) stream, a SAM function's Kinesis or
   DynamoDB event or an AWS::Lambda::EventSourceMapping whose EventSourceArn is a stream, has
   a finite MaximumRetryAttempts (a number >= 0, or a parameter whose Default and MinValue are
   >= 0) and a DestinationConfig OnFailure destination: a batch that keeps failing is given up
   and recorded instead of holding its shard until the stream's retention drops it.

    check_iam.py TEMPLATE           exit 1 and list the findings, if any
    check_iam.py --self-test TEMPLATE
                                    also check that defects planted into a copy of the template
                                    (a wildcard action, a write on a whole bucket, an unbounded
                                    stream mapping, ...) are found, and a write under a prefix is not

Run by scripts/test with the cfn-lint environment's Python (it reads the template with
cfn-lint's decoder, which knows the short-form intrinsic functions).
"""
import copy
import itertools
import json
import re
import sys

from cfnlint.decode import decode

DATA_SERVICES = ("s3:", "sqs:", "dynamodb:", "sns:", "ses:")

# Actions that change or remove an object (compared lower-case, as IAM does).
S3_OBJECT_WRITES = {
    "s3:putobject",
    "s3:deleteobject",
    "s3:deleteobjectversion",
    "s3:abortmultipartupload",
    "s3:putobjectacl",
    "s3:putobjectversionacl",
    "s3:putobjecttagging",
    "s3:putobjectversiontagging",
    "s3:deleteobjecttagging",
    "s3:deleteobjectversiontagging",
    "s3:putobjectretention",
    "s3:putobjectlegalhold",
}

# SAM policy templates and AWS managed policies that write every key of a bucket.
WHOLE_BUCKET_WRITE_TEMPLATES = {"S3CrudPolicy", "S3WritePolicy", "S3FullAccessPolicy"}
WHOLE_BUCKET_WRITE_MANAGED = ("AmazonS3FullAccess",)

# Event source mappings whose source is a stream: SAM event types, and what an
# EventSourceArn names (resource type, attribute).
STREAM_EVENT_TYPES = ("Kinesis", "DynamoDB")
STREAM_ARNS = {
    ("AWS::Kinesis::Stream", "Arn"),
    ("AWS::Kinesis::StreamConsumer", "ConsumerARN"),
    ("AWS::Kinesis::StreamConsumer", "ConsumerArn"),
    ("AWS::DynamoDB::Table", "StreamArn"),
}

TOKEN = re.compile(r"\$\{([^}]*)\}")


def statements(template):
    """(where, statement) for every policy statement the template grants to its functions."""
    for name, resource in (template.get("Resources") or {}).items():
        props = resource.get("Properties") or {}
        kind = resource.get("Type", "")
        docs = []
        if kind == "AWS::Serverless::Function":
            for policy in props.get("Policies") or []:
                if isinstance(policy, dict) and "Statement" in policy:
                    docs.append(policy)
        elif kind in ("AWS::IAM::Role",):
            docs += [p.get("PolicyDocument", {}) for p in props.get("Policies") or []]
        elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            docs.append(props.get("PolicyDocument", {}))
        for doc in docs:
            for i, st in enumerate(doc.get("Statement") or []):
                yield f"{name} statement {st.get('Sid', i)}", st


def as_list(v):
    return v if isinstance(v, list) else [v]


def wildcard_resource(r):
    """Whether a resource (a string or an intrinsic function) is a wildcard beyond one bucket's keys."""
    text = r if isinstance(r, str) else json.dumps(r)
    if text == "*" or text.endswith(':*"') or text.endswith(":*"):
        return True
    if "s3:::*" in text or "table/*" in text or ":*:" in text:
        return True
    return False


def spellings(v, limit=16):
    """The strings a value may become, intrinsic functions written as Sub does: Ref X as
    "${X}", GetAtt X.Attr as "${X.Attr}", both branches of an If, Join and Sub expanded;
    "${?}" for anything else."""
    if isinstance(v, str):
        return [v]
    if isinstance(v, (int, float)):
        return [str(v)]
    if not (isinstance(v, dict) and len(v) == 1):
        return ["${?}"]
    ((fn, arg),) = v.items()
    if fn == "Ref" and isinstance(arg, str):
        return ["${%s}" % arg]
    if fn == "Fn::GetAtt":
        parts = arg.split(".", 1) if isinstance(arg, str) else arg
        if isinstance(parts, list) and len(parts) == 2 and all(isinstance(p, str) for p in parts):
            return ["${%s.%s}" % (parts[0], parts[1])]
        return ["${?}"]
    if fn == "Fn::If" and isinstance(arg, list) and len(arg) == 3:
        return (spellings(arg[1], limit) + spellings(arg[2], limit))[:limit]
    if fn == "Fn::Join" and isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], list):
        sep = arg[0] if isinstance(arg[0], str) else ""
        choices = [spellings(item, limit) for item in arg[1]]
        return [sep.join(c) for c in itertools.islice(itertools.product(*choices), limit)]
    if fn == "Fn::Sub":
        if isinstance(arg, str):
            return [arg]
        if isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str) and isinstance(arg[1], dict):
            names = list(arg[1])
            choices = [spellings(arg[1][n], limit) for n in names]
            out = []
            for combo in itertools.islice(itertools.product(*choices), limit):
                text = arg[0]
                for n, value in zip(names, combo):
                    text = text.replace("${%s}" % n, value)
                out.append(text)
            return out
    return ["${?}"]


def object_key(text, resources):
    """(bucket, key pattern) of an S3 object ARN, else None (a bucket ARN, or not S3)."""
    m = re.search(r":s3:::(.*)$", text)
    if m:
        rest = m.group(1)
        if "/" not in rest:
            return None
        return tuple(rest.split("/", 1))
    m = re.match(r"^\$\{([A-Za-z0-9]+)\.Arn\}/(.*)$", text)
    if m and (resources.get(m.group(1)) or {}).get("Type") == "AWS::S3::Bucket":
        return "${%s}" % m.group(1), m.group(2)
    return None


def parameter_openness(p):
    """(may be empty, may begin with a wildcard) for a template parameter."""
    if not str(p.get("Type", "String")).startswith(("String", "CommaDelimitedList")):
        return False, False
    values = p.get("AllowedValues")
    if isinstance(values, list):
        texts = [str(v) for v in values]
        return "" in texts, any(t[:1] in ("*", "?") for t in texts)
    pattern = p.get("AllowedPattern")
    if not isinstance(pattern, str):
        try:
            min_length = int(p.get("MinLength", 0))
        except (TypeError, ValueError):
            min_length = 0
        return min_length == 0, True
    try:
        rx = re.compile(pattern)
    except re.error:
        return True, True
    default = str(p.get("Default", ""))
    empty = rx.fullmatch("") is not None and int(p.get("MinLength", 0) or 0) == 0
    probes = ["*", "?", "*/", "*" + default, "?" + default, "*" + default[1:], "?" + default[1:]]
    return empty, any(rx.fullmatch(s) for s in probes)


def open_start(key, params):
    """Why a key pattern may begin with a wildcard (so it covers every key of its bucket), or
    None when it begins with a fixed prefix. Parameters that may be empty are skipped over;
    pseudo parameters, resources and Sub variables are fixed, non-empty names."""
    pieces = TOKEN.split(key)
    skipped = []
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            if piece == "":
                continue
            if piece[0] in ("*", "?"):
                after = f" after {', '.join(skipped)}, which may be empty" if skipped else ""
                return f"the key begins with {piece[0]!r}{after}"
            return None
        p = params.get(piece)
        if not isinstance(p, dict):
            return None
        empty, wild = parameter_openness(p)
        if wild:
            how = "its AllowedPattern admits '*'" if "AllowedPattern" in p else "it has no AllowedPattern"
            return f"parameter {piece} may begin with a wildcard ({how})"
        if not empty:
            return None
        skipped.append(f"parameter {piece}")
    return None


def whole_bucket(resource, template):
    """Why a resource covers every key of a bucket, or None."""
    resources = template.get("Resources") or {}
    params = template.get("Parameters") or {}
    for text in spellings(resource):
        found = object_key(text, resources)
        if found is None:
            continue
        bucket, key = found
        if "*" in bucket or "?" in bucket:
            return f"the bucket name {bucket!r} is a wildcard"
        why = open_start(key, params)
        if why:
            return why
    return None


def stream_source(arn, resources):
    """Whether an EventSourceArn names a Kinesis or DynamoDB stream."""
    for text in spellings(arn):
        if ":kinesis:" in text or (":dynamodb:" in text and "/stream/" in text):
            return True
        m = re.fullmatch(r"\$\{([A-Za-z0-9]+)\.([A-Za-z]+)\}", text)
        if m and ((resources.get(m.group(1)) or {}).get("Type"), m.group(2)) in STREAM_ARNS:
            return True
    return False


def stream_mappings(template):
    """(where, properties) for every event source mapping of a stream."""
    resources = template.get("Resources") or {}
    for name, r in resources.items():
        kind = r.get("Type", "")
        props = r.get("Properties") or {}
        if kind == "AWS::Serverless::Function":
            for event, ev in (props.get("Events") or {}).items():
                if isinstance(ev, dict) and ev.get("Type") in STREAM_EVENT_TYPES:
                    yield f"{name} event {event} ({ev.get('Type')})", ev.get("Properties") or {}
        elif kind == "AWS::Lambda::EventSourceMapping" and stream_source(props.get("EventSourceArn"), resources):
            yield f"{name} (event source mapping)", props


def as_int(v):
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def unbounded_retries(v, params):
    """Why MaximumRetryAttempts `v` does not bound the retries, or None."""
    if v is None:
        return "no MaximumRetryAttempts (Lambda's default, -1, retries until the records expire)"
    if isinstance(v, dict) and len(v) == 1:
        ((fn, arg),) = v.items()
        if fn == "Fn::If" and isinstance(arg, list) and len(arg) == 3:
            return unbounded_retries(arg[1], params) or unbounded_retries(arg[2], params)
        if fn == "Ref" and isinstance(params.get(arg), dict):
            p = params[arg]
            values = p.get("AllowedValues")
            if isinstance(values, list):
                if values and all((as_int(x) or 0) >= 0 and as_int(x) is not None for x in values):
                    return None
                return f"MaximumRetryAttempts is parameter {arg}, whose AllowedValues admit -1 (no limit)"
            default, least = as_int(p.get("Default")), as_int(p.get("MinValue"))
            if default is None or default < 0:
                return f"MaximumRetryAttempts is parameter {arg}, whose Default is not a number >= 0"
            if least is None or least < 0:
                return f"MaximumRetryAttempts is parameter {arg}, which admits -1 (no limit): give it MinValue >= 0"
            return None
        return f"MaximumRetryAttempts {json.dumps(v)} cannot be checked"
    n = as_int(v)
    if n is None or isinstance(v, bool):
        return f"MaximumRetryAttempts {v!r} is not a number"
    if n < 0:
        return f"MaximumRetryAttempts {n} (no limit on retries)"
    return None


def mapping_findings(template):
    out = []
    params = template.get("Parameters") or {}
    for where, props in stream_mappings(template):
        why = unbounded_retries(props.get("MaximumRetryAttempts"), params)
        if why:
            out.append(f"{where}: {why}: a batch that keeps failing holds its shard")
        config = props.get("DestinationConfig")
        on_failure = config.get("OnFailure") if isinstance(config, dict) else None
        if not (isinstance(on_failure, dict) and on_failure.get("Destination")):
            out.append(f"{where}: no DestinationConfig OnFailure destination: a batch given up leaves no trace")
    return out


def managed_findings(template):
    """SAM policy templates and managed policies that write every key of a bucket."""
    out = []
    for name, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") not in ("AWS::Serverless::Function", "AWS::IAM::Role"):
            continue
        props = resource.get("Properties") or {}
        entries = as_list(props.get("ManagedPolicyArns") or [])
        if resource.get("Type") == "AWS::Serverless::Function":
            entries += as_list(props.get("Policies") or [])
        for entry in entries:
            if isinstance(entry, dict) and "Statement" in entry:
                continue
            if isinstance(entry, dict) and len(entry) == 1 and next(iter(entry)) in WHOLE_BUCKET_WRITE_TEMPLATES:
                out.append(f"{name}: SAM policy template {next(iter(entry))} writes every key of its bucket")
                continue
            for text in spellings(entry):
                if text.endswith(WHOLE_BUCKET_WRITE_MANAGED):
                    out.append(f"{name}: managed policy {text} writes every key of every bucket")
    return out


def findings(template):
    out = []
    for where, st in statements(template):
        if st.get("Effect") != "Allow":
            continue
        actions = [a for a in as_list(st.get("Action", [])) if isinstance(a, str)]
        for a in actions:
            if "*" in a:
                out.append(f"{where}: wildcard action {a!r}")
        data = [a for a in actions if a.lower().startswith(DATA_SERVICES)]
        if data:
            for r in as_list(st.get("Resource", [])):
                if wildcard_resource(r):
                    out.append(f"{where}: {data} on wildcard resource {r!r}")
        writes = [a for a in actions if a.lower() in S3_OBJECT_WRITES]
        if writes:
            for r in as_list(st.get("Resource", [])):
                why = whole_bucket(r, template)
                if why:
                    out.append(f"{where}: {writes} on every key of a bucket ({why}): {json.dumps(r)}")
        if "NotAction" in st or "NotResource" in st:
            out.append(f"{where}: NotAction/NotResource grants everything else")
    return out + managed_findings(template) + mapping_findings(template)


def load(path):
    template, matches = decode(path)
    if matches:
        for m in matches:
            print(m, file=sys.stderr)
        sys.exit(1)
    return template


def first_function(template):
    """The name of the template's first SAM function with inline statements."""
    for name, r in (template.get("Resources") or {}).items():
        if r.get("Type") == "AWS::Serverless::Function":
            for policy in r.get("Properties", {}).get("Policies") or []:
                if isinstance(policy, dict) and "Statement" in policy:
                    return name
    return None


def plant_statement(statement):
    def plant(t):
        fn = first_function(t)
        for policy in t["Resources"][fn]["Properties"]["Policies"]:
            if isinstance(policy, dict) and "Statement" in policy:
                policy["Statement"].append(statement)
                return
    return plant


def plant_resources(**resources):
    def plant(t):
        t["Resources"].update(copy.deepcopy(resources))
    return plant


def plant_parameter(name, parameter):
    def plant(t):
        t.setdefault("Parameters", {})[name] = copy.deepcopy(parameter)
    return plant


def plant_all(*plants):
    def plant(t):
        for p in plants:
            p(t)
    return plant


def plant_event(t):
    fn = first_function(t)
    t["Resources"]["PlantedStream"] = {"Type": "AWS::Kinesis::Stream", "Properties": {"ShardCount": 1}}
    t["Resources"][fn]["Properties"].setdefault("Events", {})["PlantedRecords"] = {
        "Type": "Kinesis",
        "Properties": {"Stream": {"Fn::GetAtt": ["PlantedStream", "Arn"]}, "StartingPosition": "LATEST"},
    }


def unbound_existing_stream_events(t):
    """Make every stream mapping already in the template unbounded; False if it has none."""
    touched = False
    for _, props in stream_mappings(t):
        props["MaximumRetryAttempts"] = -1
        props.pop("DestinationConfig", None)
        touched = True
    return touched


def self_test(template):
    """Plant defects into copies of the template, one at a time: each must add a finding
    naming it. A write under a fixed prefix must add none. Returns the failures."""
    whole = "arn:${AWS::Partition}:s3:::${BucketNamePrefix}-${AWS::AccountId}-${AWS::Region}/*"
    planted_stream = {"Type": "AWS::Kinesis::Stream", "Properties": {"ShardCount": 1}}
    unbounded_mapping = {
        "Type": "AWS::Lambda::EventSourceMapping",
        "Properties": {
            "FunctionName": "planted",
            "EventSourceArn": {"Fn::GetAtt": ["PlantedStream", "Arn"]},
            "StartingPosition": "LATEST",
            "MaximumRetryAttempts": -1,
        },
    }
    cases = [
        ("s3:* on one bucket's keys", "PlantedWildcardAction", plant_statement(
            {"Sid": "PlantedWildcardAction", "Effect": "Allow", "Action": ["s3:*"], "Resource": "arn:aws:s3:::b/*"})),
        ("dynamodb:GetItem on *", "PlantedWildcardResource", plant_statement(
            {"Sid": "PlantedWildcardResource", "Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": "*"})),
        ("sqs:SendMessage on every queue", "PlantedWildcardQueue", plant_statement(
            {"Sid": "PlantedWildcardQueue", "Effect": "Allow", "Action": ["sqs:SendMessage"],
             "Resource": "arn:aws:sqs:us-east-1:1:*"})),
        ("s3:PutObject on a whole bucket (!Sub)", "PlantedWholeBucketSub", plant_statement(
            {"Sid": "PlantedWholeBucketSub", "Effect": "Allow", "Action": ["s3:PutObject"],
             "Resource": {"Fn::Sub": whole}})),
        ("s3:DeleteObject on a whole bucket (literal)", "PlantedWholeBucketLiteral", plant_statement(
            {"Sid": "PlantedWholeBucketLiteral", "Effect": "Allow", "Action": "s3:DeleteObject",
             "Resource": "arn:aws:s3:::some-bucket/*"})),
        ("s3:AbortMultipartUpload on ${Bucket.Arn}/*", "PlantedWholeBucketArn", plant_all(
            plant_resources(PlantedBucket={"Type": "AWS::S3::Bucket"}),
            plant_statement(
                {"Sid": "PlantedWholeBucketArn", "Effect": "Allow", "Action": ["s3:AbortMultipartUpload"],
                 "Resource": {"Fn::Sub": "${PlantedBucket.Arn}/*"}}))),
        ("s3:PutObject on !Join [.., BUCKET, /*]", "PlantedWholeBucketJoin", plant_statement(
            {"Sid": "PlantedWholeBucketJoin", "Effect": "Allow", "Action": ["s3:PutObject"],
             "Resource": {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::", "b", "/*"]]}})),
        ("s3:PutObject under a prefix parameter that may be empty", "PlantedEmptyPrefix", plant_all(
            plant_parameter("PlantedPrefix", {"Type": "String", "Default": "", "AllowedPattern": "^[a-z/]*$"}),
            plant_statement(
                {"Sid": "PlantedEmptyPrefix", "Effect": "Allow", "Action": ["s3:PutObject"],
                 "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::b/${PlantedPrefix}*"}}))),
        ("s3:PutObject under a prefix parameter admitting '*'", "PlantedStarPrefix", plant_all(
            plant_parameter("PlantedPrefix", {"Type": "String", "Default": "in/", "AllowedPattern": "^[a-z*/]+/$"}),
            plant_statement(
                {"Sid": "PlantedStarPrefix", "Effect": "Allow", "Action": ["s3:PutObject"],
                 "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::b/${PlantedPrefix}*"}}))),
        ("the SAM policy template S3CrudPolicy", "S3CrudPolicy", lambda t: t["Resources"][first_function(t)][
            "Properties"]["Policies"].append({"S3CrudPolicy": {"BucketName": "b"}})),
        ("an unbounded Kinesis event source mapping", "PlantedMapping", plant_resources(
            PlantedStream=planted_stream, PlantedMapping=unbounded_mapping)),
        ("a SAM Kinesis event without retry bound or destination", "PlantedRecords", plant_event),
    ]
    failures = []
    base = set(findings(template))
    for what, marker, plant in cases:
        bad = copy.deepcopy(template)
        plant(bad)
        new = [f for f in findings(bad) if f not in base and marker in f]
        if not new:
            failures.append(f"self-test: {what} was not found")
    # The template's own stream mappings, made unbounded, must be found too.
    bad = copy.deepcopy(template)
    if unbound_existing_stream_events(bad):
        new = set(findings(bad)) - base
        if len([f for f in new if "MaximumRetryAttempts" in f]) < 1 or not any("OnFailure" in f for f in new):
            failures.append("self-test: the template's stream mapping made unbounded was not found")
    # A write under a fixed prefix is no finding.
    for resource in [
        {"Fn::Sub": "arn:${AWS::Partition}:s3:::${BucketNamePrefix}-${AWS::AccountId}-${AWS::Region}/results/*"},
        "arn:aws:s3:::b/results/*",
    ]:
        fine = copy.deepcopy(template)
        plant_statement({"Sid": "PlantedPrefixed", "Effect": "Allow", "Action": ["s3:PutObject"], "Resource": resource})(fine)
        extra = set(findings(fine)) - base
        if extra:
            failures.append(f"self-test: a write under a fixed prefix was taken for a finding: {sorted(extra)}")
    return failures


def main(argv):
    self_testing = "--self-test" in argv
    paths = [a for a in argv if a != "--self-test"]
    if len(paths) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    template = load(paths[0])
    found = findings(template)
    counted = sum(1 for _ in statements(template))
    mappings = sum(1 for _ in stream_mappings(template))
    for f in found:
        print(f"{paths[0]}: {f}", file=sys.stderr)
    if found:
        return 1
    if counted == 0:
        print(f"{paths[0]}: no policy statements found: the check read nothing", file=sys.stderr)
        return 1
    if self_testing:
        if first_function(template) is None:
            print(f"{paths[0]}: self-test: no SAM function with inline statements to plant into", file=sys.stderr)
            return 1
        failures = self_test(template)
        for f in failures:
            print(f, file=sys.stderr)
        if failures:
            return 1
    print(
        f"{paths[0]}: {counted} policy statements, none with a wildcard action, a wildcard data resource "
        f"or an object write on a whole bucket; {mappings} stream mapping(s), each with a retry bound and "
        "an on-failure destination" + ("; every planted defect found" if self_testing else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
