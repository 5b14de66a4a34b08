"""A field of integer codes coded in fixed chunks by four interleaved rANS lanes.

Each value's model is the Gaussian bucket k = channel code + row code (quarter octaves of
scale; small static tables, rans.py); buckets above MAX_TABLE_SCALE send their low bits raw,
values beyond TAIL scales are escaped. Chunks of 2**chunk_log values are independent
streams, so they code and decode on any number of threads and the bytes never depend on
how many. The fast `lossy` mode codes its residuals and its low-rank coefficients this way.

Layout of a coded field: `per chunk (words u32, bits u32) | every chunk's rANS words (u16)
| every chunk's raw-bit words (u32)`; the scale codes travel beside it (their owner's side
information).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.core.workers import ranges, run_all, scratch
from swarmpress.codecs.entropy import rans, scalemodel
from swarmpress.codecs.entropy import rans_lanes as lanes
from swarmpress.codecs.entropy.fieldcode import K_RANGE

FAMILY = "gaussian"
MAX_TABLE_SCALE = 4.0  # larger bucket scales keep their low bits raw (near-uniform there)
TAIL = 8.0  # modelled range |hi| <= TAIL * scale + 1; beyond: escape
RAW_BITS_MAX = 32  # a raw field must fit the kernels' 64-bit accumulator beside 31 others
CHUNK_LOG = 15  # values per coded chunk: 32768 (24 bytes of overhead each)
CHUNK_LOG_RANGE = (10, 16)  # decoders refuse others: a payload pays >= 24 bytes a chunk


def low_bits(k: int) -> int:
    """Raw low bits of bucket k: the table then models a scale of at most MAX_TABLE_SCALE."""
    s = 2.0 ** (k / scalemodel.STEPS_PER_OCTAVE)
    return math.floor(math.log2(s / MAX_TABLE_SCALE)) + 1 if s > MAX_TABLE_SCALE else 0


# the widest bucket whose raw low bits still fit RAW_BITS_MAX (wider fields cannot be coded)
K_FAST_MAX = max(k for k in range(4 * 64) if low_bits(k) <= RAW_BITS_MAX)


@functools.lru_cache(maxsize=1024)
def bucket_table(k: int) -> tuple[int, int, np.ndarray, np.ndarray, bytes]:
    """(half width m, low bits, encoder entries, compact slot table, shape key) of bucket k;
    a pure function. Buckets with the same shape key share their tables."""
    lb = low_bits(k)
    s = 2.0 ** (k / scalemodel.STEPS_PER_OCTAVE) / (1 << lb)
    m = math.ceil(TAIL * s) + 1
    edges = (np.arange(-m, m + 2, dtype=np.float64) - 0.5) / s
    p = np.append(np.maximum(np.diff(scalemodel.cdf(FAMILY, edges)), 0.0), 0.0)
    freq = rans.quantize(p)
    slots = rans.dec_entries32(freq)
    # the decoder wants the value, not the symbol: hi + 64, or 127 for the escape symbol
    sym = slots & np.uint32(0x7F)
    field = np.where(
        sym == 2 * m + 1, lanes.ESCAPE_FIELD, sym.astype(np.int64) - m + lanes.FIELD_BIAS
    )
    slots = (slots & ~np.uint32(0x7F)) | field.astype(np.uint32)
    key = m.to_bytes(2, "little") + freq.astype("<u2").tobytes()
    return m, lb, rans.enc_entries(freq), slots, key


@functools.lru_cache(maxsize=64)
def _stacked(keys: tuple[bytes, ...], ks: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(encoder entries, slot tables) of the distinct shapes keys (from buckets ks), cached:
    consecutive tensors of one boundary use the same few tables."""
    parts = [bucket_table(k) for k in ks]
    width = max(p[2].shape[0] for p in parts)
    enc = np.zeros((len(parts), width, 5), dtype=np.int64)
    for i, p in enumerate(parts):
        enc[i, : p[2].shape[0]] = p[2]
    enc[:, :, 0] <<= rans.ENC_SHIFT  # the renormalisation bound replaces the frequency
    enc = enc.reshape(-1, 5)
    slots = np.concatenate([p[3] for p in parts])
    enc.flags.writeable = False
    slots.flags.writeable = False
    return enc, slots


