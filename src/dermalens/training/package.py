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
    "pad_ufes20": "CC BY 4.0 (PAD-UFES-20, Pacheco et al. 2020, Data in Brief 32, 106221): "
    "attribution",
}

# A model trained on smartphone close-ups (PAD-UFES-20) is for those, not for dermoscopy.
CLINICAL_SOURCES = ("pad_ufes20",)


def model_card(cfg: TrainConfig, source: str = "") -> dict:
    """The card facts a bundle carries (the web service and `dermalens info` show them)."""
    if source in CLINICAL_SOURCES:
        return clinical_card(cfg, source)
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


def clinical_card(cfg: TrainConfig, source: str) -> dict:
    return {
        "intended_use": (
            "Decision support for clinicians looking at clinical close-up photographs of a "
            "single skin lesion (smartphone or clinic camera, no dermoscope): class "
            "probabilities, a benign / malignant triage hint and a heatmap; clinical fields "
            "(age, sex, site, Fitzpatrick type, lesion history) are optional inputs. Not a "
            "diagnosis and not for use without a clinician."
        ),
        "not_for": "Self-diagnosis; dermoscopic images; photos of rashes, body areas, nails "
        "or hair; lesions outside its six classes; screening decisions without histopathology.",
        "data": cfg.data,
        "data_licence": DATA_LICENCES[source],
        "citation": "Pacheco A.G.C. et al. PAD-UFES-20: a skin lesion dataset composed of "
        "patient data and clinical images collected from smartphones. Data in Brief 32, "
        "106221 (2020), doi:10.1016/j.dib.2020.106221",
        "limits": "Trained on about 420 photos of one Brazilian public dermatology programme "
        "(18 SCC, 33 melanomas in all); about half of the labels are biopsy-confirmed, the "
        "rest (most ACK, nevi, seborrhoeic keratoses) a clinical consensus; Fitzpatrick types "
        "V-VI are too rare in the data to measure; other cameras and populations unmeasured.",
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
        metadata_fields=list(cfg.metadata_fields) if cfg.use_metadata else [],
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
