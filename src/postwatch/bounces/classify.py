"""``classify-bounce``: one JSON object per failed recipient (or per message that is none)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from postwatch.bounces.parse import MessageKind, analyse
from postwatch.bounces.sources import read_messages


def classify_path(path: Path | str) -> Iterator[dict[str, Any]]:
    """For each message under ``path``: its failed recipients, or what it is instead."""
    for located in read_messages(path):
        if located.problem is not None:  # refused before parsing (see parse.parse_bytes)
            yield {
                "file": located.file,
                "index": located.index,
                "kind": str(MessageKind.UNPARSABLE),
                "source": "error",
                "recipient": None,
                "status": None,
                "reason": None,
                "permanent": None,
                "diagnostic": None,
                "failed": False,
                "note": f"unparsable: {located.problem}",
                "subject": located.message.get("Subject"),
            }
            continue
        report = analyse(located.message)
        base: dict[str, Any] = {
            "file": located.file,
            "index": located.index,
            "kind": str(report.kind),
            "source": report.source,
        }
        if report.kind in (MessageKind.BOUNCE, MessageKind.DELAY) and report.failures:
            for f in report.failures:
                yield {
                    **base,
                    "recipient": f.recipient,
                    "status": f.status,
                    "reason": f.reason,
                    "permanent": f.permanent,
                    "diagnostic": f.diagnostic,
                    "action": f.action,
                    "failed": True,
                    "original_message_id": report.original_message_id,
                }
        else:
            yield {
                **base,
                "recipient": None,
                "status": None,
                "reason": None,
                "permanent": None,
                "diagnostic": None,
                "failed": False,
                "note": report.note,
                "subject": report.subject,
            }
