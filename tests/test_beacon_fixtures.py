"""The native beacon memory reproduces the upstream reference fixtures (fp32, atol 1e-4).

Fixtures: ``../shared/fixtures/beacon`` (recorded from the unmodified upstream MemoRAG code
under transformers 4.47.1; see its README). Every run is checked: memorize logits and the kept
memory, the 7 prompt logits, the 10 greedy tokens and their logits, every step's counters, and
the plain-model runs. Ids and counters must match exactly.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch

from shared_core.memory.beacon import BeaconConfig, BeaconEngine, BeaconState, StepOptions
from shared_core.memory.beacon.engine import StepTrace
from shared_core.memory.beacon.model import allowed_mask
from shared_core.memory.beacon.weights import build_model, read_state_dict

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "beacon"
ATOL = 1e-4
FAMILIES = ("qwen2", "mistral")
RUNS = [(r, n) for r in (2, 4, 8) for n in (100, 37, 48)]

pytestmark = pytest.mark.skipif(
    not (FIXTURES / "README.md").is_file(), reason=f"beacon fixtures not found at {FIXTURES}"
)


@cache
def _file(family: str, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FIXTURES / family / name))


@cache
def _index(family: str) -> dict[str, Any]:
    return json.loads((FIXTURES / family / "index.json").read_text())


@cache
def _weights(family: str) -> dict[str, torch.Tensor]:
    return read_state_dict(FIXTURES / family / "model")


def engine(family: str, ratio: int, options: StepOptions | None = None) -> BeaconEngine:
    cfg = BeaconConfig.from_file(FIXTURES / family / "model", ratio=ratio)
    model = build_model(
        cfg, _weights(family), device=torch.device("cpu"), dtype=torch.float32, options=options
    )
    return BeaconEngine(model)


def ids(family: str, key: str) -> list[int]:
    return _file(family, "inputs.safetensors")[key][0].tolist()


def worst(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def check_memory(state: BeaconState, fx: dict[str, torch.Tensor], prefix: str) -> float:
    """The kept memory equals the fixture's: beacons, raw tail, flags (keys before RoPE)."""
    diff = 0.0
    has_beacons = f"{prefix}/mem/layer0/beacon_key" in fx
    has_tail = f"{prefix}/mem/layer0/raw_key" in fx
    assert (state.n_beacons > 0) == has_beacons and (state.n_tail > 0) == has_tail
    for layer in range(len(state.beacon_kv or state.tail_kv)):
        if has_beacons:
            k, v = state.beacon_kv[layer]
            diff = max(diff, worst(k, fx[f"{prefix}/mem/layer{layer}/beacon_key"]))
            diff = max(diff, worst(v, fx[f"{prefix}/mem/layer{layer}/beacon_value"]))
        if has_tail:
            k, v = state.tail_kv[layer]
            diff = max(diff, worst(k, fx[f"{prefix}/mem/layer{layer}/raw_key"]))
            diff = max(diff, worst(v, fx[f"{prefix}/mem/layer{layer}/raw_value"]))
    if has_tail:
        flags = fx[f"{prefix}/mem/beacon_indices"].tolist()
        assert [int(f) for f in state.tail_flags] == flags
    return diff


def check_counters(state: BeaconState, after: dict[str, Any]) -> None:
    assert state.window_start == after["_start_idx"]
    assert state.consumed == after["_end_idx"]
    assert state.remainder == after["_interleave_remainder"]
    assert state.closed_last == after["_is_full_window"]
    assert list(state.beacon_sizes) == after["_all_beacon_sizes"]
    assert state.beacons_inserted == after["beacon_tokens_inserted_total"]
    assert state.n_beacons == after["retained_beacon_len"]
    assert state.n_tail == after["raw_tail_len"]
    assert sum(state.tail_flags) == after["raw_tail_beacon_count"]


def check_steps(
    trace: list[StepTrace], steps: list[dict[str, Any]], fx: dict[str, torch.Tensor], phase: str
) -> None:
    assert len(trace) == len(steps)
    for got, want in zip(trace, steps, strict=True):
        assert got.beacon_size == want["beacon_size"]
        assert got.mem_size == want["mem_size"]
        assert len(got.entries) == want["input_len"]
        assert got.window_start_after == want["start_idx_after"]
        assert got.consumed_after == want["end_idx_after"]
        assert got.closes_window == want["is_full_window"]
        assert got.remainder_after == want["interleave_remainder_after"]
        base = f"{phase}/trace/step{want['step']:02d}"
        assert list(got.entries) == fx[f"{base}/input_ids"].flatten().tolist()
        assert fx[f"{base}/position_ids"].flatten().tolist() == list(
            range(got.mem_size + len(got.entries))
        )
        flags = fx[f"{base}/beacon_indices"].flatten().tolist()
        assert [int(f) for f in got.window_flags] == flags
        mask = allowed_mask(len(got.entries), got.mem_size, torch.device("cpu"))
        assert torch.equal(mask.to(torch.uint8), fx[f"{base}/attn_allowed"][0, 0])


