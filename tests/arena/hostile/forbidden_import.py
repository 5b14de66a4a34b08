import sqlalchemy  # not one of numpy, torch, zstandard, brotli, lz4


def compress_data(data):
    return data


decompress_data = compress_data
