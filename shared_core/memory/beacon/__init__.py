"""Native Activation Beacon memory for the MemoRAG memory models (no remote code)."""

from __future__ import annotations

from shared_core.memory.beacon.backend import NativeBeaconMemory
from shared_core.memory.beacon.config import BeaconConfig
from shared_core.memory.beacon.engine import BeaconEngine
from shared_core.memory.beacon.model import BeaconForCausalLM, StepOptions
from shared_core.memory.beacon.state import BeaconState

__all__ = [
    "BeaconConfig",
    "BeaconEngine",
    "BeaconForCausalLM",
    "BeaconState",
    "NativeBeaconMemory",
    "StepOptions",
]
