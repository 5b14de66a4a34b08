"""Apex lossy solution (swarmpress `lossy`): low rank + rate-controlled quantization + rANS.

Input: a flat little-endian bf16 tensor's raw bytes, no shape. The output decodes to values
whose Apex similarity to the input exceeds CONFIG["target"] (> 0.99, with margin):

1. The channel width W is guessed from the data (else rows of 64 values).
2. Optionally a rank-k prediction P = C B of the (rows, W) grid, k by estimated total bits;
   P is computed from integers scaled by powers of two, exact in any summation order.
3. q = rint((x - P) / step), the largest step whose decoded output (P + q * step as bf16,
   exactly what the decoder returns) meets the target.
4. Each integer grid (q, C, B) is coded by a vectorized interleaved rANS coder under a
   discretized Laplace/logistic/Gaussian model with per-column x per-row scales.

NaN/inf, odd byte counts, all-zero or tiny inputs (and anything failing its own check) take
a lossless path. Needs numpy and zstandard; decode recomputes the model tables, so run both
sides on the same numpy and libm.
"""

import math
import struct

import numpy as np
import zstandard

CONFIG = {"target": 0.9902, "steps": 4096, "min_values": 256, "sample": 131072, "max_rank": 64}

_LOSSLESS, _QUANT = 0x4C, 0x51  # "L", "Q"
_HEAD = struct.Struct("<BQIddH")  # magic, values, width, step, coefficient step, rank
_GRID = struct.Struct("<BB")  # model family, row scales?
FAMILIES = ("laplace", "logistic", "gaussian")
PB, RANS_L = 16, 1 << 16  # rANS probability bits, state lower bound
KMIN, KMAX, OCT = -48, 120, 4  # scale codes: scale = 2 ** (k / OCT) quantization steps
MAXS, TAIL = 32.0, 12.0  # larger scales send low bits raw; |r| > TAIL * scale escapes
WIDTHS = (
    *(1 << k for k in range(6, 15)),
    *(384, 576, 640, 768, 896, 960, 1152, 1280, 1536, 1792, 2304, 2560, 3072),
    *(3584, 4608, 5120, 6144, 7168, 9216, 10240, 11008, 12288, 13824, 14336),
)
_Z = zstandard.ZstdCompressor(level=19)
_DEC = zstandard.ZstdDecompressor()
_TABLES: dict = {}


def _section(b: bytes) -> bytes:
    return struct.pack("<I", len(b)) + b


def _read(mv: memoryview, pos: int, raw: bool = False) -> tuple[bytes, int]:
    if len(mv) - pos < 4:
        raise ValueError("lossy stream truncated")
    (size,) = struct.unpack_from("<I", mv, pos)
    if size > len(mv) - pos - 4:
        raise ValueError("lossy stream truncated")
    body = mv[pos + 4 : pos + 4 + size]
    return (bytes(body) if raw else _DEC.decompress(body)), pos + 4 + size


