"""docs/reference/parameters.md, the one reference of the deployment's parameters, written from
template.yaml: each group of the console's form, each parameter's default, allowed values and
description (the text the console shows), and the combinations the template's Rules refuse.

``python -m tests.template.parameter_reference`` (``make parameters``) rewrites it; a test fails when
the committed file is stale.
"""

from __future__ import annotations

import sys
from typing import Any

from local_stack.template import ROOT, Stack

REFERENCE = ROOT / "docs" / "reference" / "parameters.md"

INTRODUCTION = """\
# Deployment parameters

Every parameter of `template.yaml`, in the groups of the CloudFormation console's form. `sam deploy
--guided` asks for them in this order but shows only their names: Enter keeps the default, and a
fresh account and Region deploy with every default. Your answers are kept in `samconfig.toml`;
`sam deploy --parameter-overrides Name=value` changes one later. What each does is the description
the console shows.

This page is written from `template.yaml` by `make parameters`; a test fails when it is stale.
"""


def reference(stack: Stack | None = None) -> str:
    doc = (stack or Stack()).doc
    parameters: dict[str, Any] = doc["Parameters"]
    interface = doc["Metadata"]["AWS::CloudFormation::Interface"]
    labels = interface["ParameterLabels"]
    parts = [INTRODUCTION]
    for group in interface["ParameterGroups"]:
        parts.append(f"## {group['Label']['default']}\n")
        parts.append("| parameter | default | allowed | what it does |\n|---|---|---|---|")
        for name in group["Parameters"]:
            spec = parameters[name]
            label = labels[name]["default"]
            cells = [f"`{name}`<br>{label}", _default(spec), _allowed(spec), _text(spec["Description"])]
            parts.append("| " + " | ".join(cells) + " |")
        parts.append("")
    parts.append("## Combinations refused\n")
    parts.append("CloudFormation refuses these before it creates anything (the template's `Rules`):\n")
    for name, rule in doc.get("Rules", {}).items():
        for assertion in rule["Assertions"]:
            parts.append(f"- **{name}**: {_text(assertion['AssertDescription'])}")
    return "\n".join(parts) + "\n"


def _default(spec: dict[str, Any]) -> str:
    default = str(spec.get("Default", ""))
    return f"`{default}`" if default else "(empty)"


def _allowed(spec: dict[str, Any]) -> str:
    if "AllowedValues" in spec:
        return ", ".join(f"`{value}`" for value in spec["AllowedValues"])
    if "ConstraintDescription" in spec:
        return _text(spec["ConstraintDescription"])
    low, high = spec.get("MinValue"), spec.get("MaxValue")
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"{low} or more"
    return "any"


def _text(description: str) -> str:
    """One line of a table cell: a pipe is no column, and <region> is no HTML tag."""
    text = " ".join(str(description).split())
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def main(argv: list[str]) -> int:
    if argv[1:]:
        print("usage: python -m tests.template.parameter_reference", file=sys.stderr)
        return 2
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(reference())
    print(f"wrote {REFERENCE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
