"""Twin calibration from a swarm run's result, on synthetic results shaped like
report.summarize's output (no swarm is started here)."""

import tomllib

import pytest

from swarmpress.swarm.calibrate import (
    UNLIMITED_MBIT,
    CalibrationError,
    calibrate,
    message_overhead,
    predict,
    scenario_from_run,
    scenario_toml,
)
from swarmpress.swarm.config import SwarmConfig
from swarmpress.twin.scenario import Scenario, parse_scenario

OVERHEAD = 0.0005


def _result(link="10mbit:50ms", service=None, steps=6, ratio=1.0, **cfg_overrides) -> dict:
    cfg = SwarmConfig(link=link, **cfg_overrides)
    if service is None:
        service = [(0.002, 0.004)] * (cfg.stages - 1) + [(0.006, None)]
    return {
        "codec": {
            "activation": cfg.codec_activation,
            "gradient": cfg.codec_gradient,
            "weight-delta": cfg.codec_delta,
            "weights": cfg.codec_weights,
        },
        "link": cfg.link_spec.to_json(),
        "steps": steps,
        "seconds_per_step": 1.0,
        "service_s": [
            {"stage": i, "forward": f, "backward": b, "passes": 8}
            for i, (f, b) in enumerate(service)
        ],
        "step_overhead_s": 0.01,
        "wire_ratio": {"activation": ratio, "gradient": ratio, "weight-delta": 0.05},
        "config": cfg.model_dump(),
    }


def _activation_seconds(result: dict) -> float:
    """Pure wire time of one micro-batch's activation on the run's link."""
    cfg = SwarmConfig(**result["config"])
    nbytes = cfg.microbatch * cfg.seq_len * (cfg.dim // cfg.bottleneck) * 4  # float32
    return 8 * nbytes / cfg.link_spec.bandwidth_bps


def test_scenario_from_run_describes_the_run():
    result = _result(stages=3, replicas=2, layers=6, microbatches=6)
    result["service_s"] = [
        {"stage": 0, "forward": 0.01, "backward": 0.02},
        {"stage": 1, "forward": 0.03, "backward": 0.04},
        {"stage": 2, "forward": 0.05, "backward": None},
    ]
    raw = scenario_from_run(result, OVERHEAD)
    sc = parse_scenario(raw, "test")
    assert isinstance(sc, Scenario)
    assert sc.swarm.miners == 3 * 2
    assert sc.model.layers == 3
    assert sc.model.layer_forward_s == [0.01, 0.03, 0.05]
    assert sc.model.layer_backward_s == [0.02, 0.04, 0.0]  # the last stage's is in forward
    assert sc.swarm.upload_mbit.median == pytest.approx(10.0)
    assert sc.swarm.latency == {"lab>lab": pytest.approx(0.05)}
    assert sc.swarm.message_overhead_s == OVERHEAD
    assert sc.model.hidden == 128
    assert sc.model.seq == 128
    assert sc.model.batch == 4
    assert sc.model.bytes_per_value == 4
    assert sc.workload.activations_per_epoch == 6
    assert sc.workload.epochs == result["steps"] - 1  # the first step is not timed
    assert sc.workload.in_flight_per_entry == 3
    assert sc.workload.step_s == pytest.approx(0.01)
    assert not sc.workload.merge
    assert "3x2" in sc.name


def test_scenario_follows_wire_dtype_and_bottleneck():
    raw = scenario_from_run(_result(wire_dtype="bfloat16", bottleneck=4), OVERHEAD)
    sc = parse_scenario(raw)
    assert sc.model.bytes_per_value == 2
    assert sc.model.hidden == 128 // 4


def test_an_unshaped_link_becomes_a_very_fast_one():
    raw = scenario_from_run(_result(link="none"), OVERHEAD)
    sc = parse_scenario(raw)
    assert sc.swarm.upload_mbit.median == UNLIMITED_MBIT
    assert sc.swarm.latency == {"lab>lab": 0.0}


def test_predict_on_a_link_bound_run_is_above_the_pure_transfer_time():
    result = _result(link="10mbit:50ms")
    sc = parse_scenario(scenario_from_run(result, OVERHEAD))
    pred = predict(sc, result)
    assert pred["epochs"] == result["steps"] - 1
    t_act = _activation_seconds(result)  # about 0.21 s for 4 x 128 x 128 float32
    assert t_act == pytest.approx(0.2097152)
    # 4 micro-batches over 2 replicas: each stage-0 uplink carries at least 2 activations,
    # and the last activation's gradient must still cross back after it
    assert pred["seconds_per_step"] > 3 * t_act + 2 * 0.05
    # the tiny service times cannot explain it: the link does
    fast = _result(link="none")
    fast_pred = predict(parse_scenario(scenario_from_run(fast, OVERHEAD)), fast)
    assert fast_pred["seconds_per_step"] < pred["seconds_per_step"] / 10


def test_predict_uses_the_measured_wire_ratio():
    full = _result(link="10mbit:50ms", ratio=1.0)
    quarter = _result(link="10mbit:50ms", ratio=0.25)
    sc = parse_scenario(scenario_from_run(full, OVERHEAD))
    t_full = predict(sc, full)["seconds_per_step"]
    t_quarter = predict(sc, quarter)["seconds_per_step"]
    assert t_quarter < 0.5 * t_full


def test_scenario_toml_round_trips():
    raw = scenario_from_run(_result(), OVERHEAD)
    text = scenario_toml(raw)
    assert tomllib.loads(text) == raw
    parse_scenario(tomllib.loads(text))


def test_calibrate_reports_prediction_and_error():
    result = _result(link="10mbit:50ms")
    result["seconds_per_step"] = 0.5
    out = calibrate(result, overhead_s=OVERHEAD)
    assert out["message_overhead_s"] == OVERHEAD
    assert out["measured_seconds_per_step"] == 0.5
    assert out["predicted_seconds_per_step"] > 0
    assert out["error"] == pytest.approx(out["predicted_seconds_per_step"] / 0.5 - 1)
    assert out["config"]["link"] == "10mbit:50ms"
    assert out["config"]["stages"] == 2
    assert out["scenario"] == scenario_from_run(result, OVERHEAD)


@pytest.mark.parametrize("steps", [0, 1])
def test_calibrate_needs_two_steps(steps):
    with pytest.raises(CalibrationError, match="at least 2 steps"):
        calibrate(_result(steps=steps), overhead_s=OVERHEAD)


def test_calibrate_needs_a_measured_step_time():
    result = _result()
    result["seconds_per_step"] = None
    with pytest.raises(CalibrationError, match="at least 2 steps"):
        calibrate(result, overhead_s=OVERHEAD)


@pytest.mark.parametrize(
    "service",
    [
        [],
        None,
        [{"stage": 0, "forward": 0.01, "backward": 0.01}],  # one stage of two
        [{"stage": 0, "forward": 0.01, "backward": 0.01}, {"stage": 1, "forward": None}],
    ],
)
def test_missing_service_times(service):
    result = _result()
    result["service_s"] = service
    with pytest.raises(CalibrationError, match="no service times"):
        calibrate(result, overhead_s=OVERHEAD)
    with pytest.raises(CalibrationError, match="no service times"):
        scenario_from_run(result, OVERHEAD)


def test_message_overhead_is_small_and_positive():
    seconds = message_overhead()
    assert 0 < seconds < 0.1
