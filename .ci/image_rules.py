"""The image's promises that no linter checks, for .ci/check-image.

    python .ci/image_rules.py [--dockerfile deploy/Dockerfile] [--compose deploy/docker-compose.yml]

Dockerfile: every image comes from BASE_IMAGE; every pip install is --no-deps, and from a
requirements file only with --require-hashes (so nothing is resolved at build time); psql is
installed; the last stage runs as a non-root user; the HEALTHCHECK probes /livez on
AMOSYNC_DAEMON__HTTP_PORT; the build copies every directory the wheel is built from (`sync`, and
`migrations`, which the wheel installs as `sync.migrations`). Compose file: a structural check (what `docker compose config` would
refuse: unknown top-level keys, a service without image or build, references to undeclared
services or volumes, ports on a service that shares another's network), and the rules that
PostgreSQL is not published on the host's port 5432 and every port binds to loopback only.
Prints one line per broken rule and exits 1; exits 0 silently when all hold.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

TOP_LEVEL = {"version", "name", "services", "volumes", "networks", "configs", "secrets"}
# What `pip wheel .` reads besides pyproject.toml: without one, the image's wheel lacks it.
WHEEL_SOURCES = ("sync", "migrations")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def last_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    return steps[starts[-1] :] if starts else []


def pip_installs(steps: list[tuple[str, str]]) -> list[list[str]]:
    """The argument lists of every `pip ... install` command in a RUN."""
    found = []
    for word, rest in steps:
        if word != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", rest):
            args = shlex.split(command)
            runs_pip = (args[:1] and args[0].endswith("pip")) or args[1:3] == ["-m", "pip"]
            if runs_pip and "install" in args:
                found.append(args)
    return found


def pip_problems(args: list[str]) -> list[str]:
    line = " ".join(args)
    problems = []
    if "--no-deps" not in args:
        problems.append(f"pip install without --no-deps resolves at build time: {line}")
    if ("--requirement" in args or "-r" in args) and "--require-hashes" not in args:
        problems.append(f"pip install from a requirements file without --require-hashes: {line}")
    targets = args[args.index("install") + 1 :]
    loose = [a for a in targets if not a.startswith(("-", "/", "."))]
    loose = [a for a in loose if not any(a.endswith(s) for s in (".lock", ".txt"))]
    if loose and not {"--requirement", "-r"} & set(args):
        problems.append(f"pip install of a package by name, not from the lock: {line}")
    return problems


def dockerfile_problems(text: str) -> list[str]:
    steps = instructions(text)
    problems = [p for args in pip_installs(steps) for p in pip_problems(args)]
    froms = [rest.split()[0] for word, rest in steps if word == "FROM"]
    problems += [
        f"FROM {f}: every stage must start from ${{BASE_IMAGE}}"
        for f in froms
        if f != "${BASE_IMAGE}"
    ]
    if not any(w == "ARG" and r.startswith("BASE_IMAGE=") for w, r in steps):
        problems.append("no ARG BASE_IMAGE=<default> before the first FROM")
    copied = {
        source.rstrip("/").removeprefix("./")
        for word, rest in steps
        if word == "COPY"
        for source in shlex.split(rest)[:-1]
        if not source.startswith("--")
    }
    problems += [
        f"no COPY of {source}/ before the wheel is built: the image would lack it"
        for source in WHEEL_SOURCES
        if source not in copied
    ]
    final = last_stage(steps)
    if not any(w == "RUN" and "postgresql-client" in r for w, r in final):
        problems.append("the final stage does not install postgresql-client (db shell needs psql)")
    users = [r.split(":")[0] for w, r in final if w == "USER"]
    if not users or users[-1] in {"0", "root"}:
        problems.append("the final stage runs as root: add USER <uid>")
    checks = [r for w, r in final if w == "HEALTHCHECK"]
    if not checks or "/livez" not in checks[-1] or "AMOSYNC_DAEMON__HTTP_PORT" not in checks[-1]:
        problems.append("no HEALTHCHECK probing /livez on AMOSYNC_DAEMON__HTTP_PORT")
    return problems


def service_problems(name: str, service: Any, names: set[str], volumes: set[str]) -> list[str]:
    if not isinstance(service, dict):
        return [f"services.{name} is not a mapping"]
    problems = []
    if "image" not in service and "build" not in service:
        problems.append(f"services.{name} has neither image nor build")
    depends = service.get("depends_on", [])
    problems += [f"services.{name}.depends_on: no service {d!r}" for d in depends if d not in names]
    mode = str(service.get("network_mode", ""))
    if mode.startswith("service:") and mode.removeprefix("service:") not in names:
        problems.append(f"services.{name}.network_mode: no service {mode!r}")
    if mode.startswith("service:") and "ports" in service:
        problems.append(f"services.{name} shares {mode!r}'s network: publish ports there")
    for mount in service.get("volumes", []):
        source = str(mount.get("source", "/")) if isinstance(mount, dict) else str(mount)
        source = source.split(":")[0]
        if not source.startswith((".", "/", "~", "$")) and source not in volumes:
            problems.append(f"services.{name}.volumes: {source!r} is not under top-level volumes")
    return problems + port_problems(name, service)


def port_problems(name: str, service: dict[str, Any]) -> list[str]:
    ports = [str(p) for p in service.get("ports", [])]
    problems = [
        f"services.{name}.ports: {p!r} must bind to 127.0.0.1"
        for p in ports
        if not p.startswith("127.0.0.1:")
    ]
    if str(service.get("image", "")).startswith("postgres"):
        problems += [
            f"services.{name}.ports: {p!r} publishes PostgreSQL on host port 5432, "
            "which may belong to another server: leave it unpublished or use another port"
            for p in ports
            if p.split(":")[-2:-1] == ["5432"]
        ]
    return problems


def compose_problems(text: str) -> list[str]:
    document = yaml.safe_load(text)
    if not isinstance(document, dict) or not isinstance(document.get("services"), dict):
        return ["the compose file has no services mapping"]
    problems = [
        f"unknown top-level key {k!r}"
        for k in document
        if k not in TOP_LEVEL and not str(k).startswith("x-")
    ]
    services: dict[str, Any] = document["services"]
    volumes = set(document.get("volumes") or {})
    for name, service in services.items():
        problems += service_problems(name, service, set(services), volumes)
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dockerfile", type=Path, default=Path("deploy/Dockerfile"))
    parser.add_argument("--compose", type=Path, default=Path("deploy/docker-compose.yml"))
    args = parser.parse_args()
    problems = [f"{args.dockerfile}: {p}" for p in dockerfile_problems(args.dockerfile.read_text())]
    problems += [f"{args.compose}: {p}" for p in compose_problems(args.compose.read_text())]
    for problem in problems:
        print(problem, file=sys.stderr)  # noqa: T201
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
