"""Test certificates for 127.0.0.1, generated with ``cryptography``, and SSL contexts for them.

``make_tls_files`` writes a CA and a server certificate it signed (or one
self-signed certificate) with its key; ``TLSFiles`` names the files and makes
the server's and a client's ``ssl.SSLContext`` from them.
"""

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass


@dataclass
class TLSFiles:
    ca: str  # PEM file of the certificate to trust
    cert: str  # PEM file of the server certificate
    key: str  # PEM file of the server key

    def server_context(self):
        """An SSLContext that serves the certificate (for a backend or listener)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self):
        """An SSLContext that trusts ``ca`` and nothing else."""
        return ssl.create_default_context(cafile=self.ca)


def _certificate(subject_cn, key, *, issuer=None, issuer_key=None, ca=False, server=True):
    """An X.509 certificate: a CA (``ca``), a server one for 127.0.0.1 (``server``) or both (self-signed)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    issuer_name = issuer.subject if issuer is not None else subject
    signing_key = issuer_key if issuer_key is not None else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def make_tls_files(directory, *, self_signed=False):
    """Write a server certificate for 127.0.0.1/localhost and its key into ``directory``.

    ``self_signed``: the certificate is its own trust anchor; otherwise a CA is
    made too and signs it. Returns TLSFiles whose ``ca`` is the file to trust.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def write(name, data):
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    key = ec.generate_private_key(ec.SECP256R1())
    key_path = write(
        "server.key",
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    if self_signed:
        cert = _certificate("127.0.0.1", key, ca=True)
        cert_path = write("server.crt", cert.public_bytes(serialization.Encoding.PEM))
        return TLSFiles(ca=cert_path, cert=cert_path, key=key_path)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("inprocess-proxy test CA", ca_key, ca=True, server=False)
    cert = _certificate("127.0.0.1", key, issuer=ca_cert, issuer_key=ca_key)
    ca_path = write("ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path = write("server.crt", cert.public_bytes(serialization.Encoding.PEM))
    return TLSFiles(ca=ca_path, cert=cert_path, key=key_path)
