"""``ingest config show``: the effective settings, secrets redacted."""

from __future__ import annotations

import argparse
import json

from ingest.settings import Settings, to_display


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION")
    sub.required = True
    show = sub.add_parser("show", help="print the effective settings as JSON (secrets redacted)")
    show.add_argument("--format", choices=["json", "toml"], default="json")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


def _to_toml(data: dict[str, object], prefix: str = "") -> list[str]:
    lines: list[str] = []
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    if prefix and scalars:
        lines.append(f"[{prefix}]")
    lines += [f"{k} = {_toml_value(v)}" for k, v in scalars.items()]
    for k, v in data.items():
        if isinstance(v, dict):
            if lines:
                lines.append("")
            lines += _to_toml(v, f"{prefix}.{k}" if prefix else k)
    return lines


def run(args: argparse.Namespace, settings: Settings) -> int:
    shown = to_display(settings)
    source = shown.pop("source")
    if args.format == "toml":
        print(f"# effective settings from {source} and the environment")
        print("\n".join(_to_toml(shown)))
    else:
        print(json.dumps({"source": source, **shown}, indent=2))
    return 0
