#!/usr/bin/env python3
"""Validates the custom resources the chart renders against their CRDs' schemas.

kubernetes-validate knows Kubernetes' own kinds only: for a custom resource it
warns "Couldn't find schema" and passes. The cert-manager and
prometheus-operator CRDs' OpenAPI schemas are on PyPI as pydantic models
(cloudcoil-models-cert-manager, cloudcoil-models-prometheus-operator), so
this checks each object against them, strictly:

- required fields present, types and enumerations as the CRD says (pydantic);
- no field the CRD does not know: the models ignore unknown fields, so the
  object is read into its model and written back, and anything that did not
  come back unchanged is reported.

    validate_custom_resources.py FILE...
        Each FILE holds one object. Prints one line per object; exits 1 when
        any is invalid or of a kind this script does not know.
"""

from __future__ import annotations

import sys

import pydantic
import yaml
from cloudcoil.models.cert_manager import v1 as cert_manager_v1
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator_v1

MODELS = {
    ("cert-manager.io/v1", "Certificate"): cert_manager_v1.Certificate,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): prometheus_operator_v1.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): prometheus_operator_v1.PrometheusRule,
}


def differences(given, returned, path: str) -> list[str]:
    """Where `returned` (the object as its model wrote it back) lost or changed
    something of `given`."""
    if isinstance(given, dict):
        if not isinstance(returned, dict):
            return [f"{path or '/'}: became {returned!r}"]
        found = []
        for key, value in given.items():
            if key not in returned:
                found.append(f"{path}/{key}: not a field of the CRD's schema")
            else:
                found.extend(differences(value, returned[key], f"{path}/{key}"))
        return found
    if isinstance(given, list):
        if not isinstance(returned, list) or len(given) != len(returned):
            return [f"{path}: became {returned!r}"]
        found = []
        for index, (item, item_returned) in enumerate(zip(given, returned)):
            found.extend(differences(item, item_returned, f"{path}/{index}"))
        return found
    if given != returned:
        return [f"{path}: {given!r} became {returned!r}"]
    return []


def check(document: dict) -> list[str]:
    model = MODELS.get((document.get("apiVersion"), document.get("kind")))
    if model is None:
        known = ", ".join(f"{kind} ({api})" for api, kind in MODELS)
        return [f"no schema for {document.get('kind')} ({document.get('apiVersion')}); known: {known}"]
    try:
        parsed = model.model_validate(document)
    except pydantic.ValidationError as error:
        return [
            f"/{'/'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors()
        ]
    returned = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return differences(document, returned, "")


def main() -> int:
    failed = 0
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as file:
            document = yaml.safe_load(file)
        name = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
        problems = check(document)
        if problems:
            failed += 1
            for problem in problems:
                print(f"INVALID {path} {name}: {problem}")
        else:
            print(f"OK {path} {name} matches the {document['kind']} CRD's schema")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
