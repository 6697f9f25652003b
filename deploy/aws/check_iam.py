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
5. A data resource built from a parameter (a table, a topic, an SES identity, a key prefix)
   cannot become a wildcard: the parameter has AllowedValues or an AllowedPattern that admits
   neither '*' nor '?' anywhere.
6. E-mail (ses:SendEmail, ses:SendRawEmail, ...) is sent only from one sender: a StringEquals
   condition on ses:FromAddress, on SES identity ARNs ("...:identity/NAME") only.
7. sns:Publish is granted only on named topics: a topic of the template, a parameter (rule 5),
   or an ARN without a wildcard.
8. A table named by a read-only parameter (READ_ONLY_TABLE_PARAMETERS: EnrichTableName, the
   enrichment table) is granted reads only (GetItem, BatchGetItem, Query, Scan, DescribeTable).
9. A feature left out grants nothing: with the parameters as deployed (their Defaults, or
   --parameters), no statement's resource names a parameter that is empty, or a resource of
   the template that is not deployed.
10. Every event source mapping of an SQS queue (a SAM function's SQS event, or an
   AWS::Lambda::EventSourceMapping whose EventSourceArn is a queue: a template queue's Arn, an
   sqs ARN, or a parameter whose AllowedPattern admits only sqs ARNs) has FunctionResponseTypes
   [ReportBatchItemFailures], so a failed message comes back alone instead of its whole batch;
   and the function of an AWS::Lambda::EventSourceMapping (SAM grants its events' own) is
   granted sqs:ReceiveMessage, sqs:DeleteMessage, sqs:GetQueueAttributes and
   sqs:ChangeMessageVisibility on that queue, spelled as the mapping spells it.

The template is checked twice: as written, every branch of every Fn::If and every
conditional resource; and as deployed with the parameters' Defaults, or with --parameters
KEY=VALUE ... (the values are checked against the parameters' constraints and the template's
Rules; conditions are evaluated, conditional resources dropped, Fn::If branches chosen).

    check_iam.py TEMPLATE           exit 1 and list the findings, if any
    check_iam.py --self-test TEMPLATE
                                    also check that defects planted into a copy of the template
                                    (a wildcard action, a write on a whole bucket, an unbounded
                                    stream mapping, e-mail without its sender condition, a
                                    publish on every topic, a write on the enrichment table, an
                                    unguarded optional statement, ...) are found, and a write
                                    under a prefix is not
    check_iam.py [--self-test] --parameters KEY=VALUE ... -- TEMPLATE
                                    the same, deployed with these parameters (features enabled)

Run by scripts/test with the cfn-lint environment's Python (it reads the template with
cfn-lint's decoder, which knows the short-form intrinsic functions).
"""
import argparse
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

# E-mail sending actions: each must be conditioned on its sender (rule 6).
SES_SENDS = {
    "ses:sendemail",
    "ses:sendrawemail",
    "ses:sendtemplatedemail",
    "ses:sendbulktemplatedemail",
    "ses:sendbulkemail",
}

# Parameters naming a table the functions may only read, and what reading is (rule 8).
READ_ONLY_TABLE_PARAMETERS = ("EnrichTableName",)
DYNAMODB_READS = {
    "dynamodb:getitem",
    "dynamodb:batchgetitem",
    "dynamodb:query",
    "dynamodb:scan",
    "dynamodb:describetable",
}

# Values a parameter's AllowedPattern is probed with (rule 5): those it admits get a '*' or
# a '?' put in at every place, and must then be refused.
SAMPLE_VALUES = (
    "financial",
    "orders-2024.v1",
    "arn:aws:sns:us-east-1:123456789012:orders",
    "jobs@example.com",
    "example.com",
    "incoming/",
    "stream",
)

# Pseudo parameters, as conditions and rules see them.
PSEUDO = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "stack",
    "AWS::URLSuffix": "amazonaws.com",
}

TOKEN = re.compile(r"\$\{([^}]*)\}")


def branches(v):
    """What `v` may be: both branches of an Fn::If (recursively), nothing for AWS::NoValue."""
    if isinstance(v, dict) and len(v) == 1:
        ((fn, arg),) = v.items()
        if fn == "Fn::If" and isinstance(arg, list) and len(arg) == 3:
            return branches(arg[1]) + branches(arg[2])
        if fn == "Ref" and arg == "AWS::NoValue":
            return []
    return [v]


def statements(template):
    """(where, statement) for every policy statement the template grants to its functions,
    both branches of an Fn::If included."""
    for name, resource in (template.get("Resources") or {}).items():
        props = resource.get("Properties") or {}
        kind = resource.get("Type", "")
        docs = []
        if kind == "AWS::Serverless::Function":
            for policy in as_list(props.get("Policies") or []):
                for p in branches(policy):
                    if isinstance(p, dict) and "Statement" in p:
                        docs.append(p)
        elif kind in ("AWS::IAM::Role",):
            for policy in props.get("Policies") or []:
                for p in branches(policy):
                    if isinstance(p, dict):
                        docs += branches(p.get("PolicyDocument", {}))
        elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            docs += branches(props.get("PolicyDocument", {}))
        for doc in docs:
            if not isinstance(doc, dict):
                continue
            for i, entry in enumerate(as_list(doc.get("Statement") or [])):
                for st in branches(entry):
                    if isinstance(st, dict):
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
    if fn == "Ref" and arg == "AWS::NoValue":
        return []
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
        choices = [spellings(item, limit) or [""] for item in arg[1]]
        return [sep.join(c) for c in itertools.islice(itertools.product(*choices), limit)]
    if fn == "Fn::Sub":
        if isinstance(arg, str):
            return [arg]
        if isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str) and isinstance(arg[1], dict):
            names = list(arg[1])
            choices = [spellings(arg[1][n], limit) or [""] for n in names]
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


def queue_source(arn, template):
    """Whether an EventSourceArn names an SQS queue."""
    resources = template.get("Resources") or {}
    params = template.get("Parameters") or {}
    for text in spellings(arn):
        if ":sqs:" in text:
            return True
        m = re.fullmatch(r"\$\{([A-Za-z0-9]+)(?:\.([A-Za-z]+))?\}", text)
        if not m:
            continue
        if m.group(2) == "Arn" and (resources.get(m.group(1)) or {}).get("Type") == "AWS::SQS::Queue":
            return True
        pattern = (params.get(m.group(1)) or {}).get("AllowedPattern")
        if m.group(2) is None and isinstance(pattern, str) and ":sqs:" in pattern:
            return True
    return False


def queue_mappings(template):
    """(where, properties, function or None for a SAM event) for every SQS event source mapping."""
    for name, r in (template.get("Resources") or {}).items():
        kind = r.get("Type", "")
        props = r.get("Properties") or {}
        if kind == "AWS::Serverless::Function":
            for event, ev in (props.get("Events") or {}).items():
                if isinstance(ev, dict) and ev.get("Type") == "SQS":
                    yield f"{name} event {event} (SQS)", ev.get("Properties") or {}, None
        elif kind == "AWS::Lambda::EventSourceMapping" and queue_source(props.get("EventSourceArn"), template):
            fn = props.get("FunctionName")
            target = fn.get("Ref") if isinstance(fn, dict) and len(fn) == 1 else None
            yield f"{name} (event source mapping)", props, target or "?"


QUEUE_POLLING = ("sqs:receivemessage", "sqs:deletemessage", "sqs:getqueueattributes", "sqs:changemessagevisibility")


def queue_findings(template):
    """Rule 10: partial batch failures on every SQS mapping, and a mapping's function may poll its queue."""
    out = []
    for where, props, function in queue_mappings(template):
        types = as_list(props.get("FunctionResponseTypes") or [])
        if "ReportBatchItemFailures" not in types:
            out.append(f"{where}: no FunctionResponseTypes [ReportBatchItemFailures]: one failed message "
                       "sends its whole batch back")
        if function is None:
            continue
        queue = set(spellings(props.get("EventSourceArn")))
        granted = set()
        for w, st in statements(template):
            if not w.startswith(f"{function} statement ") or st.get("Effect") != "Allow":
                continue
            if queue & {t for r in as_list(st.get("Resource", [])) for t in spellings(r)}:
                granted |= set(actions_of(st))
        missing = [a for a in QUEUE_POLLING if a not in granted]
        if missing:
            out.append(f"{where}: function {function} is not granted {missing} on its queue {sorted(queue)}")
    return out


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


def admits_wildcard(p):
    """Why a parameter may hold a wildcard ('*' or '?'), or None."""
    if not str(p.get("Type", "String")).startswith(("String", "CommaDelimitedList")):
        return None
    values = p.get("AllowedValues")
    if isinstance(values, list):
        wild = [str(v) for v in values if "*" in str(v) or "?" in str(v)]
        return f"its AllowedValues hold {wild}" if wild else None
    pattern = p.get("AllowedPattern")
    if not isinstance(pattern, str):
        return "it has no AllowedPattern"
    try:
        rx = re.compile(pattern)
    except re.error as e:
        return f"its AllowedPattern is not a regular expression ({e})"
    seeds = [s for s in (str(p.get("Default", "")),) + SAMPLE_VALUES if s and rx.fullmatch(s)]
    probes = ["*", "?"]
    for seed in seeds:
        for w in ("*", "?"):
            probes += [seed[:i] + w + seed[i:] for i in range(len(seed) + 1)]
            probes += [seed[:i] + w + seed[i + 1:] for i in range(len(seed))]
    for probe in probes:
        if rx.fullmatch(probe):
            return f"its AllowedPattern admits {probe!r}"
    if not seeds and not rx.fullmatch(""):
        return "no sample value fits its AllowedPattern to probe it with: give it a Default"
    return None


def parameters_in(text, params):
    """The template parameters a spelled value names."""
    return [name for name in TOKEN.findall(text) if isinstance(params.get(name), dict)]


def wildcard_parameter_findings(where, data, resources, params):
    out = []
    for r in resources:
        for text in spellings(r):
            for name in parameters_in(text, params):
                why = admits_wildcard(params[name])
                if why:
                    out.append(f"{where}: {data} on {text!r}: parameter {name} may be a wildcard ({why})")
    return sorted(set(out))


def ses_findings(where, st, sends):
    """E-mail only from one sender, on identities only (rule 6)."""
    out = []
    condition = st.get("Condition")
    tests = condition if isinstance(condition, dict) else {}
    equals = next((v for k, v in tests.items() if k == "StringEquals"), None)
    sender = None
    if isinstance(equals, dict):
        sender = next((v for k, v in equals.items() if k.lower() == "ses:fromaddress"), None)
    if sender is None:
        others = [k for k, v in tests.items() if isinstance(v, dict) and any(x.lower() == "ses:fromaddress" for x in v)]
        how = f" (it is under {others}, which may match other senders)" if others else ""
        out.append(f"{where}: {sends} without a StringEquals condition on ses:FromAddress{how}: any sender may be used")
    elif any(s == "" for s in as_list(sender)):
        out.append(f"{where}: {sends} conditioned on an empty ses:FromAddress")
    for r in as_list(st.get("Resource", [])):
        for text in spellings(r):
            # Each ${...} stands for one name (rule 5 checks the parameters among them).
            m = re.search(r":ses:[^:]*:[^:]*:identity/(.*)$", TOKEN.sub("NAME", text))
            if not m or not m.group(1):
                out.append(f"{where}: {sends} on {text!r}, not an SES identity ARN (...:identity/NAME)")
            elif "*" in m.group(1) or "?" in m.group(1):
                out.append(f"{where}: {sends} on every identity matching {text!r}")
    return out


def publish_findings(where, st, template):
    """sns:Publish on named topics only (rule 7)."""
    out = []
    resources = template.get("Resources") or {}
    params = template.get("Parameters") or {}
    for r in as_list(st.get("Resource", [])):
        for text in spellings(r):
            m = re.fullmatch(r"\$\{([A-Za-z0-9]+)\}", text)
            if m and (resources.get(m.group(1)) or {}).get("Type") == "AWS::SNS::Topic":
                continue
            if m and isinstance(params.get(m.group(1)), dict):
                continue  # rule 5 checks the parameter
            fixed = TOKEN.sub("NAME", text)
            named = re.search(r":sns:[^:]*:[^:]*:[^:]+$", fixed) and "*" not in fixed and "?" not in fixed
            if not named:
                out.append(f"{where}: sns:Publish on {text!r}, not one named topic")
    return out


def read_only_findings(where, actions, st, params):
    """Reads only on a read-only table (rule 8)."""
    named = set()
    for r in as_list(st.get("Resource", [])):
        for text in spellings(r):
            named |= {p for p in parameters_in(text, params) if p in READ_ONLY_TABLE_PARAMETERS}
    writes = [a for a in actions if a.lower() not in DYNAMODB_READS]
    if named and writes:
        return [f"{where}: {writes} on the read-only table of parameter {', '.join(sorted(named))} (reads only: GetItem, BatchGetItem, Query, Scan, DescribeTable)"]
    return []


def findings(template):
    out = []
    params = template.get("Parameters") or {}
    for where, st in statements(template):
        if st.get("Effect") != "Allow":
            continue
        actions = [a for a in as_list(st.get("Action", [])) if isinstance(a, str)]
        resources = as_list(st.get("Resource", []))
        data = [a for a in actions if a.lower().startswith(DATA_SERVICES)]
        if data:
            out += wildcard_parameter_findings(where, data, resources, params)
        sends = [a for a in actions if a.lower() in SES_SENDS]
        if sends:
            out += ses_findings(where, st, sends)
        if any(a.lower() == "sns:publish" for a in actions):
            out += publish_findings(where, st, template)
        out += read_only_findings(where, actions, st, params)
        for a in actions:
            if "*" in a:
                out.append(f"{where}: wildcard action {a!r}")
        if data:
            for r in resources:
                if wildcard_resource(r):
                    out.append(f"{where}: {data} on wildcard resource {r!r}")
        writes = [a for a in actions if a.lower() in S3_OBJECT_WRITES]
        if writes:
            for r in resources:
                why = whole_bucket(r, template)
                if why:
                    out.append(f"{where}: {writes} on every key of a bucket ({why}): {json.dumps(r)}")
        if "NotAction" in st or "NotResource" in st:
            out.append(f"{where}: NotAction/NotResource grants everything else")
    return out + managed_findings(template) + mapping_findings(template) + queue_findings(template)


class Unevaluable(Exception):
    """A condition, rule or value this check cannot evaluate."""


def parameter_values(template, given):
    """Every parameter's value as deployed: `given`, else its Default. Raises ValueError naming
    each value that is unknown, missing or outside its parameter's constraints."""
    params = template.get("Parameters") or {}
    errors = [f"--parameters {k}: the template has no such parameter" for k in given if k not in params]
    values = {}
    for name, p in params.items():
        if name in given:
            value = given[name]
        elif "Default" in p:
            value = p["Default"]
        else:
            errors.append(f"parameter {name} has no Default: give it with --parameters {name}=VALUE")
            continue
        value = str(value)
        values[name] = value
        errors += [f"parameter {name}={value!r}: {why}" for why in violations(p, value)]
    if errors:
        raise ValueError("\n".join(errors))
    return values


def violations(p, value):
    """How `value` breaks a parameter's constraints (CloudFormation would refuse it)."""
    out = []
    allowed = p.get("AllowedValues")
    if isinstance(allowed, list) and value not in [str(v) for v in allowed]:
        out.append(f"not one of its AllowedValues {[str(v) for v in allowed]}")
    pattern = p.get("AllowedPattern")
    if isinstance(pattern, str) and not re.fullmatch(pattern, value):
        out.append(f"does not match its AllowedPattern {pattern}")
    if str(p.get("Type")) == "Number":
        try:
            n = float(value)
        except ValueError:
            return out + ["is not a number"]
        if "MinValue" in p and n < float(p["MinValue"]):
            out.append(f"is below its MinValue {p['MinValue']}")
        if "MaxValue" in p and n > float(p["MaxValue"]):
            out.append(f"is above its MaxValue {p['MaxValue']}")
    if "MinLength" in p and len(value) < int(p["MinLength"]):
        out.append(f"is shorter than its MinLength {p['MinLength']}")
    if "MaxLength" in p and len(value) > int(p["MaxLength"]):
        out.append(f"is longer than its MaxLength {p['MaxLength']}")
    return out


def value_of(v, values):
    """A string (or a list, for Fn::Split) a condition or a rule compares."""
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, list):
        return [value_of(x, values) for x in v]
    if isinstance(v, dict) and len(v) == 1:
        ((fn, arg),) = v.items()
        if fn == "Ref" and arg in values:
            return values[arg]
        if fn == "Ref" and arg in PSEUDO:
            return PSEUDO[arg]
        if fn == "Fn::Join" and isinstance(arg, list) and len(arg) == 2:
            items = value_of(arg[1], values)
            return str(arg[0]).join(items if isinstance(items, list) else [items])
        if fn == "Fn::Split" and isinstance(arg, list) and len(arg) == 2:
            return value_of(arg[1], values).split(str(arg[0]))
        if fn == "Fn::Select" and isinstance(arg, list) and len(arg) == 2:
            return value_of(arg[1], values)[int(value_of(arg[0], values))]
    raise Unevaluable(f"cannot evaluate {json.dumps(v)}")


