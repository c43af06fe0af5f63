"""A fault injector for tests: Tansu with a file schema registry.

A schema that appears while the broker runs makes that topic refuse every record
(``InvalidRecordError``): the only way found to make a topic unwritable on the dev
broker (it auto-creates missing topics and ignores ``max.message.bytes``).
"""

from __future__ import annotations

import json
from pathlib import Path

from worker.devbroker import DevBroker

REJECT_EVERYTHING = {"type": "object", "properties": {"value": {"type": "object", "required": ["approved"]}}}


class SchemaBroker(DevBroker):
    """Tansu with a file schema registry under ``root/schema`` (Tansu resolves file:// against its cwd)."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root
        (root / "schema").mkdir(parents=True)

    def command(self) -> list[str]:
        return ["env", "-C", str(self.root), *super().command(), "--schema-registry", "file://./schema"]

    def reject_records(self, topic: str) -> None:
        (self.root / "schema" / f"{topic}.json").write_text(json.dumps(REJECT_EVERYTHING))
