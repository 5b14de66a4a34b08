"""Round evaluation: an entry that cannot load is not run on the rest of the round."""

from swarmpress.arena.config import Competition, LimitsModel
from swarmpress.arena.evaluate import GIVE_UP_AFTER, evaluate
from swarmpress.arena.pool import Pool
from swarmpress.arena.service import failure_category


def test_an_entry_that_cannot_load_is_given_up_after_two_tensors(arena_home, tmp_path):
    comp = Competition(name="lossy", track="lossy", tensors_per_round=5,
                       limits=LimitsModel(wall_s=10, startup_s=20, cpu_s=10))  # fmt: skip
    pool = Pool(arena_home / "pool")
    sample = pool.sample(comp.name, 0, comp.tensors_per_round)
    bad = tmp_path / "bad.py"
    bad.write_text("raise SystemExit('no')\ndef compress_data(d): return d\n"
                   "def decompress_data(d): return d\n")  # fmt: skip
    seen = []
    out = evaluate(bad, "functions", comp, pool, sample, slot=5,
                   progress=lambda i, n: seen.append((i, n)))  # fmt: skip
    assert out.score == 0.0 and len(out.tensors) == 5 and seen[-1] == (5, 5)
    tried, skipped = out.tensors[:GIVE_UP_AFTER], out.tensors[GIVE_UP_AFTER:]
    assert all(r.reason.startswith("compress failed to load") for r in tried)
    assert all(r.reason.startswith("compress not run: the entry did not load") for r in skipped)
    assert {failure_category(False, r.reason, "lossy") for r in skipped} == {"compress failed"}