def truth(expr, values, conditions, seen=()):
    """Whether a condition (or a rule's assertion) holds with `values`."""
    if not (isinstance(expr, dict) and len(expr) == 1):
        raise Unevaluable(f"cannot evaluate the condition {json.dumps(expr)}")
    ((fn, arg),) = expr.items()
    if fn == "Condition":
        if arg in seen or arg not in conditions:
            raise Unevaluable(f"condition {arg} is unknown or circular")
        return truth(conditions[arg], values, conditions, seen + (arg,))
    if fn == "Fn::Equals":
        return value_of(arg[0], values) == value_of(arg[1], values)
    if fn == "Fn::Not":
        return not truth(arg[0], values, conditions, seen)
    if fn == "Fn::And":
        return all(truth(a, values, conditions, seen) for a in arg)
    if fn == "Fn::Or":
        return any(truth(a, values, conditions, seen) for a in arg)
    if fn == "Fn::Contains":
        return value_of(arg[1], values) in value_of(arg[0], values)
    raise Unevaluable(f"cannot evaluate {fn}")


def broken_rules(template, values):
    """The AssertDescription of every rule assertion `values` break (CloudFormation would
    refuse the stack)."""
    out = []
    for name, rule in (template.get("Rules") or {}).items():
        applies = rule.get("RuleCondition")
        if applies is not None and not truth(applies, values, {}):
            continue
        for a in rule.get("Assertions") or []:
            if not truth(a.get("Assert"), values, {}):
                out.append(f"rule {name}: {a.get('AssertDescription', json.dumps(a.get('Assert')))}")
    return out


