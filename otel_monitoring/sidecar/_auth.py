"""The ``bearertokenauth`` extension's token, loaded one way for every receiver and exporter that uses it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from otel_monitoring.sidecar.config import BearerTokenAuthExtensionConfig

__all__ = ["load_bearer_token", "read_token_file"]


def read_token_file(path: str) -> str:
    """The default ``read_text``: the file's text, UTF-8."""
    return Path(path).read_text(encoding="utf-8")


def load_bearer_token(
    extension: BearerTokenAuthExtensionConfig,
    read_text: Callable[[str], str] = read_token_file,
    *,
    name: str = "bearertokenauth",
) -> bytes:
    """The token of ``extension`` (its ``token``, or the text of its ``filename``), surrounding whitespace removed.

    An empty token raises ``ValueError`` naming the extension ``name``: compared with an empty token, a bare
    ``Authorization: Bearer`` would pass, which is no authentication at all. ``OSError`` from reading the file
    propagates.

    >>> load_bearer_token(BearerTokenAuthExtensionConfig(filename="/run/token"), lambda path: "s3cret\\n")
    b's3cret'
    >>> load_bearer_token(BearerTokenAuthExtensionConfig(filename="/run/token"), lambda path: "", name="auth/pods")
    Traceback (most recent call last):
    ...
    ValueError: extensions.auth/pods: the token file /run/token is empty
    """
    if extension.token is not None:
        token = extension.token.get_secret_value().strip()
        source = "token"
    else:
        token = read_text(str(extension.filename)).strip()
        source = f"token file {extension.filename}"
    if not token:
        raise ValueError(f"extensions.{name}: the {source} is empty")
    return token.encode()
