"""NATS authentication and TLS against real servers, and secrets kept out of logs and reprs.

Each test starts its own nats-server configured for one method (token, user and password,
NKey, credentials file in operator mode, mutual TLS) and runs a workflow end to end through an
App configured for it; wrong or missing credentials must fail with a message that says what
to check and never shows the secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from dfcore import App, ConfigurationError, DFConnectionError, EmbeddedServer
from dfcore.client._loopthread import run_sync
from dfcore.core._config import Settings
from dfcore.jetstream._connection import connect, tls_context

from . import natsauth
from .workerkit import WorkerThread

TOKEN = "tok-3f9c1e77a2b4d5"
PASSWORD = "pw-8d1b44e09c2a7f"
WRONG = "wrong-secret-5e2a91"


@contextlib.contextmanager
def nats_server(tmp_path: Path, config_text: str) -> Iterator[EmbeddedServer]:
    """A nats-server with JetStream and ``config_text``, for this test only."""
    store = tmp_path / "nats"
    with EmbeddedServer(store, config_text=config_text, log_file=str(store / "log")) as server:
        yield server


@contextlib.contextmanager
def secured_app(namespace: str, url: str, **settings: Any) -> Iterator[App]:
    """An App with a tiny workflow (``greet``), its connections closed afterwards."""
    app = App("secure", nats_url=url, namespace=namespace, connect_timeout=3, **settings)

    @app.activity
    async def shout(word: str) -> str:
        return word.upper()

    @app.workflow
    async def greet(ctx: Any, word: str) -> str:
        return await ctx.activity(shout, word) + "!"

    try:
        yield app
    finally:
        run_sync(app.aclose())


def assert_runs(app: App) -> None:
    """A workflow with one activity runs end to end through a worker of ``app``."""
    with WorkerThread(app):
        assert app.start("greet", "hi").result(timeout=30) == "HI!"


def connect_error(app: App) -> str:
    """The message of the error the first call through ``app`` raises."""
    with pytest.raises(DFConnectionError) as info:
        app.start("greet", "hi")
    return str(info.value)


# --- one case per authentication method ------------------------------------------------------


@dataclass(frozen=True)
class AuthCase:
    """A server config for one method, settings that pass, settings that must be refused,
    and what the refusal's message must name."""

    config: str
    good: dict[str, Any]
    wrong: dict[str, Any]
    names: str
    secrets: tuple[str, ...]


def token_case(tmp_path: Path) -> AuthCase:
    config = f'authorization {{ token: "{TOKEN}" }}\n'
    return AuthCase(config, {"nats_token": TOKEN}, {"nats_token": WRONG}, "nats_token", (TOKEN,))


def password_case(tmp_path: Path) -> AuthCase:
    config = f'authorization {{ users: [{{ user: "app", password: "{PASSWORD}" }}] }}\n'
    good = {"nats_user": "app", "nats_password": PASSWORD}
    wrong = {"nats_user": "app", "nats_password": WRONG}
    return AuthCase(config, good, wrong, "nats_user and argument nats_password", (PASSWORD,))


def nkey_case(tmp_path: Path) -> AuthCase:
    user, stranger = natsauth.new_nkey("user"), natsauth.new_nkey("user")
    config = f'authorization {{ users: [{{ nkey: "{user.public}" }}] }}\n'
    good, wrong = {"nats_nkey_seed": user.seed}, {"nats_nkey_seed": stranger.seed}
    return AuthCase(config, good, wrong, "nats_nkey_seed", (user.seed, stranger.seed))


def nkey_file_case(tmp_path: Path) -> AuthCase:
    user, stranger = natsauth.new_nkey("user"), natsauth.new_nkey("user")
    (tmp_path / "user.nk").write_text(user.seed + "\n")
    (tmp_path / "stranger.nk").write_text(stranger.seed)
    config = f'authorization {{ users: [{{ nkey: "{user.public}" }}] }}\n'
    good = {"nats_nkey_seed_file": str(tmp_path / "user.nk")}
    wrong = {"nats_nkey_seed_file": str(tmp_path / "stranger.nk")}
    return AuthCase(config, good, wrong, "nats_nkey_seed_file", (user.seed, stranger.seed))


def creds_case(tmp_path: Path) -> AuthCase:
    operator = natsauth.operator_mode(tmp_path / "operator")
    stranger = natsauth.stranger_creds(tmp_path / "stranger.creds")
    good = {"nats_creds_file": str(operator.creds_file)}
    wrong = {"nats_creds_file": str(stranger)}
    return AuthCase(operator.config_text, good, wrong, "nats_creds_file", (operator.user.seed,))


AUTH_CASES: dict[str, Callable[[Path], AuthCase]] = {
    "token": token_case,
    "user-password": password_case,
    "nkey-seed": nkey_case,
    "nkey-seed-file": nkey_file_case,
    "creds-file": creds_case,
}


