#!/usr/bin/env python3
"""Checks every request the gateway sent during the test suite against
Imprint's OpenAPI description: the path and method exist, query parameters
are declared (with valid types and enums), JSON bodies validate against the
request schema (required fields, types, enums), and a credential is sent.

Usage: spec_check.py OPENAPI_YML REQUESTS_JSONL
The requests file is written by the test harness when IMPRINT_GATEWAY_RECORD
is set. Reads ../shared only through its arguments; nothing is copied.
"""
import json
import re
import sys

import yaml
from jsonschema import Draft202012Validator


def main(spec_path, requests_path):
    spec = yaml.safe_load(open(spec_path))
    components = spec.get("components", {})
    routes = []
    for template, item in spec["paths"].items():
        pattern = "^" + re.sub(r"\{[^/]+\}", "[^/]+", template) + "$"
        routes.append((re.compile(pattern), template, item))

    def resolve(obj):
        while isinstance(obj, dict) and "$ref" in obj and obj["$ref"].startswith("#/components/"):
            kind, name = obj["$ref"].split("/")[2:4]
            obj = {**components[kind][name], **{k: v for k, v in obj.items() if k != "$ref"}}
        return obj

    def validator(schema):
        # Local $refs resolve against a root carrying the spec's components.
        return Draft202012Validator({**schema, "components": components})

    failures, checked, probes, seen_ops = [], 0, 0, set()
    for n, line in enumerate(open(requests_path), 1):
        req = json.loads(line)
        if req["method"] == "HEAD" and req["path"] == "/":
            # /readyz's reachability probe: no API operation, no credential.
            probes += 1
            continue
        checked += 1
        where = f"request {n}: {req['method']} {req['path']}"
        matches = [(t, item) for rx, t, item in routes if rx.match(req["path"])]
        # Prefer the most literal template (fewest parameters).
        matches.sort(key=lambda m: m[0].count("{"))
        op = None
        for template, item in matches:
            op = item.get(req["method"].lower())
            if op:
                break
        if not op:
            failures.append(f"{where}: no such operation in the spec")
            continue
        seen_ops.add((req["method"], template))
        if req.get("auth_scheme") not in ("Basic", "Bearer"):
            failures.append(f"{where}: no Basic/Bearer credential")
        params = {}
        for p in op.get("parameters", []) + item.get("parameters", []):
            p = resolve(p)
            params[(p["in"], p["name"])] = p
        for name, value in req["query"]:
            p = params.get(("query", name))
            if p is None:
                failures.append(f"{where}: query parameter {name!r} is not in the spec")
                continue
            schema = resolve(p.get("schema", {}))
            typed = value
            if schema.get("type") == "integer":
                try:
                    typed = int(value)
                except ValueError:
                    failures.append(f"{where}: {name}={value!r} is not an integer")
                    continue
            for err in validator(schema).iter_errors(typed):
                failures.append(f"{where}: query {name}: {err.message}")
        for (kind, name), p in params.items():
            if kind == "query" and p.get("required") and name not in [k for k, _ in req["query"]]:
                failures.append(f"{where}: required query parameter {name!r} missing")
        body_spec = op.get("requestBody")
        if req["body"] is not None:
            if not body_spec:
                failures.append(f"{where}: sends a body the spec does not take")
                continue
            if req.get("content_type") != "application/json":
                failures.append(f"{where}: body without content-type application/json")
            schema = body_spec["content"]["application/json"]["schema"]
            for err in validator(schema).iter_errors(req["body"]):
                failures.append(f"{where}: body {'/'.join(map(str, err.absolute_path))}: {err.message}")
        elif body_spec and body_spec.get("required") and req["method"] in ("POST", "PUT", "PATCH"):
            failures.append(f"{where}: the spec requires a body")
    all_ops = {(m.upper(), t) for _, t, item in routes for m in item if m in ("get", "post", "put", "patch", "delete")}
    missing = sorted(all_ops - seen_ops)
    print(f"spec check: {checked} API requests (+{probes} readiness probes), "
          f"{len(seen_ops)} of {len(all_ops)} operations exercised")
    if missing:
        print("  operations the test suite never sent (not an error):")
        for m, t in missing:
            print(f"    {m} {t}")
    if failures:
        print(f"spec check: {len(failures)} problem(s):")
        for f in failures:
            print("  " + f)
        return 1
    if checked == 0:
        print("spec check: no requests were recorded")
        return 1
    print("spec check: every request is valid against the spec")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
