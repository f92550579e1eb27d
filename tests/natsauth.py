"""Test credentials for secured NATS servers: certificates, NKeys and operator-mode JWTs.

Everything is generated fresh under a temporary folder: an X.509 CA with a server and a
client certificate (``cryptography``), NKeys (``nkeys``), and the operator, account and user
JWTs of NATS decentralized auth, signed here the way the Go ``nats-io/jwt`` v2 library does.
None of it is fit for production.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# --- X.509 ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertFiles:
    """PEM files of a test CA and the server and client certificates it signed."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@dataclass(frozen=True)
class _Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def make_certificates(folder: Path, prefix: str = "") -> CertFiles:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate.

    Args:
        folder: where the PEM files are written (created if missing).
        prefix: file name prefix, so two independent CAs can share a folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ca = _issue(f"{prefix}df-test-ca", None, ca=True)
    server = _issue("localhost", ca, usage=ExtendedKeyUsageOID.SERVER_AUTH, server=True)
    client = _issue("df-test-client", ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return CertFiles(
        ca=_write_cert(folder / f"{prefix}ca.pem", ca),
        server_cert=_write_cert(folder / f"{prefix}server-cert.pem", server),
        server_key=_write_key(folder / f"{prefix}server-key.pem", server),
        client_cert=_write_cert(folder / f"{prefix}client-cert.pem", client),
        client_key=_write_key(folder / f"{prefix}client-key.pem", client),
    )


def _issue(
    name: str,
    issuer: _Issued | None,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    server: bool = False,
) -> _Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_key_usage(ca), critical=True)
    )
    if issuer is not None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
        builder = builder.add_extension(aki, critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    signing_key = issuer.key if issuer else key  # a CA signs itself
    return _Issued(cert=builder.sign(signing_key, hashes.SHA256()), key=key)


def _key_usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _write_cert(path: Path, issued: _Issued) -> Path:
    path.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, issued: _Issued) -> Path:
    pem = issued.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    return path


def tls_block(files: CertFiles, *, verify: bool = True) -> str:
    """The server config's ``tls {}`` block: serve ``files.server_cert``, trust ``files.ca``."""
    return (
        "tls {\n"
        f'  cert_file: "{files.server_cert}"\n'
        f'  key_file: "{files.server_key}"\n'
        f'  ca_file: "{files.ca}"\n'
        f"  verify: {'true' if verify else 'false'}\n"
        "}\n"
    )


# --- NKeys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NKey:
    """An NKey pair: the seed (the secret) and the public key."""

    seed: str
    public: str

    def sign(self, data: bytes) -> bytes:
        """The raw Ed25519 signature of ``data``."""
        pair = nkeys.from_seed(bytearray(self.seed.encode()))
        try:
            signature: bytes = pair.sign(data)
        finally:
            pair.wipe()
        return signature


def new_nkey(kind: str) -> NKey:
    """A fresh NKey of ``kind``: ``"operator"``, ``"account"`` or ``"user"``."""
    prefix = {
        "operator": nkeys.PREFIX_BYTE_OPERATOR,
        "account": nkeys.PREFIX_BYTE_ACCOUNT,
        "user": nkeys.PREFIX_BYTE_USER,
    }[kind]
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    pair = nkeys.from_seed(bytearray(seed))
    public = pair.public_key.decode()
    pair.wipe()
    return NKey(seed=seed.decode(), public=public)


# --- JWTs -------------------------------------------------------------------------------------

_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
_NO_LIMITS = {"subs": -1, "data": -1, "payload": -1}
_ACCOUNT_LIMITS = {
    **_NO_LIMITS,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}
# Any non-zero storage limit enables JetStream for the account; -1 is unlimited.
_JETSTREAM_LIMITS = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def encode_jwt(issuer: NKey, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A JWT with ``nats`` claims about ``subject``, signed by ``issuer``.

    As ``nats-io/jwt`` v2 does: the id (``jti``) is the unpadded base32 SHA-512/256 of the
    standard claims, and the signature covers ``<header>.<claims>``, all base64url unpadded.
    """
    standard = {"iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject}
    digest = hashlib.new("sha512_256", _compact(standard)).digest()
    jti = base64.b32encode(digest).rstrip(b"=").decode()
    claims = {"jti": jti, **standard, "nats": {**nats, "version": 2}}
    signed = f"{_b64(_compact(_HEADER))}.{_b64(_compact(claims))}"
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


def account_jwt(operator: NKey, account: NKey, name: str, *, jetstream: bool) -> str:
    """An account JWT issued by ``operator``, with JetStream enabled when ``jetstream``."""
    limits = {**_ACCOUNT_LIMITS, **(_JETSTREAM_LIMITS if jetstream else {})}
    nats = {"type": "account", "limits": limits, "default_permissions": {"pub": {}, "sub": {}}}
    return encode_jwt(operator, account.public, name, nats)


def user_jwt(account: NKey, user: NKey, name: str) -> str:
    """A user JWT issued by ``account``, allowed everything."""
    nats = {"type": "user", "pub": {}, "sub": {}, **_NO_LIMITS}
    return encode_jwt(account, user.public, name, nats)


def write_creds(path: Path, jwt: str, seed: str) -> Path:
    """Write a ``.creds`` file in the layout ``nsc generate creds`` uses."""
    path.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n",
        encoding="utf-8",
    )
    return path


@dataclass(frozen=True)
class OperatorMode:
    """A server config for decentralized (JWT) auth and what a client needs for it.

    Attributes:
        config_text: the nats-server config: operator, system account, and a memory resolver
            preloaded with the system account and one application account with JetStream.
        account: the application account's NKey (users it signs can connect).
        creds_file: a ``.creds`` file of a user of that account.
        user: that user's NKey.
    """

    config_text: str
    account: NKey
    creds_file: Path
    user: NKey


def operator_mode(folder: Path) -> OperatorMode:
    """Generate an operator, a system account, an application account and one user."""
    folder.mkdir(parents=True, exist_ok=True)
    operator, system, account = new_nkey("operator"), new_nkey("account"), new_nkey("account")
    user = new_nkey("user")
    nats = {"type": "operator", "system_account": system.public}
    operator_jwt = encode_jwt(operator, operator.public, "df-test-operator", nats)
    config = (
        f"operator: {operator_jwt}\n"
        f"system_account: {system.public}\n"
        "resolver: MEMORY\n"
        "resolver_preload: {\n"
        f"  {system.public}: {account_jwt(operator, system, 'SYS', jetstream=False)}\n"
        f"  {account.public}: {account_jwt(operator, account, 'APP', jetstream=True)}\n"
        "}\n"
    )
    creds = write_creds(folder / "app.creds", user_jwt(account, user, "app-user"), user.seed)
    return OperatorMode(config_text=config, account=account, creds_file=creds, user=user)


def stranger_creds(path: Path) -> Path:
    """A well-formed ``.creds`` file of a user whose account no server knows."""
    account, user = new_nkey("account"), new_nkey("user")
    return write_creds(path, user_jwt(account, user, "stranger"), user.seed)
