"""Scale-conditioned entropy models for quantized residuals (the scale-table approach).

Every symbol r (an integer quantization residual) gets a scale index k, known to the
decoder from side information; bucket k models r with a discretized zero-mean
distribution of scale 2**(k / STEPS_PER_OCTAVE). The tables are computed identically on
both sides from (family, k) with IEEE-exact arithmetic only (no libm), so nothing but the
family and the scale indices is sent and every platform builds the same models.

Large scales keep their low bits raw: the top of r goes through the model with the scale
divided by 2**low, the low bits are near-uniform and cost exactly `low` bits. Values beyond
the modelled range take an escape symbol and travel verbatim in a side stream.
"""

from __future__ import annotations

import functools
import math

import constriction
import numpy as np

from swarmpress.codecs.core.errors import CodecError

STEPS_PER_OCTAVE = 4
FAMILIES = ("laplace", "gaussian", "logistic")
MAX_MODEL_SCALE = 48.0  # scales above this send low bits raw
TAIL = 16.0  # modelled range: |r| <= TAIL * scale (+ 1)
_FLOOR = 1e-9
_SQRT2 = math.sqrt(2.0)
_LOGISTIC = math.pi / math.sqrt(3.0)


def bucket_scale(k: np.ndarray | int) -> np.ndarray:
    """Scale (in quantization steps) of bucket k."""
    return np.exp2(np.asarray(k, dtype=np.float64) / STEPS_PER_OCTAVE)


def raw_bits(k: int) -> int:
    """Low bits of r sent raw for bucket k (0 for moderate scales)."""
    s = float(bucket_scale(k))
    return max(0, int(np.floor(np.log2(s / MAX_MODEL_SCALE))) + 1) if s > MAX_MODEL_SCALE else 0


def _exp_nonpositive(x: np.ndarray) -> np.ndarray:
    """exp(x) for x <= 0 from +, *, / only (IEEE exact), so every platform gets the same bits.

    numpy's exp picks SIMD kernels by CPU; a one-ulp difference between sender and receiver
    could move a quantized probability and desynchronize the range coder. Range reduction
    by 2**-10, a degree-12 Taylor polynomial, then ten squarings (relative error < 1e-10).
    """
    y = np.maximum(x, -745.0) / 1024.0
    acc = np.ones_like(y)
    for k in range(12, 0, -1):
        acc = 1.0 + acc * y / float(k)
    for _ in range(10):
        acc = acc * acc
    return acc


def cdf(family: str, z: np.ndarray) -> np.ndarray:
    """CDF of a unit-variance family, computed with _exp_nonpositive only."""
    a = np.abs(z)
    if family == "laplace":
        tail = 0.5 * _exp_nonpositive(-a * _SQRT2)
    elif family == "logistic":
        e = _exp_nonpositive(-a * _LOGISTIC)
        tail = e / (1.0 + e)
    elif family == "gaussian":
        # Abramowitz & Stegun 7.1.26 for erfc(a / sqrt 2), |error| < 1.5e-7.
        u = a / _SQRT2
        t = 1.0 / (1.0 + 0.3275911 * u)
        poly = t * (
            0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
        )
        tail = 0.5 * poly * _exp_nonpositive(-u * u)
    else:
        raise CodecError(f"unknown entropy model family {family!r}")
    return np.where(z < 0, tail, 1.0 - tail)


@functools.lru_cache(maxsize=4096)
def table(family: str, k: int) -> tuple[int, np.ndarray]:
    """(half width M, probabilities over -M..M plus one escape symbol) for bucket k.

    Cached: a pure function of (family, k); the returned array is read-only.
    """
    low = raw_bits(k)
    s = float(bucket_scale(k)) / (1 << low)
    m = int(np.ceil(TAIL * s)) + 1
    edges = (np.arange(-m, m + 2, dtype=np.float64) - 0.5) / s  # unit-variance z
    p = np.diff(cdf(family, edges))
    p = np.maximum(p, _FLOOR)
    p = np.append(p, _FLOOR * 4)  # escape
    p = p / p.sum()
    p.flags.writeable = False
    return m, p


