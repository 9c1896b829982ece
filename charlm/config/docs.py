"""The key reference table of docs/config.md, made from the declarations in schema.py.

python -m charlm.config.docs    # rewrites the table in docs/config.md
"""

from __future__ import annotations

import dataclasses
from dataclasses import fields
from pathlib import Path

from charlm.config.load import describe_range, has_range
from charlm.config.schema import SECTION_CLASSES


def config_keys_markdown() -> str:
    """The table of config keys, made from the declarations in schema.py.

    Returns:
        A markdown table: one row per key (`section.name`, default, allowed values,
        meaning), sections in the order data, model, train, sample.
    """
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for section, cls in SECTION_CLASSES.items():
        for f in fields(cls):
            meta = f.metadata
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            allowed = (
                ", ".join(meta["choices"])
                if meta["choices"]
                else (describe_range(meta) if has_range(meta) else meta["kind"])
            )
            rows.append(f"| `{section}.{f.name}` | `{default}` | {allowed} | {meta['help']} |")
    return "\n".join(rows)


def update_reference(path: Path) -> None:
    """Rewrite the table of config keys in place.

    Args:
        path: a markdown file (docs/config.md) holding `<!-- keys: ... -->` and
            `<!-- /keys -->` markers; the lines between them are replaced.

    Raises:
        ValueError: a marker is missing.
    """
    text = path.read_text(encoding="utf-8")
    start = text.index("-->", text.index("<!-- keys:")) + len("-->\n")
    end = text.index("\n<!-- /keys -->")
    path.write_text(text[:start] + config_keys_markdown() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    update_reference(Path(__file__).resolve().parents[2] / "docs" / "config.md")
