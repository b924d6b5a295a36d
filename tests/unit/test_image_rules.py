"""The image's promises (.ci/image_rules.py, run by .ci/check-image) hold for deploy/, and each
rule catches the mistake it is there for: the Dockerfile and compose file as they were before
the image was made reproducible fail it with the words that say what to fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / ".ci" / "image_rules.py"
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()
COMPOSE = (ROOT / "deploy" / "docker-compose.yml").read_text()


def check(tmp_path: Path, dockerfile: str = DOCKERFILE, compose: str = COMPOSE) -> tuple[int, str]:
    (tmp_path / "Dockerfile").write_text(dockerfile)
    (tmp_path / "compose.yml").write_text(compose)
    args = [
        "--dockerfile",
        str(tmp_path / "Dockerfile"),
        "--compose",
        str(tmp_path / "compose.yml"),
    ]
    done = subprocess.run(
        [sys.executable, str(RULES), *args], capture_output=True, text=True, check=False
    )
    return done.returncode, done.stderr


def test_deploy_files_keep_every_promise(tmp_path: Path) -> None:
    assert check(tmp_path) == (0, "")


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        (
            "--require-hashes --no-deps --requirement requirements.lock",
            "--requirement requirements.lock",
            "without --require-hashes",
        ),
        ("install --no-deps /tmp/wheel/", "install /tmp/wheel/", "without --no-deps"),
        (
            "install --no-deps /tmp/wheel/amocrm_sync-*.whl",
            "install --no-deps /tmp/wheel/amocrm_sync-*.whl httpx",
            "by name, not from the lock",
        ),
        ("USER 10001:10001", "USER root", "runs as root"),
        ("USER 10001:10001\n", "", "runs as root"),
        ("postgresql-client", "curl", "postgresql-client"),
        ("/livez', timeout", "/healthz', timeout", "HEALTHCHECK"),
        ("FROM ${BASE_IMAGE}\nLABEL", "FROM python:3.11-slim\nLABEL", "from ${BASE_IMAGE}"),
        ("COPY migrations ./migrations\n", "", "no COPY of migrations/"),
        ("COPY sync ./sync\n", "", "no COPY of sync/"),
    ],
)
def test_dockerfile_mistakes_are_named(tmp_path: Path, old: str, new: str, words: str) -> None:
    assert old in DOCKERFILE
    code, err = check(tmp_path, dockerfile=DOCKERFILE.replace(old, new, 1))
    assert code == 1
    assert words in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("ports", "words"),
    [
        ('["127.0.0.1:5432:5432"]', "publishes PostgreSQL on host port 5432"),
        ('["5432:5432"]', "must bind to 127.0.0.1"),
    ],
)
def test_postgres_on_the_hosts_5432_is_refused(tmp_path: Path, ports: str, words: str) -> None:
    published = COMPOSE.replace("    volumes:\n", f"    ports: {ports}\n    volumes:\n", 1)
    code, err = check(tmp_path, compose=published)
    assert code == 1
    assert words in err


def test_postgres_on_another_loopback_port_is_allowed(tmp_path: Path) -> None:
    other = COMPOSE.replace("    volumes:\n", '    ports: ["127.0.0.1:15432:5432"]\n    volumes:\n')
    assert check(tmp_path, compose=other) == (0, "")


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        (
            "condition: service_healthy",
            "condition: service_healthy\n      db:\n        condition: service_started",
            "no service 'db'",
        ),
        ('network_mode: "service:emulator"', 'network_mode: "service:emulatr"', "emulatr"),
        ("  pgdata:\n", "  other:\n", "'pgdata' is not under top-level volumes"),
        ("    image: postgres:15-alpine\n", "", "neither image nor build"),
        ("volumes:\n  pgdata:", "volume:\n  pgdata:", "unknown top-level key 'volume'"),
    ],
)
def test_compose_mistakes_are_named(tmp_path: Path, old: str, new: str, words: str) -> None:
    assert old in COMPOSE
    code, err = check(tmp_path, compose=COMPOSE.replace(old, new))
    assert code == 1
    assert words in err
