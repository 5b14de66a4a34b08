"""Many submissions queued at once with two workers: all complete with stored results and
the leaderboard keeps answering (the 200-submission run is benchmarks/arena_load.py)."""

from benchmarks.arena_load import run


def test_queued_burst_completes_with_results_and_reads_keep_working(tmp_path):
    # 8 at once still queues four per worker behind the two running (it was 12: every one
    # more costs the suite ~1 s on 2 cores and checks nothing the first 8 do not)
    out = run(submissions=8, workers=2, readers=2, tensors=2, home=tmp_path / "home")
    assert out["complete_with_results"] == 8
    assert out["read_errors"] == 0 and out["leaderboard_reads"] > 10
