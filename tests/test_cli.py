"""The ``scoreboard`` command as an operator uses it: serve, token, migrate, logs."""

from __future__ import annotations

import datetime
import json
import os
import ssl
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import SECRET, ServerProcess


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scoreboard", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def test_token_uses_the_dev_key_the_server_uses(tmp_path: Path) -> None:
    env = {"SCOREBOARD_DATA_DIR": str(tmp_path)}
    out = cli("token", "alice", "--name", "Alice", "--ttl", "120", "--admin", env=env)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.count(".") == 2 and "\n" not in token
    key_file = tmp_path / "dev-jwt-secret"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    claims = jwt.decode(token, key_file.read_text().strip(), algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["name"] == "Alice"
    assert claims["scope"] == "scoreboard:admin" and claims["exp"] - claims["iat"] == 120

    with ServerProcess(tmp_path, env={"SCOREBOARD_JWT_SECRET": ""}) as server:
        r = httpx.post(server.url + "/score", json={"user_id": "alice", "increment": 2},
                       headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        lines = [json.loads(line) for line in server.log_lines() if line.startswith("{")]
        assert any(e["event"] == "development_key" for e in lines)


def test_token_refuses_when_the_server_only_verifies(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "pub.pem"
    pem.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    out = cli("token", "alice", env={"SCOREBOARD_DATA_DIR": str(tmp_path),
                                     "SCOREBOARD_JWT_PUBLIC_KEY": str(pem)})
    assert out.returncode != 0
    assert "only verifies" in out.stderr
    assert out.stdout == ""


def test_bad_configuration_refuses_to_start(tmp_path: Path) -> None:
    out = cli("serve", env={"SCOREBOARD_DATA_DIR": str(tmp_path), "SCOREBOARD_JWT_SECRET": "short"})
    assert out.returncode == 2
    assert "SCOREBOARD_JWT_SECRET" in out.stderr
    out = cli("serve", env={"SCOREBOARD_DATA_DIR": str(tmp_path), "SCOREBOARD_RATE_LIMIT": "lots"})
    assert out.returncode == 2 and "'lots'" in out.stderr


def test_migrate(tmp_path: Path) -> None:
    out = cli("migrate", env={"SCOREBOARD_DATA_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "scoreboard.db").exists()


def test_logs_are_json_lines_without_secrets(tmp_path: Path) -> None:
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    with ServerProcess(tmp_path) as server, httpx.Client(base_url=server.url) as c:
        c.get("/scores", headers={"X-Request-ID": "trace-me"})
        c.post("/score", json={"user_id": "bob", "increment": 1},
               headers={"Authorization": f"Bearer {token}"})
    text = server.log_path.read_text()
    assert token not in text and SECRET not in text
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    requests = [e for e in events if e["event"] == "request"]
    assert {"request_id", "method", "path", "route", "status", "ms", "timestamp"} <= set(requests[0])
    assert any(e["request_id"] == "trace-me" for e in requests)
    refused = [e for e in events if e["event"] == "update_refused"]
    assert [e["reason"] for e in refused] == ["other_user"]
    assert refused[0]["sub"] == "alice" and refused[0]["status"] == 403


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
             signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            import ipaddress
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = cert("test CA", ca_key, ca_name, ca_key, True)
    leaf = cert("127.0.0.1", key, ca_name, ca_key, False)
    paths = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_https_round_trip_and_old_tls_refused(tmp_path: Path, tls_files) -> None:  # type: ignore[no-untyped-def]
    ca, cert, key = tls_files
    server = ServerProcess(tmp_path / "data")
    server.start_args = ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    server.scheme = "https"
    url = server.url.replace("http://", "https://")
    with server:
        r = httpx.get(url + "/scores", verify=ssl.create_default_context(cafile=str(ca)))
        assert r.status_code == 200
        assert r.headers["strict-transport-security"].startswith("max-age=")
        tls12 = ssl.create_default_context(cafile=str(ca))
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        assert httpx.get(url + "/healthz", verify=tls12).status_code == 200
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(str(ca))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
        with pytest.raises(httpx.ConnectError) as refused:
            httpx.get(url + "/scores", verify=old)
        assert "SSL" in str(refused.value) or "EOF" in str(refused.value)


def test_the_development_key_stays_on_this_machine(tmp_path: Path) -> None:
    """With no key configured, a non-loopback address is refused at start, naming the
    variables to set; on loopback the dev key serves and so does /dev/token."""
    for host in ("0.0.0.0", "::", "192.0.2.7", "scoreboard.example"):  # noqa: S104
        out = cli("serve", "--host", host, "--port", "0",
                  env={"SCOREBOARD_DATA_DIR": str(tmp_path), "SCOREBOARD_JWT_SECRET": ""})
        assert out.returncode == 2, (host, out.stderr)
        for variable in ("SCOREBOARD_JWT_SECRET", "SCOREBOARD_JWT_PUBLIC_KEY",
                         "SCOREBOARD_JWT_JWKS_URL"):
            assert variable in out.stderr
    with ServerProcess(tmp_path / "dev", env={"SCOREBOARD_JWT_SECRET": ""}) as dev:
        r = httpx.post(dev.url + "/dev/token", json={"user_id": "alice"})
        assert r.status_code == 200 and r.json()["token"].count(".") == 2
    with ServerProcess(tmp_path / "keyed") as keyed:  # a configured key: no token helper
        r = httpx.post(keyed.url + "/dev/token", json={"user_id": "alice"})
        assert r.status_code == 404