def run_all(family: str, ratio: int, n: int, options: StepOptions | None = None) -> dict[str, Any]:
    """Drive one fixture run as make_fixtures.py did; return our tensors and traces."""
    eng = engine(family, ratio, options)
    context, prompt = ids(family, f"context_{n}"), ids(family, "prompt_7")
    mem_trace: list[StepTrace] = []
    state, mem_logits = eng.feed(eng.empty(), context, logits="raw", trace=mem_trace)
    cont_trace: list[StepTrace] = []
    cont, prompt_logits = eng.feed(state, prompt, logits="raw", trace=cont_trace)
    gen_trace: list[StepTrace] = []
    gen, logits = eng.feed(state, prompt, logits="last", trace=gen_trace)  # a fork of `state`
    tokens, rows = [], []
    for i in range(10):
        assert logits is not None
        rows.append(logits)
        tokens.append(int(logits.argmax()))
        if i < 9:
            gen, logits = eng.feed(gen, [tokens[-1]], logits="last", trace=gen_trace)
    return {
        "memorize": (state, mem_logits, mem_trace),
        "continue": (cont, prompt_logits, cont_trace),
        "generate": (gen, torch.stack(rows), gen_trace, tokens),
    }


DIFFS: dict[str, float] = {}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("ratio", "n"), RUNS)
def test_beacon_run_matches_upstream(family: str, ratio: int, n: int) -> None:
    name = f"r{ratio}_ctx{n}"
    fx = _file(family, f"{name}.safetensors")
    summary = _index(family)["summary"]["runs"][name]
    got = run_all(family, ratio, n)

    state, mem_logits, trace = got["memorize"]
    diffs = [worst(mem_logits, fx["memorize/logits"])]
    diffs.append(worst(mem_logits[:, -1], fx["memorize/last_logits"]))
    diffs.append(check_memory(state, fx, "memorize"))
    check_counters(state, summary["memorize"]["memory_after"])
    check_steps(trace, summary["memorize"]["steps"], fx, "memorize")
    assert mem_logits.shape[1] == summary["memorize"]["returned_logit_positions"]

    cont, prompt_logits, trace = got["continue"]
    diffs.append(worst(prompt_logits, fx["continue/prompt_logits"]))
    diffs.append(check_memory(cont, fx, "continue"))
    check_counters(cont, summary["continue"]["memory_after"])
    check_steps(trace, summary["continue"]["steps"], fx, "continue")

    gen, rows, trace, tokens = got["generate"]
    assert tokens == fx["generate/ids"].tolist() == summary["generate"]["ids"]
    diffs.append(worst(rows, fx["generate/logits"]))
    diffs.append(check_memory(gen, fx, "generate"))
    check_counters(gen, summary["generate"]["memory_after"])
    check_steps(trace, summary["generate"]["steps"], fx, "generate")

    DIFFS[f"{family}/{name}"] = max(diffs)
    assert max(diffs) <= ATOL, diffs


@pytest.mark.parametrize("family", FAMILIES)
def test_plain_model_matches_upstream(family: str) -> None:
    fx = _file(family, "plain.safetensors")
    eng = engine(family, 8)
    diffs = []
    for key in ("context_100", "context_37", "prompt_7"):
        out = eng.native(ids(family, key), output_hidden_states=key == "context_37")
        diffs.append(worst(out.logits, fx[f"native_{key}/logits"]))
        if key == "context_37":
            for i, h in enumerate(out.hidden_states):
                diffs.append(worst(h, fx[f"native_context_37/hidden_states/{i:02d}"]))
            for layer, (k, v) in enumerate(out.kv):
                diffs.append(worst(k, fx[f"native_context_37/layer{layer}/key"]))
                diffs.append(worst(v, fx[f"native_context_37/layer{layer}/value"]))
    # The beacon path on 7 < ratio tokens inserts no beacon and equals the native model.
    state, logits = eng.feed(eng.empty(), ids(family, "prompt_7"), logits="raw")
    diffs.append(worst(logits, fx["beacon_path_short7/logits"]))
    diffs.append(check_memory(state, fx, "beacon_path_short7"))
    assert state.beacons_inserted == 0 and state.n_tail == 7
    DIFFS[f"{family}/plain"] = max(diffs)
    assert max(diffs) <= ATOL, diffs


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "ablation",
    [StepOptions(use_beacon_params=False), StepOptions(cache_rotated_keys=True)],
    ids=["ordinary-qkv-for-beacons", "rotated-keys-cached"],
)
def test_fixtures_catch_a_wrong_implementation(family: str, ablation: StepOptions) -> None:
    """Beacons on the ordinary q/k/v, or keys cached after RoPE, break the fixtures."""
    fx = _file(family, "r4_ctx100.safetensors")
    got = run_all(family, 4, 100, ablation)
    prompt_diff = worst(got["continue"][1], fx["continue/prompt_logits"])
    assert prompt_diff > 100 * ATOL
    right = run_all(family, 4, 100)
    assert worst(right["continue"][1], fx["continue/prompt_logits"]) <= ATOL


@pytest.mark.parametrize("family", FAMILIES)
def test_eager_attention_matches_too(family: str) -> None:
    fx = _file(family, "r2_ctx100.safetensors")
    got = run_all(family, 2, 100, StepOptions(attention="eager"))
    assert worst(got["continue"][1], fx["continue/prompt_logits"]) <= ATOL
    assert got["generate"][3] == fx["generate/ids"].tolist()


def test_report_worst_differences(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints the worst absolute difference per fixture family (run after the others)."""
    if not DIFFS:
        pytest.skip("run together with the fixture tests to see their numbers")
    families: dict[str, float] = {}
    for key, value in DIFFS.items():
        fam = key.split("/")[0] + ("/plain" if key.endswith("plain") else "/beacon")
        families[fam] = max(families.get(fam, 0.0), value)
    with capsys.disabled():
        print("\nworst abs diff:", {k: f"{v:.2e}" for k, v in sorted(families.items())})
    assert all(v <= ATOL for v in families.values())
