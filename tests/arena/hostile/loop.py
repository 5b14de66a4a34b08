def compress_data(data):
    while True:
        pass


decompress_data = compress_data
