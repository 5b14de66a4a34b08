"""A small Llama-style decoder (RMSNorm, rotary attention, SwiGLU) cut into pipeline stages.

Stage 0 owns the token embedding, the last stage the final norm and the LM head; every
stage owns a contiguous run of blocks. With `bottleneck` > 1 a stage ends in a learned
down-projection and the next begins with the matching up-projection (as IOTA does), so
what crosses the wire is hidden / bottleneck wide. Composing the stages in order is the
whole model; tests check it equals a single-process forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    vocab: int = 30522
    dim: int = 128
    layers: int = 4
    heads: int = 4
    ffn: int = 344  # SwiGLU hidden width (about 8/3 x dim)
    max_seq: int = 256
    bottleneck: int = 1  # 1: none; k: boundary activations are dim / k wide
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError("dim must split into heads of even width")
        if self.bottleneck < 1 or self.dim % self.bottleneck:
            raise ValueError("bottleneck must divide dim")

    def to_json(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary(seq: int, width: int, base: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (seq, width/2) of rotary position embedding."""
    inv = 1.0 / base ** (torch.arange(0, width, 2, device=device, dtype=torch.float32) / width)
    angles = torch.outer(torch.arange(seq, device=device, dtype=torch.float32), inv)
    return angles.cos(), angles.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2).type_as(x)


class Block(nn.Module):
    """Pre-norm attention and SwiGLU feed-forward, each with a residual."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads, self.hd = cfg.heads, cfg.dim // cfg.heads
        self.norm1, self.norm2 = RMSNorm(cfg.dim), RMSNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.gate = nn.Linear(cfg.dim, cfg.ffn, bias=False)
        self.up = nn.Linear(cfg.dim, cfg.ffn, bias=False)
        self.down = nn.Linear(cfg.ffn, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, self.hd).unbind(2)
        q, k = _rotate(q, cos[:t, None], sin[:t, None]), _rotate(k, cos[:t, None], sin[:t, None])
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.out(att.transpose(1, 2).reshape(b, t, d))
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Stage(nn.Module):
    """Blocks [first, last) of the model plus whatever its place in the pipeline needs."""

    def __init__(self, cfg: ModelConfig, index: int, n_stages: int, first: int, last: int):
        super().__init__()
        self.cfg, self.index, self.n_stages = cfg, index, n_stages
        self.is_first, self.is_last = index == 0, index == n_stages - 1
        narrow = cfg.dim // cfg.bottleneck
        self.embed = nn.Embedding(cfg.vocab, cfg.dim) if self.is_first else None
        self.expand = None if self.is_first or cfg.bottleneck == 1 else nn.Linear(narrow, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(first, last))
        self.squeeze = None if self.is_last or cfg.bottleneck == 1 else nn.Linear(cfg.dim, narrow)
        self.norm = RMSNorm(cfg.dim) if self.is_last else None
        self.head = nn.Linear(cfg.dim, cfg.vocab, bias=False) if self.is_last else None
        cos, sin = rotary(cfg.max_seq, cfg.dim // cfg.heads, cfg.rope_base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Token ids (first stage) or boundary activations in; activations or logits out."""
        if self.embed is not None:
            if x.shape[-1] > self.cfg.max_seq:
                raise ValueError(f"sequence of {x.shape[-1]} tokens exceeds max_seq")
            x = self.embed(x)
        elif self.expand is not None:
            x = self.expand(x)
        for blk in self.blocks:
            x = blk(x, self.cos, self.sin)
        if self.is_last:
            return self.head(self.norm(x))
        return self.squeeze(x) if self.squeeze is not None else x


def split(
    cfg: ModelConfig, n_stages: int, seed: int = 0, blocks: Sequence[int] | None = None
) -> list[Stage]:
    """The model as n_stages stages (seeded init): `blocks` per stage, first to last, or
    blocks dealt as evenly as possible. Without a bottleneck the weights are the same
    whatever the split (modules are made in model order): a split moves work, not the
    model."""
    if not 1 <= n_stages <= cfg.layers:
        raise ValueError(f"{n_stages} stages for {cfg.layers} layers: need 1..{cfg.layers}")
    if blocks is None:
        bounds = [round(i * cfg.layers / n_stages) for i in range(n_stages + 1)]
    else:
        check_blocks(blocks, n_stages, cfg.layers)
        bounds = [sum(blocks[:i]) for i in range(n_stages + 1)]
    torch.manual_seed(seed)
    return [Stage(cfg, i, n_stages, bounds[i], bounds[i + 1]) for i in range(n_stages)]


def check_blocks(blocks: Sequence[int], n_stages: int, layers: int) -> None:
    """ValueError unless `blocks` deals `layers` blocks to `n_stages` stages, a middle stage
    getting at least one (the first has the embedding and the last the LM head to do, so
    either may have none: the head is often the heaviest part of a pipeline)."""
    if len(blocks) != n_stages or sum(blocks) != layers or min(blocks, default=0) < 0:
        raise ValueError(
            f"stage_layers {list(blocks)} must give each of the {n_stages} stages its blocks, "
            f"{layers} in all"
        )
    if any(b < 1 for b in blocks[1:-1]):
        raise ValueError(f"stage_layers {list(blocks)}: a middle stage needs a block")


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
