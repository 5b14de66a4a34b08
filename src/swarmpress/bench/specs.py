"""Which codecs a benchmark runs by default: bench policy over the codec registry.

The spec grammar itself ("blockq:bits=4") belongs to the codecs (swarmpress.codecs
`parse_codec_spec`, `build_codec`, `split_codec_list`; the swarm and the twin use it too);
it is re-exported here for the bench's callers.
"""

from __future__ import annotations

from swarmpress.codecs import build_codec, list_codecs, parse_codec_spec, split_codec_list

# Second settings worth a row of their own: the community's 4-bit blocks, the fast lossless mode.
EXTRA_SPECS = {
    "blockq": "blockq:bits=4",
    "lossless": "lossless:mode=fast",
    "lossy": "lossy:mode=max",
}


# Registered for the swarm's uncompressed baseline; a bench row of it says nothing new.
NOT_BENCHED = {"raw"}


def default_codec_specs() -> list[str]:
    """Every registered codec with its default parameters, plus the EXTRA_SPECS variants."""
    specs = [c["id"] for c in list_codecs() if c["id"] not in NOT_BENCHED]
    for base, extra in EXTRA_SPECS.items():
        if base in specs:
            specs.insert(specs.index(base) + 1, extra)
    return specs


__all__ = [
    "EXTRA_SPECS",
    "NOT_BENCHED",
    "build_codec",
    "default_codec_specs",
    "parse_codec_spec",
    "split_codec_list",
]
