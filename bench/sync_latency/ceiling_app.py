"""The ceiling: a bare Litestar endpoint answering what the trivial script returns.

Run as ``python -m bench.sync_latency.ceiling_app PORT``.
"""

from __future__ import annotations

import sys

import uvicorn
from litestar import Litestar, post


@post("/run", status_code=200)
async def run(data: dict[str, int]) -> int:
    return data["x"]


app = Litestar(route_handlers=[run])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