# --- lossless
def _lossless(data: bytes) -> bytes:
    u = np.frombuffer(data, dtype="<u2", count=len(data) // 2)
    planes = ((u << 1) | (u >> 15)).astype("<u2").view(np.uint8).reshape(-1, 2)
    exp = _section(_Z.compress(np.ascontiguousarray(planes[:, 1]).tobytes()))
    tail = data[-1:] if len(data) & 1 else b""
    return struct.pack("<BQ", _LOSSLESS, len(data)) + exp + planes[:, 0].tobytes() + tail


def _unlossless(mv: memoryview) -> bytes:
    (size,) = struct.unpack_from("<Q", mv, 1)
    n = size // 2
    e, pos = _read(mv, 9)
    if len(e) != n or len(mv) - pos != n + (size & 1):
        raise ValueError("lossy stream is corrupt: lossless planes have the wrong size")
    planes = np.empty((n, 2), dtype=np.uint8)
    planes[:, 1] = np.frombuffer(e, dtype=np.uint8)
    planes[:, 0] = np.frombuffer(mv[pos : pos + n], dtype=np.uint8)
    rot = planes.view("<u2").reshape(-1)
    out = ((rot >> 1) | (rot << 15)).astype("<u2").tobytes()
    return out + bytes(mv[pos + n :])


# --- helpers
def detect_width(a: np.ndarray, s0: int, n: int, budget: int) -> int:
    """Row width whose column means best explain a (values s0.. of n), net of cost; 0: none."""
    va = float(a.var())
    best, width = 0.0, 0
    if not va > 0:
        return 0
    for w in WIDTHS:
        off = -s0 % w
        rows = (a.size - off) // w
        if n % w or n // w < 8 or rows < 8:
            continue
        rs = min(rows, max(8, budget // w))
        cm = a[off : off + rs * w].reshape(rs, w).mean(axis=0)
        stat = min(float(cm.var()) * (1 + 1 / rs) - va / rs, 0.999 * va)
        if stat <= 0:
            continue
        gain = 0.5 * n * np.log2(va / (va - stat)) - 8.0 * w
        if gain > best:
            best, width = gain, w
    return width


def _bf16(y: np.ndarray) -> np.ndarray:
    """float64 -> float32 -> bf16 bit patterns (round to nearest even; finite values)."""
    b = y.astype(np.float32).view(np.uint32)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype("<u2")


def _similarity(x: np.ndarray, yb: np.ndarray) -> float:
    y = (yb.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    nx, ny = float(np.sqrt(x @ x)), float(np.sqrt(y @ y))
    if nx == 0 or ny == 0:
        return float(nx == ny)
    d = x - y
    return float(x @ y) / (nx * ny) * (1.0 - float(np.sqrt(d @ d)) / nx)


# --- model
def _codes(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        k = np.rint(OCT * np.log2(v))
    return np.clip(np.nan_to_num(k, neginf=KMIN), KMIN, KMAX).astype(np.int64)


def _cdf(family: str, z: float) -> float:
    z = min(max(z, -60.0), 60.0)
    if family == "laplace":
        t = 0.5 * math.exp(-abs(z) * math.sqrt(2))
        return t if z < 0 else 1 - t
    if family == "logistic":
        return 1.0 / (1.0 + math.exp(-z * math.pi / math.sqrt(3)))
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2)))


def _table(family: str, k: int) -> tuple[int, int, np.ndarray]:
    """(raw low bits, half width m, frequencies of -m..m and escape) for scale code k."""
    if (family, k) in _TABLES:
        return _TABLES[family, k]
    s = 2.0 ** (k / OCT)
    low = math.floor(math.log2(s / MAXS)) + 1 if s > MAXS else 0
    s /= 1 << low
    m = math.ceil(TAIL * s) + 1
    p = np.maximum(np.diff([_cdf(family, (i - 0.5) / s) for i in range(-m, m + 2)]), 0.0)
    p = np.append(p / max(p.sum(), 1e-300), 0.0)
    f = 1 + np.floor(p * ((1 << PB) - 2 * p.size)).astype(np.int64)
    f[np.argmax(p)] += (1 << PB) - int(f.sum())
    _TABLES[family, k] = low, m, f
    return low, m, f


def _model(family: str, ks: list) -> dict:
    """Tables for the scale codes ks, laid out in one array of global symbol indices."""
    mdl = {"low": {}, "half": {}, "base": {}}
    freqs, base = [], 0
    for k in ks:
        mdl["low"][k], mdl["half"][k], f = _table(family, k)
        mdl["base"][k] = base
        freqs.append(f)
        base += f.size
    f = np.concatenate(freqs)
    start = np.concatenate([[0], np.cumsum(f)[:-1]])  # bucket i starts at i << PB
    mdl.update(f=f, start=start, cum=start - (start >> PB << PB))
    return mdl


def _groups(k: np.ndarray):
    """(scale code, indices of the values that have it), codes in increasing order."""
    order = np.argsort(k, kind="stable")
    cuts = np.flatnonzero(np.diff(k[order])) + 1
    for sel in np.split(order, cuts):
        if sel.size:
            yield int(k[sel[0]]), sel


def _split(r: np.ndarray, k: np.ndarray, mdl: dict) -> tuple:
    """(global symbols, [(width, low bits)], escaped values) of residuals r."""
    g = np.empty(r.size, dtype=np.int64)
    lows, esc = [], np.zeros(r.size, dtype=bool)
    for kk, sel in _groups(k):
        low, m = mdl["low"][kk], mdl["half"][kk]
        hi = r[sel] >> low
        if low:
            lows.append((low, (r[sel] - (hi << low)).astype(np.uint32)))
        e = np.abs(hi) > m
        g[sel] = mdl["base"][kk] + np.where(e, 2 * m + 1, hi + m)
        esc[sel[e]] = True
    return g, lows, r[esc]


def _ideal_bits(r: np.ndarray, k: np.ndarray, family: str) -> float:
    stride = max(1, r.size // 65536)
    r, k = r[::stride], k[::stride]
    mdl = _model(family, np.unique(k).tolist())
    g, lows, escs = _split(r, k, mdl)
    p = mdl["f"][g] / float(1 << PB)
    bits = -np.log2(p).sum() + sum(w * v.size for w, v in lows) + 64.0 * escs.size
    return float(bits) * stride


def _scales(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per-column and per-row scale codes of an integer grid r (rows, columns)."""
    sq = r.astype(np.float64) ** 2
    col = np.sqrt(sq.mean(axis=0))
    norm = np.where(col > 0, col, 1.0)
    row_rms = np.sqrt((sq / (norm * norm)).mean(axis=1))
    rows = _codes(np.where(row_rms > 0, row_rms, 2.0 ** (KMIN / OCT)))
    rows -= int(np.median(rows))
    if r.shape[0] < 2 or np.abs(rows).mean() < 0.5:
        return _codes(col), np.zeros_like(rows), False
    rf = np.exp2(rows / OCT)
    return _codes(np.sqrt((sq / (rf * rf)[:, None]).mean(axis=0))), rows, True


def _grid_model(grid: np.ndarray) -> tuple:
    means = np.rint(grid.mean(axis=0)).astype(np.int64)
    r = grid - means
    col, rows, use_rows = _scales(r)
    k = np.clip(col[None, :] + rows[:, None], KMIN, KMAX).reshape(-1)
    return means, r.reshape(-1), col, rows, use_rows, k


def grid_bits(grid: np.ndarray) -> float:
    """Estimated coded size (bits) of an integer grid."""
    *_, r, _, _, _, k = _grid_model(grid)
    return min(_ideal_bits(r, k, fam) for fam in FAMILIES)


# --- rANS
def rans_encode(g: np.ndarray, f: np.ndarray, cum: np.ndarray, lanes: int) -> tuple:
    """Interleaved rANS, lane i codes g[i*B:(i+1)*B]: (final states, 16-bit words)."""
    steps = -(-g.size // lanes)
    g = np.concatenate([g, np.full(lanes * steps - g.size, np.argmax(f))]).reshape(lanes, steps)
    fs, cs = f.astype(np.uint32)[g], cum.astype(np.uint32)[g]
    x = np.full(lanes, RANS_L, dtype=np.uint64)
    out = []
    for j in range(steps - 1, -1, -1):
        fj = fs[:, j].astype(np.uint64)
        emit = x >= fj << np.uint64(32 - PB)
        if emit.any():
            out.append((x[emit] & np.uint64(0xFFFF)).astype("<u2"))
            x[emit] >>= np.uint64(16)
        q = x // fj
        x = (q << np.uint64(PB)) + (x - q * fj) + cs[:, j]
    out.reverse()
    return x.astype("<u4"), np.concatenate(out) if out else np.zeros(0, "<u2")


def rans_decode(states, words, first, n, f, cum, start) -> np.ndarray:
    """Inverse of rans_encode; first[i]: global index of value i's bucket."""
    lanes = states.size
    steps = -(-n // lanes)
    first = np.concatenate([first, np.zeros(lanes * steps - n, np.int64)]).reshape(lanes, steps)
    slot0 = start[first]
    x, w = states.astype(np.uint64), words.astype(np.uint64)
    out = np.empty((lanes, steps), dtype=np.int64)
    fu, cu = f.astype(np.uint64), cum.astype(np.uint64)
    mask, pos = np.uint64((1 << PB) - 1), 0
    for j in range(steps):
        slot = x & mask
        g = np.searchsorted(start, slot0[:, j] + slot.astype(np.int64), side="right") - 1
        out[:, j] = g
        x = fu[g] * (x >> np.uint64(PB)) + slot - cu[g]
        need = x < np.uint64(RANS_L)
        cnt = int(np.count_nonzero(need))
        if cnt:
            if pos + cnt > w.size:
                raise ValueError("lossy stream is corrupt: rANS words run out")
            x[need] = (x[need] << np.uint64(16)) | w[pos : pos + cnt]
            pos += cnt
    return out.reshape(-1)[:n]


def pack_grid(grid: np.ndarray) -> bytes:
    """An integer grid (rows, columns) as bytes: scale side information, rANS stream."""
    means, r, col, rows, use_rows, k = _grid_model(grid)
    costs = {fam: _ideal_bits(r, k, fam) for fam in FAMILIES}
    family = min(costs, key=costs.get)
    mdl = _model(family, np.unique(k).tolist())
    g, lows, escs = _split(r, k, mdl)
    lanes = max(1, min(4096, r.size // int(CONFIG["steps"])))
    states, words = rans_encode(g, mdl["f"], mdl["cum"], lanes)
    low = b"".join(np.packbits((v[:, None] >> np.arange(w)) & 1).tobytes() for w, v in lows)
    side = [means.astype("<i8"), col.astype("<i2"), rows.astype("<i2"), escs.astype("<i8")]
    out = [_GRID.pack(FAMILIES.index(family), use_rows)]
    out += [_section(_Z.compress(s.tobytes())) for s in side]
    out += [_section(low), _section(states.tobytes()), _section(words.tobytes())]
    return b"".join(out)


def unpack_grid(mv: memoryview, pos: int, nrows: int, ncols: int) -> tuple[np.ndarray, int]:
    """Inverse of pack_grid at pos; returns (grid, position after it)."""
    fam, use_rows = _GRID.unpack_from(mv, pos)
    side = []
    pos += _GRID.size
    for dt in ("<i8", "<i2", "<i2", "<i8", None, "<u4", "<u2"):
        raw, pos = _read(mv, pos, raw=dt in (None, "<u4", "<u2"))
        side.append(raw if dt is None else np.frombuffer(raw, dtype=dt).astype(np.int64))
    means, col, rows, escs, low, states, words = side
    if fam >= len(FAMILIES) or means.size != ncols or col.size != ncols or rows.size != nrows:
        raise ValueError("lossy stream is corrupt: bad grid side information")
    k = np.clip(col[None, :] + rows[:, None] * bool(use_rows), KMIN, KMAX).reshape(-1)
    ks = np.unique(k)
    mdl = _model(FAMILIES[fam], ks.tolist())
    idx = np.searchsorted(ks, k)
    first = np.array(list(mdl["base"].values()))[idx]
    half = np.array(list(mdl["half"].values()))[idx]
    r = rans_decode(states, words, first, k.size, mdl["f"], mdl["cum"], mdl["start"]) - first - half
    esc = r > half
    bits, at = np.frombuffer(low, dtype=np.uint8), 0
    for kk, sel in _groups(k):
        width = mdl["low"][kk]
        if width:
            nb = (sel.size * width + 7) // 8
            v = np.unpackbits(bits[at : at + nb])[: sel.size * width].reshape(-1, width)
            r[sel] = (r[sel] << width) + (v.astype(np.int64) << np.arange(width)).sum(axis=1)
            at += nb
    if int(esc.sum()) != escs.size:
        raise ValueError("lossy stream is corrupt: escape count mismatch")
    r[esc] = escs
    return r.reshape(nrows, ncols) + means, pos


# --- low rank
def _predict(cq: np.ndarray, e: np.ndarray, bq: np.ndarray, dc: float) -> np.ndarray:
    """C B from integers: every product and partial sum is exact, so any BLAS agrees."""
    return np.ldexp(cq, -e.astype(np.int64)[None, :]) @ bq.astype(np.float64) * dc


def _lowrank(grid: np.ndarray, step: float, max_rank: int) -> tuple:
    """(rank, prediction, packed parts) with the smallest estimated total size."""
    nrows, w = grid.shape
    best = (grid_bits(np.rint(grid / step).astype(np.int64)), 0, None, None)
    kmax = min(max_rank, nrows // 4, w // 4)
    if kmax < 4:
        return 0, 0.0, b""
    y = grid @ grid[np.linspace(0, nrows - 1, min(nrows, kmax + 8)).astype(int)].T
    for _ in range(2):
        y = grid @ (grid.T @ np.linalg.qr(y)[0])
    b = np.linalg.qr(y)[0].T @ grid
    ev, u = np.linalg.eigh(b @ b.T)  # small: the SVD of b through its Gram matrix
    basis = (u[:, ::-1] / np.sqrt(np.maximum(ev[::-1], 1e-300))).T[:kmax] @ b
    coef = grid @ basis.T
    for k in (4, 8, 16, 32, 64, 128):
        if k > kmax:
            break
        res = grid - coef[:, :k] @ basis[:k]
        sr = max(float(np.sqrt((res * res).mean())), step / 2)
        dc = math.sqrt(12.0) * sr
        sc = np.maximum(coef[:, :k].std(axis=0), 1e-300)
        e = np.clip(np.ceil(np.log2(sc * math.sqrt(nrows / 12.0) / sr)), -60, 40)
        bq = np.rint(basis[:k] * np.exp2(e)[:, None]).astype(np.int64)
        cq = np.rint(grid @ (bq * np.exp2(-e)[:, None]).T / dc).astype(np.int64)
        big = (np.abs(cq) * np.exp2(-e)[None, :]) @ np.abs(bq).astype(np.float64)
        if big.max() * 2 ** (e.max() + 1) >= 2**52:
            break
        pred = _predict(cq, e, bq, dc)
        bits = grid_bits(np.rint((grid - pred) / step).astype(np.int64))
        bits += grid_bits(cq) + grid_bits(bq) + 64 * k
        if bits < best[0]:
            best = (bits, k, pred, (e, bq, cq, dc))
    if best[1] == 0:
        return 0, 0.0, b""
    e, bq, cq, dc = best[3]
    parts = _section(e.astype("<i1").tobytes()) + pack_grid(bq) + pack_grid(cq)
    return best[1], best[2], (dc, parts)


# --- step
def _search(x, pred, target: float, lo: float, grow: float, bisect: int) -> float:
    """Largest step (within grow ** 2 ** -bisect) whose output meets the target on x."""

    def ok(step: float) -> bool:
        return _similarity(x, _bf16(pred + np.rint((x - pred) / step) * step)) > target

    hi = lo
    if ok(lo):
        while ok(hi * grow) and hi < 1e38:
            hi *= grow
        lo, hi = hi, hi * grow
    else:
        while not ok(lo):
            if lo < 1e-300:
                raise ValueError("similarity target unreachable")
            lo /= grow
        hi = lo * grow
    for _ in range(bisect):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def _choose_step(x: np.ndarray, pred, target: float, guess: float, rough=False) -> float:
    """Bisect on an evenly strided sample, then refine on every value."""
    stride = x.size // 65536
    if stride >= 4:
        p = pred if np.isscalar(pred) else pred[::stride]
        guess = _search(x[::stride], p, target, guess, 1.25, 10)
        return guess if rough else _search(x, pred, target, guess / 1.01, 1.02, 5)
    return _search(x, pred, target, guess, 1.25, 12)


# --- API
def _quantized(data: bytes, target: float) -> bytes:
    n = len(data) // 2
    x32 = (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    x = x32.astype(np.float64)
    budget = int(CONFIG["sample"])
    s0 = max(0, n // 2 - budget)
    win = np.log2(np.abs(x32[s0 : s0 + 2 * budget]) + np.float32(1e-45))
    med = float(np.median(win[:: max(1, win.size // 4096)]))
    w = detect_width(np.clip(win, med - 12, med + 12), s0, n, budget) or 64
    nrows = -(-n // w)
    grid = np.zeros(nrows * w)
    grid[:n] = x
    grid = grid.reshape(nrows, w)
    guess = max(math.sqrt(12.0) * (1.0 - target) * float(np.sqrt(x @ x / n)), 1e-300)
    step = _choose_step(x, 0.0, target, guess, rough=True)
    rank, pred, extra = _lowrank(grid, step, int(CONFIG["max_rank"]))
    step = _choose_step(x, pred.reshape(-1)[:n] if rank else 0.0, target, step)
    q = np.rint((grid - pred) / step).astype(np.int64)
    dc, parts = extra if rank else (0.0, b"")
    return _HEAD.pack(_QUANT, n, w, step, dc, rank) + parts + pack_grid(q)


def compress_data(data: bytes) -> bytes:
    """bf16 bytes -> compressed bytes whose decompression meets the similarity target."""
    data = bytes(data)
    if len(data) & 1 or len(data) // 2 < CONFIG["min_values"]:
        return _lossless(data)
    x32 = (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    if not np.isfinite(x32).all() or not x32.any():
        return _lossless(data)
    target = float(CONFIG["target"])
    try:
        with np.errstate(all="ignore"):
            blob = _quantized(data, target)
            y = np.frombuffer(decompress_data(blob), dtype="<u2")  # what the receiver sees
        if _similarity(x32.astype(np.float64), y) > target:
            return blob
    except Exception:  # any failure of the lossy path: send it losslessly instead
        pass
    return _lossless(data)


def decompress_data(data: bytes) -> bytes:
    """Inverse of compress_data (bf16 bytes of the reconstruction)."""
    mv = memoryview(bytes(data))
    if len(mv) >= 9 and mv[0] == _LOSSLESS:
        return _unlossless(mv)
    if len(mv) < _HEAD.size or mv[0] != _QUANT:
        raise ValueError("not a swarmpress lossy stream")
    _, n, w, step, dc, rank = _HEAD.unpack_from(mv, 0)
    if not (w and n and math.isfinite(step) and step > 0):
        raise ValueError("lossy stream is corrupt: bad header")
    nrows, pos, pred = -(-n // w), _HEAD.size, 0.0
    if rank:
        e, pos = _read(mv, pos, raw=True)
        e = np.frombuffer(e, dtype="<i1")
        bq, pos = unpack_grid(mv, pos, rank, w)
        cq, pos = unpack_grid(mv, pos, nrows, rank)
        pred = _predict(cq, e, bq, dc)
    q, pos = unpack_grid(mv, pos, nrows, w)
    if pos != len(mv):
        raise ValueError("lossy stream is corrupt: trailing bytes")
    return _bf16((pred + q * step).reshape(-1)[:n]).tobytes()
