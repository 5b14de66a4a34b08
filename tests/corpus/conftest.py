"""Shared fixtures: tiny offline models (Llama causal LM, BERT masked LM) and a MiniLM corpus."""

from __future__ import annotations

from pathlib import Path

import pytest


def _tiny_tokenizer():
    """A byte-level BPE with a BOS post-processor, trained offline on stdlib text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from swarmpress.corpus.text import load_text

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    special = ["<unk>", "<s>", "</s>", "<pad>", "<mask>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special, show_progress=False)
    tk.train_from_iterator(load_text().documents[:20], trainer)
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tk.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"llama": dir, "bert": dir}: random 2-block models written with save_pretrained."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as tlog

    tlog.disable_progress_bar()
    root = tmp_path_factory.mktemp("tiny-models")
    tok = _tiny_tokenizer()
    torch.manual_seed(0)
    llama = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    bert = BertConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
    )
    out = {"llama": root / "tiny-llama", "bert": root / "tiny-bert-mlm"}
    LlamaForCausalLM(llama).save_pretrained(out["llama"])
    BertForMaskedLM(bert).save_pretrained(out["bert"])
    for d in out.values():
        tok.save_pretrained(d)
    tlog.enable_progress_bar()
    return out


MINILM_ARGS = {"model": "minilm", "layers": [0, 3, 6], "seqs": 2, "seq_len": 64, "seed": 0}


@pytest.fixture(scope="session")
def minilm_args() -> dict:
    """The build_corpus arguments of minilm_corpus."""
    return dict(MINILM_ARGS)


@pytest.fixture(scope="session")
def minilm_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real MiniLM corpus (2 x 64 tokens, boundaries 0, 3, 6) plus the synthetic family."""
    from swarmpress.corpus.build import build_corpus

    return build_corpus(tmp_path_factory.mktemp("minilm") / "corpus", **MINILM_ARGS)