NO_VALUE = object()


def chosen(v, holds):
    """`v` with every Fn::If's branch chosen and AWS::NoValue taken out."""
    if isinstance(v, dict):
        if len(v) == 1:
            ((fn, arg),) = v.items()
            if fn == "Fn::If" and isinstance(arg, list) and len(arg) == 3:
                return chosen(arg[1] if holds[arg[0]] else arg[2], holds)
            if fn == "Ref" and arg == "AWS::NoValue":
                return NO_VALUE
        out = {}
        for k, x in v.items():
            y = chosen(x, holds)
            if y is not NO_VALUE:
                out[k] = y
        return out
    if isinstance(v, list):
        return [y for y in (chosen(x, holds) for x in v) if y is not NO_VALUE]
    return v


def deployed(template, values):
    """The template as CloudFormation would deploy it with `values`: conditional resources
    whose condition fails dropped, Fn::If branches chosen."""
    conditions = template.get("Conditions") or {}
    holds = {name: truth(c, values, conditions, (name,)) for name, c in conditions.items()}
    resources = {}
    for name, r in (template.get("Resources") or {}).items():
        if r.get("Condition") and not holds.get(r["Condition"], False):
            continue
        resources[name] = chosen(r, holds)
    return {**template, "Resources": resources}


def empty_parameter_findings(template, values):
    """Statements whose resource names a parameter left empty, or a resource not deployed (rule 9)."""
    params = template.get("Parameters") or {}
    resources = template.get("Resources") or {}
    out = []
    for where, st in statements(template):
        for r in as_list(st.get("Resource", [])):
            for text in spellings(r):
                empty = [p for p in parameters_in(text, params) if values.get(p) == ""]
                if empty:
                    out.append(
                        f"{where}: grants on {text!r} with parameter {', '.join(empty)} empty: a feature left out "
                        "must grant nothing (put the statement under the feature's condition)"
                    )
                absent = [
                    n for n in (t.split(".")[0] for t in TOKEN.findall(text))
                    if n not in params and n not in resources and not n.startswith("AWS::") and n != "?"
                ]
                if absent:
                    out.append(
                        f"{where}: grants on {text!r}, naming {', '.join(absent)}, not deployed with these "
                        "parameters: a feature left out must grant nothing (put the statement under its condition)"
                    )
    return out


