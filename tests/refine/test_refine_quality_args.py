"""The refinement study's knobs for a scoring sweep (window, pooling, layers), as `pdd study`."""

from __future__ import annotations

from typer.testing import CliRunner

from benchmarks.cli import app
from benchmarks.studies.options import RefineStudyOptions
from benchmarks.studies.refine_quality import refine_config
from common.cli_options import from_options, option_parameters


def _options(**given) -> RefineStudyOptions:
    values = {p.name: p.default.default for p in option_parameters(RefineStudyOptions)}
    return from_options(RefineStudyOptions, {**values, **given})


def test_sweep_flags_reach_the_refine_config():
    opts = _options(window=64, pool_kernel=3, score_layers="20,29", ratios="0.5")
    config = refine_config(opts)
    assert (config.window, config.pool_kernel, config.score_layers) == (64, 3, (20, 29))
    assert opts.ratios == (0.5,)
    assert refine_config(_options()).window == 32  # the product's default W


def test_bad_sweep_flags_exit_with_a_message():
    runner = CliRunner()
    even = runner.invoke(app, ["study", "refine-quality", "--pool-kernel", "4"])
    assert even.exit_code == 2 and "positive odd number" in even.output
    layers = runner.invoke(app, ["study", "refine-quality", "--score-layers", "top"])
    assert layers.exit_code == 2 and "layer numbers like" in layers.output
    assert "Traceback" not in even.output + layers.output
