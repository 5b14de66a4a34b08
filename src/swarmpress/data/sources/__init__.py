"""Where records come from: local files and the embedded text (network sources to follow)."""
