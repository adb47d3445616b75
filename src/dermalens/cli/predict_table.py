"""What `dermalens predict` prints: the router it builds from the flags, and the table.

Each image gets its answer and the sentence saying which model answered, or, when the
scope gate found no installed model made for it, that sentence and what to do; a run of
several images ends with the summary counts (`runtime.router.summarise`).
"""

from __future__ import annotations

import argparse
import os

from dermalens.bundle import default_model_path
from dermalens.runtime.predictor import DISCLAIMER, NOT_SKIN_ADVICE, Predictor
from dermalens.runtime.router import Router, summarise
from dermalens.runtime.shift import BATCH_MIN


def make_router(args: argparse.Namespace) -> Router:
    """The scope gate in front of the installed models; `--model` (or $DERMALENS_MODEL)
    pins one bundle, `--no-gate` leaves the gate out (that one model answers everything)."""
    options = {"backend": args.backend, "precision": args.precision}
    pin = args.model or os.environ.get("DERMALENS_MODEL") or None
    if getattr(args, "no_gate", False):
        predictor = Predictor(pin or default_model_path(), **options)
        return Router(predictor, {}, None, predictor)
    return Router.installed(pin=pin, **options)


def number(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def print_table(router: Router, rows: list, shift: dict | None) -> None:
    pinned = router.pinned.bundle.version if router.pinned else None
    models = ", ".join(f"{k}: {p.bundle.version}" for k, p in router.routes.items())
    print(f"model: {pinned or models or router.feature.bundle.version}")
    for r in rows:
        print(r.source)
        if not r.top:  # no model answered: the scope gate's sentence instead
            print(f"  triage: {r.triage} (no model answered)\n  {r.scope.why} {r.scope.advice}")
            print(f"  the installed models cover: {'; '.join(r.scope.covers) or 'nothing'}")
            print(f"  rule: {r.scope.rule}")
            continue
        tops = "  ".join(f"{c.code} {c.probability:6.1%}" for c in r.top)
        print(f"  {tops}\n  triage: {r.triage} (P(malignant) = {r.malignant_probability:.1%})")
        if r.scope is not None:
            print(f"  {r.scope.why}")
        if r.not_skin:
            print(f"  not a dermoscopic skin image: {r.not_skin_reason}; {NOT_SKIN_ADVICE}")
        if r.shift is not None and r.shift.flagged:
            print(f"  shift warning: {r.shift.message} ({', '.join(r.shift.measures)})")
    if len(rows) > 1:
        counts = summarise(rows)
        print("\nsummary: " + ", ".join(f"{n} {key}" for key, n in counts.items()))
    if shift is not None and len(rows) > 1:
        print(f"\n{shift_line(shift)}")
    print(f"\n{DISCLAIMER}")


def shift_line(batch: dict) -> str:
    """The shift warning over a whole run (`ShiftMonitor.batch_warning`), in one line."""
    line = (
        f"shift warning: {batch['flagged']} of {batch['images']} images ({batch['share']:.1%}) "
        f"differ from the validation data (expected {batch['expected_share']:.1%}); "
    )
    if batch["shifted"]:
        return line + f"as a batch, {batch['message']} (binomial p = {batch['p_value']:.1e})"
    if batch["images"] < BATCH_MIN:
        return line + "too few images to judge them as a batch"
    return line + f"as a batch, within what validation showed (p = {batch['p_value']:.2f})"
