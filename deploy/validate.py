#!/usr/bin/env python3
"""Validate deploy/kubernetes/*.yaml offline, as `./dev manifests` (and CI) runs it.

- Core kinds (Deployment, Service, ConfigMap, CronJob, HorizontalPodAutoscaler)
  against the upstream Kubernetes schemas that `kubernetes-validate` ships, in
  strict mode (an unknown or misspelt field is an error).
- `SpinApp` against the `openAPIV3Schema` of spin-operator's own CRD
  (../shared/spinkube), made strict the same way: Kubernetes would silently
  prune an unknown field, which hides a typo until the app misbehaves.
- Against the app itself: every SpinApp variable and component exists in
  spin.toml, no cron component is selected (the shim cannot run it), the
  autoscaler targets the SpinApp's Deployment, and a CronJob calls the admin
  route of each cron component (recovery, webhooks) that spin.toml serves.

A self-check first proves the validator rejects a broken SpinApp, so a green
run cannot come from a validator that accepts everything.
"""

import copy
import glob
import os
import sys
import tomllib

import jsonschema
import kubernetes_validate
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFESTS = os.path.join(ROOT, "deploy", "kubernetes")
CRD = os.path.join(ROOT, "..", "shared", "spinkube", "core.spinkube.dev_spinapps.yaml")
# The Kubernetes version whose schemas the core kinds are checked against.
KUBERNETES = "1.33.0"


def strict(schema):
    """The CRD schema with unknown fields refused wherever it lists the known ones."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def spinapp_validator():
    with open(CRD) as handle:
        crd = yaml.safe_load(handle)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


def schema_errors(doc, spinapp):
    if doc["kind"] == "SpinApp":
        return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in spinapp.iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.path)) or '(root)'}: {error.message}"]
    return []


def http_routes(manifest):
    return [t["route"] for t in manifest["trigger"].get("http", [])]


def app_errors(docs, manifest):
    """What the schemas cannot know: the manifests must fit spin.toml."""
    errors = []
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    (app,) = by_kind["SpinApp"]
    name = app["metadata"]["name"]
    variables = set(manifest["variables"])
    cron = {t["component"] for t in manifest["trigger"].get("cron", [])}
    for var in app["spec"].get("variables", []):
        if var["name"] not in variables:
            errors.append(f"SpinApp variable {var['name']} is not a variable of spin.toml")
    missing = [v for v, d in manifest["variables"].items() if d.get("required")
               and v not in {var["name"] for var in app["spec"].get("variables", [])}]
    errors += [f"SpinApp does not set the required variable {v}" for v in missing]
    for component in app["spec"].get("components", []):
        if component not in manifest["component"]:
            errors.append(f"SpinApp component {component} is not in spin.toml")
        if component in cron:
            errors.append(f"SpinApp selects {component}, a cron component the shim cannot run")
    http_components = {t["component"] for t in manifest["trigger"]["http"]}
    unserved = http_components - set(app["spec"].get("components", http_components))
    errors += [f"SpinApp leaves out the HTTP component {c}" for c in sorted(unserved)]
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        target = hpa["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) != ("Deployment", name):
            errors.append(f"{hpa['metadata']['name']} does not scale the SpinApp's Deployment {name}")
        if not app["spec"].get("enableAutoscaling"):
            errors.append("an autoscaler without enableAutoscaling: the operator would fight it")
    # What the cron components do, each CronJob does through an admin route.
    jobs = {"/api/v1/admin/recovery/run": "recovery", "/api/v1/admin/events/deliver": "webhooks"}
    called = set()
    for job in by_kind.get("CronJob", []):
        text = yaml.safe_dump(job)
        routes = [route for route in jobs if f"http://{name}{route}" in text]
        if not routes:
            errors.append(f"{job['metadata']['name']} calls none of {', '.join(jobs)} on http://{name}")
        called.update(routes)
    for route, component in jobs.items():
        if component in cron and route not in called:
            errors.append(f"no CronJob calls {route} for the cron component {component}")
        if not serves(manifest, route):
            errors.append(f"spin.toml no longer serves {route}")
    return errors


def serves(manifest, path):
    """Whether an HTTP route of spin.toml matches `path` (`/x/...` matches `/x` and below)."""
    for route in http_routes(manifest):
        if route == path or (route.endswith("/...") and (path + "/").startswith(route[:-3])):
            return True
    return False


def main():
    if not os.path.exists(CRD):
        if os.environ.get("EDGE_TEST_REQUIRE_SPINKUBE"):
            sys.exit(f"no SpinApp CRD at {CRD}")
        print(f"skipped: no SpinApp CRD at {os.path.relpath(CRD, ROOT)} to validate against")
        return
    spinapp = spinapp_validator()
    with open(os.path.join(ROOT, "spin.toml"), "rb") as handle:
        manifest = tomllib.load(handle)
    docs, failures = [], []
    for path in sorted(glob.glob(os.path.join(MANIFESTS, "*.yaml"))):
        with open(path) as handle:
            for doc in yaml.safe_load_all(handle):
                if doc:
                    docs.append(doc)
                    where = f"{os.path.relpath(path, ROOT)}: {doc['kind']} {doc['metadata']['name']}"
                    errors = schema_errors(doc, spinapp)
                    failures += [f"{where}: {e}" for e in errors]
                    print(f"{'FAIL' if errors else 'ok  '} {where}")

    # Self-check: a misspelt field and a wrong type must both be refused.
    (app,) = [d for d in docs if d["kind"] == "SpinApp"]
    broken = copy.deepcopy(app)
    broken["spec"]["enableAutoscalling"] = True
    broken["spec"]["variables"][0]["value"] = 5
    if len(schema_errors(broken, spinapp)) < 2:
        failures.append("self-check: the SpinApp schema accepted a misspelt field or a number for a string")
    broken_hpa = copy.deepcopy(next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler"))
    broken_hpa["spec"]["maxReplica"] = 3
    if not schema_errors(broken_hpa, spinapp):
        failures.append("self-check: the core schemas accepted a misspelt field")

    failures += app_errors(docs, manifest)
    kinds = sorted({d["kind"] for d in docs})
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    print(f"{len(docs)} manifests valid ({', '.join(kinds)}): 0 failed")


if __name__ == "__main__":
    main()
