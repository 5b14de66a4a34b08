"""Calibrate the twin against a real swarm run: measured service times, link and codec
ratios become a twin scenario; the twin's predicted time per step is set beside the
measured one.

One optimizer step of the swarm is one epoch of the twin: `microbatches` activations
through the same stages x replicas, with the same routing policy, one (fault-free) step
after another. Everything in the scenario is read off the run or measured here: the
mean seconds a pass holds a worker per stage and direction (decode, compute and encode
included, so the twin's codec profile carries only the wire ratio) and how much they vary
from pass to pass (which is what unbalances a routing policy that reads them), the optimizer-step
and merge time between steps, the emulated link, the bytes on the wire per raw byte, and
the transport's own per-message cost (a loopback ping-pong through the same Endpoint).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from pydantic import ValidationError

from swarmpress.errors import UsageError
from swarmpress.swarm.config import SwarmConfig, config_errors
from swarmpress.swarm.protocol import Ping, Pong
from swarmpress.swarm.role_codecs import WIRE_DTYPES
from swarmpress.swarm.transport import Endpoint
from swarmpress.twin.policies import ROUTERS, EvenBalancer
from swarmpress.twin.profiles import CodecProfile, RoleProfile
from swarmpress.twin.scenario import Scenario, parse_scenario
from swarmpress.twin.sim import Simulation

UNLIMITED_MBIT = 1e6  # an unshaped loopback link, as a bandwidth the twin can divide by


class CalibrationError(UsageError, ValueError):
    """A run that cannot calibrate the twin (too few steps, no service times)."""


def run_config(result: dict) -> SwarmConfig:
    """The configuration a result was made with; CalibrationError if it is not one."""
    try:
        return SwarmConfig(**result["config"])
    except ValidationError as exc:
        raise CalibrationError(f"not a swarm run result: config {config_errors(exc)}") from None
    except (KeyError, TypeError) as exc:
        raise CalibrationError(f"not a swarm run result (its config: {exc})") from None


def message_overhead(payload: int = 65536, rounds: int = 200) -> float:
    """Median one-way seconds of a message between two Endpoints on loopback (unshaped):
    serialisation, the I/O threads and the socket, without any emulated link."""
    a, b = Endpoint("calib-a"), Endpoint("calib-b")
    try:
        a.connect("calib-b", b.address)
        b.connect("calib-a", a.address)
        blob = bytes(payload)
        times = []
        for i in range(rounds + 10):
            t0 = time.perf_counter()
            a.send("calib-b", Ping(i, blob).envelope(), shaped=False)
            if b.recv(timeout=5) is None:
                raise CalibrationError("the loopback ping-pong lost a message")
            b.send("calib-a", Pong(i).envelope(), shaped=False)
            if a.recv(timeout=5) is None:
                raise CalibrationError("the loopback ping-pong lost a message")
            if i >= 10:  # the first messages connect the sockets
                times.append((time.perf_counter() - t0) / 2)
        return statistics.median(times)
    finally:
        a.close()
        b.close()


def scenario_from_run(result: dict, overhead_s: float) -> dict[str, Any]:
    """A twin scenario (as a TOML-ready dict) describing the run in `result`."""
    cfg = run_config(result)
    service = result.get("service_s") or []
    if len(service) != cfg.stages or any(s["forward"] is None for s in service):
        raise CalibrationError("the run reported no service times for some stage")
    fwd = [float(s["forward"]) for s in service]
    # The last stage runs its backward pass inside the forward message (loss + backward).
    bwd = [float(s["backward"] or 0.0) for s in service]
    link = cfg.link_spec
    mbit = UNLIMITED_MBIT if link.bandwidth_bps is None else link.bandwidth_bps / 1e6
    timed = max(1, result["steps"] - 1)
    width = cfg.dim // cfg.bottleneck
    itemsize = WIRE_DTYPES[cfg.wire_dtype].itemsize
    return {
        "name": f"calibrated-{cfg.stages}x{cfg.replicas}-{link.describe()}",
        "description": (
            f"measured from a swarm run: {cfg.stages} stages x {cfg.replicas} replicas, "
            f"codec {cfg.codec_activation}/{cfg.codec_gradient}, link {link.describe()}"
        ),
        "swarm": {
            "miners": cfg.stages * cfg.replicas,
            "classes": [{"name": "lab", "share": 1.0}],
            "forward_s": {"median": statistics.fmean(fwd), "sigma": 0.0},
            "backward_factor": 1.0,
            "upload_mbit": {"median": mbit, "sigma": 0.0},
            "download_mbit": {"median": UNLIMITED_MBIT, "sigma": 0.0},
            "message_overhead_s": overhead_s,
            "regions": ["lab"],
            "latency": {"lab>lab": link.latency_s},
            "last_mile_s": 0.0,
            "pass_jitter": min(2.0, float(result.get("service_jitter") or 0.0)),
            "drift": 0.0,
            "local_batch_size": cfg.microbatch,
        },
        "model": {
            "layers": cfg.stages,
            "hidden": width,
            "seq": cfg.seq_len,
            "batch": cfg.microbatch,
            "bytes_per_value": itemsize,
            "bottleneck": 1.0,
            "layer_forward_s": fwd,
            "layer_backward_s": bwd,
        },
        "workload": {
            "activations_per_epoch": cfg.microbatches,
            "epochs": timed,
            "in_flight_per_entry": math.ceil(cfg.microbatches / cfg.replicas),
            "merge": False,
            "step_s": float(result.get("step_overhead_s") or 0.0),
        },
        "rules": {
            "cache_size": max(5, cfg.microbatches + 1),
            "layer_timeout_s": cfg.sample_timeout_s,
        },
    }


def wire_profile(result: dict) -> CodecProfile:
    """The run's codecs as the twin sees them: measured bytes on the wire per raw byte
    (headers and token blocks included); their time is already in the service times."""
    ratios = result.get("wire_ratio", {})
    roles = {
        "activation": RoleProfile(ratios.get("activation", 1.0)),
        "gradient": RoleProfile(ratios.get("gradient", 1.0)),
        "weight_delta": RoleProfile(ratios.get("weight-delta", 1.0)),
    }
    label = f"measured {result['codec']['activation']}/{result['codec']['gradient']}"
    return CodecProfile(label, **roles, source="swarm run")


def predict(scenario: Scenario, result: dict, seed: int = 0) -> dict:
    """Simulate the calibrated scenario with the run's routing policy: seconds per step."""
    cfg = run_config(result)
    router = ROUTERS[cfg.router]()
    sim = Simulation(scenario, seed, router, EvenBalancer(), wire_profile(result))
    res = sim.run()
    if not res.ok:
        raise CalibrationError(f"the twin could not run the calibrated scenario: {res.reason}")
    per_step = [e.seconds for e in res.epochs]
    return {
        "seconds_per_step": statistics.fmean(per_step),
        "epochs": len(per_step),
        "wall_seconds": res.wall_seconds,
    }


