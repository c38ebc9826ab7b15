"""``medrobust attack``: adversarial images of a split, with a manifest of what was done."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import track

from medrobust.attacks.frequency import PRESETS
from medrobust.attacks.registry import attack_budget_kind, attack_names, attack_task
from medrobust.cli import app
from medrobust.cli.options import (
    attack_amp,
    budget_error,
    check_out_folder,
    check_overlap,
    parse_size,
    refuse_existing,
)
from medrobust.data.folders import removed_if_empty
from medrobust.evaluation.cases import prepare_cases
from medrobust.evaluation.core import attack_for, check_fits, evaluate_run
from medrobust.evaluation.examples import save_adversarial
from medrobust.evaluation.loading import load_model
from medrobust.evaluation.specs import AttackSpec
from medrobust.evaluation.store import ResultStore, stored_config_hash
from medrobust.evaluation.types import RunSettings
from medrobust.models.devices import resolve_device
from medrobust.units import IntensityMap

console = Console(markup=False, highlight=False, soft_wrap=True)  # paths and names printed verbatim
_STORE_FILES = ("results.sqlite", "results.sqlite-wal", "results.sqlite-shm", "results.sqlite.lock")
_FLAGS = {"attack": "--attack", "eps": "--eps", "eps_unit": "--eps-unit", "norm": "--norm", "options": "--steps etc.",
          "target": "--target", "region": "--region"}


def parse_target_flag(text: str | None) -> str | dict[str, Any] | None:
    """``--target`` as the grid's ``target:``: ``least_likely``, ``random``, ``class:K`` or ``map:FROM=TO,...``.

    Args:
        text: the flag's value, or None.

    Returns:
        The grid form (a string, or ``{"map": {from: to}}``), or None.

    Raises:
        ValueError: a ``map:`` without ``FROM=TO`` pairs (naming ``--target``).

    Example:
        >>> parse_target_flag("map:tumour=background,1=0")
        {'map': {'tumour': 'background', '1': '0'}}
    """
    if text is None or not text.startswith("map:"):
        return text
    pairs = [p.split("=", 1) for p in text.removeprefix("map:").split(",") if p]
    if not pairs or any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        raise ValueError(f"--target: give map:FROM=TO[,FROM=TO...], got {text!r}")
    return {"map": {a: b for a, b in pairs}}


def attack_spec(attack: str, eps: float, eps_unit: str, norm: str, steps: int | None, loss: str | None,
                step_size: float | None, restarts: int, q_max: float, block_size: str | None,
                ssim_weight: float | None, preset: str | None = None, target: str | None = None,
                keep: str | None = None, amp: bool = False) -> AttackSpec:
    """The grid entry equivalent to the command line's flat flags.

    A frequency attack's budget is ``--q-max``; the others' is ``--eps`` in ``--eps-unit``
    and ``--norm``.

    ``steps`` None is 20, except under a ``preset``, which then sets it (as it sets the SSIM
    weight when ``ssim_weight`` is None). ``amp`` runs the model's forward in bfloat16.
    """
    if attack.lower() not in attack_names():
        raise ValueError(f"--attack: unknown attack {attack!r}; allowed: {', '.join(attack_names())}")
    frequency = attack_budget_kind(attack) == "dct"
    if preset is not None and (not frequency or preset not in PRESETS):
        raise ValueError(f"--preset: the frequency attacks take {', '.join(PRESETS)}; got {preset!r} for {attack!r}")
    options: dict[str, Any]
    if frequency:
        given = {"preset": preset, "steps": 20 if steps is None and preset is None else steps,
                 "ssim_weight": ssim_weight, "block_size": parse_size(block_size, "--block-size")}
        options = {k: v for k, v in given.items() if v is not None}
        fields: dict[str, Any] = {"eps": [q_max], "eps_unit": "1/255", "norm": "dct"}
    elif attack_task(attack) is not None:  # a preset ensemble: its members' steps unless --steps scales them
        options = {} if steps is None else {"steps": steps}
        fields = {"eps": [eps], "eps_unit": eps_unit, "norm": norm}
    else:
        options = {"steps": 20 if steps is None else steps, "restarts": restarts}
        if loss:
            options["loss"] = loss
        if step_size is not None:
            options["step_size"] = step_size
        fields = {"eps": [eps], "eps_unit": eps_unit, "norm": norm}
    if keep is not None:
        options["keep"] = keep
    try:
        return AttackSpec(attack=attack.lower(), options=options, target=parse_target_flag(target), amp=amp, **fields)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        flag = _FLAGS.get(str(first["loc"][0]), str(first["loc"][0])) if first["loc"] else "--attack"
        raise ValueError(f"{flag}: {first['msg'].removeprefix('Value error, ')} (got {first.get('input')!r})") from None


@app.command()
def attack(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="model.json of the model to attack."),
    data: Path = typer.Option(..., "--data", help="Decathlon dataset.json, class-folder root, or CSV."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    attack_name: str = typer.Option("pgd", "--attack", help=f"One of: {', '.join(attack_names())}, or a name "
                                    "added with medrobust.attacks.register_attack."),
    eps: float = typer.Option(4.0, "--eps", help="Budget radius in --eps-unit (voxel attacks; std for gaussian)."),
    eps_unit: str = typer.Option("1/255", "--eps-unit", help="model, raw, HU (CT windows) or 1/255 of the valid range."),
    norm: str = typer.Option("linf", "--norm", help="linf or l2."),
    steps: int | None = typer.Option(None, "--steps", help="Attack iterations (>= 1); default 20, or the --preset's."),
    loss: str | None = typer.Option(None, "--loss", help="ce, dice, dice_ce, segpgd, cospgd, dlr (default per attack)."),
    step_size: float | None = typer.Option(None, "--step-size", help="In --eps-unit; default 2.5*eps/steps."),
    restarts: int = typer.Option(1, "--restarts", min=1, help="Random restarts; the strongest is kept per case."),
    q_max: float = typer.Option(20.0, "--q-max", help="VAFA: largest quantisation step, in (valid range)/255."),
    block_size: str | None = typer.Option(None, "--block-size", help="VAFA: DCT block, e.g. 32,32,32 or 32,32."),
    ssim_weight: float | None = typer.Option(None, "--ssim-weight", help="VAFA: weight of the SSIM term (>= 0); "
                                             "default 1 for vafa3d, 0 for vafa2d (as published), or the --preset's."),
    preset: str | None = typer.Option(None, "--preset", help=f"VAFA: {', '.join(PRESETS)} (the reference code's "
                                      "attack, asif-hanif/vafa); other flags given override it."),
    target: str | None = typer.Option(None, "--target", help="Make the attack targeted: least_likely, random, class:K "
                                      "(classifiers) or map:FROM=TO[,...] (segmentation, e.g. map:tumour=background)."),
    keep: str | None = typer.Option(None, "--keep", help="Iterate kept per case: metric (default: the one that hurts "
                                    "the metric most) or loss (the highest loss)."),
    overlap: float = typer.Option(0.25, "--overlap", help="Sliding-window overlap in [0, 1) for whole volumes."),
    sw_batch_size: int = typer.Option(1, "--sw-batch-size", min=1, help="Windows per sliding-window forward."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Cases of equal shape per clean forward pass "
                                   "(attacks still run case by case; the rows do not depend on it)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N or mps."),
    amp: str = typer.Option("none", "--amp", help="bf16: the model's forward in bfloat16 (loss, gradient sign, "
                            "projection and scores stay float32); none: float32."),
    max_cases: int | None = typer.Option(None, "--max-cases", min=1, help="Only the first N cases."),
    seed: int = typer.Option(0, "--seed", help="Seed of random starts."),
    out: Path = typer.Option(..., "--out", help="Folder for adversarial NIfTIs (raw units, source affine) + manifest.json."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out (an --out that holds this very "
                               "attack's results.sqlite resumes without it)."),
) -> None:
    """Attack every case of a split; write adversarial images, manifest.json and results.sqlite.

    A killed run resumes when rerun with the same flags: cases with a row in results.sqlite
    (written after the case's image and manifest entry) are skipped.
    """
    spec = attack_spec(attack_name, eps, eps_unit, norm, steps, loss, step_size, restarts, q_max, block_size,
                       ssim_weight, preset, target, keep, amp=bool(attack_amp(amp)))
    check_overlap(overlap, "--overlap")
    # device and batch sizes change how the cases run, not the rows; amp only when on (hashes stay as before)
    config = {"checkpoint": str(checkpoint), "data": str(data), "split": split, "seed": seed, "overlap": overlap,
              **spec.model_dump(mode="json", exclude=None if spec.amp else {"amp"})}
    config_json = json.dumps(config, sort_keys=True)
    settings = RunSettings(seed, hashlib.sha256(config_json.encode()).hexdigest()[:16])
    check_out_folder(out, "--out")
    store_path = out / "results.sqlite"
    if not (store_path.exists() and stored_config_hash(store_path) in (None, settings.config_hash)):
        refuse_existing(out, "--out", force)  # else resume this very attack (or one that stored no row yet)
    lm = load_model(checkpoint, data, split, max_cases=max_cases)
    target_device = resolve_device(device)
    lm.model.to(target_device)
    try:
        check_fits(spec, lm)
    except ValueError as err:
        raise ValueError(f"--{err}") from None  # "--attack: ...", "--target: ..."
    ds = lm.split.dataset
    # Built once on the first case so a bad eps, unit or option fails before anything is written.
    first = ds[0]
    try:
        attack_for(spec, spec.eps[0], first["image"].unsqueeze(0), IntensityMap.from_dict(first["meta"]["intensity"]))
    except (ValueError, TypeError) as err:
        raise budget_error(err) from None
    fields = {"checkpoint": str(checkpoint), "data": str(data), "split": split, "seed": seed}
    with removed_if_empty(out, scratch=_STORE_FILES), ResultStore(store_path, settings.config_hash, config_json) as store:
        done = store.done_keys()
        resumed: list[str] = []

        def pending() -> Iterator[dict[str, Any]]:
            for i in track(range(len(ds)), description=f"{spec.label} eps={spec.eps[0]:g} {spec.eps_unit}",
                           console=console):
                if (lm.name, spec.label, float(spec.eps[0]), str(ds[i]["id"])) in done:
                    resumed.append(str(ds[i]["id"]))
                    continue
                yield ds[i]

        for case in prepare_cases(lm, pending(), settings, device=target_device, roi_size=lm.info.roi_size,
                                  overlap=overlap, sw_batch_size=sw_batch_size, batch_size=batch_size):
            run = evaluate_run(lm, spec, spec.eps[0], case, settings)
            save_adversarial(out, case, run.row, run.x, fields)
            store.add_run(run.row)  # last: a stored row means the case's image and manifest entry are written
        rows = store.to_dataframe()
    adv_scores = dict(zip(rows["case_id"], rows["adv_score"]))
    scores = [round(float(adv_scores[str(ds[i]["id"])]), 4) for i in range(len(ds))]
    console.print(f"{len(scores)} cases attacked{f' ({len(resumed)} done before, resumed)' if resumed else ''}; "
                  f"adversarial {rows['score_name'].iloc[0]} per case: {scores}; "
                  f"manifest: {out / 'manifest.json'}; rows: {out / 'results.sqlite'}")
