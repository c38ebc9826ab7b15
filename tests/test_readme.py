"""Every ```python block of README.md runs as pasted (a newcomer's first try)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_has_python_examples() -> None:
    assert BLOCKS, "README.md lost its Python examples"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index: int) -> None:
    namespace: dict[str, object] = {}
    exec(compile(BLOCKS[index], f"README.md python block {index + 1}", "exec"), namespace)  # noqa: S102
    if "x_adv" in namespace and "x" in namespace:  # the attack example: the perturbation stays in its budget
        import torch

        x, x_adv, imap = namespace["x"], namespace["x_adv"], namespace["imap"]
        assert isinstance(x, torch.Tensor) and isinstance(x_adv, torch.Tensor)
        assert float((x_adv - x).abs().max()) <= 8 / imap.scale + 1e-6  # type: ignore[attr-defined]
