"""Configuration: one TOML file, validated on load.

Every option is documented in docs/CONFIG.md. Secrets (SMTP and IMAP passwords, tokens) may be
given inline, through an environment variable (``*_env``) or a file (``*_file``); they are held as
``SecretStr`` so that printing a config object never shows them.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from postwatch.rooms import DEFAULT_CONFIG_PATH

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """Parse ``"30s"``, ``"5m"``, ``"72h"``, ``"7d"``, ``"2w"`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2)])
    raise ValueError(f"not a duration: {value!r} (write e.g. '30s', '5m', '72h', '7d')")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

_EMAIL_RE = re.compile(r"^[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[^@\s<>\"',;]+$")


def _check_email(value: str) -> str:
    value = value.strip()
    if not _EMAIL_RE.match(value) or any(c in value for c in "\r\n"):
        raise ValueError(f"not an e-mail address: {value!r}")
    return value.lower()


Email = Annotated[str, BeforeValidator(lambda v: _check_email(str(v)))]
Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class SecretSource(Model):
    """A secret given inline, by environment variable or by file. Resolved on load."""

    def _resolve(self, prefix: str) -> SecretStr | None:
        inline: SecretStr | None = getattr(self, prefix, None)
        env: str | None = getattr(self, f"{prefix}_env", None)
        file: Path | None = getattr(self, f"{prefix}_file", None)
        given = [x for x in (inline, env, file) if x is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of {prefix}, {prefix}_env, {prefix}_file")
        if env is not None:
            if env not in os.environ:
                raise ValueError(f"{prefix}_env: environment variable {env} is not set")
            return SecretStr(os.environ[env])
        if file is not None:
            try:
                return SecretStr(Path(file).read_text(encoding="utf-8").strip())
            except OSError as exc:
                raise ValueError(f"{prefix}_file: cannot read {file}: {exc.strerror}") from None
        return inline


# --------------------------------------------------------------------------- server, store


class ServerConfig(Model):
    listen: str = "127.0.0.1:8025"
    public_url: str | None = None
    trusted_proxies: list[str] = Field(default_factory=list)
    # connection limits and timeouts (postwatch.httpguard; docs/CONFIG.md "[server]")
    header_timeout: Duration = timedelta(seconds=10)
    body_timeout: Duration = timedelta(seconds=60)
    keep_alive_timeout: Duration = timedelta(seconds=5)
    max_connections: int = Field(default=1000, ge=10)
    max_body_in_flight_kb: int = Field(default=65536, ge=64)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        return _check_listen(v)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def _check_listen(v: str) -> str:
    """``HOST:PORT`` with a port 1-65535 (``[::1]:PORT`` for IPv6)."""
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen must be HOST:PORT with a port from 1 to 65535, got {v!r}")
    return v


class DatabaseConfig(Model):
    url: str = "sqlite:///data/postwatch.db"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("sqlite:") or v.startswith("postgresql")):
            raise ValueError("database url must start with sqlite:/// or postgresql+psycopg://")
        return v


class SmtpConfig(SecretSource):
    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    sender: Email = "postwatch@localhost.localdomain"
    security: Literal["none", "starttls", "tls"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    password_env: str | None = None
    password_file: Path | None = None
    timeout: Duration = timedelta(seconds=30)
    helo: str | None = None
    #: CA bundle to verify the server's certificate (default: the system's trust store)
    ca_file: Path | None = None
    #: true: this server IS the mailbox server (it checks the quota at RCPT, e.g. Postfix with
    #: Dovecot's quota-status policy, or LMTP), so its 250 means "in the mailbox"; false: a
    #: relay that queues the mail (its 250 means "accepted"; the outcome comes from its log)
    final: bool = False

    @model_validator(mode="after")
    def _secret(self) -> SmtpConfig:
        self.password = self._resolve("password")
        return self


class DeliveryConfig(Model):
    workers: int = Field(default=2, ge=1, le=64)
    poll_interval: Duration = timedelta(seconds=1)
    lease: Duration = timedelta(minutes=5)
    retry_base: Duration = timedelta(seconds=30)
    retry_max: Duration = timedelta(hours=1)
    give_up_after: Duration = timedelta(days=2)
    full_retry_every: Duration = timedelta(minutes=15)
    full_horizon: Duration = timedelta(days=7)


class IntakeConfig(Model):
    max_body_kb: int = Field(default=10240, ge=1)
    max_attachment_kb: int = Field(default=5120, ge=1)
    rate_limit: int = Field(default=20, ge=0, description="submissions per IP per minute; 0 = off")
    honeypot_field: str = "_gotcha"
    max_fields: int = Field(default=200, ge=1)
    max_field_name_chars: int = Field(default=200, ge=1, le=1000)
    max_field_value_chars: int = Field(default=65536, ge=1)
    max_attachments: int = Field(default=10, ge=0)
    batch_max: int = Field(default=256, ge=1, le=10000)
    writers: int = Field(default=0, ge=0, le=32, description="0 = 1 on SQLite, 4 on PostgreSQL")
    purge_every: Duration = timedelta(hours=1)


# --------------------------------------------------------------------------- accounts


class FormConfig(Model):
    id: Ident
    name: str | None = None
    recipients: list[Email] = Field(min_length=1)
    fallback: list[Email] = Field(default_factory=list)
    redirect: str | None = None
    subject: str | None = None
    allowed_origins: list[str] = Field(default_factory=list)
    honeypot_field: str | None = None
    retention_days: int = Field(default=365, ge=1)
    email_field: str = "email"


class QuotaSourceConfig(SecretSource):
    source: Literal["imap", "doveadm", "maildir"]
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    password: SecretStr | None = None
    password_env: str | None = None
    password_file: Path | None = None
    tls: Literal["none", "starttls", "tls"] = "tls"
    path: Path | None = None
    doveadm_config: Path | None = None
    doveadm_url: str | None = None
    #: PEM bundle to verify the IMAP / doveadm HTTPS server with (docs/CONFIG.md)
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> QuotaSourceConfig:
        self.password = self._resolve("password")
        if self.source == "imap" and not (self.host and self.user):
            raise ValueError("an imap quota source needs host and user")
        if self.source == "maildir" and self.path is None:
            raise ValueError("a maildir quota source needs path")
        return self


class MailboxConfig(Model):
    address: Email
    quota: QuotaSourceConfig | None = None
    limit_mb: float | None = Field(default=None, gt=0)


class SiteConfig(Model):
    root: Path
    name: str | None = None
    limit_mb: float | None = Field(default=None, gt=0)


_HHMM = r"([01]?\d|2[0-3]):[0-5]\d"
_QUIET_RE = re.compile(rf"^\s*{_HHMM}\s*-\s*{_HHMM}\s*$")
_DIGEST_RE = re.compile(
    rf"^\s*(off|daily\s+{_HHMM}|weekly\s+(mon|tue|wed|thu|fri|sat|sun)[a-z]*\s+{_HHMM})\s*$",
    re.IGNORECASE,
)


def _check_timezone(v: str | None) -> str | None:
    if v is None:
        return v
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r} (write e.g. 'Europe/Amsterdam')") from None
    return v


class ContactConfig(Model):
    name: str = Field(min_length=1, max_length=200)
    role: Ident
    language: Literal["en", "nl"] = "en"
    #: Apprise URLs, tried in order (docs/CONFIG.md)
    channels: list[SecretStr] = Field(default_factory=list)
    #: "22:00-07:00" in ``timezone``: only critical alerts are sent in this time
    quiet_hours: str | None = None
    timezone: str | None = None
    #: the person's own address; used to recognise them across accounts (one digest)
    email: Email | None = None
    #: this person's digest schedule ("daily HH:MM", "weekly DAY HH:MM", "off");
    #: default: alerts.digest
    digest: str | None = None

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str | None) -> str | None:
        if v is not None and not _DIGEST_RE.match(v):
            raise ValueError(
                f"digest must be 'daily HH:MM', 'weekly DAY HH:MM' or 'off', got {v!r}"
            )
        return " ".join(v.lower().split()) if v is not None else None

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, v: str | None) -> str | None:
        if v is not None and not _QUIET_RE.match(v):
            raise ValueError(f"quiet_hours must be 'HH:MM-HH:MM', got {v!r}")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return _check_timezone(v)


class AccountConfig(SecretSource):
    id: Ident
    name: str | None = None
    forms: list[FormConfig] = Field(default_factory=list)
    mailboxes: list[MailboxConfig] = Field(default_factory=list)
    sites: list[SiteConfig] = Field(default_factory=list)
    contacts: list[ContactConfig] = Field(default_factory=list)
    responsibilities: dict[str, list[str]] = Field(default_factory=dict)
    #: bearer token for the alerts API that sees only this account's alerts and history
    api_token: SecretStr | None = None
    api_token_env: str | None = None
    api_token_file: Path | None = None

    @model_validator(mode="after")
    def _unique(self) -> AccountConfig:
        self.api_token = self._resolve("api_token")
        if self.api_token is not None and not self.api_token.get_secret_value().strip():
            raise ValueError(f"account {self.id}: api_token is empty")
        _no_duplicates([f.id for f in self.forms], f"account {self.id}: form id")
        _no_duplicates([m.address for m in self.mailboxes], f"account {self.id}: mailbox")
        return self


# --------------------------------------------------------------------------- watches


class MaillogConfig(Model):
    path: Path
    format: Literal["postfix", "exim", "dovecot", "auto"] = "auto"
    year: int | None = None
    timezone: str | None = None
    #: where to start in a file that exists the very first time it is followed
    start: Literal["end", "beginning"] = "end"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return _check_timezone(v)


class SyslogConfig(Model):
    listen: str = "127.0.0.1:5514"
    protocols: list[Literal["udp", "tcp"]] = Field(
        default_factory=lambda: ["udp", "tcp"]  # type: ignore[arg-type]
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        return _check_listen(v)


class BounceMailboxConfig(SecretSource):
    """One mailbox that receives bounces, watched over IMAP IDLE."""

    account: str | None = None
    host: str
    port: int = Field(default=993, ge=1, le=65535)
    tls: Literal["tls", "starttls", "none"] = "tls"
    user: str
    password: SecretStr | None = None
    password_env: str | None = None
    password_file: Path | None = None
    folder: str = "INBOX"
    idle_timeout: float = Field(default=60.0, gt=0, description="re-issue IDLE this often (s)")
    batch: int = Field(default=100, ge=1, description="messages fetched per round")

    @model_validator(mode="after")
    def _secret(self) -> BounceMailboxConfig:
        self.password = self._resolve("password")
        return self

    @property
    def label(self) -> str:
        return f"imap://{self.user}@{self.host}:{self.port}/{self.folder}"


class CapacityConfig(SecretSource):
    poll_every: Duration = timedelta(minutes=5)
    levels: list[int] = Field(default_factory=lambda: [80, 90, 95])
    ok_margin: float = 5.0
    forecast_horizon: Duration = timedelta(hours=72)
    forecast_window: Duration = timedelta(days=14)
    # documented in docs/CONFIG.md
    scan_every: Duration = timedelta(hours=1)
    source_timeout: Duration = timedelta(seconds=20)
    imap_concurrency: int = Field(default=32, ge=1, le=512)
    largest: int = Field(default=20, ge=1, le=1000)
    # retention of capacity readings (docs/CONFIG.md)
    history_full: Duration = timedelta(days=14)
    history_step: Duration = timedelta(hours=1)
    history_keep: Duration = timedelta(days=400)
    prune_every: Duration = timedelta(hours=6)
    hook_token: SecretStr | None = None
    hook_token_env: str | None = None
    hook_token_file: Path | None = None

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        if not v or any(not 0 < x < 100 for x in v):
            raise ValueError("levels must be percentages between 1 and 99")
        return sorted(set(v))

    @model_validator(mode="after")
    def _secret(self) -> CapacityConfig:
        self.hook_token = self._resolve("hook_token")
        return self

    @model_validator(mode="after")
    def _history(self) -> CapacityConfig:
        if "history_full" in self.model_fields_set and self.history_full < self.forecast_window:
            raise ValueError(
                "history_full must be at least forecast_window (the forecast reads that far)"
            )
        if self.history_keep < self.history_full:
            raise ValueError("history_keep must be at least history_full")
        if self.history_step <= timedelta(0) or self.prune_every <= timedelta(0):
            raise ValueError("history_step and prune_every must be longer than 0")
        return self


class SilenceConfig(Model):
    """A silence: matching alerts are recorded but not sent between ``starts`` and ``ends``."""

    account: str | None = None
    concern: str | None = None
    subject: str | None = None
    starts: datetime | None = None
    ends: datetime
    reason: str = ""


class MaintenanceConfig(Model):
    """A recurring maintenance window: e.g. days = ["sun"], start = "02:00", end = "04:00"."""

    accounts: list[str] = Field(default_factory=list)
    concerns: list[str] = Field(default_factory=list)
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]  # type: ignore[arg-type]
    )
    start: str
    end: str
    timezone: str = "UTC"
    reason: str = ""

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not re.match(rf"^{_HHMM}$", v.strip()):
            raise ValueError(f"not a time of day 'HH:MM': {v!r}")
        return v.strip()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _check_timezone(v) or "UTC"


class AlertsConfig(SecretSource):
    escalate_after: Duration = timedelta(minutes=30)
    escalation: list[str] = Field(default_factory=lambda: ["owner", "webmaster", "hoster"])
    repeat_every: Duration = timedelta(hours=4)
    digest: str = "daily 08:00"
    public_url: str | None = None
    secret: SecretStr | None = None
    secret_env: str | None = None
    secret_file: Path | None = None
    #: time zone for digests and messages of contacts without their own
    timezone: str = "UTC"
    #: how often the alert engine looks for new events and due work
    poll_interval: Duration = timedelta(milliseconds=500)
    #: alerts without a recovery event (e.g. bounces) resolve after this long without news
    resolve_after: Duration = timedelta(hours=24)
    #: temporary delivery failures of a mailbox become a warning (a message) at this count
    deferrals_before_warning: int = Field(default=5, ge=1)
    #: "resolved" messages wait this long; an alert back within it is reopened, not re-sent
    flap_hold: Duration = timedelta(minutes=2)
    #: how long an acknowledge link in a notification stays valid
    ack_link_ttl: Duration = timedelta(days=7)
    #: sending rounds per notification (all channels of the contact each round) before giving up
    send_attempts: int = Field(default=5, ge=1, le=50)
    #: pause after a round in which every channel failed (doubles each round, max 1h)
    retry_after: Duration = timedelta(seconds=30)
    silences: list[SilenceConfig] = Field(default_factory=list)
    maintenance: list[MaintenanceConfig] = Field(default_factory=list)
    #: bearer token for the alerts API (GET /api/alerts, POST /api/alerts/ID/ack); off if unset
    api_token: SecretStr | None = None
    api_token_env: str | None = None
    api_token_file: Path | None = None

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str) -> str:
        if not _DIGEST_RE.match(v):
            raise ValueError(
                f"digest must be 'daily HH:MM', 'weekly DAY HH:MM' or 'off', got {v!r}"
            )
        return " ".join(v.lower().split())

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _check_timezone(v) or "UTC"

    @model_validator(mode="after")
    def _secret(self) -> AlertsConfig:
        self.secret = self._resolve("secret")
        self.api_token = self._resolve("api_token")
        return self


class Config(Model):
    server: ServerConfig = Field(default_factory=ServerConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    smtp: SmtpConfig = Field(default_factory=SmtpConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    intake: IntakeConfig = Field(default_factory=IntakeConfig)
    accounts: list[AccountConfig] = Field(default_factory=list)
    maillogs: list[MaillogConfig] = Field(default_factory=list)
    syslog: SyslogConfig | None = None
    bounce_mailboxes: list[BounceMailboxConfig] = Field(default_factory=list)
    capacity: CapacityConfig = Field(default_factory=CapacityConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

    #: where the config was loaded from; relative paths in it are relative to this file's folder
    source_path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique(self) -> Config:
        _no_duplicates([a.id for a in self.accounts], "account id")
        owners: dict[str, str] = {}
        for a in self.accounts:
            for m in a.mailboxes:
                if m.address in owners:
                    raise ValueError(
                        f"mailbox {m.address!r} is listed by accounts {owners[m.address]!r} and "
                        f"{a.id!r}; a watched mailbox belongs to one account"
                    )
                owners[m.address] = a.id
        known = {a.id for a in self.accounts}
        for i, b in enumerate(self.bounce_mailboxes):
            if b.account is not None and b.account not in known:
                raise ValueError(
                    f"bounce_mailboxes[{i}].account: no account {b.account!r} "
                    f"(accounts: {', '.join(sorted(known)) or 'none'})"
                )
        return self

    # lookups used across rooms -----------------------------------------------------------
    # The one place that maps an account id, a form reference or a mailbox address to its
    # account. Built once on first use (a config is not changed after loading).
    # The one ambiguity rule: a form id that several accounts use must be written
    # ``account/form``; every lookup by form id refuses the short one (AmbiguousFormId), so an
    # export or a retry never picks another customer's form. A mailbox belongs to one account
    # (enforced on load above), so a mailbox lookup is never ambiguous.
    _lookups: _Lookups | None = PrivateAttr(default=None)

    def _index(self) -> _Lookups:
        if self._lookups is None or self._lookups.source is not self.accounts:
            self._lookups = _Lookups.build(self.accounts)
        return self._lookups

    def account(self, account_id: str) -> AccountConfig:
        """The account with this id; KeyError when there is none."""
        return self._index().accounts[account_id]

    def find_form(self, ref: str) -> tuple[AccountConfig, FormConfig]:
        """The form of ``form`` or ``account/form``.

        Raises :class:`FormNotFound` when no form matches and :class:`AmbiguousFormId` (a
        FormNotFound) when a short id is used by several accounts; the message says which.
        """
        index = self._index()
        found = index.forms.get(ref)
        if found is not None:
            return found
        if ref in index.ambiguous:
            raise AmbiguousFormId(ref, index.ambiguous[ref])
        raise FormNotFound(ref)

    def form(self, ref: str) -> tuple[AccountConfig, FormConfig] | None:
        """Like :meth:`find_form`, but None for a form that does not exist. An ambiguous short
        id still raises :class:`AmbiguousFormId`: it is never answered with a guess."""
        try:
            return self.find_form(ref)
        except AmbiguousFormId:
            raise
        except FormNotFound:
            return None

    def form_refs(self) -> list[str]:
        """Every form as ``account/form`` (for messages that list what exists)."""
        return [f"{a.id}/{f.id}" for a in self.accounts for f in a.forms]

    def mailboxes(self) -> Iterator[tuple[AccountConfig, MailboxConfig]]:
        for a in self.accounts:
            for m in a.mailboxes:
                yield a, m

    def mailbox(self, address: str) -> tuple[AccountConfig, MailboxConfig] | None:
        """The account and config of a watched mailbox (any case), or None."""
        return self._index().mailboxes.get(address.lower())

    def mailbox_account(self, address: str) -> AccountConfig | None:
        """The account of a watched mailbox (any case), or None when it is not watched."""
        found = self.mailbox(address)
        return found[0] if found is not None else None

    def watched_mailboxes(self) -> Mapping[str, str]:
        """address (lower case) -> account id of every ``[[accounts.mailboxes]]``."""
        return self._index().mailbox_accounts


class FormNotFound(LookupError):
    """A form reference that names no form of the config. ``message`` is for a person."""

    def __init__(self, ref: str, message: str | None = None) -> None:
        self.ref = ref
        self.message = message or f"no form {ref!r}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class AmbiguousFormId(FormNotFound):
    """A short form id that several accounts use: it must be written ``account/form``.

    ``accounts`` lists them (for the operator; not shown to web visitors by the intake)."""

    def __init__(self, ref: str, accounts: list[str]) -> None:
        self.accounts = accounts
        super().__init__(
            ref,
            f"form id {ref!r} is used by several accounts; write it as ACCOUNT/{ref}",
        )

    @property
    def candidates(self) -> list[str]:
        return [f"{a}/{self.ref}" for a in self.accounts]


@dataclass(frozen=True)
class _Lookups:
    #: the list the index was built from (a copy with other accounts builds its own)
    source: list[AccountConfig]
    accounts: dict[str, AccountConfig]
    #: "account/form" always; a short "form" when exactly one account has it
    forms: dict[str, tuple[AccountConfig, FormConfig]]
    #: short form id -> the accounts that use it (two or more)
    ambiguous: dict[str, list[str]]
    mailboxes: dict[str, tuple[AccountConfig, MailboxConfig]]
    mailbox_accounts: Mapping[str, str]

    @classmethod
    def build(cls, accounts: list[AccountConfig]) -> _Lookups:
        forms: dict[str, tuple[AccountConfig, FormConfig]] = {}
        users: dict[str, list[tuple[AccountConfig, FormConfig]]] = {}
        mailboxes: dict[str, tuple[AccountConfig, MailboxConfig]] = {}
        for a in accounts:
            for f in a.forms:
                forms[f"{a.id}/{f.id}"] = (a, f)
                users.setdefault(f.id, []).append((a, f))
            for m in a.mailboxes:
                mailboxes.setdefault(m.address.lower(), (a, m))
        ambiguous = {fid: [a.id for a, _ in used] for fid, used in users.items() if len(used) > 1}
        for fid, used in users.items():
            if len(used) == 1:
                forms.setdefault(fid, used[0])
        return cls(
            source=accounts,
            accounts={a.id: a for a in accounts},
            forms=forms,
            ambiguous=ambiguous,
            mailboxes=mailboxes,
            mailbox_accounts=MappingProxyType(
                {addr: a.id for addr, (a, _m) in mailboxes.items()}
            ),
        )


def _no_duplicates(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"duplicate {what}: {v!r}")
        seen.add(v)


# --------------------------------------------------------------------------- loading


class ConfigError(Exception):
    """A config file that cannot be used. ``problems`` holds (location, message) pairs."""

    def __init__(self, path: Path, problems: list[tuple[str, str]]):
        self.path = path
        self.problems = problems
        lines = [f"{path}: {loc}: {msg}" if loc else f"{path}: {msg}" for loc, msg in problems]
        super().__init__("\n".join(lines))


def _location(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    """Render a pydantic error location the way it is written in TOML: accounts[0].forms[1].id."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def config_from_dict(data: dict[str, Any], path: Path = Path("<config>")) -> Config:
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            problems.append((_location(tuple(err["loc"]), data), msg))
        raise ConfigError(path, problems) from None
    cfg.source_path = path
    return cfg


def load_config(path: Path | str = DEFAULT_CONFIG_PATH) -> Config:
    """Read and validate a TOML config; raises ConfigError naming every problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        msg = "file not found (create one with `postwatch init`)"
        raise ConfigError(path, [("", msg)]) from None
    except OSError as exc:
        raise ConfigError(path, [("", f"cannot read: {exc.strerror}")]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [("", f"not UTF-8 text (byte {exc.start})")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [("", f"TOML syntax: {exc}")]) from None
    cfg = config_from_dict(data, path)
    return cfg


def resolve_path(cfg: Config, p: Path | str) -> Path:
    """Paths in the config are relative to the config file's folder."""
    p = Path(p)
    if p.is_absolute() or cfg.source_path is None:
        return p
    return cfg.source_path.parent / p


SAMPLE_CONFIG = """\
# postwatch configuration. Every option is documented in docs/CONFIG.md.
# Fill in the commented parts: `postwatch check-config` warns until someone will be told.

[server]
listen = "127.0.0.1:8025"

[database]
url = "sqlite:///data/postwatch.db"     # or postgresql+psycopg://user@host/db

[smtp]                                   # how postwatch sends the form mails
host = "127.0.0.1"
port = 25
sender = "postwatch@localhost.localdomain"
security = "none"                        # none | starttls | tls
# username = "postwatch"
# password_env = "POSTWATCH_SMTP_PASSWORD"
# true only if this listener refuses a full mailbox at RCPT (Postfix + Dovecot quota-status):
# then its 250 means "in the mailbox". false: a relay; the outcome comes from its log below.
final = false

[[maillogs]]                             # the relay's log: bounces after its 250 are seen here
path = "/var/log/mail.log"
format = "postfix"

[[accounts]]
id = "example"
name = "Example customer"

[[accounts.forms]]
id = "contact"
recipients = ["info@example.org"]
fallback = ["owner@example.net"]         # gets the lead too when a recipient cannot take it
redirect = "https://example.org/thank-you"

[[accounts.mailboxes]]                   # watched: full-mailbox episodes, quota
address = "info@example.org"
# [accounts.mailboxes.quota]             # how full it is (imap, doveadm or maildir)
# source = "imap"
# host = "mail.example.org"
# user = "info@example.org"
# password_env = "POSTWATCH_INFO_PASSWORD"

# Who is told when mail stops arriving. Use a channel that does not depend on the mailbox
# being watched (a full info@ cannot receive the alert about itself).
# [[accounts.contacts]]
# name = "Owner"
# role = "owner"
# channels = ["ntfy://ntfy.sh/CHANGE-ME", "mailtos://user:pass@mail.example.net?to=owner@example.net"]
"""


def write_sample_config(path: Path) -> None:
    """Write :data:`SAMPLE_CONFIG` to ``path``, readable by its owner only (0600): a config
    holds secrets (the ack-link secret, passwords)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o600)  # also when the file was there before (--force)
        fh.write(SAMPLE_CONFIG)

