"""Scenarios: everything the twin simulates, read from TOML and checked field by field.

A scenario names the swarm (miner classes, compute, links, geography), the model (hidden
size, sequence, bytes per value, bottleneck, parameters per layer), the workload
(activations per epoch, epochs) and the rules (cache size, layer timeout, tracking buffer,
routing call limit). Built-in scenarios ship in twin/scenarios/ and load by name.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from swarmpress.errors import UsageError

BUILTIN_DIR = Path(__file__).with_name("scenarios")


class ScenarioError(UsageError, ValueError):
    """A scenario that cannot be simulated; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Spread(_Strict):
    """A positive quantity drawn per miner: median times a log-normal factor."""

    median: float = Field(gt=0)
    sigma: float = Field(0.3, ge=0, le=3)


class MinerClass(_Strict):
    """A reliability class: its share of the swarm and its drop-out and rejoin processes."""

    name: str
    share: float = Field(gt=0, le=1)
    dropout_per_hour: float = Field(0.0, ge=0)
    rejoin_mean_s: float = Field(600.0, gt=0)


class Swarm(_Strict):
    miners: int = Field(ge=1, le=1_000_000)
    classes: list[MinerClass] = Field(min_length=1)
    forward_s: Spread  # seconds per activation per layer, forward
    backward_factor: float = Field(2.0, gt=0)  # backward = factor x forward
    upload_mbit: Spread
    download_mbit: Spread
    message_overhead_s: float = Field(0.01, ge=0)
    regions: list[str] = Field(default_factory=lambda: ["us-east", "us-west", "eu", "asia"])
    latency: dict[str, float] | None = None  # optional "a>b": seconds, overrides geography
    drift: float = Field(0.1, ge=0, le=2)  # log-normal sigma of the change between epochs
    last_mile_s: float = Field(0.004, ge=0)  # median access-network latency per miner
    # Pass-to-pass variation of compute time (log-normal sigma, mean kept): contention,
    # clocks, caches. 0 = every pass of a miner takes the same time.
    pass_jitter: float = Field(0.0, ge=0, le=2)
    local_batch_size: int = Field(1, ge=1)
    # The starting layout (Apex: "Miners may initially host multiple layers"): this share of
    # the miners starts out serving 2..max_layers_per_miner consecutive layers; balancing
    # then gives every miner exactly one.
    multi_layer_share: float = Field(0.0, ge=0, le=1)
    max_layers_per_miner: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _shares(self) -> Swarm:
        total = sum(c.share for c in self.classes)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"classes' shares add up to {total:g}, not 1")
        return self


class Model(_Strict):
    layers: int | list[int] = 4  # a number, or [low, high] drawn per seed
    hidden: int = Field(2048, ge=1)
    seq: int = Field(800, ge=1)
    batch: int = Field(1, ge=1)
    bytes_per_value: int = Field(2, ge=1, le=8)
    bottleneck: float = Field(1.0, ge=1)  # activations shrink by this before the wire
    params_per_layer: float = Field(1e8, gt=0)  # for the merge phase's weight delta
    # Layers that differ in cost (an embedding, an LM head): seconds per pass of each layer
    # for a miner of median speed, replacing forward_s and backward_factor x forward_s.
    layer_forward_s: list[float] | None = None
    layer_backward_s: list[float] | None = None

    @model_validator(mode="after")
    def _layers(self) -> Model:
        lo, hi = (self.layers, self.layers) if isinstance(self.layers, int) else self.layers
        if isinstance(self.layers, list) and len(self.layers) != 2:
            raise ValueError("layers is a number or [low, high]")
        if not 1 <= lo <= hi:
            raise ValueError(f"layers must satisfy 1 <= low <= high, got {self.layers}")
        return self

    @model_validator(mode="after")
    def _layer_costs(self) -> Model:
        lo, hi = (self.layers, self.layers) if isinstance(self.layers, int) else self.layers
        for name in ("layer_forward_s", "layer_backward_s"):
            costs = getattr(self, name)
            if costs is None:
                continue
            if lo != hi or len(costs) != lo:
                raise ValueError(f"{name} needs a fixed layer count and one value per layer")
            if any(c < 0 for c in costs):
                raise ValueError(f"{name} must not be negative")
        return self

    def activation_bytes(self) -> float:
        return self.batch * self.seq * self.hidden * self.bytes_per_value / self.bottleneck


class Workload(_Strict):
    activations_per_epoch: int = Field(ge=1)
    epochs: int = Field(1, ge=1)
    in_flight_per_entry: int = Field(5, ge=1)  # orchestrator concurrency per layer-0 miner
    merge: bool = True
    # A pipeline-synchronous trainer (the swarm) takes an optimizer step between batches:
    # seconds counted at the start of each epoch (0 for the Apex task).
    step_s: float = Field(0.0, ge=0)


class Rules(_Strict):
    cache_size: int = Field(5, ge=1)
    layer_timeout_s: float = Field(60.0, gt=0)
    buffer_events: int = Field(1920, ge=0)
    route_call_limit_s: float = Field(0.5, gt=0)


class Storm(_Strict):
    """A failure storm: a share of the miners drops within a window of one epoch."""

    epoch: int = Field(0, ge=0)
    share: float = Field(0.3, gt=0, le=1)
    start_s: float = Field(0.0, ge=0)
    window_s: float = Field(60.0, gt=0)


class Scenario(_Strict):
    name: str
    description: str = ""
    swarm: Swarm
    model: Model = Model()
    workload: Workload
    rules: Rules = Rules()
    storm: Storm | None = None


def _format(exc: ValidationError, where: str) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return f"{where}: {loc}: {first['msg']}"


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def parse_scenario(raw: dict[str, Any], where: str = "scenario") -> Scenario:
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(_format(exc, where)) from None


def load_scenario(name_or_path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """A built-in scenario by name, or a TOML file; `overrides` are "a.b=value" strings."""
    path = Path(name_or_path)
    if not path.suffix and (BUILTIN_DIR / f"{name_or_path}.toml").exists():
        path = BUILTIN_DIR / f"{name_or_path}.toml"
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        names = ", ".join(builtin_names())
        raise ScenarioError(f"no scenario {name_or_path!r} (built-in: {names})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    for item in overrides or []:
        _override(raw, item)
    return parse_scenario(raw, str(path))


def _override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ScenarioError(f"--set takes KEY=VALUE (e.g. model.bottleneck=1), not {item!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    node = raw
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ScenarioError(f"--set {key}: {p} is not a table")
    node[parts[-1]] = parsed
