"""Competition definitions: a track, its pool, round length, sandbox limits, reveal delay,
beat margin and submission rules, read from and written to TOML (DESIGN.md "Arena contract").

    [[competition]]
    name = "lossless"
    track = "lossless"
    tensors_per_round = 8
    round_seconds = 86400
    reveal_delay_seconds = 86400
    margin = 0.01
    [competition.limits]
    wall_s = 60
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from swarmpress.arena.sandbox import Limits
from swarmpress.errors import UsageError

TRACKS = ("lossless", "lossy", "routing")
EMBEDDED_ROUND = 8  # the embedded pool is small; real pools use Apex's 400 per round


class ArenaConfigError(UsageError, ValueError):
    """A competition file that cannot be used; the message names the field."""


class LimitsModel(BaseModel):
    """Sandbox limits of one call (see sandbox.Limits)."""

    model_config = ConfigDict(extra="forbid")
    wall_s: float = Field(60.0, gt=0, le=3600)
    startup_s: float = Field(60.0, gt=0, le=3600)
    cpu_s: int = Field(60, gt=0, le=3600)
    memory_bytes: int = Field(1 << 30, ge=64 << 20)
    nproc: int = Field(64, ge=4, le=4096)
    tmp_bytes: int = Field(64 << 20, ge=1 << 20)
    log_bytes: int = Field(64 << 10, ge=1024)
    max_output_bytes: int = Field(256 << 20, ge=1024)

    def to_limits(self) -> Limits:
        return Limits(**self.model_dump())


class Competition(BaseModel):
    """One track with its rules."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    track: Literal["lossless", "lossy", "routing"]
    description: str = ""
    tensors_per_round: int = Field(400, ge=1, le=10_000)  # Apex's round size
    round_seconds: int = Field(86_400, ge=1)
    reveal_delay_seconds: int = Field(86_400, ge=0)
    margin: float = Field(0.01, ge=0.0, le=1.0)
    similarity: float = Field(0.99, gt=0.0, lt=1.0)
    max_file_bytes: int = Field(65_536, ge=100, le=1 << 20)  # community entries run to ~29 KB
    submissions_per_day: int = Field(4, ge=1)
    max_attempts: int = Field(3, ge=1, le=20)
    # routing track: a twin scenario (built-in name) with overrides, scored over seeds
    scenario: str = "apex-default"
    scenario_overrides: list[str] = Field(default_factory=list)
    seeds: int = Field(5, ge=1, le=101)
    # the packages an entry sees (envs.py; empty: the Apex environment of the track) and
    # the sandbox engine (auto: gVisor where it runs, else bubblewrap)
    environment: str = Field("", pattern=r"^[a-z0-9-]{0,64}$")
    sandbox: Literal["auto", "gvisor", "bwrap"] = "auto"
    limits: LimitsModel = LimitsModel()

    @property
    def env_name(self) -> str:
        """The solution environment entries of this competition run in."""
        if self.environment:
            return self.environment
        return "apex-iota-simulator" if self.track == "routing" else "apex-matrix-compression"


class ArenaConfig(BaseModel):
    """Every competition of one arena."""

    model_config = ConfigDict(extra="forbid")
    competition: list[Competition]

    def get(self, name: str) -> Competition:
        for c in self.competition:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.competition)
        raise ArenaConfigError(f"no competition named {name!r}; known: {known}")


def load_config(path: str | Path) -> ArenaConfig:
    """Read and validate an arena TOML file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ArenaConfigError(f"arena config {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ArenaConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        cfg = ArenaConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ArenaConfigError(f"{path}: {where}: {first['msg']}") from None
    names = [c.name for c in cfg.competition]
    if len(set(names)) != len(names):
        raise ArenaConfigError(f"{path}: competition names repeat: {names}")
    return cfg


def default_config() -> ArenaConfig:
    """The embedded default: lossless and lossy tracks on the embedded corpus pool, and a
    routing track in the twin."""
    return ArenaConfig(
        competition=[
            Competition(
                name="lossless",
                track="lossless",
                description="bit-exact bf16 compression; Apex lossless score",
                tensors_per_round=EMBEDDED_ROUND,
            ),
            Competition(
                name="lossy",
                track="lossy",
                description="bf16 compression at similarity > 0.99; Apex lossy score",
                tensors_per_round=EMBEDDED_ROUND,
            ),
            routing_competition(),
        ]
    )


def routing_competition(name: str = "routing") -> Competition:
    """A routing track on a shortened apex-default scenario (100 activations x 2 epochs per
    seeded task, so five tasks fit one sandboxed evaluation)."""
    return Competition(
        name=name,
        track="routing",
        description="routing + balancing server (Apex IOTA-simulator contract) in the twin; "
        "median Apex score over 5 seeded tasks",
        tensors_per_round=1,
        scenario="apex-default",
        scenario_overrides=["workload.activations_per_epoch=100", "workload.epochs=2"],
        limits=LimitsModel(wall_s=600, startup_s=60, cpu_s=600, nproc=128),
    )


def dump_config(cfg: ArenaConfig) -> str:
    """TOML text for a config (what `arena init` writes)."""
    lines: list[str] = []
    for c in cfg.competition:
        lines.append("[[competition]]")
        data = c.model_dump()
        limits = data.pop("limits")
        for k, v in data.items():
            lines.append(f"{k} = {_toml(v)}")
        lines.append("[competition.limits]")
        lines += [f"{k} = {_toml(v)}" for k, v in limits.items()]
        lines.append("")
    return "\n".join(lines)


def _toml(v: object) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)
