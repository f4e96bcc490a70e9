"""The refinement benchmark's knobs for a scoring sweep (window, pooling, layers)."""

from __future__ import annotations

import pytest

from benchmarks.studies.refine_quality import parse_args


def test_sweep_flags_reach_the_args_and_an_even_pool_is_refused(capsys):
    args = parse_args(["--window", "64", "--pool-kernel", "3", "--score-layers", "20,29"])
    assert (args.window, args.pool_kernel, args.score_layers) == (64, 3, (20, 29))
    assert parse_args([]).window == 32  # the product's default W
    with pytest.raises(SystemExit):
        parse_args(["--pool-kernel", "4"])
    assert "positive odd number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--score-layers", "top"])
    assert "layer numbers like" in capsys.readouterr().err
