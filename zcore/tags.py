"""User tags and system tags.

A user tag is a free label. A system tag means something to a plugin, so it must match a
pattern a plugin registered for the resource's type (``hostname::{hostname}`` on
``VmInstanceVO``); ``{token}`` parts are extracted by name. The storage methods take the
caller's SQLAlchemy session, so a tag is written in the same transaction as its resource.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, cast

from sqlalchemy import CursorResult, bindparam, delete, select
from sqlalchemy.orm import Session

from zcore.db import SystemTagVO, UserTagVO, new_uuid, utcnow
from zcore.errors import INVALID_ARGUMENT, StartupError, ZError
from zcore.records import SystemTagPattern

__all__ = ["TagPatterns", "Tags"]

MAX_TAG_LENGTH = 2048


class TagPatterns:
    """The registered system tag patterns, by resource type."""

    def __init__(self, patterns: Iterable[SystemTagPattern],
                 resource_types: Mapping[str, Any] | None = None,
                 providers: Mapping[str, str] | None = None) -> None:
        self._by_type: dict[str, list[SystemTagPattern]] = {}
        unknown = []
        for pattern in patterns:
            if resource_types is not None and pattern.resource_type not in resource_types:
                who = (providers or {}).get(pattern.pattern)
                unknown.append(f"{who + ': ' if who else ''}{pattern.pattern} names resource "
                               f"type {pattern.resource_type}, which no active plugin declares")
            self._by_type.setdefault(pattern.resource_type, []).append(pattern)
        if unknown:
            raise StartupError("system tag patterns are invalid:\n"
                               + "\n".join(f"  - {u}" for u in unknown))
        # The pattern with the longest literal text is the most specific: try it first, so
        # "staticIp::{l3}::{ip}" wins over a catch-all "{key}::{value}".
        for found in self._by_type.values():
            found.sort(key=lambda p: -len(re.sub(r"\{[^}]*\}", "", p.pattern)))

    def patterns(self, resource_type: str) -> list[SystemTagPattern]:
        return list(self._by_type.get(resource_type, ()))

    def match(self, tag: str, resource_type: str
              ) -> tuple[SystemTagPattern, dict[str, str]] | None:
        """The pattern ``tag`` matches for ``resource_type`` and its tokens, or None."""
        for pattern in self._by_type.get(resource_type, ()):
            found = pattern.regex.match(tag)
            if found:
                return pattern, found.groupdict()
        return None

    def check(self, tag: str, resource_type: str) -> tuple[SystemTagPattern, dict[str, str]]:
        """Like :meth:`match`, but a tag that matches nothing is ``SYS.1007`` listing patterns."""
        matched = self.match(tag, resource_type)
        if matched is None:
            known = ", ".join(p.pattern for p in self._by_type.get(resource_type, ())) or "none"
            raise ZError(INVALID_ARGUMENT, "invalid system tag",
                         f"system tag {tag!r} matches no pattern for {resource_type}; "
                         f"patterns: {known}")
        return matched


# Built once: a resource's tags are read on hot paths (a VM's hostname at every start).
_SYSTEM_TAGS_OF = select(SystemTagVO.tag).where(
    SystemTagVO.resourceUuid == bindparam("uuid")).order_by(SystemTagVO.createDate)
_USER_TAGS_OF = select(UserTagVO.tag).where(
    UserTagVO.resourceUuid == bindparam("uuid")).order_by(UserTagVO.createDate)


def _check_text(tag: str) -> None:
    if not isinstance(tag, str) or not tag.strip():
        raise ZError(INVALID_ARGUMENT, "invalid tag", f"a tag must be non-empty text, not {tag!r}")
    if len(tag) > MAX_TAG_LENGTH:
        raise ZError(INVALID_ARGUMENT, "invalid tag",
                     f"a tag is at most {MAX_TAG_LENGTH} characters; this one has {len(tag)}")


class Tags:
    """Create, find and delete tags inside a caller's transaction."""

    def __init__(self, patterns: TagPatterns) -> None:
        self.patterns = patterns

    def add_system_tag(self, session: Session, resource_uuid: str, resource_type: str,
                       tag: str, *, inherent: bool = False, uuid: str | None = None
                       ) -> SystemTagVO:
        """Attach a system tag; it must match a registered pattern for ``resource_type``."""
        _check_text(tag)
        self.patterns.check(tag, resource_type)
        now = utcnow()
        row = SystemTagVO(uuid=uuid or new_uuid(), resourceUuid=resource_uuid,
                          resourceType=resource_type, tag=tag, type="System",
                          inherent=inherent, createDate=now, lastOpDate=now)
        session.add(row)
        return row

    def add_user_tag(self, session: Session, resource_uuid: str, resource_type: str, tag: str,
                     *, uuid: str | None = None) -> UserTagVO:
        """Attach a free-text user tag."""
        _check_text(tag)
        now = utcnow()
        row = UserTagVO(uuid=uuid or new_uuid(), resourceUuid=resource_uuid,
                        resourceType=resource_type, tag=tag, type="User", createDate=now,
                        lastOpDate=now)
        session.add(row)
        return row

    def delete(self, session: Session, tag_uuid: str) -> bool:
        """Delete a system or user tag by uuid; False if there was none."""
        deleted = 0
        for model in (SystemTagVO, UserTagVO):
            result = session.execute(delete(model).where(model.uuid == tag_uuid))
            deleted += cast(CursorResult[Any], result).rowcount
        return deleted > 0

    def system_tags(self, session: Session, resource_uuid: str) -> list[str]:
        return list(session.scalars(_SYSTEM_TAGS_OF, {"uuid": resource_uuid}))

    def user_tags(self, session: Session, resource_uuid: str) -> list[str]:
        return list(session.scalars(_USER_TAGS_OF, {"uuid": resource_uuid}))

    def tokens(self, session: Session, resource_uuid: str, resource_type: str, pattern: str
               ) -> list[dict[str, str]]:
        """The token values of each of the resource's system tags that match ``pattern``.

        ``tokens(s, vm, "VmInstanceVO", "hostname::{hostname}")`` → ``[{"hostname": "web1"}]``.
        """
        found = []
        for tag in self.system_tags(session, resource_uuid):
            matched = self.patterns.match(tag, resource_type)
            if matched is not None and matched[0].pattern == pattern:
                found.append(matched[1])
        return found
