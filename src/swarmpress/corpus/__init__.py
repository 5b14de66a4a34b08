"""Build activation and gradient corpora from real models and a Llama-like stress generator."""