@pytest.mark.parametrize("method", AUTH_CASES)
def test_each_auth_method_runs_a_workflow_and_refuses_wrong_credentials(
    tmp_path: Path, namespace: str, method: str
) -> None:
    case = AUTH_CASES[method](tmp_path)
    with nats_server(tmp_path, case.config) as server:
        with secured_app(namespace, server.url, **case.good) as app:
            assert_runs(app)
        with secured_app(namespace, server.url, **case.wrong) as app:
            message = connect_error(app)
        assert "the server refused the credentials" in message
        assert f"check argument {case.names}" in message
        assert not any(secret in message for secret in (*case.secrets, WRONG))
        with secured_app(namespace, server.url) as app:
            message = connect_error(app)
        assert "requires authentication" in message and "no credentials are configured" in message
        assert "nats_token" in message and "nats_creds_file" in message


def test_credentials_in_the_url_work_and_are_masked(tmp_path: Path, namespace: str) -> None:
    config = f'authorization {{ users: [{{ user: "app", password: "{PASSWORD}" }}] }}\n'
    with nats_server(tmp_path, config) as server:
        url = server.url.replace("nats://", f"nats://app:{PASSWORD}@")
        with secured_app(namespace, url) as app:
            assert_runs(app)
            assert app.settings.display_url == server.url.replace("nats://", "nats://app:***@")
        with secured_app(namespace, url.replace(PASSWORD, WRONG)) as app:
            message = connect_error(app)
    assert "refused the credentials" in message
    assert "the user and password in argument nats_url" in message
    assert PASSWORD not in message and WRONG not in message and "app:***@" in message


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture
def certs(tmp_path: Path) -> natsauth.CertFiles:
    """A test CA with a server certificate (127.0.0.1, localhost) and a client certificate."""
    return natsauth.make_certificates(tmp_path / "certs")


def tls_settings(certs: natsauth.CertFiles) -> dict[str, Any]:
    return {
        "nats_tls_ca_file": str(certs.ca),
        "nats_tls_cert_file": str(certs.client_cert),
        "nats_tls_key_file": str(certs.client_key),
    }


def test_mutual_tls_with_a_password_runs_a_workflow(
    tmp_path: Path, namespace: str, certs: natsauth.CertFiles
) -> None:
    users = f'authorization {{ users: [{{ user: "app", password: "{PASSWORD}" }}] }}\n'
    with nats_server(tmp_path, natsauth.tls_block(certs) + users) as server:
        tls_url = server.url.replace("nats://", "tls://")
        password = {"nats_user": "app", "nats_password": PASSWORD}
        with secured_app(namespace, tls_url, **tls_settings(certs), **password) as app:
            assert_runs(app)
        # A certificate for "localhost" reached by IP: nats_tls_hostname names what to verify.
        with secured_app(
            namespace, server.url, nats_tls_hostname="localhost", **tls_settings(certs), **password
        ) as app:
            assert_runs(app)


def test_tls_without_a_client_certificate_says_so(
    tmp_path: Path, namespace: str, certs: natsauth.CertFiles
) -> None:
    with (
        nats_server(tmp_path, natsauth.tls_block(certs)) as server,
        secured_app(namespace, server.url, nats_tls_ca_file=str(certs.ca)) as app,
    ):
        message = connect_error(app)
    assert "TLS handshake failed" in message
    assert "client certificate" in message and "nats_tls_cert_file" in message


def test_tls_with_an_untrusted_server_certificate_names_the_ca_setting(
    tmp_path: Path, namespace: str, certs: natsauth.CertFiles
) -> None:
    other = natsauth.make_certificates(tmp_path / "other", prefix="other-")
    with nats_server(tmp_path, natsauth.tls_block(certs)) as server:
        with secured_app(namespace, server.url, **tls_settings(other)) as app:
            message = connect_error(app)
        assert "TLS handshake failed" in message and "certificate was rejected" in message
        assert "argument nats_tls_ca_file to the CA certificate that signed it" in message
        with secured_app(namespace, server.url) as app:  # no CA: the system trust store
            message = connect_error(app)
        assert "the system trust store" in message and "nats_tls_ca_file" in message


def test_tls_with_a_client_certificate_of_another_ca_says_so(
    tmp_path: Path, namespace: str, certs: natsauth.CertFiles
) -> None:
    other = natsauth.make_certificates(tmp_path / "other", prefix="other-")
    settings = {**tls_settings(other), "nats_tls_ca_file": str(certs.ca)}
    with (
        nats_server(tmp_path, natsauth.tls_block(certs)) as server,
        secured_app(namespace, server.url, **settings) as app,
    ):
        message = connect_error(app)
    assert "TLS handshake failed" in message
    assert "rejected the client certificate" in message and "nats_tls_cert_file" in message


