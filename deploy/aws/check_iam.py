#!/usr/bin/env python3
"""Least privilege in a CloudFormation/SAM template: no Allow statement grants a wildcard
action ("*", "s3:*", "s3:Get*"), and none grants an action on a data service (S3, SQS,
DynamoDB, SNS, SES) over a wildcard resource ("*", "arn:aws:s3:::*"); object keys under one
bucket ("arn:...:s3:::BUCKET/*") are the one wildcard allowed.

    check_iam.py TEMPLATE           exit 1 and list the findings, if any
    check_iam.py --self-test TEMPLATE
                                    also check that a wildcard put into the template is found

Run by scripts/test with the cfn-lint environment's Python (it reads the template with
cfn-lint's decoder, which knows the short-form intrinsic functions).
"""
import copy
import json
import sys

from cfnlint.decode import decode

DATA_SERVICES = ("s3:", "sqs:", "dynamodb:", "sns:", "ses:")


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
        if "NotAction" in st or "NotResource" in st:
            out.append(f"{where}: NotAction/NotResource grants everything else")
    return out


def load(path):
    template, matches = decode(path)
    if matches:
        for m in matches:
            print(m, file=sys.stderr)
        sys.exit(1)
    return template


def main(argv):
    self_test = "--self-test" in argv
    paths = [a for a in argv if a != "--self-test"]
    if len(paths) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    template = load(paths[0])
    found = findings(template)
    counted = sum(1 for _ in statements(template))
    for f in found:
        print(f"{paths[0]}: {f}", file=sys.stderr)
    if found:
        return 1
    if counted == 0:
        print(f"{paths[0]}: no policy statements found: the check read nothing", file=sys.stderr)
        return 1
    if self_test:
        for action, resource in [("s3:*", "arn:aws:s3:::b/*"), ("dynamodb:GetItem", "*"), ("sqs:SendMessage", "arn:aws:sqs:us-east-1:1:*")]:
            bad = copy.deepcopy(template)
            for r in bad["Resources"].values():
                if r.get("Type") == "AWS::Serverless::Function":
                    r["Properties"]["Policies"][0]["Statement"].append(
                        {"Effect": "Allow", "Action": [action], "Resource": resource}
                    )
                    break
            if not findings(bad):
                print(f"self-test: {action} on {resource} was not found", file=sys.stderr)
                return 1
    print(f"{paths[0]}: {counted} policy statements, none with a wildcard action or a wildcard data resource")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
