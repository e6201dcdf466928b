"""Tables of the delivery watch: where each followed log file was read up to."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from postwatch.store.models import Base, utcnow


class FollowedFile(Base):
    """The position of ``postwatch serve`` in one followed log file.

    Stored in the same transaction as the events the lines up to ``offset`` produced, so a
    restart resumes exactly after the last line that made it into the event log.
    """

    __tablename__ = "watch_files"

    #: the configured path (the key: the file under it changes on rotation)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    device: Mapped[int] = mapped_column(BigInteger, default=0)
    inode: Mapped[int] = mapped_column(BigInteger, default=0)
    #: byte offset just after the last complete line handled
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    lines: Mapped[int] = mapped_column(BigInteger, default=0)
    unparsed: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