def check(template, given):
    """The findings as written, then those only the deployed template has (with the
    parameters' Defaults, or `given`)."""
    out = findings(template)
    values = parameter_values(template, given)
    out += [f"rejected by CloudFormation: {why}" for why in broken_rules(template, values)]
    live = deployed(template, values)
    shown = ", ".join(f"{k}={v}" for k, v in given.items()) or "the Defaults"
    for f in findings(live) + empty_parameter_findings(live, values):
        if f not in out:
            out.append(f"deployed with {shown}: {f}")
    return out


def load(path):
    template, matches = decode(path)
    if matches:
        for m in matches:
            print(m, file=sys.stderr)
        sys.exit(1)
    return template


def first_function(template):
    """The name of the template's first unconditional SAM function with inline statements
    (deployed whatever the parameters, so what is planted there is checked both ways)."""
    for name, r in (template.get("Resources") or {}).items():
        if r.get("Type") == "AWS::Serverless::Function" and not r.get("Condition"):
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


def own_statements(template, keep):
    """The template's own statement dicts (in every Fn::If branch) that `keep` selects, to be
    changed in place in a copy."""
    return [st for _, st in statements(template) if keep(st)]


def actions_of(st):
    return [a.lower() for a in as_list(st.get("Action", [])) if isinstance(a, str)]


