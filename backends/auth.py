"""Users, roles and API tokens: who may do what, written once.

Every backend stores users and tokens (`Backend.add_user`, `create_token`, ...); what a
role allows, how a password is hashed and how a token is made and checked are here, and
the HTTP server, the CLI and every backend call these functions.

Roles (DESIGN.md, "HTTP API"):

* ``admin``: everything, including users, tokens of others, stores and operations.
* ``manager``: the catalog, stock and reports at its stores.
* ``clerk``: stock movements, transfers out of its stores, and reads at its stores.

A user may be limited to some stores (`User.stores`); None means every store.  A limited
user sees only those stores' rows and is refused (`PermissionDenied`) elsewhere.

Passwords are hashed with Argon2id (`argon2-cffi`).  Tokens are 256 random bits shown
once (`inv_` + 43 URL-safe characters); only their SHA-256 is stored (a token is random,
so a fast hash is enough and lets a server find it by an index), and the digests are
compared in constant time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Any

from . import values
from .errors import NotFound, PermissionDenied, Unauthenticated, ValidationError

if TYPE_CHECKING:
    from argon2 import PasswordHasher

__all__ = [
    "ROLES",
    "TOKEN_PREFIX",
    "IssuedToken",
    "Permission",
    "StoredToken",
    "StoredUser",
    "Token",
    "User",
    "authorize",
    "can",
    "check_token_usable",
    "hash_password",
    "new_token",
    "role",
    "stored_token",
    "stored_user",
    "token_digest",
    "verify_password",
    "visible",
]

ROLES = ("admin", "manager", "clerk")
TOKEN_PREFIX = "inv_"


class Permission(StrEnum):
    """What a request needs.  Store-bound permissions are checked against a store."""

    READ = "read"  # products, stock, history at a store
    MOVE = "move"  # stock changes and counts at a store
    TRANSFER = "transfer"  # transfers out of a store (the source)
    CATALOG = "catalog"  # add, edit, remove products; imports
    REPORT = "report"  # the reports at a store
    STORES = "stores"  # add and remove stores
    USERS = "users"  # users, and the tokens of others
    OPERATE = "operate"  # init, upgrade, audit, migrate snapshots, seeding


_GRANTS: dict[str, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "manager": frozenset(
        {
            Permission.READ,
            Permission.MOVE,
            Permission.TRANSFER,
            Permission.CATALOG,
            Permission.REPORT,
        }
    ),
    "clerk": frozenset({Permission.READ, Permission.MOVE, Permission.TRANSFER}),
}


@dataclass(frozen=True, slots=True)
class User:
    """Someone who may use the API.  `stores` None: every store."""

    username: str
    role: str
    stores: tuple[str, ...] | None = None
    disabled: bool = False
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Token:
    """An API token as stored: never the secret itself."""

    id: int
    username: str
    name: str | None
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredUser:
    """A user as stored, its password hash included: what `inv migrate` carries
    (`Snapshot.users`, from `export_state` to `import_state`) so every password keeps
    working.  Never returned by a normal read (those return `User`); the hash stays out
    of its repr."""

    username: str
    password_hash: str = field(repr=False)
    role: str
    stores: tuple[str, ...] | None
    disabled: bool
    created_at: datetime

    @property
    def user(self) -> User:
        return User(self.username, self.role, self.stores, self.disabled, self.created_at)


@dataclass(frozen=True, slots=True)
class StoredToken:
    """An API token as stored, its digest included (there is no secret to carry: only
    the digest was ever kept): what `inv migrate` carries (`Snapshot.tokens`) so every
    terminal's token keeps working.  Never returned by a normal read (those return
    `Token`); the digest stays out of its repr."""

    id: int
    username: str
    digest: str = field(repr=False)
    name: str | None
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None

    @property
    def token(self) -> Token:
        return Token(
            self.id,
            self.username,
            self.name,
            self.created_at,
            self.expires_at,
            self.last_used_at,
        )


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just made: `secret` is shown once and never stored."""

    token: Token
    secret: str


