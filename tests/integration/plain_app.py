"""A FastAPI app with no monitoring code at all, for ``opentelemetry-instrument``."""

import os

from fastapi import FastAPI

app = FastAPI()


@app.get("/users/{user_id}/orders/{order_id}")
async def order(user_id: int, order_id: int) -> dict[str, int]:
    return {"user_id": user_id, "order_id": order_id}


@app.get("/pid")
async def pid() -> dict[str, int]:
    return {"pid": os.getpid()}
