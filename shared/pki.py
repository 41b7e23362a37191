"""Certificates for the controller-agent channel, built with `cryptography`: the CA, the
certificates it issues, an agent's key and signing request, and the checks the agent
makes on what it is given. No policy here (names, lifetimes and storage are the
callers'); both daemons use it, so it lives in `shared`."""

from __future__ import annotations

import datetime
import os
import tempfile
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.errors import InvalidInput

# A little slack for clocks that disagree, on the start of every validity period.
BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert_pem: str
    key_pem: str


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def load_key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput("not an EC private key")
    return key


def load_cert(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise InvalidInput("not a PEM certificate") from None


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(common_name: str, days: int) -> KeyPair:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = new_key()
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert_pem(cert), key_pem(key))


def issue(ca: KeyPair, public_key: ec.EllipticCurvePublicKey, common_name: str, *,
          days: int, client: bool, dns_name: str | None = None) -> x509.Certificate:
    """An end-entity certificate for `public_key`: EKU clientAuth only (`client`) or
    serverAuth only, so a certificate made for one role is refused in the other."""
    ca_cert, ca_key = load_cert(ca.cert_pem), load_key(ca.key_pem)
    now = _now()
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (x509.CertificateBuilder()
               .subject_name(_name(common_name)).issuer_name(ca_cert.subject)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - BACKDATE)
               .not_valid_after(min(now + datetime.timedelta(days=days),
                                    ca_cert.not_valid_after_utc))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=True, content_commitment=False, key_encipherment=False,
                   data_encipherment=False, key_agreement=False, key_cert_sign=False,
                   crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if dns_name is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]),
                                        critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def self_signed(common_name: str, days: int) -> KeyPair:
    """A throw-away server certificate (an agent's before it is enrolled)."""
    key = new_key()
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256()))
    return KeyPair(cert_pem(cert), key_pem(key))


def make_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> str:
    csr = (x509.CertificateSigningRequestBuilder().subject_name(_name(common_name))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def csr_public_key(csr_pem: str) -> ec.EllipticCurvePublicKey:
    """The key a signing request asks a certificate for, once its self-signature holds
    and it is a P-256 key."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise InvalidInput("not a PEM certificate signing request") from None
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise InvalidInput("the signing request is not for an EC P-256 key")
    if not csr.is_signature_valid:
        raise InvalidInput("the signing request's signature does not hold")
    return key


def same_public_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt))


def check_issued_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    """Raises unless `ca` is a CA that signed `cert` and both are valid now."""
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    if not constraints.ca:
        raise InvalidInput("the issuer given is not a CA")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise InvalidInput("the certificate is not signed by the CA given") from None
    now = _now()
    for c in (cert, ca):
        if not c.not_valid_before_utc <= now <= c.not_valid_after_utc:
            raise InvalidInput("a certificate given is not valid now")


def write_private(path: str, data: str) -> None:
    """Writes `data` readable by this user only, whole or not at all (temp + rename)."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
