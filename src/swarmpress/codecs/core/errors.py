"""The one exception every codec raises for bad frames, bad parameters or unsupported tensors.

Callers catch a single type; the message says what is wrong in one line.
"""

from swarmpress.errors import SwarmpressError


class CodecError(SwarmpressError, ValueError):
    """A frame could not be decoded, or a tensor/parameter set cannot be encoded."""

    exit_code = 2  # bad input: an unknown codec or parameter, a frame that does not decode
