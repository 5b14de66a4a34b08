"""Build activation and gradient corpora from real models and from a Llama-like generator."""
