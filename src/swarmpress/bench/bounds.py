"""Theoretical limits to put next to every codec: field entropies and a Gaussian RD bound.

Two reference points per tensor, so a codec's ratio reads as "how far from the limit":

**Lossless: order-0 field entropy.** A float is split into its sign, exponent and mantissa
fields (bf16 1/8/7 bits, fp16 1/5/10, fp32 1/8/23); the empirical order-0 entropy of each
field, summed, is the size an ideal entropy coder reaches when it codes the fields
independently, value by value, with no context. It is the yardstick of ZipNN / DFloat11
style coders (the exponent carries about 2.6-2.9 bits, sign and mantissa are near random).
It is not a hard floor: a coder that models context (neighbouring values, channels) can go
below it. The fp32 mantissa is counted as three chunks (7 + 8 + 8 bits) whose entropies are
summed, because a 2**23-symbol histogram from a tensor of a few hundred thousand values
underestimates the entropy (it can never exceed log2 of the sample count).

**Lossy: the Gaussian rate-distortion bound after a channel KLT.** The last axis is the
channel axis. Rows (all leading axes flattened, N of them) are treated as N samples of an
h-dimensional vector. After subtracting the channel mean mu, the sample covariance C has
eigenvalues lambda_i (the KLT decorrelates the channels). For a Gaussian vector with those
eigenvalues, the minimum rate at mean squared error D per row is given by reverse
water-filling::

    D = sum_i min(theta, lambda_i),      R(D) = sum_i max(0, 1/2 log2(lambda_i / theta))

bits per row; divided by h it is bits per value, and bits / (8 * itemsize of the original
dtype) is the implied ratio. Caveats, all in the optimistic direction except the first:

- Among sources with a given covariance the Gaussian has the largest R(D), so for real
  (heavy-tailed, non-Gaussian) activations the true R(D) is lower: this is the rate of an
  ideal KLT transform coder with Gaussian-optimal quantization, not a hard floor.
- The cost of sending the basis (h*h/2 numbers) and the mean (h numbers) is ignored; the
  mean is assumed known to the receiver, so its energy is "free" and all the distortion
  budget goes to the centred data.
- The covariance is estimated from the same tensor; with fewer rows than channels it has at
  most N - 1 non-zero eigenvalues and the bound gets very optimistic.

**From the similarity target to D.** The Apex similarity is sim = cos(x, y) * (1 - e) with
e = ||x - y|| / ||x||. In the optimal test channel of reverse water-filling the
reconstruction y and the error z = x - y are independent, so (for large tensors, where the
sample inner products concentrate) z is orthogonal to y::

    ||x||^2 = ||y||^2 + ||z||^2   =>   ||y|| = ||x|| sqrt(1 - e^2),
    x . y = (y + z) . y = ||y||^2 =>   cos(x, y) = ||y|| / ||x|| = sqrt(1 - e^2),

hence sim(e) = (1 - e) * sqrt(1 - e^2), which decreases monotonically on [0, 1];
`rel_error_for_similarity` inverts it by bisection. For comparison, an error orthogonal to
the signal (independent quantization noise) gives sim = (1 - e) / sqrt(1 + e^2), and the
best case cos = 1 gives sim = 1 - e; at sim = 0.99 the first two both give e = 0.009951
(they agree to third order in e) and the third e = 0.0100, which changes the rate by at most
log2(0.0100 / 0.009951) = 0.007 bits per active component (theta scales with e^2).

The distortion budget is then D = e^2 * mean_r ||x_r||^2 per row (the energy includes the
mean, since the similarity is measured on the raw tensor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from swarmpress.codecs.core.tensors import BF16

# (name, bit offset of the least significant bit, width) per float layout, most significant first.
FIELDS: dict[str, tuple[tuple[str, int, int], ...]] = {
    "bfloat16": (("sign", 15, 1), ("exponent", 7, 8), ("mantissa", 0, 7)),
    "float16": (("sign", 15, 1), ("exponent", 10, 5), ("mantissa", 0, 10)),
    "float32": (("sign", 31, 1), ("exponent", 23, 8), ("mantissa", 0, 23)),
}
# Chunks a wide field is histogrammed in (entropies summed): avoids small-sample bias.
_CHUNKS = {("float32", "mantissa"): ((16, 7), (8, 8), (0, 8))}
_NP_DTYPES = {"bfloat16": BF16, "float16": np.dtype(np.float16), "float32": np.dtype(np.float32)}


def dtype_name(dtype: np.dtype) -> str:
    """'bfloat16', 'float16' or 'float32' for a numpy dtype; ValueError otherwise."""
    for name, dt in _NP_DTYPES.items():
        if np.dtype(dtype) == dt:
            return name
    raise ValueError(f"no bound for dtype {dtype}; expected bfloat16, float16 or float32")


def entropy_bits(symbols: np.ndarray, nsymbols: int) -> float:
    """Empirical order-0 entropy in bits per symbol of non-negative integer symbols."""
    if symbols.size == 0:
        return 0.0
    counts = np.bincount(symbols.reshape(-1), minlength=nsymbols)
    counts = counts[counts > 0].astype(np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


@dataclass
class FieldEntropy:
    """Order-0 entropy of one float field (bits per value) against its width."""

    name: str
    width: int
    bits: float


@dataclass
class EntropyBound:
    """Lossless reference: summed order-0 entropies of sign, exponent and mantissa."""

    dtype: str
    fields: list[FieldEntropy]
    bits_per_value: float
    ratio: float

    @property
    def exponent_bits(self) -> float:
        return next(f.bits for f in self.fields if f.name == "exponent")


def entropy_bound(arr: np.ndarray) -> EntropyBound:
    """Field entropies of a float tensor (bits per value) and the implied lossless ratio."""
    name = dtype_name(arr.dtype)
    itemsize = arr.dtype.itemsize
    bits = np.ascontiguousarray(arr).reshape(-1).view(np.uint16 if itemsize == 2 else np.uint32)
    fields: list[FieldEntropy] = []
    for fname, shift, width in FIELDS[name]:
        chunks = _CHUNKS.get((name, fname), ((shift, width),))
        h = 0.0
        for cshift, cwidth in chunks:
            sym = (bits >> cshift) & ((1 << cwidth) - 1)
            h += entropy_bits(sym.astype(np.int64), 1 << cwidth)
        fields.append(FieldEntropy(fname, width, h))
    total = sum(f.bits for f in fields)
    return EntropyBound(name, fields, total, total / (8 * itemsize))


# ----------------------------------------------------------------------------- lossy
def similarity_of_rel_error(e: float) -> float:
    """Apex similarity of the RD test channel at relative L2 error e: (1-e) * sqrt(1-e^2)."""
    e = min(max(e, 0.0), 1.0)
    return (1.0 - e) * math.sqrt(1.0 - e * e)


def rel_error_for_similarity(target: float) -> float:
    """The relative L2 error e at which (1 - e) * sqrt(1 - e^2) equals target (0 < target <= 1)."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"similarity target must be in (0, 1], got {target}")
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if similarity_of_rel_error(mid) >= target:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class Spectrum:
    """Channel-covariance eigenvalues of a tensor (rows x channels) and its energy per row."""

    eigenvalues: np.ndarray  # length = channels, ascending, >= 0 (covariance, mean removed)
    energy_per_row: float  # mean_r ||x_r||^2, mean included
    rows: int
    channels: int


