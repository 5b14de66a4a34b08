"""Templates of the standalone Apex solution files (see `swarmpress.arena.export`).

Each module here is a complete submission: it imports only the standard library, numpy
and zstandard, and never swarmpress. `export_solution` copies one, with its CONFIG dict
replaced by the chosen options. They are read as text, not imported, by the exporter.
"""
