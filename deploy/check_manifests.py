#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests (the output of `kubectl kustomize`).

Usage: check_manifests.py RENDERED.yaml...

1. Every resource of a Kubernetes kind is validated against the Kubernetes
   JSON schemas shipped by the `kubernetes-validate` package (offline), in
   strict mode (unknown fields are errors), for the oldest and newest
   Kubernetes versions supported here.
2. Kinds with no Kubernetes schema (CRDs) are never skipped silently: each
   has a check of its own below (ServiceMonitor: its selector and port
   against the Service it scrapes); any other such kind is an error.
3. What a schema cannot see, across resources: selectors match the pod
   labels, probes and Service ports name real container ports, the HPA and
   the Ingress point at what exists, the pod runs locked down (non-root,
   read-only root, no privilege escalation, no capabilities, seccomp
   RuntimeDefault), no secret-looking variable has a literal value, and
   the termination grace period covers the gateway's drain as configured
   in the rendered config.toml.
"""

import re
import sys
import tomllib

import yaml
from kubernetes_validate import utils as kv

# preStop `sleep` is on by default from 1.30 (beta); 1.37 is the newest schema.
VERSIONS = ["1.30.0", "1.37.0"]
SECRETISH = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|CREDENTIALS?)$")


class Failures(list):
    def check(self, ok, what):
        if not ok:
            self.append(what)


def name(r):
    return f"{r['kind']}/{r['metadata']['name']}"


def seconds(duration):
    m = re.fullmatch(r"(\d+)(ms|s|m)", duration)
    if not m:
        raise SystemExit(f"cannot read duration {duration!r}")
    n, unit = int(m.group(1)), m.group(2)
    return {"ms": n / 1000, "s": n, "m": 60 * n}[unit]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def check_servicemonitor(sm, services, fail):
    sel = sm["spec"]["selector"]["matchLabels"]
    targets = [s for s in services if matches(sel, s["metadata"].get("labels", {}))]
    fail.check(targets, f"{name(sm)}: selects no Service")
    for ep in sm["spec"]["endpoints"]:
        for s in targets:
            ports = [p.get("name") for p in s["spec"]["ports"]]
            fail.check(ep["port"] in ports, f"{name(sm)}: {name(s)} has no port {ep['port']!r}")
        fail.check(ep.get("path") == "/metrics", f"{name(sm)}: scrapes {ep.get('path')!r}, not /metrics")
    print(
        f"  {name(sm)}: a CRD, no Kubernetes schema: checked against "
        + ", ".join(name(s) for s in targets)
        + " (selector, port name, path)"
    )


CRD_CHECKS = {("monitoring.coreos.com/v1", "ServiceMonitor"): check_servicemonitor}


def check_pod(dep, config_maps, fail):
    spec = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    fail.check(matches(dep["spec"]["selector"]["matchLabels"], labels), f"{name(dep)}: selector misses its pods")
    psc = spec.get("securityContext", {})
    for c in spec["containers"]:
        where = f"{name(dep)} container {c['name']}"
        sc = c.get("securityContext", {})
        fail.check(sc.get("runAsNonRoot") or psc.get("runAsNonRoot"), f"{where}: runAsNonRoot")
        fail.check(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem")
        fail.check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation")
        fail.check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities drop ALL")
        seccomp = sc.get("seccompProfile") or psc.get("seccompProfile") or {}
        fail.check(seccomp.get("type") == "RuntimeDefault", f"{where}: seccomp RuntimeDefault")
        res = c.get("resources", {})
        fail.check(res.get("requests") and res.get("limits"), f"{where}: requests and limits")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            p = c.get(probe)
            fail.check(p, f"{where}: {probe}")
            if not p:
                continue
            port = (p.get("grpc") or p.get("httpGet") or p.get("tcpSocket") or {}).get("port")
            fail.check(port in ports or port in ports.values(), f"{where}: {probe} port {port!r} is not a container port")
        for e in c.get("env", []):
            fail.check(
                not (SECRETISH.search(e["name"]) and "value" in e),
                f"{where}: {e['name']} is a literal (secrets come from files or Secrets)",
            )
        # The drain: preStop pause + shutdown_grace + telemetry flush.
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        args = c.get("args", [])
        if "--config" in args:
            path = args[args.index("--config") + 1]
            vol = next(v for v in spec["volumes"] if mounts.get(v["name"]) and path.startswith(mounts[v["name"]]))
            cm = config_maps[vol["configMap"]["name"]]
            config = tomllib.loads(cm["data"][path.rsplit("/", 1)[1]])
            grace = seconds(config.get("server", {}).get("shutdown_grace", "30s"))
            flush = seconds(config.get("telemetry", {}).get("flush_timeout", "5s"))
            pause = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            total = spec.get("terminationGracePeriodSeconds", 30)
            fail.check(
                total > pause + grace + flush,
                f"{where}: terminationGracePeriodSeconds {total} <= preStop {pause} + shutdown_grace {grace} + flush {flush}",
            )
            print(f"  {name(dep)}: drain {pause} s + {grace} s + {flush} s fits in {total} s")


def check_file(path):
    fail = Failures()
    with open(path) as f:
        resources = [r for r in yaml.safe_load_all(f) if r]
    print(f"{path}: {len(resources)} resources")
    by_kind = {}
    for r in resources:
        by_kind.setdefault(r["kind"], []).append(r)
    for r in resources:
        crd = CRD_CHECKS.get((r["apiVersion"], r["kind"]))
        if crd:
            crd(r, by_kind.get("Service", []), fail)
            continue
        for v in VERSIONS:
            try:
                kv.validate(r, v, strict=True)
            except kv.SchemaNotFoundError:
                fail.append(f"{name(r)} ({r['apiVersion']}): no Kubernetes schema and no check of its own")
                break
            except kv.ValidationError as e:
                fail.append(f"{name(r)} against Kubernetes {v}: {e.message} at {'/'.join(map(str, e.path))}")
        else:
            print(f"  {name(r)}: valid for Kubernetes {' and '.join(VERSIONS)} (strict)")

    config_maps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    deployments = by_kind.get("Deployment", [])
    fail.check(deployments, "no Deployment")
    for dep in deployments:
        check_pod(dep, config_maps, fail)
        fail.check(dep["spec"].get("replicas", 1) >= 3, f"{name(dep)}: fewer than 3 replicas")
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        ports = {p["name"] for c in dep["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for s in by_kind.get("Service", []):
            if matches(s["spec"]["selector"], pod_labels):
                for p in s["spec"]["ports"]:
                    fail.check(p["targetPort"] in ports, f"{name(s)}: targetPort {p['targetPort']!r} is no container port")
                    fail.check(p["name"] in ("grpc", "http") or p["name"].startswith(("grpc-", "http-")), f"{name(s)}: port name {p['name']!r} does not say its protocol")
        for kind in ("PodDisruptionBudget", "NetworkPolicy"):
            for r in by_kind.get(kind, []):
                sel = r["spec"].get("selector", r["spec"].get("podSelector", {})).get("matchLabels", {})
                if sel.get("app.kubernetes.io/name") == pod_labels.get("app.kubernetes.io/name"):
                    fail.check(matches(sel, pod_labels), f"{name(r)}: selects no gateway pod")
    names = {(r["kind"], r["metadata"]["name"]) for r in resources}
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        t = hpa["spec"]["scaleTargetRef"]
        fail.check((t["kind"], t["name"]) in names, f"{name(hpa)}: scales {t['kind']}/{t['name']}, not rendered")
        fail.check(hpa["spec"]["minReplicas"] >= 3, f"{name(hpa)}: minReplicas under 3")
    for ing in by_kind.get("Ingress", []):
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                fail.check(p["path"] == "/webhooks/imprint" and p["pathType"] == "Exact", f"{name(ing)}: routes {p['path']!r}, only the webhook path may be exposed")
                svc = p["backend"]["service"]
                fail.check(("Service", svc["name"]) in names, f"{name(ing)}: no Service {svc['name']}")
    for kind in ("Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "Ingress", "ConfigMap"):
        fail.check(kind in by_kind, f"no {kind}")
    return fail


def main(paths):
    if not paths:
        raise SystemExit(__doc__)
    failures = []
    for p in paths:
        failures += [f"{p}: {f}" for f in check_file(p)]
    if failures:
        print("\n".join(["FAILED:"] + failures), file=sys.stderr)
        return 1
    print(f"{len(paths)} renders valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
