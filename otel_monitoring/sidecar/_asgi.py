"""What the sidecar's ASGI apps (receiver, scrape endpoint, health check) share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["serve_lifespan"]


async def serve_lifespan(receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
    """Answer uvicorn's lifespan protocol: nothing to start or stop per server, the service owns the components."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
