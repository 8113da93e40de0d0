"""Log-likelihoods of short replies to one prompt, the prompt read once.

``PromptScorer`` runs the prompt (framed as ``LocalGenerator`` frames it) through the model
once into a KV cache; each candidate reply is then scored by one short forward pass on top of
that cache, which is cropped back afterwards. Used by the short-answer mode to let the model
choose among spans of the passages (``shared_core/short_answers.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from transformers import DynamicCache

from shared_core.errors import LimitError
from shared_core.models.generation import LocalGenerator


class PromptScorer:
    """The model's log-probabilities of replies to ``prompt`` (greedy framing, no sampling)."""

    def __init__(self, generator: LocalGenerator, prompt: str) -> None:
        self.generator = generator
        self.model = generator.model
        ids = generator.format.plain((), prompt)
        if len(ids) + 32 > generator.max_positions:
            raise LimitError(
                f"the prompt is {len(ids):,} tokens, over {generator.name}'s "
                f"{generator.max_positions:,} positions; retrieve fewer passages"
            )
        self.length = len(ids)
        self.cache = DynamicCache()
        with torch.inference_mode():
            self.first = self._forward(ids, 0, keep=1)[0]

    def _forward(self, ids: Sequence[int], start: int, *, keep: int) -> torch.Tensor:
        device = self.model.device
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=device)
        positions = torch.arange(start, start + len(ids), device=device)[None]
        out = self.model(
            input_ids=input_ids,
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=keep,
        )
        return torch.log_softmax(out.logits[0].float(), dim=-1)

    def encode(self, text: str) -> list[int]:
        """``text`` as reply tokens (no special tokens)."""
        return self.generator.format.encode(text)

    def first_logprob(self, tokens: Sequence[int]) -> float:
        """Log-probability of the reply's first token."""
        return float(self.first[tokens[0]])

    def score(
        self, replies: Sequence[Sequence[int]], ends: Iterable[int], *, batch_tokens: int = 512
    ) -> list[float]:
        """``log p(reply, then one of ends)`` for each reply (the reply is exactly those
        tokens). Replies are packed side by side into one forward pass of at most
        ``batch_tokens`` tokens, each seeing the prompt and its own tokens only."""
        end_ids = sorted(set(ends))
        scores: list[float] = []
        group: list[Sequence[int]] = []
        for reply in replies:
            if not reply:
                raise ValueError("a reply to score needs at least one token")
            if group and sum(map(len, group)) + len(reply) > batch_tokens:
                scores += self._packed(group, end_ids)
                group = []
            group.append(reply)
        if group:
            scores += self._packed(group, end_ids)
        return scores

    def _packed(self, replies: Sequence[Sequence[int]], end_ids: list[int]) -> list[float]:
        flat = [t for reply in replies for t in reply]
        n, prompt = len(flat), self.length
        device = self.model.device
        mask = torch.full((n, prompt + n), float("-inf"), device=device)
        mask[:, :prompt] = 0.0
        positions, at = [], 0
        for reply in replies:
            for i in range(len(reply)):
                mask[at + i, prompt + at : prompt + at + i + 1] = 0.0
                positions.append(prompt + i)
            at += len(reply)
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([flat], dtype=torch.long, device=device),
                position_ids=torch.tensor([positions], device=device),
                attention_mask=mask[None, None],
                cache=self.cache,
                use_cache=True,
            )
            self.cache.crop(-n)  # back to the prompt alone
            logp = torch.log_softmax(out.logits[0].float(), dim=-1)
        scores, at = [], 0
        for reply in replies:
            rows = logp[at : at + len(reply)]
            total = float(self.first[reply[0]])
            for i in range(1, len(reply)):
                total += float(rows[i - 1, reply[i]])
            scores.append(total + float(torch.logsumexp(rows[-1, end_ids], dim=0)))
            at += len(reply)
        return scores

    def compare(self, options: Sequence[Sequence[int]]) -> list[float]:
        """Log-probability of each option's first tokens (e.g. "Yes" / "yes"), summed."""
        return [float(torch.logsumexp(self.first[list(ids)], dim=0)) for ids in options]
