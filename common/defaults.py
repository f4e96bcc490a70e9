"""Defaults several components and their CLIs share, written once (import-light: no torch)."""

from __future__ import annotations

DEFAULT_MODEL = "smollm2-135m"  # the bundled model alias (common.model.ALIASES)
