def compress_data(data):
    return bytes(bytearray(10 << 30))[:8]


decompress_data = compress_data
