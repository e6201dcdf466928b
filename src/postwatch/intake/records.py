"""Submissions as personal data: export, erasure on request, and retention.

Purges delete the submissions, their attachments and their delivery jobs, and leave one
``submissions_purged`` event per form saying how many were removed and why, never what.

Erasure (:func:`purge_email`) finds every submission that holds the address anywhere: the
``email`` column or any field value, alone or inside a text (``mailto:``, "write to ..."), in
any case (Unicode case folding), any Unicode normal form (NFKC), and with an internationalised
domain in either form (``bücher.example`` / ``xn--bcher-kva.example``). The store only narrows
the candidates, with ASCII fragments of the address that every one of those forms contains
literally whatever the store's JSON encoding (SQLite keeps JSON ``\\u``-escaped, PostgreSQL
does not); the decision is :func:`holds_address` on the decoded fields.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, and_, cast, delete, func, or_, select
from sqlalchemy.orm import Session

from postwatch.config import Config, FormConfig
from postwatch.outbox import enqueue, job_rows
from postwatch.store.events import EventKind, record_event
from postwatch.store.models import Attachment, DeliveryJob, Submission, utcnow

DEFAULT_RETENTION_DAYS = FormConfig.model_fields["retention_days"].default
_CHUNK = 500


# --------------------------------------------------------------------------- reading


def _deliveries(session: Session, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if not ids:
        return out
    rows = session.scalars(
        select(DeliveryJob).where(DeliveryJob.submission_id.in_(ids)).order_by(DeliveryJob.id)
    )
    for j in rows:
        out[j.submission_id].append(
            {
                "recipient": j.recipient,
                "role": j.role,
                "state": j.state,
                "last_reply": j.last_reply,
                "attempts": j.attempts,
                "delivered_at": j.delivered_at.isoformat() if j.delivered_at else None,
            }
        )
    return out


def _attachments(session: Session, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if not ids:
        return out
    rows = session.execute(
        select(
            Attachment.submission_id,
            Attachment.field,
            Attachment.filename,
            Attachment.content_type,
            Attachment.size,
        )
        .where(Attachment.submission_id.in_(ids))
        .order_by(Attachment.id)
    )
    for sid, field, filename, ctype, size in rows:
        out[sid].append({"field": field, "filename": filename, "content_type": ctype, "size": size})
    return out


def iter_submissions(
    session: Session,
    *,
    account: str | None = None,
    form: str | None = None,
    since: datetime | None = None,
    status: str | None = None,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Submissions as plain dicts (the export shape), oldest first, read in chunks."""
    q = select(Submission)
    if account is not None:
        q = q.where(Submission.account == account)
    if form is not None:
        q = q.where(Submission.form == form)
    if since is not None:
        q = q.where(Submission.received_at >= since)
    if status is not None:
        q = q.where(Submission.status == status)
    q = q.order_by(Submission.received_at, Submission.id)
    if limit is not None:
        q = q.limit(limit)
    batch: list[Submission] = []

    def flush() -> Iterator[dict[str, Any]]:
        ids = [s.id for s in batch]
        dels = _deliveries(session, ids)
        atts = _attachments(session, ids)
        for s in batch:
            yield {
                "id": s.id,
                "account": s.account,
                "form": s.form,
                "received_at": s.received_at.isoformat(),
                "status": s.status,
                "email": s.email,
                "fields": s.fields,
                "attachments": atts.get(s.id, []),
                "deliveries": dels.get(s.id, []),
                "remote_addr": s.remote_addr,
            }

    for sub in session.scalars(q.execution_options(yield_per=_CHUNK)):
        batch.append(sub)
        if len(batch) >= _CHUNK:
            yield from flush()
            batch = []
    if batch:
        yield from flush()


# --------------------------------------------------------------------------- export formats


def write_json(rows: Iterable[dict[str, Any]], out: io.TextIOBase | Any) -> int:
    """A JSON list, written row by row (large exports do not sit in memory)."""
    n = 0
    out.write("[")
    for row in rows:
        out.write(",\n" if n else "\n")
        out.write(json.dumps(row, ensure_ascii=False, sort_keys=True))
        n += 1
    out.write("\n]\n" if n else "]\n")
    return n


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "|", "%")