def distinct_row_codes(rc: np.ndarray) -> np.ndarray:
    """Sorted distinct row codes; a zero-stride view (no row codes) is not expanded."""
    return rc[:1].copy() if rc.strides == (0,) else np.unique(rc)


class Tables:
    """The tables of the buckets a field uses, for the kernels.

    Buckets that differ only in their raw low bits share one probability table (above
    MAX_TABLE_SCALE a bucket's table repeats every octave), so a field needs about ten
    distinct tables: small enough to stay in cache while the coder jumps between them.
    """

    def __init__(self, cc: np.ndarray, rc: np.ndarray) -> None:
        rcodes = distinct_row_codes(rc)
        used = np.unique(np.clip(np.unique(cc)[:, None] + rcodes[None, :], *K_RANGE))
        self.kmin, self.kmax = int(used[0]), int(used[-1])
        self.slot_of_k = np.zeros(self.kmax - self.kmin + 1, dtype=np.int64)
        self.slot_of_k[used - self.kmin] = np.arange(used.size)
        parts = [bucket_table(int(k)) for k in used]
        self.m = np.array([p[0] for p in parts], dtype=np.int64)
        self.lb = np.array([p[1] for p in parts], dtype=np.int64)
        shape_of: dict[bytes, int] = {}
        first: list[int] = []
        shape = []
        for k, p in zip(used.tolist(), parts, strict=True):
            if p[4] not in shape_of:
                shape_of[p[4]] = len(shape_of)
                first.append(k)
            shape.append(shape_of[p[4]])
        self.keys, self.first = tuple(shape_of), tuple(first)
        self.width = max(bucket_table(k)[2].shape[0] for k in first)
        self.shape = np.array(shape, dtype=np.int64)
        self.ebase = self.shape * self.width  # first encoder entry of each table
        self.sbase = self.shape * rans.TOTAL  # first slot of each table
        self.info = self.sbase | (self.lb << 32)  # what the decoder needs per table
        self.einfo = self.ebase | (self.m << 24) | (self.lb << 40)  # and the encoder
        # one row of table numbers per distinct row code; rows point at theirs (without row
        # codes every row points at row 0, by a zero-stride view: nothing per row is stored)
        codes = rcodes
        if codes.size == 1:
            self.rc_idx = np.broadcast_to(np.zeros(1, dtype=np.int64), rc.shape)
        else:
            self.rc_idx = np.searchsorted(codes, rc).astype(np.int64)
        k = np.clip(cc[None, :] + codes[:, None], *K_RANGE)
        self.row_tab = self.slot_of_k[k - self.kmin].astype(np.uint8)

    def encoder(self) -> np.ndarray:
        return _stacked(self.keys, self.first)[0]

    def decoder(self) -> np.ndarray:
        return _stacked(self.keys, self.first)[1]


