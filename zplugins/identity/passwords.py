"""Password hashing: argon2id over whatever the client sends, off the event loop.

ZStack's clients (SDKs, ``zstack-cli``, the web UI) never send a password itself: they send
its SHA-512 hex digest (128 lower-case hex digits), and that digest is the secret the server
knows. We never store it: the account row holds ``argon2id(digest)``. A client that sends the
raw password instead still works, as long as it always does (the hash is over whatever string
arrives); such a client cannot share an account with one that sends the digest.

argon2 is deliberately slow. Every hash and verification runs in a worker thread
(:func:`hash_password`, :func:`verify_password`); argon2-cffi releases the GIL while it
works, so the two cores of a small node verify two logins at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = [
    "HASHER",
    "digest",
    "hash_password",
    "is_digest",
    "needs_rehash",
    "verify_password",
]

#: argon2id with 8 MiB of memory, one pass, one lane: one verification costs about 5 ms on
#: the project's 2-core reference machine (t=3, m=64 MiB, p=4, argon2-cffi's default, costs
#: about 140 ms there, and logins are benchmarked). What is hashed is a SHA-512 digest, and
#: a stolen hash still costs an attacker 8 MiB and a full pass per guess. Hashes made with
#: other parameters keep verifying (the parameters are stored in each hash) and are rehashed
#: with these on the next successful login.
HASHER = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)

_DIGEST = re.compile(r"^[0-9a-f]{128}$")


def digest(password: str) -> str:
    """What a ZStack client sends for ``password``: its SHA-512 hex digest."""
    return hashlib.sha512(password.encode()).hexdigest()


def is_digest(value: str) -> bool:
    """Whether ``value`` looks like what ZStack's clients send (128 lower-case hex digits)."""
    return _DIGEST.match(value) is not None


async def hash_password(secret: str) -> str:
    """``argon2id(secret)`` as an encoded hash, computed in a worker thread."""
    return await asyncio.to_thread(HASHER.hash, secret)


def _verify(encoded: str, secret: str) -> bool:
    try:
        return HASHER.verify(encoded, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(encoded: str, secret: str) -> bool:
    """Whether ``secret`` matches the argon2 hash ``encoded``, checked in a worker thread.

    A malformed stored hash is a mismatch, never an exception.
    """
    return await asyncio.to_thread(_verify, encoded, secret)


def needs_rehash(encoded: str) -> bool:
    """Whether ``encoded`` was made with other parameters than :data:`HASHER`'s."""
    try:
        return HASHER.check_needs_rehash(encoded)
    except (InvalidHashError, ValueError):
        return True
