"""Competition files: defaults, round trip through TOML, clear errors."""

import pytest

from swarmpress.arena.config import (
    ArenaConfigError,
    default_config,
    dump_config,
    load_config,
)


def test_default_round_trips_through_toml(tmp_path):
    cfg = default_config()
    path = tmp_path / "arena.toml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert [c.name for c in cfg.competition] == ["lossless", "lossy", "routing"]
    assert cfg.get("lossy").margin == 0.01 and cfg.get("lossy").submissions_per_day == 4


@pytest.mark.parametrize(
    "text,match",
    [
        ("[[competition]]\nname='x'\ntrack='video'\n", "track"),
        ("[[competition]]\nname='Bad Name'\ntrack='lossy'\n", "name"),
        ("[[competition]]\nname='x'\ntrack='lossy'\nmargin=-1\n", "margin"),
        ("[[competition]]\nname='x'\ntrack='lossy'\nextra=1\n", "extra"),
        ("[[competition]]\nname='x'\ntrack='lossy'\n[[competition]]\nname='x'\ntrack='lossy'\n",
         "repeat"),
        ("not toml [", "not valid TOML"),
    ],
)  # fmt: skip
def test_bad_files_name_the_problem(tmp_path, text, match):
    path = tmp_path / "arena.toml"
    path.write_text(text)
    with pytest.raises(ArenaConfigError, match=match):
        load_config(path)
    with pytest.raises(ArenaConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ArenaConfigError, match="no competition"):
        default_config().get("nope")
