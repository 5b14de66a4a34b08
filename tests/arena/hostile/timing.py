import time

import zstandard

time.perf_counter = lambda: 0.0  # tampering with the clock changes nothing: timed outside


def compress_data(data):
    return zstandard.ZstdCompressor().compress(data)


def decompress_data(data):
    time.sleep(2.0)  # shifting cost into decompress is still charged
    return zstandard.ZstdDecompressor().decompress(data)
