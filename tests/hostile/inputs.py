"""Hostile inputs of issue 11, built in code so the suite carries no large fixture files."""

from __future__ import annotations


def nested_mime(depth: int = 3000) -> bytes:
    """A ~200 KB mail with ``depth`` nested multipart levels (RecursionError in the stdlib)."""
    parts = [
        "From: attacker@example.org\r\nTo: bounces@example.test\r\n"
        "Subject: nested\r\nMessage-ID: <poison@example.org>\r\nMIME-Version: 1.0\r\n"
    ]
    for i in range(depth):
        parts.append(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n')
    parts.append("Content-Type: text/plain\r\n\r\nhi\r\n")
    for i in reversed(range(depth)):
        parts.append(f"--b{i}--\r\n")
    return "".join(parts).encode()


def nested_rfc822(depth: int = 3000) -> bytes:
    """The same depth through ``message/rfc822`` parts (no boundaries at all)."""
    head = "From: attacker@example.org\r\nSubject: nested rfc822\r\nMIME-Version: 1.0\r\n"
    level = "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n"
    return (head + level * depth + "Content-Type: text/plain\r\n\r\nhi\r\n").encode()