def channel_spectrum(arr: np.ndarray) -> Spectrum:
    """Eigenvalues of the channel covariance (last axis = channels, rows = leading axes).

    A 1-D tensor is read as n samples of one channel (one row would make everything "mean").
    """
    x = np.asarray(arr)
    h = int(x.shape[-1]) if x.ndim >= 2 else 1  # a 1-D tensor: one channel, n samples
    x = x.astype(np.float64).reshape(-1, max(h, 1))
    n = x.shape[0]
    if not np.isfinite(x).all():
        raise ValueError("tensor has NaN or infinite values; no Gaussian bound")
    energy = float(np.einsum("ij,ij->", x, x)) / max(n, 1)
    xc = x - x.mean(axis=0)
    if n >= h:
        ev = np.linalg.eigvalsh(xc.T @ xc / n)
    else:  # the Gram matrix has the same non-zero eigenvalues and is smaller
        ev = np.concatenate([np.linalg.eigvalsh(xc @ xc.T / n), np.zeros(h - n)])
    ev = np.sort(np.clip(ev, 0.0, None))
    return Spectrum(ev, energy, n, h)


def water_fill(eigenvalues: np.ndarray, distortion: float) -> tuple[float, float]:
    """Reverse water-filling: (theta, rate in bits per row) for total distortion D per row.

    Solves sum_i min(theta, lambda_i) = D exactly (piecewise linear in theta) and returns
    R = sum_i max(0, 1/2 log2(lambda_i / theta)). D >= sum(lambda) gives rate 0.
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    total = float(lam.sum())
    if distortion >= total or lam.size == 0:
        return (float(lam[-1]) if lam.size else 0.0), 0.0
    if distortion <= 0:
        return 0.0, math.inf
    prefix = np.concatenate([[0.0], np.cumsum(lam)])
    m = lam.size
    theta = 0.0
    for k in range(m):  # k smallest eigenvalues lie below the water level
        theta = (distortion - prefix[k]) / (m - k)
        if theta <= lam[k] and (k == 0 or theta >= lam[k - 1]):
            break
    above = lam[lam > theta]
    return float(theta), float(0.5 * np.log2(above / theta).sum())


@dataclass
class RDBound:
    """Lossy reference: Gaussian R(D) after a channel KLT at a similarity target."""

    target_similarity: float
    rel_error: float
    bits_per_value: float
    ratio: float
    rows: int
    channels: int
    active_components: int  # eigenvalues above the water level
    theta: float
    notes: list[str] = field(default_factory=list)


def gaussian_rd_bound(
    spectrum: Spectrum, target_similarity: float = 0.99, itemsize: int = 2
) -> RDBound:
    """Bits per value (and ratio against itemsize bytes) an ideal KLT coder needs for target."""
    e = rel_error_for_similarity(target_similarity)
    d = e * e * spectrum.energy_per_row
    theta, rate = water_fill(spectrum.eigenvalues, d)
    bits = rate / spectrum.channels
    notes = ["basis and mean cost ignored", "Gaussian assumption (worst case for this covariance)"]
    if spectrum.rows < spectrum.channels:
        notes.append(f"only {spectrum.rows} rows for {spectrum.channels} channels: optimistic")
    return RDBound(
        target_similarity=target_similarity,
        rel_error=e,
        bits_per_value=bits,
        ratio=bits / (8 * itemsize),
        rows=spectrum.rows,
        channels=spectrum.channels,
        active_components=int((spectrum.eigenvalues > theta).sum()),
        theta=theta,
        notes=notes,
    )


@dataclass
class TensorBounds:
    """Both limits for one tensor (rd is None with a reason when it cannot be computed)."""

    tensor: str
    family: str
    role: str
    dtype: str
    entropy: EntropyBound
    rd: RDBound | None
    rd_error: str | None = None
    model: str = ""  # the corpus entry's model, so bounds group per model like the codecs


def tensor_bounds(
    arr: np.ndarray,
    target_similarity: float = 0.99,
    *,
    tensor: str = "",
    family: str = "",
    role: str = "",
    model: str = "",
    spectrum: Spectrum | None = None,
) -> TensorBounds:
    """Entropy bound and Gaussian RD bound of one tensor."""
    ent = entropy_bound(arr)
    rd: RDBound | None = None
    err: str | None = None
    try:
        spec = spectrum if spectrum is not None else channel_spectrum(arr)
        rd = gaussian_rd_bound(spec, target_similarity, arr.dtype.itemsize)
    except (ValueError, np.linalg.LinAlgError) as exc:
        err = str(exc)
    return TensorBounds(tensor, family, role, ent.dtype, ent, rd, err, model)
