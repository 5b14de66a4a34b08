"""A swarm run's configuration: model, pipeline shape, codecs per role, links, faults.

Presets (`tiny`, `small`, `uplink`) are embedded; a TOML file may set any field, and the
CLI's flags override both. Errors name the field and the rule, in one line.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from swarmpress.codecs import CodecError
from swarmpress.errors import UsageError
from swarmpress.swarm.links import LinkError, LinkSpec, parse_link
from swarmpress.swarm.model import ModelConfig, check_blocks
from swarmpress.swarm.role_codecs import WIRE_DTYPES, stream_problem


class ConfigError(UsageError, ValueError):
    """A configuration that cannot run, naming the field."""


class SwarmConfig(BaseModel):
    """Everything a run needs; the same seed and config give the same data and init."""

    model_config = ConfigDict(extra="forbid")

    # model
    dim: int = Field(128, ge=8)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    ffn: int = Field(344, ge=8)
    seq_len: int = Field(128, ge=8, le=4096)
    bottleneck: int = Field(1, ge=1)
    # pipeline
    stages: int = Field(2, ge=1, le=64)
    stage_layers: list[int] | None = Field(
        None,
        description="blocks per stage, first to last (default: dealt evenly); the last "
        "stage also runs the LM head, so giving it fewer blocks balances the pipeline",
    )
    replicas: int = Field(2, ge=1, le=64)
    microbatch: int = Field(4, ge=1, description="sequences per micro-batch")
    microbatches: int = Field(4, ge=1, description="micro-batches per optimizer step")
    steps: int = Field(30, ge=1)
    # optimisation
    lr: float = Field(3e-3, gt=0)
    warmup: int = Field(5, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    seed: int = 0
    merge_every: int = Field(10, ge=1, description="DiLoCo outer step every H inner steps")
    outer_lr: float = Field(0.7, gt=0)
    outer_momentum: float = Field(0.9, ge=0, lt=1)
    # codecs and wire
    codec_activation: str = "lossy"
    codec_gradient: str = "lossy"
    codec_delta: str = "topk:density=0.05:bits=4"
    codec_weights: str = "lossless:mode=fast"
    error_feedback: bool = Field(
        True,
        description="keep what the weight-delta codec did not send and add it to the next "
        "round's pseudo-gradient (error feedback, as SparseLoCo)",
    )
    wire_dtype: str = "float32"
    link: str = "none"
    # routing and faults
    router: str = "pending"
    kill_every: int = Field(0, ge=0, description="kill one replica every N steps (0: never)")
    respawn: bool = True
    heartbeat_s: float = Field(0.25, gt=0)
    dead_after_s: float = Field(3.0, gt=0)
    sample_timeout_s: float = Field(60.0, gt=0)
    start_timeout_s: float = Field(180.0, gt=0, description="wait for all workers to be ready")
    # data
    text: str = "pydoc"
    tokenizer: str = "minilm"

    @field_validator("wire_dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in WIRE_DTYPES:
            raise ValueError(f"must be one of {', '.join(WIRE_DTYPES)}")
        return v

    @field_validator("link")
    @classmethod
    def _link(cls, v: str) -> str:
        try:
            parse_link(v)
        except LinkError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("codec_activation", "codec_gradient", "codec_delta", "codec_weights")
    @classmethod
    def _codec(cls, v: str, info: ValidationInfo) -> str:
        try:
            problem = stream_problem(v)
        except CodecError as exc:
            raise ValueError(str(exc)) from None
        if problem is not None:
            # Every receiver decodes each frame alone: a codec whose receiver must follow one
            # stream in order would see its frames refused (and a merge wait forever).
            raise ValueError(f"{info.field_name}={v!r} cannot be used: {problem}")
        return v

    @field_validator("router")
    @classmethod
    def _router(cls, v: str) -> str:
        from swarmpress.twin.policies import ROUTERS

        if v not in ROUTERS:
            raise ValueError(f"unknown router {v!r}; known: {', '.join(sorted(ROUTERS))}")
        return v

    @model_validator(mode="after")
    def _shape(self) -> SwarmConfig:
        if self.stages > self.layers:
            raise ValueError(f"stages ({self.stages}) cannot exceed layers ({self.layers})")
        if self.stage_layers is not None:
            check_blocks(self.stage_layers, self.stages, self.layers)
        self.model_cfg(vocab=2)  # dim/heads/bottleneck rules
        return self

    @property
    def link_spec(self) -> LinkSpec:
        return parse_link(self.link)

    def model_cfg(self, vocab: int) -> ModelConfig:
        try:
            return ModelConfig(
                vocab=vocab,
                dim=self.dim,
                layers=self.layers,
                heads=self.heads,
                ffn=self.ffn,
                max_seq=self.seq_len,
                bottleneck=self.bottleneck,
            )
        except ValueError as exc:
            raise ValueError(f"model: {exc}") from None


# A consumer uplink: 20 Mbit/s each way per worker, 50 ms one way (what `swarm train` runs
# on when nothing names a link; links.parse_link reads it).
CONSUMER_UPLINK = "20mbit:50ms"
# The codec the `uplink` preset sends activations and gradients with (benchmarks/
# swarm_bench.py, part `uplink`, measures it against `none` on the same preset). No low-rank
# part (max_rank=0): on 2 CPU cores the compressed step is bound by compute, and on these
# 512 x 128 bf16 tensors the basis cost about 1 ms of CPU per encode where one was chosen
# (0.25 ms of held-out check elsewhere) for 4-7 % fewer activation bytes and none on the
# gradients: 1.32 against 1.43 s per step, measured back to back (docs/swarm.md).
UPLINK_CODEC = "lossy:mode=fast:value=0.95:max_rank=0"

PRESETS: dict[str, dict[str, Any]] = {
    # Trains in about a minute on 2 cores: 2 stages x 2 replicas.
    "tiny": {},
    # Link-bound: wider activations, longer sequences.
    "small": {"dim": 256, "ffn": 688, "seq_len": 256, "heads": 8, "layers": 4},
    # Training where users are: every worker behind a consumer uplink, bfloat16 on the wire
    # (as IOTA sends activations), a lossy codec (similarity 0.95 on every tensor) on
    # activations and gradients. 3 stages x 1 replica, the tiny preset's width: the middle
    # stage's uplink carries activations forward and gradients back, so on 2 CPU cores the
    # uncompressed step is link-bound, and the compressed one is bound by compute. The last
    # stage's LM head over the text's vocabulary costs about two blocks, so the blocks are
    # dealt 2, 1, 0 (the last stage keeps the head alone; dealt 1, 1, 1 it held the
    # pipeline's critical path: 1.68 against 1.56 s per step compressed, measured). 32
    # micro-batches a step keep the pipeline's fill (4 hops of 50 ms) a small part of it.
    # One replica per stage: every micro-batch takes the same path, a killed worker ends
    # the run (use replicas >= 2 for the fault drill), and there is nothing to merge: the
    # outer step (outer_lr 1, no momentum) leaves the weights as they are.
    "uplink": {
        "layers": 3,
        "stages": 3,
        "stage_layers": [2, 1, 0],
        "replicas": 1,
        "outer_lr": 1.0,
        "outer_momentum": 0.0,
        "microbatches": 32,
        "wire_dtype": "bfloat16",
        "link": CONSUMER_UPLINK,
        "codec_activation": UPLINK_CODEC,
        "codec_gradient": UPLINK_CODEC,
    },
}


def config_errors(exc: ValidationError) -> str:
    """A pydantic error as one line: `field: rule; field: rule`."""
    errs = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        errs.append(f"{where}: {msg}")
    return "; ".join(errs)


def build_config(
    preset: str | None = "tiny", path: str | Path | None = None, **overrides: Any
) -> SwarmConfig:
    """A preset, then a TOML file, then explicit overrides (None values are ignored)."""
    data: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        data.update(PRESETS[preset])
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        if "swarm" in loaded:
            stray = sorted(k for k in loaded if k != "swarm")
            if stray:
                raise ConfigError(
                    f"{p}: keys outside the [swarm] table would be ignored: {', '.join(stray)}"
                )
            loaded = loaded["swarm"]
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: [swarm] must be a table")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return SwarmConfig(**data)
    except ValidationError as exc:
        raise ConfigError(config_errors(exc)) from None
