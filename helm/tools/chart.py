#!/usr/bin/env python3
"""Offline Helm for the tests and for operators without a cluster.

Helm 4 runs here as a library (PyPI helm-python-sdk), so nothing is downloaded
and no cluster is contacted.

    chart.py render CHART [--values FILE]... [--set-json PATH=JSON]... [--name NAME] [--namespace NS]
        Prints the rendered manifests as one JSON array of
        {"template": "conclave/templates/x.yaml", "object": {...}}, one entry per
        YAML document, in template order (empty documents left out).
    chart.py notes CHART [--values FILE]... [--set-json PATH=JSON]... [--name NAME] [--namespace NS]
        Prints the rendered templates/NOTES.txt, what `helm install` shows.
    chart.py lint CHART [--values FILE]... [--set-json PATH=JSON]...
        `helm lint --strict`: prints every finding; exits 1 on any warning or error.

Values files merge in order, then each --set-json (a dotted path and a JSON
value) on top, as `helm install -f ... --set-json ...` would. A value the
chart's values.schema.json refuses, or a template that fails, exits 1 with
Helm's message on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

import helm_python as helm
import yaml


def merge(base: dict, overlay: dict) -> dict:
    """Helm's coalescing of values files: maps merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def user_values(arguments: argparse.Namespace) -> dict:
    values: dict = {}
    for path in arguments.values:
        with open(path, encoding="utf-8") as file:
            values = merge(values, yaml.safe_load(file) or {})
    for assignment in arguments.set_json:
        path, separator, text = assignment.partition("=")
        if not separator or not path:
            raise SystemExit(f"--set-json needs PATH=JSON, got {assignment!r}")
        overlay: dict = {}
        node = overlay
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = json.loads(text)
        values = merge(values, overlay)
    return values


def rendered(arguments: argparse.Namespace) -> dict:
    chart = helm.Chart.load(arguments.chart)
    return chart.render(
        user_values(arguments),
        name=arguments.name,
        namespace=arguments.namespace,
        is_install=True,
    )


def notes(arguments: argparse.Namespace) -> int:
    templates = rendered(arguments)
    found = [text for template, text in templates.items() if template.endswith("/templates/NOTES.txt")]
    if not found:
        print("the chart has no templates/NOTES.txt", file=sys.stderr)
        return 1
    print(found[0])
    return 0


class UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a mapping with a key twice: Helm itself
    keeps the last one, but tools that post-process a release (Flux, kustomize
    with Helm, post-renderers) refuse such a manifest."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def render(arguments: argparse.Namespace) -> int:
    manifests = rendered(arguments)
    documents = []
    for template in sorted(manifests):
        if not template.endswith((".yaml", ".yml")):
            continue  # NOTES.txt and helpers
        try:
            documents_of_template = list(yaml.load_all(manifests[template], Loader=UniqueKeyLoader))
        except yaml.YAMLError as error:
            print(f"{template}: {error}", file=sys.stderr)
            return 1
        for document in documents_of_template:
            if document:
                documents.append({"template": template, "object": document})
    json.dump(documents, sys.stdout, indent=1)
    print()
    return 0


def lint(arguments: argparse.Namespace) -> int:
    report = helm.lint(arguments.chart, user_values(arguments), strict=True)
    severities = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    findings = 0
    for message in report.get("messages", []):
        severity = message.get("severity", 0)
        print(f"[{severities.get(severity, severity)}] {message.get('path')}: {message.get('error')}")
        if severity >= 2:
            findings += 1
    for error in report.get("errors", []) or []:
        print(f"[ERROR] {error}")
        findings += 1
    return 1 if findings else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("render", "notes", "lint"):
        command = commands.add_parser(name)
        command.add_argument("chart")
        command.add_argument("--values", "-f", action="append", default=[])
        command.add_argument("--set-json", action="append", default=[])
        if name in ("render", "notes"):
            command.add_argument("--name", default="conclave")
            command.add_argument("--namespace", default="conclave")
    arguments = parser.parse_args()
    try:
        commands = {"render": render, "notes": notes, "lint": lint}
        return commands[arguments.command](arguments)
    except helm.HelmError as error:
        print(f"helm: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