def names_read_only_table(st, params):
    return any(
        p in READ_ONLY_TABLE_PARAMETERS
        for r in as_list(st.get("Resource", []))
        for text in spellings(r)
        for p in parameters_in(text, params)
    )


def lift_guards(template, values, sid=None):
    """Take the Fn::If guard off the statements (all, or the one named `sid`) of deployed
    resources whose condition fails with `values`, as if they were granted whatever the
    parameters; the Sids of those lifted."""
    conditions = template.get("Conditions") or {}
    holds = {name: truth(c, values, conditions, (name,)) for name, c in conditions.items()}
    lifted = []
    for r in (template.get("Resources") or {}).values():
        if r.get("Condition") and not holds.get(r["Condition"], False):
            continue
        for policy in (r.get("Properties") or {}).get("Policies") or []:
            entries = policy.get("Statement") if isinstance(policy, dict) else None
            for i, x in enumerate(entries if isinstance(entries, list) else []):
                guard = x.get("Fn::If") if isinstance(x, dict) and len(x) == 1 else None
                if not (isinstance(guard, list) and len(guard) == 3 and isinstance(guard[1], dict)):
                    continue
                if holds.get(guard[0], True) or (sid is not None and guard[1].get("Sid") != sid):
                    continue
                entries[i] = guard[1]
                lifted.append(guard[1].get("Sid", "?"))
                if sid is not None:
                    return lifted
    return lifted


