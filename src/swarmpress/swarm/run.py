"""Run the swarm from a configuration: one training run, or the same run once per codec.

`train` builds the token data, starts the orchestrator (which spawns the stage workers, or
waits for remote ones to dial in) and returns the run's result (report.RunResult) in its
JSON form, what the CLI prints; `compare` repeats it with the same seed and data for each
codec, so only the codec differs between rows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from swarmpress.swarm.config import ConfigError, SwarmConfig, build_config
from swarmpress.swarm.orchestrator import Orchestrator, SwarmError
from swarmpress.swarm.role_codecs import codec_spec
from swarmpress.swarm.text import DataError, TokenData

StepFn = Callable[[int, dict], None]


def load_data(cfg: SwarmConfig) -> TokenData:
    """The run's tokenized text; DataError when the text or tokenizer cannot be used."""
    data = TokenData.build(cfg.text, cfg.tokenizer)
    need = cfg.seq_len + 1
    if data.region("eval").size <= need:
        raise DataError(
            f"training text {data.label} is too short for seq_len {cfg.seq_len}: "
            f"{data.ids.size} tokens in all, the held-out tenth needs more than {need}"
        )
    return data


def train(
    cfg: SwarmConfig,
    data: TokenData | None = None,
    on_step: StepFn | None = None,
    listen: str | None = None,
    remote_workers: bool = False,
    run_dir: str | Path | None = None,
    keys: str | Path | None = None,
) -> dict:
    """One training run; report.RunResult.to_json() of its result.

    listen: "HOST:PORT" for the orchestrator (default: loopback, a free port);
    remote_workers: spawn nothing and wait for `swarmpress swarm worker` processes;
    keys: the folder `swarmpress swarm keys` made (CurveZMQ for dial-in workers).
    """
    data = data or load_data(cfg)
    host, port = "127.0.0.1", 0
    if listen:
        host, _, p = listen.rpartition(":")
        if not host or not p.isdigit():
            raise ConfigError(f"--listen takes HOST:PORT, not {listen!r}")
        port = int(p)
    orch = Orchestrator(
        cfg, data, host=host, port=port, spawn=not remote_workers, on_step=on_step,
        run_dir=run_dir, keys_dir=keys,
    )  # fmt: skip
    return orch.run().to_json()


def with_codec(cfg: SwarmConfig, codec: str) -> SwarmConfig:
    """cfg with `codec` on activations and gradients (the weight-delta codec stays)."""
    return cfg.model_copy(update={"codec_activation": codec, "codec_gradient": codec})


def compare(
    cfg: SwarmConfig,
    codecs: list[str],
    on_step: Callable[[str, int, dict], None] | None = None,
) -> list[dict]:
    """The same run (seed, data, routing policy) once per codec, in order."""
    if not codecs:
        raise ConfigError("compare needs at least one codec")
    runs = [build_config(None, **with_codec(cfg, c).model_dump()) for c in codecs]  # validated
    data = load_data(cfg)
    results = []
    for codec, run_cfg in zip(codecs, runs, strict=True):
        step_fn = None if on_step is None else (lambda s, info, c=codec: on_step(c, s, info))
        res = train(run_cfg, data, on_step=step_fn)
        results.append(res | {"label": codec, "codec_spec": codec_spec(codec)})
    return results


__all__ = ["ConfigError", "DataError", "SwarmError", "compare", "load_data", "train"]
