"""Side-by-side codec benchmarks, theoretical bounds, reports and plots.

`run_bench` measures codecs and anchors on a corpus, `write_report` turns the result into
report.md + bench.json + plots; `bounds` holds the entropy and rate-distortion limits,
`anchors` the external compressors every codec is compared with and `references` the
physical references (memcpy, zstd-1) measured beside them; `threads` holds numpy's BLAS and
any OpenMP pool to one thread while the bench times.
"""

from swarmpress.bench.anchors import Anchor, AnchorSet, LossyAnchor, load_anchors
from swarmpress.bench.bounds import (
    channel_spectrum,
    entropy_bound,
    gaussian_rd_bound,
    tensor_bounds,
)
from swarmpress.bench.references import Reference, load_references
from swarmpress.bench.report import headline_rows, write_report
from swarmpress.bench.results import BenchResult, Measurement
from swarmpress.bench.runner import run_bench
from swarmpress.bench.specs import build_codec, default_codec_specs, split_codec_list

__all__ = [
    "Anchor",
    "AnchorSet",
    "BenchResult",
    "LossyAnchor",
    "Measurement",
    "Reference",
    "build_codec",
    "channel_spectrum",
    "default_codec_specs",
    "entropy_bound",
    "gaussian_rd_bound",
    "headline_rows",
    "load_anchors",
    "load_references",
    "run_bench",
    "split_codec_list",
    "tensor_bounds",
    "write_report",
]
