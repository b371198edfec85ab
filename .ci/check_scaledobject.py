#!/usr/bin/env python3
"""Checks KEDA ScaledObjects against what KEDA 2 and Gristmill's external scaler accept.

kubernetes-validate has schemas only for built-in kinds, so it cannot check KEDA's CRDs. This check
covers the fields the deploy/keda overlay uses, the trigger metadata keys and values that the
scaler accepts, and the names shared with deploy/base.

Usage: check_scaledobject.py SCALEDOBJECT.yaml BASE_DIR
"""

import sys

import yaml

# ScaledObject spec fields in KEDA 2 (keda.sh/v1alpha1).
SPEC_FIELDS = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
    "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "advanced", "fallback",
    "triggers",
}
TRIGGER_FIELDS = {"type", "name", "metadata", "metricType", "useCachedMetrics",
                  "authenticationRef"}
# Trigger metadata that the scaler accepts: its own key and the keys KEDA reads itself.
METADATA_KEYS = {"metric", "scalerAddress", "enableTLS", "unsafeSsl"}
METRICS = {"desired_nodes", "recommended_nodes"}


def fail(path, message):
    sys.exit(f"{path}: {message}")


def load_one(path, kind):
    documents = [d for d in yaml.safe_load_all(open(path)) if d]
    matching = [d for d in documents if d.get("kind") == kind]
    if len(matching) != 1:
        fail(path, f"expected one {kind}, found {len(matching)}")
    return matching[0]


def check(path, base):
    statefulset = load_one(f"{base}/statefulset.yaml", "StatefulSet")
    service = load_one(f"{base}/service-grpc.yaml", "Service")
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    scaled = load_one(path, "ScaledObject")
    if scaled.get("apiVersion") != "keda.sh/v1alpha1":
        fail(path, f"apiVersion {scaled.get('apiVersion')!r}; use keda.sh/v1alpha1")
    spec = scaled.get("spec") or fail(path, "spec is missing")
    unknown = set(spec) - SPEC_FIELDS
    if unknown:
        fail(path, f"unknown spec fields {sorted(unknown)}")

    target = spec.get("scaleTargetRef") or fail(path, "spec.scaleTargetRef is missing")
    expected = ("apps/v1", "StatefulSet", statefulset["metadata"]["name"])
    actual = (target.get("apiVersion"), target.get("kind"), target.get("name"))
    if actual != expected:
        fail(path, f"scaleTargetRef is {actual}; use {expected}, the StatefulSet in {base}")

    minimum = spec.get("minReplicaCount", 0)
    maximum = spec.get("maxReplicaCount", 100)
    if minimum < 1 or "idleReplicaCount" in spec:
        fail(path, "set minReplicaCount >= 1 and no idleReplicaCount: the scaler runs in "
                   "the pods it scales")
    if minimum > maximum:
        fail(path, f"minReplicaCount {minimum} exceeds maxReplicaCount {maximum}")

    triggers = spec.get("triggers") or fail(path, "spec.triggers is empty")
    for index, trigger in enumerate(triggers):
        where = f"triggers[{index}]"
        unknown = set(trigger) - TRIGGER_FIELDS
        if unknown:
            fail(path, f"{where}: unknown fields {sorted(unknown)}")
        if trigger.get("type") not in ("external", "external-push"):
            fail(path, f"{where}: type {trigger.get('type')!r}; use external or external-push")
        if trigger.get("metricType", "AverageValue") != "AverageValue":
            fail(path, f"{where}: metricType must be AverageValue, so that replicas = metric")
        metadata = trigger.get("metadata") or fail(path, f"{where}: metadata is missing")
        for key, value in metadata.items():
            if key not in METADATA_KEYS:
                fail(path, f"{where}: unknown metadata key {key!r}; use {sorted(METADATA_KEYS)}")
            if not isinstance(value, str):
                fail(path, f"{where}: metadata {key} = {value!r} must be a string")
        if metadata.get("metric", "desired_nodes") not in METRICS:
            fail(path, f"{where}: metric {metadata['metric']!r}; use one of {sorted(METRICS)}")
        address = metadata.get("scalerAddress") or fail(path, f"{where}: scalerAddress is missing")
        host, _, port = address.rpartition(":")
        service_name = service["metadata"]["name"]
        if port != str(grpc_port) or host.split(".")[0] != service_name:
            fail(path, f"{where}: scalerAddress {address!r}; use the {service_name} Service "
                       f"on port {grpc_port}")
    print(f"{path}: ScaledObject {scaled['metadata']['name']} ok")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    check(sys.argv[1], sys.argv[2])
