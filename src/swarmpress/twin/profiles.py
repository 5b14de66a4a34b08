"""Codec profiles: what a codec does to a transfer (wire ratio, encode and decode speed, per
tensor role), measured by `swarmpress bench` or given by hand.

A transfer of S bytes over bandwidth B costs S / C + r S / B + S / D seconds (C, D: encode
and decode bytes per second, r: ratio), so a codec pays off below the break-even bandwidth
B* = (1 - r) / (1 / C + 1 / D), the same figure the bench reports.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from swarmpress.errors import UsageError

BUILTIN = Path(__file__).with_name("profiles.json")
ROLES = ("activation", "gradient", "weight_delta")


class ProfileError(UsageError, ValueError):
    """An unknown codec profile or a malformed profile file."""


@dataclass(frozen=True)
class RoleProfile:
    ratio: float = 1.0
    compress_bps: float = math.inf  # bytes per second
    decompress_bps: float = math.inf

    def seconds(self, nbytes: float) -> float:
        """Encode plus decode time of nbytes."""
        return nbytes / self.compress_bps + nbytes / self.decompress_bps

    def break_even_bps(self) -> float:
        cost = 1 / self.compress_bps + 1 / self.decompress_bps
        return math.inf if cost == 0 else max(0.0, 1 - self.ratio) / cost


@dataclass(frozen=True)
class CodecProfile:
    name: str
    activation: RoleProfile = RoleProfile()
    gradient: RoleProfile = RoleProfile()
    weight_delta: RoleProfile = RoleProfile()
    source: str = ""

    def role(self, role: str) -> RoleProfile:
        return getattr(self, role)

    def to_json(self) -> dict:
        return {
            k: (asdict(v) if isinstance(v, RoleProfile) else v) for k, v in self.__dict__.items()
        }


NONE = CodecProfile("none", source="no codec: raw bf16 bytes")


def _role(d: dict, where: str) -> RoleProfile:
    try:
        r = RoleProfile(float(d["ratio"]), float(d["compress_bps"]), float(d["decompress_bps"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"{where}: needs ratio, compress_bps, decompress_bps ({exc})") from None
    if not (0 < r.ratio <= 4 and r.compress_bps > 0 and r.decompress_bps > 0):
        raise ProfileError(f"{where}: ratio must be in (0, 4] and speeds positive")
    return r


def load_profiles(path: str | Path = BUILTIN) -> dict[str, CodecProfile]:
    """Profiles from a JSON file: {"profiles": {name: {activation, gradient, weight_delta}}}."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ProfileError(f"cannot read codec profiles from {path}: {exc}") from None
    out = {"none": NONE}
    for name, d in raw.get("profiles", {}).items():
        roles = {r: _role(d[r], f"{path}: {name}.{r}") for r in ROLES if r in d}
        out[name] = CodecProfile(name, **roles, source=d.get("source", str(path)))
    return out


def get_profile(name: str, path: str | Path | None = None) -> CodecProfile:
    profiles = load_profiles(path or BUILTIN)
    if name not in profiles:
        raise ProfileError(f"no codec profile {name!r}; known: {', '.join(sorted(profiles))}")
    return profiles[name]


#: The model whose bench figures feed the twin by default: the real Llama-architecture model
#: of the default corpus, cut where a pipeline cuts it (what a swarm actually ships).
DEFAULT_BENCH_MODEL = "SmolLM2-135M-Instruct"


def _bench_models(aggregates: list[dict]) -> list[str]:
    return list(dict.fromkeys(a["model"] for a in aggregates if a.get("model")))


def _pick_model(aggregates: list[dict], model: str) -> str:
    """The bench model name that `model` means: an exact name, else the one model it is a
    case-insensitive prefix of ('smollm2' -> 'SmolLM2-135M-Instruct'), else the one model it
    is a case-insensitive part of ('minilm' -> 'all-MiniLM-L6-v2')."""
    models = _bench_models(aggregates)
    if model in models:
        return model
    key = model.lower()
    hits: list[str] = []
    for match in (str.startswith, str.__contains__):
        hits = [m for m in models if match(m.lower(), key)]
        if hits:
            break
    if len(hits) == 1:
        return hits[0]
    known = ", ".join(models) or "none"
    why = "is ambiguous" if hits else "is not in it"
    raise ProfileError(f"model {model!r} {why}; the bench result has: {known}")


def from_bench(bench_json: str | Path, model: str = DEFAULT_BENCH_MODEL) -> dict:
    """Profiles file contents from a `swarmpress bench --json` result: the bf16 means of one
    model's activation and gradient groups, per codec (gradients stand in for weight deltas).

    model: which model's figures to use, by name or a unique case-insensitive prefix or
    part ('smollm2', 'minilm'); default SmolLM2-135M-Instruct, the real Llama-architecture
    model of the default corpus, because its tensors are what a pipeline ships (MiniLM's
    are smaller and easier, the synthetic family is a stress case). Codecs that failed or
    missed the similarity target on any tensor of the model are left out. bench.json files
    written before the bench grouped by model have no `model` key in their aggregates:
    then the `family == "model"` means are used (every real model pooled) and `model` is
    ignored. Raises ProfileError (a ValueError) when the result has no such model.
    """
    d = json.loads(Path(bench_json).read_text())
    machine = d.get("meta", {}).get("machine", {})
    aggs = [a for a in d["aggregates"] if a["dtype"] == "bfloat16" and a["kind"] == "codec"]
    if any("model" in a for a in d["aggregates"]):
        chosen = _pick_model(d["aggregates"], model)
        aggs = [a for a in aggs if a.get("model") == chosen]
        what = f"{chosen}, bf16 means"
    else:  # an older bench.json: one group per family
        aggs = [a for a in aggs if a["family"] == "model"]
        what = "all real models pooled (bench.json without per-model groups), bf16 means"
    where = ", ".join(str(machine[k]) for k in ("cpu", "date") if machine.get(k))
    out: dict = {}
    for a in aggs:
        if a["n_errors"] or (not a["lossless"] and a["n_below_target"]):
            continue
        role = {"activation": "activation", "gradient": "gradient"}.get(a["role"])
        if role is None:
            continue
        entry = out.setdefault(a["codec"], {"source": f"swarmpress bench ({what}) on {where}"})
        entry[role] = {
            "ratio": a["mean_ratio"],
            "compress_bps": a["compress_mbps"] * 1e6,
            "decompress_bps": a["decompress_mbps"] * 1e6,
        }
    for entry in out.values():  # weight deltas: no corpus of their own; gradients stand in
        if "gradient" in entry:
            entry.setdefault("weight_delta", dict(entry["gradient"]))
    return {"profiles": {k: v for k, v in out.items() if "activation" in v and "gradient" in v}}
