"""``medrobust reproduce``: run the chosen claims, save each result, and write the page."""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from medrobust.data.io import write_json_atomic
from medrobust.reproduce.claims import CLAIMS, SCALES, ClaimContext, ClaimResult
from medrobust.reproduce.page import write_page


def claim_names() -> list[str]:
    """The registered claims in page order.

    Returns:
        Their names.
    """
    return sorted(CLAIMS.names(), key=lambda n: CLAIMS.info(n)["order"])


def check_request(claims: Sequence[str], scale: str, datalist: Path | None) -> list[str]:
    """The claims to run, validated before anything is written.

    Args:
        claims: names (empty: every claim).
        scale: ``demo`` or ``full``.
        datalist: the user's datalist (needed at ``full`` scale).

    Returns:
        The names in page order.

    Raises:
        ValueError: an unknown claim or scale, or ``full`` without a datalist (the message
            names the argument).
    """
    if scale not in SCALES:
        raise ValueError(f"--scale: {scale!r} is not a scale; allowed: {', '.join(SCALES)}")
    if scale == "full" and datalist is None:
        raise ValueError("--data: --scale full takes the user's datalist (a Decathlon dataset.json)")
    if datalist is not None and not Path(datalist).exists():
        raise ValueError(f"--data: {datalist} not found")
    unknown = [c for c in claims if c not in CLAIMS]
    if unknown:
        raise ValueError(f"CLAIM: unknown claim {unknown[0]!r}; allowed: {', '.join(claim_names())}")
    return [n for n in claim_names() if not claims or n in claims]


def reproduce(claims: Sequence[str], out: Path, *, scale: str = "demo", quick: bool = False,
              datalist: Path | None = None, seeds: int | None = None, progress: bool = True) -> tuple[list[ClaimResult], Path]:
    """Run claims into ``out`` (one folder each, trained models shared in ``out/models``) and write the page.

    Args:
        claims: claim names (empty: all).
        out: the output folder.
        scale: ``demo`` (bundled demo sets) or ``full`` (``datalist``).
        quick: a smoke run (verdicts say "smoke run").
        datalist: the user's segmentation datalist at ``full`` scale.
        seeds: training seeds per trained setting (default 3; 1 when quick).
        progress: show progress bars.

    Returns:
        The results in page order and the page's path.
    """
    names = check_request(claims, scale, datalist)
    start, results = time.perf_counter(), []
    for name in names:
        ctx = ClaimContext(out / name, out / "models", scale=scale, quick=quick,
                           seeds=seeds if seeds is not None else (1 if quick else 3), datalist=datalist,
                           progress=progress)
        ctx.out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        result = CLAIMS[name](ctx)
        result.seconds = time.perf_counter() - t0
        write_json_atomic(ctx.out / "result.json", result.to_json())
        results.append(result)
    page = write_page(results, out, scale=scale, quick=quick, seconds=time.perf_counter() - start)
    return results, page
