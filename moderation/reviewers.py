"""Who may give verdicts: a YAML file of reviewer name -> SHA-256 (hex) of their token.

Tokens are never stored in clear; ``hash_token`` makes the file's entries. Tokens should be
long random strings (``new_token``), so a plain SHA-256 is enough: there is nothing to
guess that a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from pathlib import Path

import yaml

log = logging.getLogger("moderation")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[^\s:][^:]{0,127}")
# Shorter tokens are refused outright: a reviewers file must not be guessable.
MIN_TOKEN_LENGTH = 16


def hash_token(token: str) -> str:
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"a token needs at least {MIN_TOKEN_LENGTH} characters")
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


class Reviewers:
    def __init__(self, hashes: dict[str, str]) -> None:
        """``hashes``: reviewer name -> SHA-256 hex of their token."""
        for name, digest in hashes.items():
            if not isinstance(name, str) or not _NAME.fullmatch(name) or name != name.strip():
                raise ValueError(
                    f"reviewer name {name!r} must be 1 to 128 characters, without colons "
                    "or surrounding spaces"
                )
            if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
                raise ValueError(
                    f"reviewer {name!r}: token hash must be 64 lowercase hex characters "
                    "(sha256; see `commons-moderation hash-token`)"
                )
        if len(set(hashes.values())) != len(hashes):
            raise ValueError("two reviewers share one token hash")
        self._hashes = dict(hashes)

    @classmethod
    def load(cls, path: str | Path) -> Reviewers:
        source = Path(path)
        try:
            raw = yaml.safe_load(source.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"reviewers file {source}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise ValueError(f"reviewers file {source} is not valid YAML: {exc}") from exc
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ValueError(f"reviewers file {source} must map reviewer names to token hashes")
        try:
            return cls(raw)
        except ValueError as exc:
            raise ValueError(f"reviewers file {source}: {exc}") from None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._hashes))

    def identify(self, token: str) -> str | None:
        """The reviewer whose token this is; None for an unknown or empty token. Every
        entry is compared, in constant time, so timing says nothing about the table."""
        if not isinstance(token, str) or not token:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest().encode()
        found = None
        for name, expected in self._hashes.items():
            if hmac.compare_digest(digest, expected.encode()):
                found = name
        return found


class ReviewersFile:
    """A reviewers file that is read again whenever it changes (mtime, size or inode), so
    a long-running server sees a reviewer added or removed from the next request on. A
    change that does not read (a typo, a half-written file) refuses every token until the
    file is fixed: better no reviewer than one who was meant to be removed."""

    def __init__(self, path: str | Path) -> None:
        """ValueError when the file does not read now."""
        self.path = Path(path)
        self._seen = self._stat()
        self._reviewers = Reviewers.load(self.path)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return found.st_mtime_ns, found.st_size, found.st_ino

    def current(self) -> Reviewers:
        seen = self._stat()
        if seen != self._seen:
            self._seen = seen
            try:
                self._reviewers = Reviewers.load(self.path)
            except ValueError as exc:
                log.error("%s: refusing every reviewer until it reads again", exc)
                self._reviewers = Reviewers({})
            else:
                log.info(
                    "reviewers file %s read again: %d reviewers",
                    self.path,
                    len(self._reviewers.names),
                )
        return self._reviewers
