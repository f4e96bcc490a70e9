"""Fixtures: synthetic profile files and a refinement quality file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tuner_profiles import fast_cloud, slow_device

from common.profiles import save_profile


@pytest.fixture
def profile_files(tmp_path: Path) -> tuple[Path, Path]:
    dev, cloud = tmp_path / "device.json", tmp_path / "cloud.json"
    save_profile(slow_device(), dev)
    save_profile(fast_cloud(), cloud)
    return dev, cloud


@pytest.fixture
def quality_file(tmp_path: Path) -> Path:
    path = tmp_path / "refine_quality.json"
    # The shape ``python -m benchmarks.studies.refine_quality --save-result`` writes.
    rows = [
        {"method": method, "refine_ratio": ratio, "agreement_32": agreement}
        for ratio, agreement in ((0.25, 0.97), (0.5, 0.92), (0.75, 0.70))
        for method in ("attention", "last")
    ]
    rows.append({"method": "full", "refine_ratio": 0.0, "agreement_32": 1.0})
    path.write_text(json.dumps({"summary": rows}))
    return path
