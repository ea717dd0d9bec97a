"""Write the event catalog's documents: docs/events/asyncapi.json and docs/events/schemas/<type>.json.

Generated from the registered pydantic models (``shared.events``), so the documents cannot drift from
what services emit. ``make docs`` runs it; ``--check`` (for CI) writes nothing and exits 1 when the files
on disk differ from what the code would generate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shared.events import asyncapi_document, json_schemas

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "events"


def render(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def wanted_files(out: Path) -> dict[Path, str]:
    files = {out / "asyncapi.json": render(asyncapi_document())}
    for event_type, schema in json_schemas().items():
        files[out / "schemas" / f"{event_type}.json"] = render(schema)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"target directory (default {DEFAULT_OUT})"
    )
    parser.add_argument("--check", action="store_true", help="only report whether the files are up to date")
    args = parser.parse_args(argv)
    out: Path = args.out
    files = wanted_files(out)
    schema_dir = out / "schemas"
    stale = [p for p in schema_dir.glob("*.json") if p not in files] if schema_dir.is_dir() else []
    changed = [p for p, text in files.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]

    if args.check:
        for path in changed:
            print(f"outdated: {path}")
        for path in stale:
            print(f"stale: {path}")
        return 1 if changed or stale else 0

    schema_dir.mkdir(parents=True, exist_ok=True)
    for path in changed:
        path.write_text(files[path], encoding="utf-8")
    for path in stale:
        path.unlink()
    print(f"{len(files) - 1} event types; {len(changed)} file(s) written, {len(stale)} removed, in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
