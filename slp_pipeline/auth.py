"""API keys of the sign service, and when the service may run without one.

Writes (adding and deleting signers) need a key sent as ``Authorization: Bearer <key>``;
``POST /v1/sign`` needs one only when the serve config sets ``sign_requires_key``. Keys come
from the ``SLP_API_KEY`` environment variable (several separated by commas) and the config's
``api_keys``. Without any key the service runs open, which :func:`check_exposure` allows on a
loopback address only -- a developer's machine, where ``slp serve`` says so at start; on any
other address an open service would let the network add and delete signers.

Only SHA-256 digests of the keys leave the process that reads them (they travel to the ingress
replicas through Ray), and a presented key is compared digest to digest in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from slp_pipeline.local_ray import is_loopback_ip
from slp_pipeline.signers import InputError

ENV_VAR = "SLP_API_KEY"
MIN_KEY_CHARS = 16


class Unauthorized(InputError):
    """No key, or not a configured one; ``headers`` go out with the 401 (RFC 6750)."""

    status = 401
    headers = {"WWW-Authenticate": "Bearer"}


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def keys_from(configured: Iterable[str], environ: Mapping[str, str] = os.environ) -> list[str]:
    """The config's keys plus those of ``$SLP_API_KEY``; each checked, so a typo (a space, a
    short test value) fails at start rather than locking everyone out or letting anyone in."""
    keys = [*configured, *(k.strip() for k in environ.get(ENV_VAR, "").split(",") if k.strip())]
    for i, key in enumerate(keys, 1):
        if not isinstance(key, str) or len(key) < MIN_KEY_CHARS:
            raise ValueError(f"API key #{i} is shorter than {MIN_KEY_CHARS} characters")
        if not key.isascii() or not key.isprintable() or " " in key or "," in key:
            raise ValueError(f"API key #{i} must be printable ASCII without spaces or commas")
    return keys


@dataclass(frozen=True)
class ApiKeys:
    """The service's key policy; holds digests only."""

    digests: tuple[bytes, ...] = ()
    sign_requires_key: bool = False

    @classmethod
    def from_keys(cls, keys: Iterable[str], sign_requires_key: bool = False) -> ApiKeys:
        if sign_requires_key and not keys:
            raise ValueError("sign_requires_key is set but no API key is configured")
        return cls(tuple(_digest(k) for k in keys), sign_requires_key)

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def check(self, token: str | None, write: bool) -> None:
        """Raise :class:`Unauthorized` unless ``token`` may do this (``write``: change signers,
        else: sign). Every configured digest is compared, so timing says nothing about which."""
        if not self.enabled or not (write or self.sign_requires_key):
            return
        if not token:
            raise Unauthorized("this request needs an API key: send 'Authorization: Bearer KEY'")
        presented = _digest(token)
        if not any([hmac.compare_digest(presented, d) for d in self.digests]):  # a list: all run
            raise Unauthorized("the API key is not valid")

    def describe(self) -> str:
        """One line for the start banner."""
        if not self.enabled:
            return "no API key: anyone who can reach this loopback address may add/delete signers"
        needs = "signer upload/delete" + (" and /v1/sign" if self.sign_requires_key else "")
        return f"{len(self.digests)} API key(s) configured, required for {needs}"


def is_loopback(host: str) -> bool:
    """A bind address reachable from this machine only; a host name other than localhost
    counts as public (it may resolve to anything)."""
    try:
        return host == "localhost" or is_loopback_ip(host.strip("[]"))
    except ValueError:
        return False


def check_exposure(host: str, keys: ApiKeys) -> None:
    """Refuse to serve without a key on anything but a loopback address."""
    if not keys.enabled and not is_loopback(host):
        raise ValueError(
            f"refusing to serve on {host} without an API key: set {ENV_VAR} (or api_keys in the "
            "serve config), or bind http_options.host to 127.0.0.1"
        )