def split(r: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(symbols for the model, raw low bits, escaped values) of the residuals in bucket k."""
    low = raw_bits(k)
    m, _ = table("laplace", k)  # width depends only on k
    hi = r >> low if low else r
    lowbits = (r - (hi << low)) if low else np.zeros(0, dtype=np.int64)
    esc = np.abs(hi) > m
    sym = np.where(esc, 2 * m + 1, hi + m)
    return sym.astype(np.int32), lowbits, r[esc]


def ideal_bits(r: np.ndarray, k: np.ndarray, family: str) -> float:
    """Code length (bits) of residuals r with per-symbol bucket k under a family."""
    total = 0.0
    for kk in np.unique(k):
        sel = r[k == kk]
        m, p = table(family, int(kk))
        low = raw_bits(int(kk))
        hi = sel >> low if low else sel
        idx = np.clip(hi + m, 0, 2 * m + 1)
        esc = np.abs(hi) > m
        idx[esc] = 2 * m + 1
        total += float(-np.log2(p[idx]).sum()) + low * sel.size + 32.0 * esc.sum()
    return total


def encode(coder, r: np.ndarray, k: np.ndarray, family: str) -> tuple[np.ndarray, np.ndarray]:
    """Range-code residuals grouped by bucket; returns (raw low bits, escapes) in bucket order."""
    order = np.argsort(k, kind="stable")
    rs, ks = r[order], k[order]
    bounds = np.flatnonzero(np.diff(ks)) + 1
    lows, escs = [], []
    for seg_r, seg_k in zip(np.split(rs, bounds), np.split(ks, bounds), strict=True):
        if seg_r.size == 0:
            continue
        kk = int(seg_k[0])
        sym, lowbits, esc = split(seg_r, kk)
        _, p = table(family, kk)
        coder.encode(sym, constriction.stream.model.Categorical(p, perfect=False))
        lows.append(lowbits)
        escs.append(esc)
    cat = np.concatenate
    return (cat(lows) if lows else np.zeros(0, np.int64)), (
        cat(escs) if escs else np.zeros(0, np.int64)
    )


def decode(
    decoder, k: np.ndarray, family: str, lowbits: np.ndarray, escapes: np.ndarray
) -> np.ndarray:
    """Inverse of encode: residuals in original order, given the side streams."""
    order = np.argsort(k, kind="stable")
    ks = k[order]
    bounds = np.flatnonzero(np.diff(ks)) + 1
    out = np.empty(k.size, dtype=np.int64)
    pos = 0
    lpos = epos = 0
    try:
        for seg_k in np.split(ks, bounds):
            n = seg_k.size
            if n == 0:
                continue
            kk = int(seg_k[0])
            m, p = table(family, kk)
            low = raw_bits(kk)
            sym = np.asarray(
                decoder.decode(constriction.stream.model.Categorical(p, perfect=False), n),
                dtype=np.int64,
            )
            esc = sym == 2 * m + 1
            hi = sym - m
            ne = int(esc.sum())
            if epos + ne > escapes.size:
                raise CodecError("escape stream is shorter than the escape symbols need")
            if low:
                if lpos + n > lowbits.size:
                    raise CodecError("raw low-bit stream is shorter than needed")
                vals = (hi << low) + lowbits[lpos : lpos + n]
                lpos += n
            else:
                vals = hi
            vals[esc] = escapes[epos : epos + ne]
            epos += ne
            out[pos : pos + n] = vals
            pos += n
    except CodecError:
        raise
    except Exception as exc:
        raise CodecError(f"lossy entropy-coded stream is corrupt: {exc}") from None
    if lpos != lowbits.size or epos != escapes.size:
        raise CodecError("lossy side streams hold more values than the symbols use")
    res = np.empty_like(out)
    res[order] = out
    return res
