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
