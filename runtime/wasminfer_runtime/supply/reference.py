"""OCI references: `registry[:port]/repository[:tag][@sha256:…]` (light: the config validates them)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_REFERENCE = re.compile(
    # The registry is a host with a dot or a port, or localhost: "models/m:v1" names no registry here.
    r"^(?P<registry>(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?::[0-9]+)?|[A-Za-z0-9-]+:[0-9]+|localhost))/(?P<repository>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


class BadReference(Exception):
    """Not an OCI reference; the message says why."""


@dataclass(frozen=True)
class Reference:
    """`registry[:port]/repository[:tag][@sha256:…]`; the registry is always named (no Docker Hub default)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        m = _REFERENCE.match(text.strip())
        if m is None:
            raise BadReference(
                f"{text!r} is not an OCI reference: expected registry.example.com[:port]/repository[:tag][@sha256:<64 hex>]"
            )
        ref = cls(m["registry"], m["repository"], m["tag"], m["digest"])
        if ref.tag is None and ref.digest is None:
            raise BadReference(f"{text!r} names neither a tag nor a digest")
        return ref

    def pinned(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def with_tag(self, tag: str | None) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def selector(self) -> str:
        """What the manifest URL asks for: the digest when pinned, else the tag."""
        return self.digest or self.tag or ""

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")
