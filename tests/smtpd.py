"""A real SMTP sink for tests: aiosmtpd on a free loopback port, with fault injection.

Usage (fixtures ``smtp_sink`` / ``smtp_tls_sink`` in tests/delivery/conftest.py, or directly)::

    with SmtpSink() as sink:
        sink.set("info@gym.example", "full552")   # this recipient's mailbox is full
        sink.set_default("accept")               # everybody else accepts
        ... send to 127.0.0.1:sink.port ...
        sink.set("info@gym.example", "accept")    # switched at run time: it has room again
        sink.wait_for(lambda s: len(s.messages) >= 3)
        sink.messages[0].message["Subject"]       # parsed on the server side

Faults, per recipient or as the default (``Fault`` names or any reply line "NNN text", which is
then given to RCPT TO):

- ``accept``: 250, the message is kept in ``sink.messages``
- ``full452``: RCPT TO answered ``452 4.2.2 Mailbox full`` (a temporary over-quota answer)
- ``full552``: end of DATA answered ``552 5.2.2 Mailbox full`` (as Dovecot LMTP does)
- ``unknown``: RCPT TO answered ``550 5.1.1 User unknown``
- ``shutdown``: end of DATA answered ``421 4.3.2 Service shutting down``
- ``drop``: the connection is cut after the data arrived, before any reply (mid-DATA)
- ``slow``: the end of DATA is accepted, but only after ``stall_seconds``
- ``stall``: no answer to the end of DATA for ``stall_seconds`` (client timeouts), then 451
- ``refuse_mail``: MAIL FROM answered ``550 5.7.1 Sender rejected`` (about the sender)

``secure="starttls"`` or ``"tls"`` with ``auth=(user, password)`` gives the secure variant with a
self-signed certificate made for the test (``cryptography`` if installed, else the openssl CLI);
``sink.ca_file`` is that certificate, to trust it.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

REPLIES = {
    "full452": ("rcpt", "452 4.2.2 Mailbox full, try again later"),
    "full552": ("data", "552 5.2.2 Mailbox full: user is over quota"),
    "unknown": ("rcpt", "550 5.1.1 Recipient address rejected: User unknown in local table"),
    "shutdown": ("data", "421 4.3.2 Service shutting down, closing transmission channel"),
    "refuse_mail": ("mail", "550 5.7.1 Sender rejected"),
}
FAULTS = ("accept", "drop", "stall", "slow", *REPLIES)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message: EmailMessage
    peer: Any = None
    helo: str | None = None  # the name the client gave in EHLO/HELO

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


@dataclass
class Attempt:
    recipient: str
    stage: str
    reply: str


@dataclass
class _State:
    rules: dict[str, str] = field(default_factory=dict)
    default: str = "accept"


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    def _fault(self, address: str) -> str:
        return self.sink.fault_for(address)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.sink.state.default == "refuse_mail":
            reply = REPLIES["refuse_mail"][1]
            self.sink._attempt(address, "mail", reply)
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        fault = self._fault(address)
        stage, reply = REPLIES.get(fault, ("", ""))
        if stage == "rcpt":
            self.sink._attempt(address, "rcpt", reply)
            return reply
        if fault[:3].isdigit():
            self.sink._attempt(address, "rcpt", fault)
            return fault
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        rcpt = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        fault = self._fault(rcpt)
        stage, reply = REPLIES.get(fault, ("", ""))
        if stage == "data":
            self.sink._attempt(rcpt, "data", reply)
            return reply
        if fault == "drop":
            self.sink._attempt(rcpt, "data", "(connection dropped)")
            assert server.transport is not None
            server.transport.abort()
            return "421 dropped"  # never reaches the client
        if fault == "stall":
            self.sink._attempt(rcpt, "data", "(stalled)")
            await asyncio.sleep(self.sink.stall_seconds)
            return "451 4.3.0 stalled too long"
        if fault == "slow":
            await asyncio.sleep(self.sink.stall_seconds)
        data = envelope.original_content or b""
        msg = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        rec = Received(
            mail_from=str(envelope.mail_from),
            rcpt_tos=list(envelope.rcpt_tos),
            data=data,
            message=msg,
            peer=session.peer,
            helo=session.host_name,
        )
        with self.sink._lock:
            self.sink.messages.append(rec)
        self.sink._attempt(rcpt, "data", "250 OK")
        return "250 2.0.0 OK queued"


class _Controller(Controller):
    """aiosmtpd's Controller bound to port 0 (a free port chosen by the kernel)."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpSink:
    """A running aiosmtpd server (see the module docstring)."""

    def __init__(
        self,
        *,
        secure: str = "none",
        auth: tuple[str, str] | None = None,
        stall_seconds: float = 5.0,
        hostname: str = "127.0.0.1",
    ) -> None:
        self.state = _State()
        self.messages: list[Received] = []
        self.attempts: list[Attempt] = []
        self.auth_seen: list[tuple[str, bool]] = []
        self.stall_seconds = stall_seconds
        self._lock = threading.Lock()
        self.secure = secure
        self.auth = auth
        self.ca_file: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        kwargs: dict[str, Any] = {}
        if secure != "none":
            self._tmp = tempfile.TemporaryDirectory(prefix="pw-smtpd-")
            cert, key = make_self_signed(Path(self._tmp.name), hostname)
            self.ca_file = cert
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
            if secure == "starttls":
                kwargs.update(tls_context=ctx, require_starttls=True)
            elif secure == "tls":
                kwargs.update(ssl_context=ctx)
            else:
                raise ValueError(f"secure must be none, starttls or tls, not {secure!r}")
        if auth is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=secure == "starttls")
            if secure != "starttls":
                # aiosmtpd only counts STARTTLS as TLS and would not offer AUTH over implicit
                # TLS (nor on plain text); it then cannot also *require* AUTH without a warning,
                # so check ``sink.auth_seen`` in such tests.
                kwargs.update(auth_require_tls=False)
        self.controller = _Controller(
            _Handler(self), hostname=hostname, port=0, ready_timeout=10, **kwargs
        )
        self.host = hostname

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self.controller.port)

    # -- faults ------------------------------------------------------------------------------
    def set(self, recipient: str, fault: str) -> None:
        """Give ``recipient`` a fault (``"accept"`` clears it). Effective for the next command."""
        _check(fault)
        self.state.rules[recipient.lower()] = fault

    def set_default(self, fault: str) -> None:
        _check(fault)
        self.state.default = fault

    def fault_for(self, address: str) -> str:
        return self.state.rules.get(address.lower().strip("<>"), self.state.default)

    # -- what happened -----------------------------------------------------------------------
    def _attempt(self, rcpt: str, stage: str, reply: str) -> None:
        with self._lock:
            self.attempts.append(Attempt(rcpt.lower(), stage, reply))

    def received_by(self, recipient: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if recipient.lower() in
                    (r.lower() for r in m.rcpt_tos)]

    def wait_for(self, condition: Callable[[SmtpSink], bool], timeout: float = 30.0) -> None:
        """Wait until ``condition(sink)`` holds; fail the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"SMTP sink: condition not met in {timeout}s "
                    f"({len(self.messages)} messages, {len(self.attempts)} attempts)"
                )
            time.sleep(0.05)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self.auth is not None
            and data.login.decode() == self.auth[0]
            and data.password.decode() == self.auth[1]
        )
        login = data.login.decode() if isinstance(data, LoginPassword) else "?"
        with self._lock:
            self.auth_seen.append((login, ok))
        return AuthResult(success=ok, handled=False)


def _check(fault: str) -> None:
    if fault not in FAULTS and not (fault[:3].isdigit() and fault[3:4] == " "):
        raise ValueError(f"unknown fault {fault!r}; use one of {', '.join(FAULTS)} or 'NNN text'")


def make_self_signed(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (an IP or a name) valid for a day."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        _self_signed_cryptography(cert, key, host)
    except ImportError as exc:
        openssl = shutil.which("openssl")
        if openssl is None:  # pragma: no cover
            raise RuntimeError("neither cryptography nor openssl for a test cert") from exc
        san = f"IP:{host}" if host.replace(".", "").isdigit() else f"DNS:{host}"
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(cert), "-days", "1", "-subj", f"/CN={host}",
             "-addext", f"subjectAltName={san}"],
            check=True, capture_output=True,
        )
    return cert, key


def _self_signed_cryptography(cert_path: Path, key_path: Path, host: str) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
