def compress_data(data):
    for path in ("{HOME}/planted", "/usr/planted", "/sub/planted"):
        try:
            open(path, "wb").write(b"x")
            return b"WROTE " + path.encode()
        except OSError:
            pass
    raise PermissionError("cannot write outside /tmp")


decompress_data = compress_data
