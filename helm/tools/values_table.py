#!/usr/bin/env python3
"""The chart README's table of values, generated from values.yaml's comments.

Every value is documented by a `# -- description` comment right above its key
(the helm-docs convention; more `#` lines continue it). A documented key that
holds a map is documented as a whole (`resources`, `podSecurityContext`);
any other key must carry its own comment, or this script fails naming it.

    values_table.py [--check] [CHART]
        Writes the table between the README's markers
        <!-- values-table:start --> and <!-- values-table:end -->.
        With --check, writes nothing and exits 1 when the README's table is
        not the one values.yaml gives.

CHART defaults to helm/conclave next to this script's directory.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

import yaml

START = "<!-- values-table:start -->"
END = "<!-- values-table:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\"-]+):(?P<rest>.*)$")


def documented_keys(text: str) -> list[tuple[str, str]]:
    """(dotted path, description) of each documented key, in file order; fails
    on a key that is neither documented nor inside a documented map."""
    rows: list[tuple[str, str]] = []
    stack: list[tuple[int, str, bool]] = []  # indent, key, documented
    description: list[str] | None = None
    missing: list[str] = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("# --"):
            description = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if description is not None:
                description.append(stripped[1:].strip())
            continue
        if not stripped:
            description = None
            continue
        match = KEY.match(line)
        if not match or stripped.startswith("- "):
            continue  # list items and multi-line values belong to the key above
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        inside_documented = any(documented for _, _, documented in stack)
        path = ".".join([key for _, key, _ in stack] + [match["key"]])
        is_map = match["rest"].strip() == "" and next_is_nested(lines, number, indent)
        if description is not None and not inside_documented:
            rows.append((path, " ".join(part for part in description if part)))
        elif not inside_documented and not is_map:
            missing.append(f"line {number}: {path}")
        stack.append((indent, match["key"], description is not None))
        description = None
    if missing:
        raise SystemExit(
            "values.yaml has values without a `# --` comment above them:\n  " + "\n  ".join(missing)
        )
    return rows


def next_is_nested(lines: list[str], number: int, indent: int) -> bool:
    """Whether the key on line `number` (1-based) opens a map of keys below it."""
    for line in lines[number:]:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        nested = len(line) - len(line.lstrip(" "))
        return nested > indent and not stripped.startswith("- ")
    return False


def lookup(values: dict, path: str):
    node = values
    for key in path.split("."):
        node = node[key]
    return node


def type_of(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(chart: pathlib.Path) -> str:
    text = (chart / "values.yaml").read_text(encoding="utf-8")
    values = yaml.safe_load(text)
    lines = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for path, description in documented_keys(text):
        default = lookup(values, path)
        shown = json.dumps(default, separators=(", ", ": "))
        lines.append(f"| `{path}` | {type_of(default)} | `{cell(shown)}` | {cell(description)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("chart", nargs="?", default=str(pathlib.Path(__file__).resolve().parent.parent / "conclave"))
    arguments = parser.parse_args()
    chart = pathlib.Path(arguments.chart)
    readme_path = chart / "README.md"
    readme = readme_path.read_text(encoding="utf-8")
    if START not in readme or END not in readme:
        raise SystemExit(f"{readme_path} lacks the markers {START} and {END}")
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    updated = f"{before}{START}\n{table(chart)}{END}{after}"
    if arguments.check:
        if updated != readme:
            print(
                f"{readme_path}'s table of values is out of date with values.yaml; regenerate it with\n"
                f"    .venv/bin/python helm/tools/values_table.py",
                file=sys.stderr,
            )
            return 1
        return 0
    readme_path.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
