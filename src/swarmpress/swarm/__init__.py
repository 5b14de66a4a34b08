"""The swarm: real pipeline-parallel training across processes over compressed links."""
