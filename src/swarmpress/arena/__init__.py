"""The arena: open competitions where codec solutions are scored, ranked, revealed and forked.

For now it holds the Apex adapters: `export.export_solution` writes a codec as one
standalone Python file with `compress_data(bytes) -> bytes` / `decompress_data`, the
matrix-compression submission format of Apex Subnet 1 (see DESIGN.md, "Arena contract").
"""
