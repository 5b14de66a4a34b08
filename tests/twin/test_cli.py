"""The `swarmpress twin` commands: the script interface kept exact, errors one line."""

import json

from typer.testing import CliRunner

from swarmpress.cli import app

runner = CliRunner()
# The contract's 0.5 s per call is a wall-clock rule: a pause of this process on a loaded
# machine must not end a run these tests only read the output of.
SMALL = ["--set", "workload.activations_per_epoch=50", "--set", "workload.epochs=1",
         "--set", "rules.route_call_limit_s=30"]  # fmt: skip


def test_run_json_has_the_interface_fields():
    r = runner.invoke(app, ["twin", "run", "apex-default", "--seed", "2", "--policy", "best",
                            "--codec", "lossy", *SMALL, "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    for key in ("total_epoch_time", "max_epoch_time", "score", "completed", "simulated_seconds",
                "wall_seconds"):  # fmt: skip
        assert key in out
    assert out["completed"] == 50 and out["codec"] == "lossy"


def test_run_writes_data_file_and_plots(tmp_path):
    r = runner.invoke(app, ["twin", "run", "apex-default", *SMALL, "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "simulation.json").read_text())
    assert {"activation_logs", "miner_metrics", "route_logs", "balance_logs"} <= set(data)
    assert len(data["route_logs"]) >= 50 and len(data["miner_metrics"]) == 96
    assert (tmp_path / "timeline.png").stat().st_size > 10_000
    assert (tmp_path / "series.png").stat().st_size > 10_000


def test_policies_and_scenarios_are_listed():
    pol = json.loads(runner.invoke(app, ["twin", "policies", "--json"]).stdout)
    assert pol["best"]["spec"] == "pending+throughput"
    assert {p["name"] for p in pol["routing"]} >= {"random", "round-robin", "latency-greedy",
                                                    "least-loaded", "capacity-aware"}  # fmt: skip
    listed = json.loads(runner.invoke(app, ["twin", "scenarios", "--json"]).stdout)
    names = {s["name"] for s in listed}
    assert {"apex-default", "iota-15b", "large", "failure-storm"} <= names


def test_compare_gives_one_row_per_configuration(tmp_path):
    r = runner.invoke(app, ["twin", "compare", "apex-default", "--policies", "random,best",
                            "--codecs", "none,lossy", "--seeds", "2", *SMALL, "--json",
                            "--plot", str(tmp_path / "c.png")])  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [(x["policy"], x["codec"]) for x in rows] == [
        ("random", "none"),
        ("random", "lossy"),
        ("best", "none"),
        ("best", "lossy"),
    ]
    assert (tmp_path / "c.png").exists()


def test_bad_input_exits_2_with_one_line():
    for args, msg in (
        (["twin", "run", "nope"], "no scenario"),
        (["twin", "run", "apex-default", "--policy", "magic"], "no routing policy"),
        (["twin", "run", "apex-default", "--codec", "gzip"], "no codec profile"),
        (["twin", "run", "apex-default", "--set", "swarm.miners=-4"], "swarm.miners"),
        (["twin", "run", "apex-default", "--router", "http://127.0.0.1:9"], "unreachable"),
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output
