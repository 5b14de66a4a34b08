import sys


def compress_data(data):
    for _ in range(300):
        sys.stdout.write("spam " * 20000 + "\n")
    raise RuntimeError("after the spam")


decompress_data = compress_data