def log4(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        codes = np.rint(scalemodel.STEPS_PER_OCTAVE * np.log2(v))
    return np.clip(np.nan_to_num(codes, neginf=K_RANGE[0]), *K_RANGE).astype(np.int64)


ROW_SCALES_FROM = 8  # channels a row needs before it gets a scale code of its own


def row_codes(energy: np.ndarray, chans: int) -> np.ndarray | None:
    """Quarter-octave row scale codes (median 0) from per-row normalised energies, or None
    when rows are alike enough that row scales would cost more than they save."""
    if energy.size < 2 or chans < ROW_SCALES_FROM:
        return None
    codes = log4(np.sqrt(np.where(energy > 0, energy, 2.0 ** (K_RANGE[0] / 2))))
    codes -= int(np.median(codes))
    return None if np.abs(codes).mean() < 0.5 else codes


def chunk_bounds_count(n: int, chunk_log: int) -> int:
    """Number of chunks of 2**chunk_log values in n values."""
    return -(-n // (1 << chunk_log))


def codable(cc: np.ndarray, rc: np.ndarray) -> bool:
    """Whether the kernels' raw-bit fields can carry values of these scale codes."""
    return int(cc.max()) + int(distinct_row_codes(rc).max()) <= K_FAST_MAX


def check_scale_codes(cc: np.ndarray, rc: np.ndarray, what: str) -> None:
    """CodecError unless decoded scale codes are in range and codable."""
    rcodes = distinct_row_codes(rc)
    if not (
        np.all((K_RANGE[0] <= cc) & (cc <= K_RANGE[1]))
        and np.all(np.abs(rcodes) <= K_RANGE[1] - K_RANGE[0])
    ):
        raise CodecError(f"{what} declares scale codes out of range")
    if int(cc.max()) + int(rcodes.max()) > K_FAST_MAX:
        raise CodecError(f"{what} declares scales beyond the fast mode's range")


def encode_values(q: np.ndarray, rows: int, chans: int, tables: Tables, threads: int = 1,
                  chunk_log: int = CHUNK_LOG) -> bytes:  # fmt: skip
    """The coded field of the flat codes q (rows x chans, int16 or int64) under tables."""
    n = rows * chans
    size = 1 << chunk_log
    nchunks = chunk_bounds_count(n, chunk_log)
    enc = tables.encoder()
    table = np.zeros((nchunks, 2), dtype=np.int64)
    # raw bits a chunk needs besides escapes, to size the output (escapes grow it on demand)
    per_code = tables.lb[tables.row_tab].sum(axis=1)  # raw bits of a row, per row code
    raw = int(per_code @ np.bincount(tables.rc_idx, minlength=per_code.size))
    raw_words = raw // 32 + 64 * nchunks + 1024

    def code(rng):
        c0, c1 = rng
        span = min(size, n)
        buf = scratch("enc_words", span + 2 * lanes.LANES + 1, np.uint16)
        tt = scratch("tables", span, np.uint8)
        bits = scratch("enc_bits", 2 * lanes.ESC_HALF * span // 32 + 2, np.uint32)  # worst case
        out_w = scratch("out_words", min(n, (c1 - c0) * size) + (c1 - c0) * 9, np.uint16)
        cap = raw_words
        while True:
            out_b = scratch("out_bits", cap, np.uint32)
            nw, nb = lanes.encode_range(
                q, c0, c1, n, size, chans, tables.row_tab, tables.rc_idx, tables.einfo, enc, tt,
                buf, bits, out_w, out_b, table,
            )  # fmt: skip
            if nw >= 0:
                return out_w[:nw].tobytes(), out_b[:nb].tobytes()
            cap *= 4

    coded = run_all(code, ranges(nchunks, threads), threads)
    return b"".join([table.astype("<u4").tobytes(), *(w for w, _ in coded),
                     *(b for _, b in coded)])  # fmt: skip


@dataclass(frozen=True)
class Streams:
    """A coded field's chunk streams, checked against its chunk table."""

    chunk_log: int
    words: np.ndarray  # every chunk's words then raw-bit words, as aligned uint16
    woff: np.ndarray  # per chunk: first rANS word in words
    nwords: np.ndarray
    boff: np.ndarray  # per chunk: first raw-bit word (as uint16 pairs) in words
    nbits: np.ndarray


def min_bytes(n: int, chunk_log: int) -> int:
    """The fewest bytes a coded field of n values can take: 8 of table and 16 of lane states
    per chunk (checked before anything is sized by a declared shape)."""
    return 24 * chunk_bounds_count(n, chunk_log)


def read_streams(mv: memoryview, pos: int, n: int, chunk_log: int, what: str,
                 to_end: bool) -> tuple[Streams, int]:  # fmt: skip
    """Parse the coded field of n values at pos: (streams, position after it). With to_end
    the field must take exactly the rest of mv."""
    bounds = chunk_bounds_count(n, chunk_log)
    if len(mv) - pos < 8 * bounds:
        raise CodecError(f"{what} truncated: chunk table runs past the end")
    table = np.frombuffer(mv[pos : pos + 8 * bounds], dtype="<u4").reshape(-1, 2).astype(np.int64)
    pos += 8 * bounds
    size = 1 << chunk_log
    if np.any(table[:, 0] < 2 * lanes.LANES) or np.any(table[:, 0] > size + 2 * lanes.LANES):
        raise CodecError(f"{what} declares an impossible rANS word count")
    if np.any(table[:, 1] > size * 2 * lanes.ESC_HALF):
        raise CodecError(f"{what} declares more raw bits than values can carry")
    need = int((2 * table[:, 0] + 4 * ((table[:, 1] + 31) // 32)).sum())
    if (len(mv) - pos != need) if to_end else (len(mv) - pos < need):
        raise CodecError(f"{what}: chunk streams take {len(mv) - pos} bytes, the table says {need}")
    words = np.empty(need // 2, dtype=np.uint16)  # an aligned copy the kernels can index
    words.view(np.uint8)[:] = np.frombuffer(mv, dtype=np.uint8, count=need, offset=pos)
    if words.dtype.byteorder == ">":  # pragma: no cover - big-endian hosts
        words.byteswap(inplace=True)
    woff = np.concatenate([[0], np.cumsum(table[:, 0])[:-1]]).astype(np.int64)
    bsize = 2 * ((table[:, 1] + 31) // 32)  # raw-bit words, in uint16 units
    boff = int(table[:, 0].sum()) + np.concatenate([[0], np.cumsum(bsize)[:-1]]).astype(np.int64)
    st = Streams(chunk_log, words, woff, table[:, 0].copy(), boff, table[:, 1].copy())
    return st, pos + need


_NO_PROJ = np.zeros(0, dtype=np.float32)


def decode_values(st: Streams, tables: Tables, rows: int, chans: int, out: np.ndarray,
                  mode: int, step: float = 1.0, mu: np.ndarray | None = None,
                  proj: np.ndarray | None = None, threads: int = 1,
                  what: str = "entropy-coded field", chunks: tuple[int, int] | None = None,
                  out_base: int = 0, proj_base: int = 0) -> None:  # fmt: skip
    """Decode a field's chunks (all, or the range `chunks`) into out: codes (mode OUT_CODES)
    or float32((code + mu) * step [+ proj]) as float32 or bf16 bits. Value i lands in
    out[i - out_base] and adds proj[i - proj_base]. CodecError names the first corrupt chunk."""
    slots = tables.decoder()
    n = rows * chans
    size = 1 << st.chunk_log
    mu = np.zeros(chans) if mu is None else mu
    proj = _NO_PROJ if proj is None else proj
    c0, c1 = (0, len(st.woff)) if chunks is None else chunks

    def run(rng):
        tt = scratch("tables", min(size, n), np.uint8)
        codes = scratch("codes", min(size, n), np.int64)
        return lanes.decode_range(
            st.words, st.woff, st.nwords, st.boff, st.nbits, c0 + rng[0], c0 + rng[1], n, size,
            chans, tables.row_tab, tables.rc_idx, tables.info, slots, step, mu, out, out_base,
            mode, tt, codes, proj, proj_base,
        )  # fmt: skip

    bad = [c for c in run_all(run, ranges(c1 - c0, threads), threads) if c >= 0]
    if bad:
        raise CodecError(f"{what} is corrupt (chunk {bad[0]})")
