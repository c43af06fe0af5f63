"""Checks of the checkov suppression annotations: each names one check and gives its reason."""

from __future__ import annotations

import re

from .common import Obj, key

SKIP_ANNOTATION = re.compile(r"^checkov\.io/skip\d*$")
SKIP_VALUE = re.compile(r"^CKV2?_[A-Z0-9]+_\d+=(?P<reason>.+)$")


def check_checkov_skips(obj: Obj) -> list[str]:
    """Every checkov suppression names one check and says why (at least a short sentence)."""
    problems = []
    for name, value in ((obj.get("metadata") or {}).get("annotations") or {}).items():
        if SKIP_ANNOTATION.match(name):
            match = SKIP_VALUE.match(str(value))
            if not match or len(match.group("reason").strip()) < 15:
                problems.append(f"{key(obj)}: annotation {name}={value!r} must be CHECK_ID=<reason of 15+ characters>")
    return problems
