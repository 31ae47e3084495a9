"""The Kafka broker's distribution: its jars from Maven Central (fetched once) and Java.

The jars come from infra/kafka/pom.xml because our machines reach Maven Central but neither a
Docker engine nor the Apache download site.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from streams.errors import InfraError
from streams.localinfra.process import tail
from streams.settings import REPO_ROOT

log = logging.getLogger(__name__)

KAFKA_INFRA = REPO_ROOT / "infra" / "kafka"
POM = KAFKA_INFRA / "pom.xml"
LOG4J2_CONFIG = KAFKA_INFRA / "log4j2.properties"
SERVER_TEMPLATE = KAFKA_INFRA / "server.properties.template"

MIN_JAVA = 17  # Kafka 4.x
# Kafka's scripts use a 1 GiB heap; half of that is plenty for one local broker on 2 cores.
JVM_OPTS = (
    "-Xmx512m",
    "-Xms512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
)
MAVEN_TIMEOUT_S = 900
_COMPLETE = ".complete"  # written last; holds the pom's sha256, so a pom change refetches


def pinned_version(pom: Path = POM) -> str:
    """The kafka_2.13 version infra/kafka/pom.xml pins."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    try:
        root = ET.parse(pom).getroot()
    except FileNotFoundError as exc:
        raise InfraError(
            f"{pom} is missing; the launcher reads the broker's files from the repository",
            hint="run rtscore from a checkout of the repository (`pip install -e .`)",
        ) from exc
    for dep in root.iterfind("m:dependencies/m:dependency", ns):
        if dep.findtext("m:artifactId", namespaces=ns) == "kafka_2.13":
            version = dep.findtext("m:version", namespaces=ns)
            if version:
                return version.strip()
    raise InfraError(f"{pom} pins no org.apache.kafka:kafka_2.13 version", hint="restore the file")


def java_major(version_output: str) -> int | None:
    """The major version in ``java -version`` output ('1.8.0_x' is 8, '17.0.15' is 17)."""
    m = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if m is None:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def find_java() -> str:
    """The ``java`` executable, checked to be Java 17 or newer."""
    java = shutil.which("java")
    hint = "install OpenJDK 17 (Debian/Ubuntu: `apt-get install -y openjdk-17-jre-headless`)"
    if java is None:
        raise InfraError("`java` is not on PATH; the local Kafka broker needs Java 17+", hint=hint)
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    major = java_major(out.stderr + out.stdout)
    if major is None or major < MIN_JAVA:
        raise InfraError(
            f"{java} is Java {major or '(unknown version)'}; Kafka 4 needs Java {MIN_JAVA}+",
            hint=hint + ", and put it first on PATH",
        )
    return java


def find_maven() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfraError(
            "`mvn` is not on PATH; it fetches the Kafka broker's jars once",
            hint="install Maven (Debian/Ubuntu: `apt-get install -y maven`)",
        )
    return mvn


def jars_ready(libs: Path, pom: Path = POM) -> bool:
    marker = libs / _COMPLETE
    return marker.exists() and marker.read_text().strip() == _sha256(pom)


def fetch_jars(libs: Path, *, maven_log: Path, pom: Path = POM) -> int:
    """Collect the broker's runtime jars into ``libs`` with Maven; returns how many."""
    mvn = find_maven()
    partial = libs.with_name(libs.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    argv = [
        mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(pom), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={partial}",
    ]  # fmt: skip
    log.debug("running %s", " ".join(argv))
    maven_log.parent.mkdir(parents=True, exist_ok=True)
    with maven_log.open("wb") as out:
        try:
            result = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, timeout=MAVEN_TIMEOUT_S, check=False
            )
            failure = None if result.returncode == 0 else f"exit status {result.returncode}"
        except subprocess.TimeoutExpired:
            failure = f"no result after {MAVEN_TIMEOUT_S} s"
    jars = sorted(partial.glob("*.jar"))
    if failure is None and not any(j.name.startswith("kafka_2.13-") for j in jars):
        failure = "it finished but left no kafka_2.13 jar"
    if failure is not None:
        raise InfraError(
            f"Maven could not fetch the Kafka broker's jars ({failure})",
            hint="check that Maven Central is reachable (a proxy goes in ~/.m2/settings.xml). "
            f"The end of {maven_log}:\n{tail(maven_log) or '(no output)'}",
        )
    (partial / _COMPLETE).write_text(_sha256(pom) + "\n")
    shutil.rmtree(libs, ignore_errors=True)
    partial.replace(libs)
    return len(jars)


def java_command(
    java: str,
    libs: Path,
    log_path: Path,
    main_class: str,
    *args: str,
    jvm_opts: Sequence[str] = JVM_OPTS,
) -> list[str]:
    """The command line running ``main_class`` from the jar cache, logging to ``log_path``."""
    return [
        java,
        *jvm_opts,
        f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
        f"-Drtscore.kafka.log={log_path}",
        "-cp",
        f"{libs}/*",
        main_class,
        *args,
    ]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
