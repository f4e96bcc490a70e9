"""The README's hop-by-hop flow names real code: every call it lists exists in the file it names.

A rename or a move that forgets the README fails here, so the flow section stays true.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
MAX_HOPS = 6  # issue 10: a reader follows a request in at most six calls per side


def flow_rows(side: str) -> list[tuple[str, list[str]]]:
    """(file, [qualified names]) per row of the README's ``flow:<side>`` table."""
    text = README.read_text()
    match = re.search(rf"<!-- flow:{side} -->(.*?)<!-- /flow:{side} -->", text, re.S)
    assert match, f"README has no flow:{side} table"
    rows = []
    for line in match.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].isdigit():
            continue
        path = cells[1].strip("`")
        names = re.findall(r"`([A-Za-z_][\w.]*)`", cells[2])
        rows.append((path, names))
    return rows


def resolve(path: str, qualname: str) -> object:
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    obj: object = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("side", ["device", "cloud"])
def test_flow_has_at_most_six_hops_that_name_real_calls(side: str) -> None:
    rows = flow_rows(side)
    assert 1 <= len(rows) <= MAX_HOPS
    for path, names in rows:
        assert (README.parent / path).is_file(), f"README flow names a missing file {path}"
        assert names, f"row for {path} names no call"
        for name in names:
            assert callable(resolve(path, name)), f"{path}: {name} is not a callable"


def test_resolve_fails_on_a_name_that_does_not_exist() -> None:
    with pytest.raises(AttributeError):
        resolve("device_client/answer.py", "Answer.no_such_method")
