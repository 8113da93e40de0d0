"""Tiny random-weight models and a hub-free tokenizer, for testing mechanics fast."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer(chat_template: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte tokens + 3 specials) built in code."""
    byte_vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=byte_vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_model(
    kind: str = "llama", *, max_positions: int = 4096, seed: int = 0, vocab_size: int = 272
) -> torch.nn.Module:
    """A 2-layer GQA model with RoPE (Llama- or Qwen2-like), random weights, fp32, eval mode."""
    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        eos_token_id=258,
        bos_token_id=257,
        pad_token_id=256,
        tie_word_embeddings=False,
    )
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, rope_theta=10000.0))
    elif kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common, rope_theta=1000000.0))
    else:
        raise ValueError(kind)
    model.config.name_or_path = f"tiny-{kind}"
    return model.eval()


def next_token_logits(memory, prompt: str, history=()):
    """Logits of the first reply token a memory would decode for ``prompt``."""
    import torch

    from shared_core.models.decoding import RunRequest
    from shared_core.types import GenerationOptions

    run = memory._open_run(RunRequest(prompt, tuple(history), GenerationOptions(max_new_tokens=1)))
    with torch.inference_mode():
        return run._step(run.prompt_ids)