def self_test(template, given=None):
    """Plant defects into copies of the template, one at a time: each must add a finding
    naming it. A write under a fixed prefix must add none. Returns the failures."""
    given = given or {}
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
        ("an SQS event source mapping without partial batch failures, its function not granted the queue",
         "PlantedQueueMapping", plant_resources(
             PlantedQueue={"Type": "AWS::SQS::Queue"},
             PlantedQueueMapping={"Type": "AWS::Lambda::EventSourceMapping", "Properties": {
                 "FunctionName": {"Ref": "PlantedFunction"},
                 "EventSourceArn": {"Fn::GetAtt": ["PlantedQueue", "Arn"]}}})),
        ("ses:SendEmail without a ses:FromAddress condition", "PlantedSesAnySender", plant_statement(
            {"Sid": "PlantedSesAnySender", "Effect": "Allow", "Action": ["ses:SendEmail"],
             "Resource": {"Fn::Sub": "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/example.com"}})),
        ("ses:SendRawEmail with ses:FromAddress under StringLike", "PlantedSesLike", plant_statement(
            {"Sid": "PlantedSesLike", "Effect": "Allow", "Action": ["ses:SendRawEmail"],
             "Resource": "arn:aws:ses:us-east-1:1:identity/example.com",
             "Condition": {"StringLike": {"ses:FromAddress": "*@example.com"}}})),
        ("ses:SendEmail on every identity", "PlantedSesEveryIdentity", plant_statement(
            {"Sid": "PlantedSesEveryIdentity", "Effect": "Allow", "Action": ["ses:SendEmail"],
             "Resource": "arn:aws:ses:us-east-1:1:identity/*",
             "Condition": {"StringEquals": {"ses:FromAddress": "jobs@example.com"}}})),
        ("sns:Publish on *", "PlantedPublishAnywhere", plant_statement(
            {"Sid": "PlantedPublishAnywhere", "Effect": "Allow", "Action": ["sns:Publish"], "Resource": "*"})),
        ("sns:Publish on a topic parameter without AllowedPattern", "PlantedPublishParameter", plant_all(
            plant_parameter("PlantedTopicArn", {"Type": "String", "Default": ""}),
            plant_statement(
                {"Sid": "PlantedPublishParameter", "Effect": "Allow", "Action": ["sns:Publish"],
                 "Resource": {"Fn::If": ["PlantedHasTopic", {"Ref": "PlantedTopicArn"}, {"Ref": "AWS::NoValue"}]}}),
            lambda t: t.setdefault("Conditions", {}).update(
                PlantedHasTopic={"Fn::Not": [{"Fn::Equals": [{"Ref": "PlantedTopicArn"}, ""]}]}))),
        ("dynamodb:GetItem on a table parameter admitting '*'", "PlantedStarTable", plant_all(
            plant_parameter("PlantedTable", {"Type": "String", "Default": "refs", "AllowedPattern": "^[a-z*]+$"}),
            plant_statement(
                {"Sid": "PlantedStarTable", "Effect": "Allow", "Action": ["dynamodb:GetItem"],
                 "Resource": {"Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${PlantedTable}"}}))),
        ("dynamodb:PutItem on the enrichment table", "PlantedEnrichWrite", plant_all(
            lambda t: t.setdefault("Parameters", {}).setdefault(
                READ_ONLY_TABLE_PARAMETERS[0], {"Type": "String", "Default": "refs", "AllowedPattern": "^[a-z]*$"}),
            plant_statement(
                {"Sid": "PlantedEnrichWrite", "Effect": "Allow",
                 "Action": ["dynamodb:GetItem", "dynamodb:PutItem"],
                 "Resource": {"Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${%s}"
                              % READ_ONLY_TABLE_PARAMETERS[0]}}))),
        ("a grant on an optional parameter left empty, without its condition", "PlantedUnguarded", plant_all(
            plant_parameter("PlantedOptionalTable", {"Type": "String", "Default": "", "AllowedPattern": "^$|^[a-z]{3,}$"}),
            plant_statement(
                {"Sid": "PlantedUnguarded", "Effect": "Allow", "Action": ["dynamodb:GetItem"],
                 "Resource": {"Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${PlantedOptionalTable}"}}))),
    ]
    failures = []
    base = set(check(template, given))
    for what, marker, plant in cases:
        bad = copy.deepcopy(template)
        plant(bad)
        new = [f for f in check(bad, given) if f not in base and marker in f]
        if not new:
            failures.append(f"self-test: {what} was not found")
    failures += self_test_own_statements(template, given, base)
    # The template's own stream mappings, made unbounded, must be found too.
    bad = copy.deepcopy(template)
    if unbound_existing_stream_events(bad):
        new = set(findings(bad)) - base
        if len([f for f in new if "MaximumRetryAttempts" in f]) < 1 or not any("OnFailure" in f for f in new):
            failures.append("self-test: the template's stream mapping made unbounded was not found")
    # The template's own queue mappings without partial batch failures, and their functions
    # without the grants on their queues, must be found.
    bad = copy.deepcopy(template)
    live = deployed(bad, parameter_values(bad, given))
    mapped = [(w, props, fn) for w, props, fn in queue_mappings(live)]
    if mapped:
        for name, r in bad["Resources"].items():
            props = r.get("Properties") or {}
            props.pop("FunctionResponseTypes", None)
            for ev in (props.get("Events") or {}).values():
                if isinstance(ev, dict) and ev.get("Type") == "SQS":
                    (ev.get("Properties") or {}).pop("FunctionResponseTypes", None)
        for st in own_statements(bad, lambda st: "sqs:receivemessage" in actions_of(st)):
            st["Action"] = [a for a in as_list(st.get("Action", [])) if a.lower() != "sqs:receivemessage"]
        new = set(check(bad, given)) - base
        if sum(1 for f in new if "ReportBatchItemFailures" in f) < len(mapped):
            failures.append("self-test: the template's SQS mappings without partial batch failures were not found")
        if any(fn for _, _, fn in mapped) and not any("not granted" in f for f in new):
            failures.append("self-test: a queue mapping's function without sqs:ReceiveMessage was not found")
    # A write under a fixed prefix is no finding.
    for resource in [
        {"Fn::Sub": "arn:${AWS::Partition}:s3:::${BucketNamePrefix}-${AWS::AccountId}-${AWS::Region}/results/*"},
        "arn:aws:s3:::b/results/*",
    ]:
        fine = copy.deepcopy(template)
        plant_statement({"Sid": "PlantedPrefixed", "Effect": "Allow", "Action": ["s3:PutObject"], "Resource": resource})(fine)
        extra = set(check(fine, given)) - base
        if extra:
            failures.append(f"self-test: a write under a fixed prefix was taken for a finding: {sorted(extra)}")
    return failures


