"""The amoCRM clients' TLS context (`sync.amo.tls`): httpx's default verification, built once
per process (in the background when warmed), and a failed build tried again."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import httpx
import pytest

from sync.amo.tls import TlsContext, tls_context


def test_the_context_verifies_like_httpx_default() -> None:
    context = TlsContext().get()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # the CA bundle is loaded


def test_it_is_built_once_however_many_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[str] = []
    create = httpx.create_ssl_context

    def counted() -> ssl.SSLContext:
        builds.append(threading.current_thread().name)
        return create()

    monkeypatch.setattr(httpx, "create_ssl_context", counted)
    shared = TlsContext()
    shared.warm()
    contexts = {id(shared.get()) for _ in range(3)}
    shared.warm()  # built already: no second thread
    assert len(contexts) == 1
    assert builds == ["amosync-tls"]  # the warm-up built it, in its thread


def test_a_failed_build_is_not_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shared = TlsContext()
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(FileNotFoundError):
        shared.get()
    monkeypatch.delenv("SSL_CERT_FILE")
    assert shared.get().verify_mode == ssl.CERT_REQUIRED


def test_every_client_of_the_process_gets_the_same_context() -> None:
    assert tls_context() is tls_context()
