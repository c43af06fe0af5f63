"""The Apache Kafka broker's jars, fetched once from Maven Central and cached.

``devtools/kafka/pom.xml`` names the broker (``org.apache.kafka:kafka_2.13``) and a log4j2 binding; Maven copies
them with their runtime dependencies into ``~/.cache/lstm-worker/kafka-<version>/libs``. The copy is made in a
temporary directory beside it and renamed into place, so a fetch that was interrupted is never taken for a
complete one. ``python -m devtools.kafka_jars`` fetches them (``make install`` runs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# The newest 4.x release Maven Central serves with its dependencies; the suites ran on it (docs/kafka.md).
KAFKA_VERSION = "4.4.0"
POM = Path(__file__).parent / "kafka" / "pom.xml"


class KafkaToolError(RuntimeError):
    """A tool the local Kafka needs is missing or failed; the message is one line saying what to do."""


def cache_dir(version: str = KAFKA_VERSION) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lstm-worker" / f"kafka-{version}"


def require_tool(name: str, package: str) -> str:
    """The path of ``name`` on PATH, installed from Debian's ``package`` where we may; else a one-line error."""
    found = shutil.which(name) or _apt_install(name, package)
    if found is None:
        raise KafkaToolError(f"{name} not found: install {package} to run a local Apache Kafka "
                             f"(e.g. apt-get install {package})")
    return found


def _apt_install(name: str, package: str) -> str | None:
    """As deploy/validate.sh does for promtool: a fresh CI machine installs what the suites need (root only)."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
    if subprocess.run(install, capture_output=True, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, check=False)
        subprocess.run(install, capture_output=True, env=env, check=False)
    return shutil.which(name)


def kafka_jars(version: str = KAFKA_VERSION) -> Path:
    """The directory of the broker's jars, fetched with Maven the first time."""
    libs = cache_dir(version) / "libs"
    if libs.is_dir():
        return libs
    mvn = require_tool("mvn", "maven")
    require_tool("java", "openjdk-17-jre-headless")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-fetching-", dir=libs.parent))
    try:
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(POM), f"-Dkafka.version={version}", "dependency:copy-dependencies",
             f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
            capture_output=True, text=True, check=False)
        if result.returncode != 0 or not any(staging.glob(f"kafka_2.13-{version}.jar")):
            last = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
            raise KafkaToolError(f"mvn could not fetch Apache Kafka {version} from Maven Central: {last[0]}")
        try:
            staging.rename(libs)
        except OSError:
            if not libs.is_dir():  # another process finished the same fetch first: theirs is as good
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return libs


def classpath(version: str = KAFKA_VERSION) -> str:
    return os.pathsep.join(str(jar) for jar in sorted(kafka_jars(version).glob("*.jar")))


def main() -> int:
    try:
        libs = kafka_jars()
    except KafkaToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Apache Kafka {KAFKA_VERSION}: {len(list(libs.glob('*.jar')))} jars in {libs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
