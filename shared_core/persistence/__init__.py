"""Crash-safe save directories: safetensors + JSON only, never pickle (see save_dir.py)."""

from shared_core.persistence.files import read_json, sha256_file, write_json
from shared_core.persistence.manifest import (
    file_record,
    read_manifest,
    verify_files,
    write_manifest,
)
from shared_core.persistence.safetensors_checks import check_safetensors_header
from shared_core.persistence.save_dir import SaveDir

__all__ = [
    "SaveDir",
    "check_safetensors_header",
    "file_record",
    "read_json",
    "read_manifest",
    "sha256_file",
    "verify_files",
    "write_json",
    "write_manifest",
]
