"""Fixtures: synthetic profile files and a refinement quality file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tuner_profiles import fast_cloud, slow_device

from common.timing_model import save_profile


@pytest.fixture
def profile_files(tmp_path: Path) -> tuple[Path, Path]:
    dev, cloud = tmp_path / "device.json", tmp_path / "cloud.json"
    save_profile(slow_device(), dev)
    save_profile(fast_cloud(), cloud)
    return dev, cloud


@pytest.fixture
def quality_file(tmp_path: Path) -> Path:
    path = tmp_path / "refine_quality.json"
    rows = [
        {"refine_ratio": 0.25, "agreement": 0.97},
        {"refine_ratio": 0.5, "agreement": 0.92},
        {"refine_ratio": 0.75, "agreement": 0.70},
    ]
    path.write_text(json.dumps({"results": rows}))
    return path