def self_test_own_statements(template, given, base):
    """The template's own e-mail, topic, read-only table and guarded statements, each made
    defective in a copy, must be found."""
    failures = []

    def expect(what, change, needle):
        bad = copy.deepcopy(template)
        if not change(bad):
            return
        new = [f for f in check(bad, given) if f not in base and needle in f]
        if not new:
            failures.append(f"self-test: {what} was not found")

    def drop_sender_conditions(t):
        found = own_statements(t, lambda st: any(a in SES_SENDS for a in actions_of(st)))
        for st in found:
            st.pop("Condition", None)
        return found

    def write_read_only_tables(t):
        found = own_statements(t, lambda st: names_read_only_table(st, t.get("Parameters") or {}))
        for st in found:
            st["Action"] = as_list(st.get("Action", [])) + ["dynamodb:PutItem"]
        return found

    def open_topic_parameters(t):
        named = set()
        for st in own_statements(t, lambda st: "sns:publish" in actions_of(st)):
            for r in as_list(st.get("Resource", [])):
                for text in spellings(r):
                    named |= set(parameters_in(text, t.get("Parameters") or {}))
        for name in named:
            t["Parameters"][name].pop("AllowedPattern", None)
            t["Parameters"][name].pop("AllowedValues", None)
        return named

    expect("the template's e-mail statement without its sender condition", drop_sender_conditions, "ses:FromAddress")
    expect("a write added to the template's read-only table statement", write_read_only_tables, "read-only table")
    expect("the template's topic parameter without its AllowedPattern", open_topic_parameters, "may be a wildcard")
    # Each statement guarded by a condition that fails with these parameters, granted
    # unconditionally, names a parameter left empty.
    values = parameter_values(template, given)
    # (A statement on resources named by neither a parameter nor a resource, such as
    # kinesis:ListStreams on "*", has nothing rule 9 could find.)
    named = {st.get("Sid") for _, st in statements(template)
             if any(TOKEN.search(t) for r in as_list(st.get("Resource", [])) for t in spellings(r))}
    for sid in [s for s in lift_guards(copy.deepcopy(template), values) if s in named]:
        expect(f"statement {sid} granted without its condition", lambda t, sid=sid: lift_guards(t, values, sid),
               f"statement {sid}: grants on")
    return failures


