"""Results store: schema, skip/resume, config compatibility, no partial rows, merge, CSV."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from medrobust.evaluation.store import ResultStore, StoreError, stored_config_hash


def row(case: str = "c0", eps: float = 4.0, **extra: object) -> dict[str, object]:
    base = {"config_hash": "h1", "model": "m", "perturbation": "pgd", "kind": "attack", "attack": "pgd",
            "norm": "linf", "eps_stated": eps, "eps_unit": "1/255", "eps_model": eps / 255, "case_id": case,
            "task": "segmentation", "score_name": "dice_mean", "clean_score": 0.8, "adv_score": 0.3,
            "clean_per_class": {"gm": 0.8}, "adv_per_class": {"gm": 0.3}}
    return {**base, **extra}


def test_rows_round_trip_and_done_keys(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite", "h1", "{}") as store:
        store.add_run(row("c0"))
        store.add_run(row("c1", eps=8.0))
        store.add_run(row("c0", adv_score=0.0))  # same key: ignored, first row kept
        assert store.done_keys() == {("m", "pgd", 4.0, "c0"), ("m", "pgd", 8.0, "c1")}
        df = store.to_dataframe()
        assert len(df) == 2 and df["adv_score"].tolist() == [0.3, 0.3]
        assert df["adv_per_class"].iloc[0] == {"gm": 0.3}
        assert store.meta()["config_hash"] == "h1"
        assert store.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bad_rows_are_rejected_whole(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite", "h1") as store:
        with pytest.raises(StoreError, match="unknown run column"):
            store.add_run(row(dice=0.3))
        bad = row()
        del bad["adv_score"]
        with pytest.raises(StoreError, match="adv_score"):
            store.add_run(bad)
        assert store.count() == 0


def test_incompatible_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    ResultStore(path, "h1").close()
    assert stored_config_hash(path) == "h1"
    with pytest.raises(StoreError, match="different grid config"):
        ResultStore(path, "h2")
    assert stored_config_hash(tmp_path / "none.sqlite") is None
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 10)
    with pytest.raises(StoreError, match="not a medrobust store"):
        stored_config_hash(tmp_path / "junk.sqlite")


def test_checks_models_merge_and_csv(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "rank1.sqlite", "h1") as shard:
        shard.add_run(row("c1"))
        shard.set_model("m", "segmentation", ["background", "gm"], {"offset": 0.0, "scale": 1.0})
    with ResultStore(tmp_path / "main.sqlite", "h1") as store:
        store.add_run(row("c0"))
        assert store.merge(tmp_path / "rank1.sqlite") == 1
        assert store.merge(tmp_path / "rank1.sqlite") == 0
        assert store.models()["m"]["classes"] == ["background", "gm"]
        store.write_checks([{"model": "m", "attack": "pgd", "likely_masking": True, "reasons": ["a", "b"]}])
        store.write_checks([{"model": "m", "attack": "pgd", "likely_masking": False, "reasons": "ok"}])
        checks = store.checks_dataframe()
        assert checks.to_dict("records") == [{"model": "m", "attack": "pgd", "likely_masking": 0, "reasons": "ok"}]
        csv = store.export_csv(tmp_path / "results.csv")
    back = pd.read_csv(csv)
    assert sorted(back["case_id"]) == ["c0", "c1"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.slow
def test_sigkill_never_leaves_partial_rows(tmp_path: Path) -> None:
    """A writer killed mid-stream leaves only whole rows; a second writer resumes."""
    path = tmp_path / "r.sqlite"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parents[2] / 'src')!r})
        from tests.evaluation.test_store import row
        from medrobust.evaluation.store import ResultStore
        store = ResultStore({str(path)!r}, "h1")
        done = store.done_keys()
        for i in range(100000):
            if ("m", "pgd", 4.0, f"c{{i}}") not in done:
                store.add_run(row(f"c{{i}}", clean_per_class={{"gm": i, "pad": "x" * 2000}}))
            if i == 50:
                print("ready", flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    con = sqlite3.connect(path)
    rows = con.execute("SELECT case_id, clean_per_class, adv_score FROM runs").fetchall()
    con.close()
    assert len(rows) > 50
    assert all(r[2] == 0.3 and r[1].endswith("}") for r in rows)
    with ResultStore(path, "h1") as store:
        done = store.done_keys()
        assert len(done) == len(rows)
        store.add_run(row(f"c{len(rows) + 5}"))
        assert store.count() == len(rows) + 1
