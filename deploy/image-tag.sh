#!/usr/bin/env bash
# The tag of a worker image, naming what it carries (docs/deploy.md, "Image tags"):
#
#   deploy/image-tag.sh artifacts/bundle            -> 0.1.0-news20-m1   (<version>-<model name>-m<model version>)
#   deploy/image-tag.sh                             -> 0.1.0-nomodel     (no bundle baked in: mount one)
#   deploy/image-tag.sh --model-id artifacts/bundle -> news20@1          (for --build-arg MODEL_ID, the image label)
#
# <version> is pyproject.toml's project version (the code); the model's name and version
# are the bundle's manifest.json (lstm-export --name/--version). One tag, one content:
# never re-push a tag with another model.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode=tag
if [[ "${1:-}" == "--model-id" ]]; then mode=model-id; shift; fi
exec python3 - "$ROOT/pyproject.toml" "$mode" "${1:-}" <<'PYEOF'
import json, re, sys, tomllib
from pathlib import Path
pyproject, mode, bundle = sys.argv[1], sys.argv[2], sys.argv[3]
version = tomllib.loads(Path(pyproject).read_text())["project"]["version"]
if not bundle:
    if mode == "model-id":
        sys.exit("--model-id needs a bundle directory")
    print(f"{version}-nomodel")
    sys.exit(0)
manifest = json.loads((Path(bundle) / "manifest.json").read_text())
name, model_version = str(manifest["name"]), str(manifest["version"])
if mode == "model-id":
    print(f"{name}@{model_version}")
    sys.exit(0)
tag = f"{version}-{name}-m{model_version}"
if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
    sys.exit(f"{tag!r} is not a valid image tag: rename the model (lstm-export --name) or its version")
print(tag)
PYEOF
