"""The twin: a discrete-event digital twin of a training swarm (miners, layers, links,
queues, drop-outs), codec-aware, with routing and balancing policies in-process or over
HTTP (the Apex IOTA-simulator routing contract)."""
