"""A trained network as a self-describing bundle folder (`model.pt` + `bundle.json`).

Each class's name and malignant flag are written as the taxonomy knows them when the bundle
is made, open classes from an image folder's names or classes.csv included (they exist only
in the process that loaded the data): the bundle keeps them from then on.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from dermalens.bundle import WEIGHTS, Bundle
from dermalens.config import TrainConfig
from dermalens.files import now, replace_dir
from dermalens.preprocess import Preprocessing
from dermalens.taxonomy import LesionClass, lookup

DATA_LICENCES = {
    "ham10000": "CC BY-NC-SA 4.0 (HAM10000, Tschandl et al. 2018): non-commercial, share-alike",
    "isic2019": "CC BY-NC 4.0 (ISIC 2019 challenge data): non-commercial",
}


def model_card(cfg: TrainConfig, source: str = "") -> dict:
    """The card facts a bundle carries (the web service and `dermalens info` show them)."""
    return {
        "intended_use": (
            "Decision support for clinicians looking at dermoscopic images of skin lesions: "
            "class probabilities, a benign / malignant triage hint and a heatmap. "
            "Not a diagnosis and not for use without a clinician."
        ),
        "not_for": "Self-diagnosis; clinical (non-dermoscopic) photographs; classes outside "
        "the model's list; screening decisions without histopathology.",
        "data": cfg.data,
        "data_licence": DATA_LICENCES.get(source, "see the training data's licence"),
        "limits": "Trained on a single public dataset, mostly light skin types; dermoscopic "
        "images only; performance on other devices and populations is unmeasured.",
    }


def bundle_from_model(
    model: torch.nn.Module,
    target: Path,
    classes: list[str],
    pre: Preprocessing,
    cfg: TrainConfig,
    weight_source: str,
    history: list[dict] | None = None,
    source: str = "",
    class_info: dict[str, LesionClass] | None = None,
) -> Bundle:
    """Write a bundle folder (model.pt + bundle.json); replaces `target` only when complete.

    `class_info`: code -> name and malignant flag; by default what the taxonomy (with the
    open classes this process registered) says."""
    target = Path(target)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, staging / WEIGHTS)
    if class_info is None:
        class_info = {c: found for c in classes if (found := lookup(c)) is not None}
    bundle = Bundle(
        path=staging,
        name=cfg.name or cfg.model,
        classes=list(classes),
        preprocessing=pre,
        arch={
            "model": cfg.model,
            "num_classes": len(classes),
            "drop_rate": cfg.drop_rate,
            "use_metadata": cfg.use_metadata,
            "head": "global-average-pool -> linear",
        },
        metadata_fields=["age", "sex", "site"] if cfg.use_metadata else [],
        train_config=cfg.to_dict(),
        info={
            "created": now(),
            "weight_source": weight_source,
            "history": history or [],
            "card": model_card(cfg, source),
        },
        class_info=dict(class_info),
    )
    unknown = bundle.unknown_malignancy
    if unknown:  # an open class nobody flagged in classes.csv, or a rash group
        listed = ", ".join(unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        bundle.info["card"]["triage"] = (
            f"none: {len(unknown)} of the model's classes ({listed}) have unknown malignancy "
            "or are not skin-lesion classes, so it gives no benign / malignant triage"
        )
    bundle.save_description()
    replace_dir(staging, target)
    bundle.path = target
    return bundle
