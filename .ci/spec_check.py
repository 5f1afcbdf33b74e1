#!/usr/bin/env python3
"""Checks recorded traffic against Imprint's OpenAPI description.

  spec_check.py OPENAPI_YML requests REQUESTS_JSONL
      every request the gateway sent during the tests: the path and method
      exist, query parameters are declared (types, enums), JSON bodies
      validate against the request schema, and a credential is sent.
      Written by tests/gateway when IMPRINT_GATEWAY_RECORD is set.

  spec_check.py OPENAPI_YML responses RESPONSES_JSONL
      every answer the emulator gave during its tests: each path of the spec
      was served, 2xx statuses are the declared ones, and bodies validate
      against the declared response schema.
      Written by tests/emulator when IMPRINT_EMULATOR_RECORD is set.

Reads ../shared only through its arguments; nothing is copied.
"""
import json
import re
import sys

import yaml
from jsonschema import Draft202012Validator


# Known errors in the published spec, patched in memory (and reported).
ERRATA = [
    ("OrdersResponse requires 'orders' but defines only 'data'",
     lambda c: c["schemas"]["OrdersResponse"].update(required=["data"])),
    ("PaymentMethod.card requires 'brand' but does not define it",
     lambda c: c["schemas"]["PaymentMethod"]["properties"]["card"].update(
         required=[r for r in c["schemas"]["PaymentMethod"]["properties"]["card"]["required"] if r != "brand"])),
]


def load(spec_path):
    spec = yaml.safe_load(open(spec_path))
    components = spec.get("components", {})
    for note, fix in ERRATA:
        try:
            fix(components)
            print(f"spec erratum patched: {note}")
        except (KeyError, TypeError):
            pass
    return spec, components


class Operations:
    """The spec's operations, found by method and concrete path."""

    def __init__(self, spec, components):
        self.components = components
        self.routes = []
        for template, item in spec["paths"].items():
            pattern = "^" + re.sub(r"\{[^/]+\}", "[^/]+", template) + "$"
            self.routes.append((re.compile(pattern), template, item))
        self.all = {(m.upper(), t) for _, t, item in self.routes
                    for m in item if m in ("get", "post", "put", "patch", "delete")}

    def find(self, method, path):
        """(template, path item, operation), preferring the most literal template."""
        matches = sorted([(t, item) for rx, t, item in self.routes if rx.match(path)],
                         key=lambda m: m[0].count("{"))
        for template, item in matches:
            op = item.get(method.lower())
            if op:
                return template, item, op
        return None

    def validator(self, schema):
        # Local $refs resolve against a root carrying the spec's components.
        return Draft202012Validator({**schema, "components": self.components})


def main(spec_path, requests_path):
    spec, components = load(spec_path)
    ops = Operations(spec, components)
    validator = ops.validator

    def resolve(obj):
        while isinstance(obj, dict) and "$ref" in obj and obj["$ref"].startswith("#/components/"):
            kind, name = obj["$ref"].split("/")[2:4]
            obj = {**components[kind][name], **{k: v for k, v in obj.items() if k != "$ref"}}
        return obj

    failures, checked, probes, seen_ops = [], 0, 0, set()
    for n, line in enumerate(open(requests_path), 1):
        req = json.loads(line)
        if req["method"] == "HEAD" and req["path"] == "/":
            # /readyz's reachability probe: no API operation, no credential.
            probes += 1
            continue
        checked += 1
        where = f"request {n}: {req['method']} {req['path']}"
        found = ops.find(req["method"], req["path"])
        if not found:
            failures.append(f"{where}: no such operation in the spec")
            continue
        template, item, op = found
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
    all_ops = ops.all
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


def responses(spec_path, responses_path):
    spec, components = load(spec_path)
    ops = Operations(spec, components)
    validator = ops.validator

    failures, checked, undeclared, served = [], 0, {}, set()
    for n, line in enumerate(open(responses_path), 1):
        r = json.loads(line)
        checked += 1
        where = f"answer {n}: {r['method']} {r['path']} -> {r['status']}"
        found = ops.find(r["method"], r["path"])
        if not found:
            failures.append(f"{where}: no such operation in the spec")
            continue
        template, _, op = found
        served.add((r["method"], template))
        declared = op.get("responses", {})
        spec_resp = declared.get(str(r["status"]))
        if spec_resp is None:
            if 200 <= r["status"] < 300:
                failures.append(f"{where}: the spec declares {sorted(declared)} for success")
            else:
                undeclared.setdefault((r["method"], template, r["status"]), 0)
                undeclared[(r["method"], template, r["status"])] += 1
            continue
        content = spec_resp.get("content", {}).get("application/json")
        if content is None:
            if r["body"] not in (None, ""):
                failures.append(f"{where}: the spec declares no body")
            continue
        for err in validator(content["schema"]).iter_errors(r["body"]):
            failures.append(f"{where}: body {'/'.join(map(str, err.absolute_path))}: {err.message}")
    missing = sorted(ops.all - served)
    all_ops = ops.all
    print(f"spec check: {checked} emulator answers, {len(served)} of {len(all_ops)} operations served")
    if undeclared:
        print("  error statuses the spec does not declare for the operation (not checked):")
        for (m, t, st), count in sorted(undeclared.items()):
            print(f"    {m} {t} -> {st} ({count}x)")
    for m, t in missing:
        failures.append(f"operation never exercised: {m} {t}")
    if failures:
        print(f"spec check: {len(failures)} problem(s):")
        for f in failures:
            print("  " + f)
        return 1
    print("spec check: every emulator answer is valid against the spec")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[2] not in ("requests", "responses"):
        sys.exit(__doc__)
    check = main if sys.argv[2] == "requests" else responses
    sys.exit(check(sys.argv[1], sys.argv[3]))