def main(argv):
    parser = argparse.ArgumentParser(usage=__doc__, add_help=False)
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("--parameters", nargs="+", default=[])
    parser.add_argument("template", nargs="?")
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        return 2
    bad = [kv for kv in args.parameters if "=" not in kv]
    if args.template is None or bad:
        print(__doc__ + (f"\nnot KEY=VALUE: {bad}" if bad else ""), file=sys.stderr)
        return 2
    path = args.template
    given = dict(kv.split("=", 1) for kv in args.parameters)
    template = load(path)
    try:
        found = check(template, given)
    except (ValueError, Unevaluable) as e:
        for line in str(e).splitlines():
            print(f"{path}: {line}", file=sys.stderr)
        return 1
    counted = sum(1 for _ in statements(template))
    live = sum(1 for _ in statements(deployed(template, parameter_values(template, given))))
    mappings = sum(1 for _ in stream_mappings(template))
    queues = sum(1 for _ in queue_mappings(template))
    for f in found:
        print(f"{path}: {f}", file=sys.stderr)
    if found:
        return 1
    if counted == 0:
        print(f"{path}: no policy statements found: the check read nothing", file=sys.stderr)
        return 1
    if args.self_test:
        if first_function(template) is None:
            print(f"{path}: self-test: no unconditional SAM function with inline statements to plant into", file=sys.stderr)
            return 1
        failures = self_test(template, given)
        for f in failures:
            print(f, file=sys.stderr)
        if failures:
            return 1
    shown = " ".join(f"{k}={v}" for k, v in given.items()) or "the Defaults"
    print(
        f"{path}: {counted} policy statements as written, {live} deployed with {shown}: none with a wildcard "
        "action, a wildcard data resource or parameter, an object write on a whole bucket, e-mail from any "
        "sender, a publish beyond named topics, a write on a read-only table or a grant on an empty parameter; "
        f"{mappings} stream mapping(s), each with a retry bound and an on-failure destination; "
        f"{queues} queue mapping(s), each reporting failed messages alone, its function granted its queue"
        + ("; every planted defect found" if args.self_test else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