def test_tls_hostname_mismatch_names_the_hostname_setting(
    tmp_path: Path, namespace: str, certs: natsauth.CertFiles
) -> None:
    with nats_server(tmp_path, natsauth.tls_block(certs)) as server:
        settings = {**tls_settings(certs), "nats_tls_hostname": "nats.example.org"}
        with secured_app(namespace, server.url, **settings) as app:
            message = connect_error(app)
    assert "certificate was rejected" in message and "argument nats_tls_hostname" in message


def test_tls_required_but_not_offered_closes_the_connection(
    tmp_path: Path, namespace: str, certs: natsauth.CertFiles
) -> None:
    with (
        nats_server(tmp_path, "") as server,
        secured_app(namespace, server.url, nats_tls_ca_file=str(certs.ca)) as app,
    ):
        message = connect_error(app)
    assert "does not offer TLS" in message and "argument nats_tls_ca_file requires it" in message


@pytest.mark.parametrize("where", ["setting", "url"])
async def test_secrets_are_not_sent_when_tls_is_required_but_not_offered(where: str) -> None:
    """A server (or a man in the middle) that does not offer TLS never receives the secret,
    whether it is a setting or the ``user:password@`` of a ``tls://`` URL."""
    received = bytearray()

    async def fake_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        info = {"server_id": "fake", "version": "2.12.0", "auth_required": True, "headers": True}
        writer.write(f"INFO {json.dumps(info)}\r\n".encode())
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                received.extend(data)
                writer.write(b"-ERR 'Authorization Violation'\r\n")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(fake_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    if where == "setting":
        settings = Settings(nats_url=f"tls://127.0.0.1:{port}", nats_token=TOKEN, connect_timeout=2)
    else:
        settings = Settings(nats_url=f"tls://alice:{TOKEN}@127.0.0.1:{port}", connect_timeout=2)
    try:
        with pytest.raises(DFConnectionError) as info:
            await connect(settings, "test")
    finally:
        server.close()
        await server.wait_closed()
    assert "does not offer TLS" in str(info.value) and "no credentials were sent" in str(info.value)
    assert TOKEN.encode() not in received and TOKEN not in str(info.value)


def test_unusable_tls_files_are_configuration_errors(
    tmp_path: Path, certs: natsauth.CertFiles
) -> None:
    encrypted = tmp_path / "encrypted-key.pem"
    key = serialization.load_pem_private_key(certs.client_key.read_bytes(), None)
    encryption = serialization.BestAvailableEncryption(b"passphrase")
    pkcs8 = serialization.PrivateFormat.PKCS8
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, encryption))
    cases = [
        ({"nats_tls_ca_file": str(certs.client_key)}, "cannot load CA certificates"),
        (
            {"nats_tls_cert_file": str(certs.client_cert), "nats_tls_key_file": str(certs.ca)},
            "cannot load the client certificate",
        ),
        (
            {"nats_tls_cert_file": str(certs.client_cert), "nats_tls_key_file": str(encrypted)},
            "the private key is encrypted",
        ),
    ]
    for settings, needle in cases:
        with pytest.raises(ConfigurationError, match=needle) as info:
            tls_context(Settings(**settings, sources={"nats_tls_key_file": "DF_NATS_TLS_KEY"}))
        assert "nats_tls_" in str(info.value) or "DF_NATS_TLS_KEY" in str(info.value)


# --- secrets stay out of logs and reprs -------------------------------------------------------


def test_secrets_never_appear_in_logs_or_reprs(
    tmp_path: Path, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = f'authorization {{ users: [{{ user: "app", password: "{PASSWORD}" }}] }}\n'
    seen: list[str] = []
    with nats_server(tmp_path, config) as server:
        url = server.url.replace("nats://", f"nats://app:{PASSWORD}@")
        with secured_app(namespace, url) as app:
            assert_runs(app)  # the worker's start line names the server
            seen += [repr(app), repr(app.settings), str(app.settings)]
        with secured_app(namespace, server.url, nats_user="app", nats_password=WRONG) as app:
            seen += [connect_error(app), repr(app.settings)]
        with secured_app(namespace, server.url, nats_token=TOKEN) as app:
            seen += [connect_error(app), repr(app.settings)]
        seed = natsauth.new_nkey("user").seed
        with secured_app(namespace, server.url, nats_nkey_seed=seed) as app:
            seen += [connect_error(app), repr(app.settings)]
    assert any("worker for app" in record.getMessage() for record in caplog.records)
    assert "app:***@" in caplog.text
    text = caplog.text + "\n".join(seen)
    for secret in (PASSWORD, WRONG, TOKEN, seed):
        assert secret not in text
