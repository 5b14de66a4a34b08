"""A random-routing reference server for the twin's HTTP contract (`twin serve-baseline`).

Enters at the requesting miner, then a uniformly random active miner of every later layer,
and balances by dealing miners to layers in turn (one layer each): the baseline any routing
submission should beat.
Run: python -m swarmpress.twin.baseline_server --port 8000
"""

from __future__ import annotations

import argparse
import json
import random

from fastapi import FastAPI, Request


def create_app(seed: int = 0) -> FastAPI:
    rng = random.Random(seed)
    app = FastAPI(title="swarmpress twin baseline router")

    @app.get("/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    # Raw bodies and json.loads: the requests carry ~2,000 events, and FastAPI's
    # validation of an untyped dict costs more than the routing itself.
    @app.post("/route")
    async def route(request: Request) -> dict[str, list[str]]:
        req = json.loads(await request.body())
        entry = next((m for m in req["miners"][0] if m["miner_id"] == req["miner_id"]), None)
        path = [] if entry is None else [entry["receiver_node_id"]]
        for layer in req["miners"][len(path) :]:
            alive = [m for m in layer if m["active"]] or layer
            path.append(rng.choice(alive)["receiver_node_id"])
        return {"path": path}

    @app.post("/balance-orchestrator")
    async def balance(request: Request) -> dict[str, dict[str, list[int]]]:
        req = json.loads(await request.body())
        ids = sorted(req["miners"])
        return {"assignments": {m: [i % req["n_layers"]] for i, m in enumerate(ids)}}

    return app


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    uvicorn.run(create_app(a.seed), host=a.host, port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
