"""Let two test homeservers federate over loopback TLS (SYNAPSE_FACTS §15).

Each server is named `127.0.0.1:<tls port>` and gets a self-signed certificate; certificate
checks and the IP blocklist are off, which is safe only because every address is 127.0.0.1.
"""

import datetime
import ipaddress
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def write_self_signed_cert(workdir: Path) -> tuple[Path, Path]:
    """A certificate for IP 127.0.0.1 and its key; returns (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = workdir / "tls.crt", workdir / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def federate(config: dict[str, Any], workdir: Path, tls_port: int) -> dict[str, Any]:
    """`config` changed so that the server federates on `tls_port` as `127.0.0.1:<tls_port>`."""
    cert, key = write_self_signed_cert(workdir)
    return {
        **config,
        "server_name": f"127.0.0.1:{tls_port}",
        "listeners": [
            *config["listeners"],
            {
                "port": tls_port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": True,
                "resources": [{"names": ["federation"], "compress": False}],
            },
        ],
        "tls_certificate_path": str(cert),
        "tls_private_key_path": str(key),
        "federation_verify_certificates": False,
        "ip_range_blacklist": [],
        "federation_ip_range_blacklist": [],
    }
