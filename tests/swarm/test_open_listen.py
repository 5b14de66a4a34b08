"""Workers that dial in without keys are refused on an address other hosts can reach,
unless the user says --insecure: anyone there could otherwise stop or steer the run."""

from __future__ import annotations

import pytest

from swarmpress.swarm.config import build_config
from swarmpress.swarm.orchestrator import Orchestrator, SwarmError


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7", "example.org"])
def test_an_open_dial_in_run_on_a_reachable_address_is_refused(host):
    with pytest.raises(SwarmError, match="without keys") as err:
        Orchestrator(build_config("tiny"), None, host=host, spawn=False)
    assert err.value.exit_code == 2


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_and_insecure_runs_are_allowed(host, tmp_path):
    orch = Orchestrator(build_config("tiny"), None, host=host, spawn=False, run_dir=tmp_path)
    orch.ep.close()
    orch = Orchestrator(build_config("tiny"), None, host="0.0.0.0", spawn=False, insecure=True,
                        run_dir=tmp_path)  # fmt: skip
    assert orch.address.startswith("tcp://0.0.0.0:")
    orch.ep.close()