def role(value: object, *, field: str = "role") -> str:
    """One of `ROLES`."""
    if not isinstance(value, str) or value.strip().lower() not in ROLES:
        raise ValidationError(
            f"{field}: {value!r} is not a role (choose from {', '.join(ROLES)})", field=field
        )
    return value.strip().lower()


#: `role`, for the functions whose parameter is called `role`.
_role = role


def user_stores(given: Iterable[str] | None) -> tuple[str, ...] | None:
    """The stores a user is limited to, checked and sorted; None or empty: every store."""
    if not given:
        return None
    return tuple(sorted({values.store_code(code, field="store") for code in given}))


def token_name(value: object | None) -> str | None:
    """A token's label (`till-3`), optional."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return values.text(value, field="name", max_length=100)


def _aware(value: object, field: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValidationError(f"{field}: {value!r} is not a time with its zone", field=field)
    return value


_ARGON2 = re.compile(r"\$argon2(id|i|d)\$[ -~]{1,500}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


def stored_user(given: StoredUser) -> StoredUser:
    """A user brought by `import_state`, checked by the grammar `add_user` writes (the
    name lower-cased, the stores sorted) and with an Argon2 hash; `ValidationError`
    otherwise.  The hash is kept verbatim."""
    name = values.username(given.username, field="users.username")
    where = f"users.{name}"
    if not isinstance(given.password_hash, str) or not _ARGON2.fullmatch(given.password_hash):
        raise ValidationError(f"{where}: password_hash is not an Argon2 hash", field=where)
    if not isinstance(given.disabled, bool):
        raise ValidationError(f"{where}: disabled is not true or false", field=where)
    return StoredUser(
        username=name,
        password_hash=given.password_hash,
        role=role(given.role, field=f"{where}.role"),
        stores=user_stores(given.stores),
        disabled=given.disabled,
        created_at=_aware(given.created_at, f"{where}.created_at"),
    )


def stored_token(given: StoredToken) -> StoredToken:
    """A token brought by `import_state`, checked as `create_token` writes it: a positive
    id, its user's name, a SHA-256 hex digest; `ValidationError` otherwise.  The digest
    is kept verbatim."""
    number = values.integer(given.id, field="tokens.id", minimum=1, maximum=2**53 - 1)
    where = f"tokens.{number}"
    if not isinstance(given.digest, str) or not _DIGEST.fullmatch(given.digest):
        raise ValidationError(f"{where}: digest is not a SHA-256 hex digest", field=where)
    return StoredToken(
        id=number,
        username=values.username(given.username, field=f"{where}.username"),
        digest=given.digest,
        name=token_name(given.name),
        created_at=_aware(given.created_at, f"{where}.created_at"),
        expires_at=(
            _aware(given.expires_at, f"{where}.expires_at")
            if given.expires_at is not None
            else None
        ),
        last_used_at=(
            _aware(given.last_used_at, f"{where}.last_used_at")
            if given.last_used_at is not None
            else None
        ),
    )


def user_changes(
    *,
    password: str | None = None,
    role: str | None = None,
    stores: Iterable[str] | None = None,
    disabled: bool | None = None,
) -> dict[str, Any]:
    """What `Backend.update_user` stores, by column, checked (the password hashed);
    None leaves a field out (`stores=[]`: every store, stored as None)."""
    changes: dict[str, Any] = {}
    if role is not None:
        changes["role"] = _role(role)
    if stores is not None:
        limited = user_stores(stores)
        changes["stores"] = list(limited) if limited is not None else None
    if disabled is not None:
        changes["disabled"] = bool(disabled)
    if password is not None:
        changes["password_hash"] = hash_password(password)
    return changes


def no_user(name: str) -> NotFound:
    return NotFound(f"no user {name!r}")


# -- what a role may do ---------------------------------------------------------------


def can(user: User, permission: Permission, store: str | None = None) -> bool:
    """Whether `user` holds `permission` (at `store`, when one is named)."""
    if user.disabled or permission not in _GRANTS.get(user.role, frozenset()):
        return False
    return store is None or user.stores is None or store in user.stores


def authorize(user: User, permission: Permission, store: str | None = None) -> None:
    """Raise `PermissionDenied` unless `user` may do `permission` (at `store`)."""
    if can(user, permission, store):
        return
    if permission in _GRANTS.get(user.role, frozenset()) and store is not None:
        raise PermissionDenied(f"user {user.username!r} may not act at store {store!r}")
    raise PermissionDenied(f"user {user.username!r} ({user.role}) may not {_DOING[permission]}")


def unrestricted(user: User, permission: Permission) -> None:
    """Raise `PermissionDenied` unless `user` holds `permission` at every store (what
    touches every store at once: removing a product from the whole catalog)."""
    authorize(user, permission)
    if user.stores is not None:
        raise PermissionDenied(
            f"user {user.username!r} is limited to stores {', '.join(user.stores)}; "
            "this touches every store"
        )


def visible(user: User, store: str | None) -> bool:
    """Whether a row at `store` is shown to `user` (rows of no store are catalog rows,
    shown to everyone who may read)."""
    return store is None or user.stores is None or store in user.stores


_DOING = {
    Permission.READ: "read stock",
    Permission.MOVE: "change stock",
    Permission.TRANSFER: "transfer stock",
    Permission.CATALOG: "change the catalog",
    Permission.REPORT: "run reports",
    Permission.STORES: "add or remove stores",
    Permission.USERS: "manage users or others' tokens",
    Permission.OPERATE: "operate the backend",
}


# -- passwords ------------------------------------------------------------------------


@cache
def _hasher() -> PasswordHasher:
    from argon2 import PasswordHasher  # Argon2id with the library's recommended cost

    return PasswordHasher()


def hash_password(password: str) -> str:
    """The Argon2id hash of a checked password (`values.password`)."""
    return _hasher().hash(values.password(password))


#: A hash to verify against when the user does not exist, so a wrong user name takes
#: as long as a wrong password (no user enumeration by timing).
@cache
def _decoy() -> str:
    return _hasher().hash("not a password of anyone's")


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; a missing user (None) is checked against a decoy."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        _hasher().verify(password_hash or _decoy(), password)
    except (VerificationError, InvalidHashError, ValueError):
        return False
    return password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    """Whether a stored hash was made with weaker parameters than today's."""
    return _hasher().check_needs_rehash(password_hash)