def calibrate(result: dict, overhead_s: float | None = None) -> dict:
    """Scenario, twin prediction and the measured figure it predicts, with the error."""
    if result.get("seconds_per_step") is None or result.get("steps", 0) < 2:
        raise CalibrationError("calibration needs a run of at least 2 steps")
    missing = [k for k in ("config", "link", "codec", "service_s") if k not in result]
    if missing:
        raise CalibrationError(f"not a swarm run result: no {', '.join(missing)}")
    overhead = message_overhead() if overhead_s is None else overhead_s
    raw = scenario_from_run(result, overhead)
    scenario = parse_scenario(raw, "calibrated scenario")
    pred = predict(scenario, result)
    measured = float(result["seconds_per_step"])
    warnings = []
    f = result.get("faults", {})
    if f.get("dead") or f.get("replayed"):
        warnings.append(
            f"the run had {f.get('dead', 0)} dead workers and {f.get('replayed', 0)} replayed "
            "micro-batches; the calibrated scenario has no faults, so its prediction is for "
            "a fault-free run"
        )
    return {
        "warnings": warnings,
        "scenario": raw,
        "message_overhead_s": overhead,
        "measured_seconds_per_step": measured,
        "predicted_seconds_per_step": pred["seconds_per_step"],
        "error": pred["seconds_per_step"] / measured - 1.0,
        "twin_wall_seconds": pred["wall_seconds"],
        "config": {
            "stages": result["config"]["stages"],
            "replicas": result["config"]["replicas"],
            "link": result["link"]["spec"],
            "codec": result["codec"],
        },
    }


def scenario_toml(raw: dict) -> str:
    """The scenario as TOML that `swarmpress twin run FILE` reads."""
    import tomli_w

    return tomli_w.dumps(raw)
