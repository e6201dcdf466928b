"""doveadm quota source: ``doveadm -f json quota get`` locally, or doveadm's HTTP API.

Mailboxes that share a Dovecot (the same ``doveadm_config`` or ``doveadm_url``) are read together:
one mailbox with ``-u USER``, several with ``-A`` (every user of that Dovecot in one call; the
rows of users we do not watch are dropped). Values of STORAGE rows are KiB, as in IMAP.

The HTTP API (``doveadm_url = "http://127.0.0.1:8080"``) is asked ``quotaGet`` at
``/doveadm/v1``; the quota source's ``password`` is the ``doveadm_password`` (HTTP basic auth as
user ``doveadm``).
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import subprocess
import urllib.parse
from collections.abc import Sequence
from typing import Any

from postwatch.capacity.sources import QuotaReading, QuotaTarget, failed

KIND = "doveadm"


class DoveadmError(Exception):
    pass


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None  # "-" means no limit


def parse_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, int | None]]:
    """``quota get`` rows -> {user: {used, limit, messages, message_limit}} (bytes, counts).

    Several quota roots for one user: the fullest STORAGE root wins (the one that refuses mail).
    """
    out: dict[str, dict[str, int | None]] = {}
    for row in rows:
        user = str(row.get("username") or row.get("user") or "").lower()
        kind = str(row.get("type", "")).upper()
        value, limit = _int(row.get("value")), _int(row.get("limit"))
        entry = out.setdefault(user, {})
        if kind == "STORAGE" and value is not None:
            used, lim = value * 1024, (limit * 1024 if limit else None)
            old_used, old_lim = entry.get("used"), entry.get("limit")
            if old_used is None or _fuller(used, lim, old_used, old_lim):
                entry["used"], entry["limit"] = used, lim
        elif kind == "MESSAGE" and value is not None:
            entry["messages"], entry["message_limit"] = value, (limit or None)
    return out


def _fuller(used: int, lim: int | None, old_used: int, old_lim: int | None) -> bool:
    if lim and old_lim:
        return used / lim > old_used / old_lim
    return bool(lim) and not old_lim


class DoveadmSource:
    kind = KIND

    def __init__(self, *, timeout: float = 20.0, binary: str = "doveadm") -> None:
        self.timeout = timeout
        self.binary = binary

    def read(self, targets: Sequence[QuotaTarget]) -> list[QuotaReading]:
        groups: dict[tuple[str, str], list[int]] = {}
        for i, t in enumerate(targets):
            key = (str(t.cfg.doveadm_config or ""), t.cfg.doveadm_url or "")
            groups.setdefault(key, []).append(i)
        out: list[QuotaReading | None] = [None] * len(targets)
        for (conf, url), idx in groups.items():
            group = [targets[i] for i in idx]
            for i, r in zip(idx, self._read_group(conf, url, group), strict=True):
                out[i] = r
        return [r for r in out if r is not None]

    def _read_group(self, conf: str, url: str, group: list[QuotaTarget]) -> list[QuotaReading]:
        where = url or ("doveadm" + (f" -c {conf}" if conf else ""))
        try:
            if len(group) == 1:
                rows = self._query(conf, url, group[0], user=group[0].user)
                for row in rows:
                    row.setdefault("username", group[0].user)
            else:
                rows = self._query(conf, url, group[0], user=None)
        except DoveadmError as exc:
            return [failed(t, KIND, f"{where}: {exc}") for t in group]
        table = parse_rows(rows)
        out = []
        for t in group:
            entry = table.get(t.user.lower())
            if not entry or entry.get("used") is None:
                out.append(failed(t, KIND, f"{where}: Dovecot reports no quota for {t.user}"))
                continue
            out.append(
                QuotaReading(
                    t.account,
                    t.mailbox,
                    KIND,
                    used_bytes=entry.get("used"),
                    limit_bytes=entry.get("limit"),
                    messages=entry.get("messages"),
                    message_limit=entry.get("message_limit"),
                )
            )
        return out

    # ------------------------------------------------------------------------------ transports
    def _query(
        self, conf: str, url: str, target: QuotaTarget, *, user: str | None
    ) -> list[dict[str, Any]]:
        if url:
            return self._http(url, target, user)
        return self._cli(conf, user)

    def _cli(self, conf: str, user: str | None) -> list[dict[str, Any]]:
        exe = shutil.which(self.binary)
        if exe is None:
            raise DoveadmError("the doveadm program is not installed or not on PATH")
        cmd = [exe]
        if conf:
            cmd += ["-c", conf]
        cmd += ["-f", "json", "quota", "get"]
        cmd += ["-u", user] if user is not None else ["-A"]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise DoveadmError(f"timed out after {self.timeout:.0f}s") from None
        except OSError as exc:
            raise DoveadmError(f"cannot run doveadm: {exc.strerror}") from None
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            msg = err[-1] if err else f"exit status {proc.returncode}"
            if proc.returncode == 67:
                msg = f"user unknown to Dovecot ({msg})"
            raise DoveadmError(msg)
        try:
            rows = json.loads(proc.stdout or b"[]")
        except ValueError:
            raise DoveadmError("doveadm printed something that is not JSON") from None
        if not isinstance(rows, list):
            raise DoveadmError("unexpected doveadm output")
        return [r for r in rows if isinstance(r, dict)]

    def _http(self, url: str, target: QuotaTarget, user: str | None) -> list[dict[str, Any]]:
        """POST to ``URL/doveadm/v1``. http.client, not urllib: urllib always sends
        ``Connection: close``, and Dovecot 2.3 then never answers a refused password (401)."""
        params: dict[str, Any] = {"allUsers": True} if user is None else {"user": user}
        body = json.dumps([["quotaGet", params, "pw"]]).encode()
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DoveadmError("doveadm_url must be http://HOST:PORT or https://HOST:PORT")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if target.cfg.password is not None:
            token = base64.b64encode(
                b"doveadm:" + target.cfg.password.get_secret_value().encode()
            ).decode()
            headers["Authorization"] = f"Basic {token}"
        if parts.scheme == "https":
            import ssl

            try:
                ctx = ssl.create_default_context(
                    cafile=str(target.cfg.ca_file) if target.cfg.ca_file else None
                )
            except (OSError, ssl.SSLError) as exc:
                raise DoveadmError(f"ca_file {target.cfg.ca_file}: {exc}") from None
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=self.timeout, context=ctx
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        try:
            conn.request("POST", parts.path.rstrip("/") + "/doveadm/v1", body=body, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except TimeoutError:
            raise DoveadmError(f"timed out after {self.timeout:.0f}s") from None
        except OSError as exc:
            raise DoveadmError(f"cannot connect: {exc.strerror or exc}") from None
        except http.client.HTTPException as exc:
            raise DoveadmError(f"bad HTTP answer: {type(exc).__name__}") from None
        finally:
            conn.close()
        if resp.status in (401, 403):
            raise DoveadmError(f"HTTP {resp.status}: doveadm password refused")
        if resp.status != 200:
            raise DoveadmError(f"HTTP {resp.status} {resp.reason}")
        try:
            payload = json.loads(raw or b"[]")
        except ValueError:
            raise DoveadmError("the doveadm HTTP API answered something that is not JSON") from None
        for item in payload if isinstance(payload, list) else []:
            if not isinstance(item, list) or len(item) < 2:
                continue
            if item[0] == "error":
                detail = item[1] if isinstance(item[1], dict) else {}
                code = detail.get("exitCode")
                if code == 67:
                    raise DoveadmError("user unknown to Dovecot")
                raise DoveadmError(f"doveadm error {detail.get('type', '')} {code or ''}".strip())
            if item[0] == "doveadmResponse" and isinstance(item[1], list):
                return [r for r in item[1] if isinstance(r, dict)]
        raise DoveadmError("unexpected answer from the doveadm HTTP API")