# -- tokens ---------------------------------------------------------------------------


def new_token() -> tuple[str, str]:
    """A fresh token: (the secret, shown once; its digest, stored)."""
    import secrets

    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return secret, token_digest(secret)


def token_digest(secret: str) -> str:
    """The stored form of a token: hex SHA-256 of its text."""
    import hashlib  # here: OpenSSL's load costs every command a few milliseconds

    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def same_digest(stored: str, secret: str) -> bool:
    """Constant-time comparison of a stored digest with a presented token's."""
    import hmac

    return hmac.compare_digest(stored, token_digest(secret))


def looks_like_token(secret: str) -> bool:
    """A cheap check before any lookup: the shape `new_token` makes."""
    return (
        secret.startswith(TOKEN_PREFIX)
        and 40 <= len(secret) <= 100
        and secret.isascii()
        and secret.isprintable()
    )


def check_token_usable(token: Token, user: User | None, now: datetime) -> User:
    """The user a stored token acts for, or `Unauthenticated` if the token is expired,
    or its user is gone or disabled (a revoked token is deleted: it is not found).  One
    message for all: a caller learns nothing about which."""
    if user is None or user.disabled or (token.expires_at is not None and token.expires_at <= now):
        raise Unauthenticated("the token is not valid (expired, revoked or unknown)")
    return user


def bad_token() -> Unauthenticated:
    return Unauthenticated("the token is not valid (expired, revoked or unknown)")


def bad_login() -> Unauthenticated:
    return Unauthenticated("wrong user name or password")


def expiry(text: str | None, now: datetime) -> datetime | None:
    """When a token made at `now` expires, from an age such as `90d` (`values.age`'s
    grammar, counted forward); None or `never`: it does not expire."""
    if text is None or text.strip().lower() in ("", "never"):
        return None
    return now + (now - values.age(text, field="expires", now=now))
