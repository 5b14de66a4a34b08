"""The staged Llama-style model: stages compose to one model and it learns."""

import pytest
import torch

from swarmpress.swarm.model import ModelConfig, lm_loss, split

CFG = ModelConfig(vocab=97, dim=32, layers=4, heads=4, ffn=64, max_seq=32)


def _run(stages, tokens):
    x = tokens
    for s in stages:
        x = s(x)
    return x


@pytest.mark.parametrize("bottleneck", [1, 4])
def test_stages_compose_and_cut_the_boundary_by_the_bottleneck(bottleneck):
    cfg = ModelConfig(**{**CFG.to_json(), "bottleneck": bottleneck})
    stages = split(cfg, 3)
    assert [len(s.blocks) for s in stages] == [1, 2, 1]
    tokens = torch.randint(0, cfg.vocab, (2, 16))
    boundary = stages[0](tokens)
    assert boundary.shape == (2, 16, cfg.dim // bottleneck)
    assert _run(stages, tokens).shape == (2, 16, cfg.vocab)
    # the same weights in one stage give the same logits
    whole = split(cfg, 1)[0]
    if bottleneck == 1:
        merged = {}
        offset = 0
        for s in stages:
            for k, v in s.state_dict().items():
                if k.startswith("blocks."):
                    i, rest = k.split(".", 2)[1:]
                    k = f"blocks.{int(i) + offset}.{rest}"
                merged[k] = v
            offset += len(s.blocks)
        whole.load_state_dict(merged)
        torch.testing.assert_close(whole(tokens), _run(stages, tokens))


def test_causal_future_tokens_do_not_change_the_past():
    stages = split(CFG, 2)
    a = torch.randint(0, CFG.vocab, (1, 12))
    b = a.clone()
    b[0, 8:] = (b[0, 8:] + 1) % CFG.vocab
    torch.testing.assert_close(_run(stages, a)[0, :8], _run(stages, b)[0, :8])


def test_a_few_steps_of_training_reduce_the_loss():
    stages = split(CFG, 2, seed=1)
    params = [p for s in stages for p in s.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-3)
    tokens = torch.arange(32).repeat(4, 1) % CFG.vocab  # a learnable pattern
    first = None
    for _ in range(30):
        loss = lm_loss(_run(stages, tokens), tokens)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="heads"):
        ModelConfig(dim=30, heads=4)
    with pytest.raises(ValueError, match="bottleneck"):
        ModelConfig(dim=32, heads=4, bottleneck=5)
    with pytest.raises(ValueError, match="stages"):
        split(CFG, 5)
    with pytest.raises(ValueError, match="max_seq"):
        split(CFG, 1)[0](torch.zeros(1, 40, dtype=torch.long))


def test_an_uneven_split_moves_work_not_the_model():
    """stage_layers: the last stage keeps only the LM head (the heaviest part on a small
    model), and the stages still compose to the very same logits as the even split."""
    even = split(CFG, 3)
    heavy_first = split(CFG, 3, blocks=[3, 1, 0])
    assert [len(s.blocks) for s in heavy_first] == [3, 1, 0]
    assert heavy_first[-1].head is not None and heavy_first[0].embed is not None
    tokens = torch.randint(0, CFG.vocab, (2, 16))
    assert torch.equal(_run(even, tokens), _run(heavy_first, tokens))


@pytest.mark.parametrize("blocks", [[2, 1], [2, 1, 0, 1], [4, 0, 0], [5, -1, 0], [1, 0, 3]])
def test_a_split_that_does_not_deal_the_blocks_is_refused(blocks):
    with pytest.raises(ValueError, match="stage_layers"):
        split(CFG, 3, blocks=blocks)


def test_the_config_checks_stage_layers_and_names_the_field():
    from swarmpress.swarm.config import build_config

    assert build_config("tiny", layers=3, stages=3, stage_layers=[2, 1, 0]).stage_layers == [
        2, 1, 0]  # fmt: skip
    with pytest.raises(ValueError, match="stage_layers"):
        build_config("tiny", stages=2, stage_layers=[1, 1])  # 4 layers in the preset
