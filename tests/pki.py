"""A certificate authority made on the spot, with a server and a client
certificate it signed, as PEM files: what TLS tests hand to a broker and to
tablesync's clients."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["AppCertificate", "Pki", "make_app_certificate", "make_pki"]


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    """The CA's certificate."""
    server_file: Path
    """The server's unencrypted PKCS#8 key followed by its certificate and the CA's:
    a Kafka PEM keystore."""
    client_cert_file: Path
    client_key_file: Path
    """The client's key, encrypted with ``client_key_password``."""
    client_key_password: str
    other_ca_file: Path
    """A CA that signed nothing here: trusting it trusts no one."""


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: rsa.RSAPrivateKey,
    ca: x509.Certificate,
    name: str,
    *,
    server: bool,
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                # The broker's certificate is its client certificate too, when it
                # connects to itself over its own listener.
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                if server
                else [ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_pki(directory: Path, *, client_key_password: str = "client-key-secret") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _ca("tablesync test CA")
    _, other = _ca("some other CA")
    server_key, server = _leaf(ca_key, ca, "localhost", server=True)
    client_key, client = _leaf(ca_key, ca, "tablesync", server=False)
    pki = Pki(
        ca_file=directory / "ca.pem",
        server_file=directory / "server.pem",
        client_cert_file=directory / "client.pem",
        client_key_file=directory / "client.key",
        client_key_password=client_key_password,
        other_ca_file=directory / "other-ca.pem",
    )
    pki.ca_file.write_bytes(_pem(ca))
    pki.other_ca_file.write_bytes(_pem(other))
    pki.server_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + _pem(server)
        + _pem(ca)
    )
    pki.client_cert_file.write_bytes(_pem(client))
    pki.client_key_file.write_bytes(
        client_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(client_key_password.encode()),
        )
    )
    return pki


@dataclass(frozen=True)
class AppCertificate:
    """A self-signed certificate as an Entra application registers one."""

    file: Path
    """PEM: the private key (encrypted with ``password`` when it is set), then the
    certificate; or PKCS#12 when the name ends in .pfx."""
    certificate: x509.Certificate


def make_app_certificate(
    path: Path, *, expired: bool = False, password: str | None = None
) -> AppCertificate:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    valid_until = now - dt.timedelta(days=1) if expired else now + dt.timedelta(days=365)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("tablesync"))
        .issuer_name(_name("tablesync"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_until - dt.timedelta(days=400))
        .not_valid_after(valid_until)
        .sign(key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".pfx":
        path.write_bytes(
            pkcs12.serialize_key_and_certificates(b"tablesync", key, cert, None, encryption)
        )
    else:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
            )
            + _pem(cert)
        )
    return AppCertificate(path, cert)