def csv_safe(value: Any) -> str:
    """A cell a spreadsheet will not run: text starting like a formula gets a leading quote."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return csv_safe("; ".join(str(v) for v in value))
    return csv_safe(value)


_FIXED = ["id", "account", "form", "received_at", "status", "email"]


def write_csv(rows: Iterable[dict[str, Any]], out: io.TextIOBase | Any) -> int:
    """One row per submission; every field its own column (first-seen order); multi-valued
    fields joined with "; "; deliveries and attachments summarised in one column each."""
    rows = list(rows)
    names: dict[str, None] = {}
    for r in rows:
        for k in r["fields"]:
            names.setdefault(k, None)
    columns = _FIXED + [n for n in names if n not in _FIXED] + ["attachments", "deliveries"]
    w = csv.writer(out)
    w.writerow([csv_safe(c) for c in columns])
    for r in rows:
        cells = [_cell(r.get(c)) for c in _FIXED]
        cells += [_cell(r["fields"].get(n)) for n in columns[len(_FIXED) : -2]]
        cells.append(csv_safe("; ".join(a["filename"] for a in r["attachments"])))
        cells.append(
            csv_safe(
                "; ".join(f"{d['recipient']} ({d['role']}): {d['state']}" for d in r["deliveries"])
            )
        )
        w.writerow(cells)
    return len(rows)


# --------------------------------------------------------------------------- purges


@dataclass
class Purged:
    account: str
    form: str
    submissions: int = 0
    attachments: int = 0
    jobs: int = 0


def _delete(session: Session, ids: list[str]) -> tuple[int, int, int]:
    """Delete submissions by id with their attachments and jobs; returns the three counts."""
    a = session.execute(delete(Attachment).where(Attachment.submission_id.in_(ids)))
    j = session.execute(delete(DeliveryJob).where(DeliveryJob.submission_id.in_(ids)))
    s = session.execute(delete(Submission).where(Submission.id.in_(ids)))
    return (
        int(getattr(s, "rowcount", 0) or 0),
        int(getattr(a, "rowcount", 0) or 0),
        int(getattr(j, "rowcount", 0) or 0),
    )


def _record(session: Session, purged: dict[tuple[str, str], Purged], why: str) -> None:
    for p in purged.values():
        record_event(
            session,
            EventKind.SUBMISSIONS_PURGED,
            account=p.account,
            form=p.form,
            data={
                "form": p.form,
                "count": p.submissions,
                "attachments": p.attachments,
                "jobs": p.jobs,
                "why": why,
            },
        )


# an address as it may appear inside a text: no spaces, brackets, quotes or separators
_ADDRESS_IN_TEXT = re.compile(r"[^\s<>()\[\]{},;:\"'`]+@[^\s<>()\[\]{},;:\"'`@]+")
# ASCII characters that stand for themselves in every form of an address; ``s`` and ``k`` are
# left out because non-ASCII characters case-fold to them (``ß`` -> ``ss``, the Kelvin sign)
_PLAIN = frozenset("abcdefghijlmnopqrtuvwxyz0123456789.@-_+")


def canonical_address(text: str) -> str:
    """An address in one form for comparison: NFKC, case-folded, the domain in Unicode."""
    text = unicodedata.normalize("NFKC", text).casefold().strip().strip(".")
    local, at, domain = text.rpartition("@")
    if not at:
        return text
    labels = []
    for label in domain.split("."):
        if label.startswith("xn--"):
            try:
                label = label.encode("ascii").decode("idna")
            except UnicodeError:
                pass
        labels.append(label)
    return f"{local}@{'.'.join(labels)}"


def holds_address(value: Any, address: str) -> bool:
    """Does ``value`` (a field value: text, list, object) hold ``address`` (canonical)?"""
    if isinstance(value, str):
        if "@" not in value and "\uff20" not in value:  # the fullwidth at sign folds to @
            return False
        text = unicodedata.normalize("NFKC", value)
        return any(
            canonical_address(m.group(0)) == address for m in _ADDRESS_IN_TEXT.finditer(text)
        )
    if isinstance(value, list):
        return any(holds_address(v, address) for v in value)
    if isinstance(value, dict):
        return any(holds_address(v, address) for v in value.values())
    return False


def address_fragments(address: str) -> list[str]:
    """ASCII fragments (3+ characters) of a canonical address that appear literally, up to ASCII
    case, in the stored text of every submission holding it (see the module docstring)."""
    local, _, domain = address.rpartition("@")
    # a domain label with non-ASCII letters may be stored in punycode: leave it out whole
    labels = [lb if lb.isascii() else "\x00" for lb in domain.split(".")]
    text = unicodedata.normalize("NFKC", f"{local}@{'.'.join(labels)}")
    runs = re.split(r"[^" + re.escape("".join(sorted(_PLAIN))) + r"]+", text)
    return sorted({r for r in runs if len(r) >= 3}, key=len, reverse=True)[:4]


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def purge_email(db: Any, address: str) -> list[Purged]:
    """Erasure request: every submission that holds ``address`` in its e-mail or any field."""
    address = canonical_address(address)
    if "@" not in address:
        raise ValueError(f"not an e-mail address: {address!r}")
    stored_text = func.lower(
        func.coalesce(Submission.email, "") + " " + cast(Submission.fields, String)
    )
    narrow = [
        stored_text.like(f"%{_like_escape(f)}%", escape="\\") for f in address_fragments(address)
    ]
    with db.session() as s:
        query = select(
            Submission.id,
            Submission.account,
            Submission.form,
            Submission.email,
            Submission.fields,
        )
        if narrow:
            query = query.where(or_(Submission.email == address, *[and_(*narrow)]))
        by_form: dict[tuple[str, str], list[str]] = defaultdict(list)
        for sid, account, form, email, fields in s.execute(query.execution_options(yield_per=1000)):
            if holds_address(email or "", address) or holds_address(fields or {}, address):
                by_form[(account, form)].append(sid)
        purged = _purge_ids(s, by_form)
        _record(s, purged, "erasure")
    return list(purged.values())


def _purge_ids(
    session: Session, by_form: dict[tuple[str, str], list[str]]
) -> dict[tuple[str, str], Purged]:
    purged: dict[tuple[str, str], Purged] = {}
    for (account, form), ids in by_form.items():
        p = purged.setdefault((account, form), Purged(account, form))
        for i in range(0, len(ids), _CHUNK):
            n_s, n_a, n_j = _delete(session, ids[i : i + _CHUNK])
            p.submissions += n_s
            p.attachments += n_a
            p.jobs += n_j
    return purged


# --------------------------------------------------------------------------- throttled


@dataclass
class Released:
    released: list[str]
    skipped: list[str]  # throttled submissions of a form no longer in the config
    #: throttled submissions the visitor sent again later and that were kept then (same form,
    #: same fields): releasing them would deliver the lead twice, so they stay throttled
    duplicates: list[str] = dc_field(default_factory=list)


def _sent_again(s: Session, sub: Submission) -> bool:
    """Did the visitor's retry of ``sub`` (the 429 page asks for one) arrive and get kept as a
    submission of its own? Same account and form, the same fields, received later."""
    later = s.scalars(
        select(Submission).where(
            Submission.account == sub.account,
            Submission.form == sub.form,
            Submission.received_at > sub.received_at,
            Submission.status.notin_(("throttled", "spam")),
            Submission.email == sub.email if sub.email is not None
            else Submission.email.is_(None),
        ).limit(200)
    )
    return any(other.fields == sub.fields for other in later)


def release_throttled(
    db: Any,
    config: Config,
    *,
    ids: Sequence[str] | None = None,
    account: str | None = None,
    form: str | None = None,
) -> Released:
    """Deliver submissions kept as ``throttled`` (over the rate limit): each gets its delivery
    jobs, status ``stored`` and a ``submission_released`` event, in one transaction. Others
    (already stored, spam) are left alone, so releasing twice changes nothing."""
    out = Released([], [])
    now = utcnow()
    with db.session() as s:
        q = select(Submission).where(Submission.status == "throttled")
        if ids is not None:
            q = q.where(Submission.id.in_(list(ids)))
        if account is not None:
            q = q.where(Submission.account == account)
        if form is not None:
            q = q.where(Submission.form == form)
        for sub in s.scalars(q.order_by(Submission.received_at)):
            found = config.form(f"{sub.account}/{sub.form}")
            if found is None:
                out.skipped.append(sub.id)
                continue
            if _sent_again(s, sub):
                out.duplicates.append(sub.id)
                continue
            sub.status = "stored"
            enqueue(s, job_rows(sub.id, sub.account, sub.form, found[1].recipients,
                                sender=config.smtp.sender, now=now))
            record_event(
                s, EventKind.SUBMISSION_RELEASED, account=sub.account, form=sub.form, at=now,
                data={"submission": sub.id, "recipients": list(found[1].recipients)},
            )
            out.released.append(sub.id)
    return out


def retention_days(config: Config, account: str, form: str) -> int:
    """A form's retention; a form no longer in the config keeps the default (365 days)."""
    found = config.form(f"{account}/{form}")
    return found[1].retention_days if found else DEFAULT_RETENTION_DAYS


def purge_expired(db: Any, config: Config, now: datetime | None = None) -> list[Purged]:
    """Delete submissions older than their form's ``retention_days``.

    In short transactions of at most 500 submissions (each with its own ``submissions_purged``
    event), so a large backlog never holds the write lock long enough to stall the intake.
    """
    now = now or utcnow()
    with db.session(readonly=True) as s:
        forms = s.execute(select(Submission.account, Submission.form).distinct()).all()
    totals: dict[tuple[str, str], Purged] = {}
    for account, form in forms:
        cutoff = now - timedelta(days=retention_days(config, account, form))
        while True:
            with db.session() as s:
                ids = list(
                    s.scalars(
                        select(Submission.id)
                        .where(
                            Submission.account == account,
                            Submission.form == form,
                            Submission.received_at < cutoff,
                        )
                        .limit(_CHUNK)
                    )
                )
                if not ids:
                    break
                chunk = _purge_ids(s, {(account, form): ids})
                _record(s, chunk, "retention")
            t = totals.setdefault((account, form), Purged(account, form))
            p = chunk[(account, form)]
            t.submissions += p.submissions
            t.attachments += p.attachments
            t.jobs += p.jobs
            if len(ids) < _CHUNK:
                break
    return list(totals.values())
