"""One taxonomy for every data source: canonical codes, display names, malignancy.

Each loader maps its own labels onto these codes, so a model trained on HAM10000 and
one trained on ISIC 2019 or an image-folder set speak the same language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class LesionClass:
    code: str
    name: str
    malignant: bool


# Canonical classes. The first seven are HAM10000's; the rest cover ISIC 2019 and DermNet.
CLASSES: dict[str, LesionClass] = {
    c.code: c
    for c in [
        LesionClass("akiec", "Actinic keratosis / intraepithelial carcinoma", True),
        LesionClass("bcc", "Basal cell carcinoma", True),
        LesionClass("bkl", "Benign keratosis-like lesion", False),
        LesionClass("df", "Dermatofibroma", False),
        LesionClass("mel", "Melanoma", True),
        LesionClass("nv", "Melanocytic nevus", False),
        LesionClass("vasc", "Vascular lesion", False),
        LesionClass("scc", "Squamous cell carcinoma", True),
        LesionClass("unk", "Other / unknown", False),
        # DermNet (Kaggle, 23 classes) folder names, normalised by `_slug`.
        LesionClass("acne_rosacea", "Acne and rosacea", False),
        LesionClass("bullous", "Bullous disease", False),
        LesionClass("cellulitis", "Cellulitis, impetigo and bacterial infections", False),
        LesionClass("eczema", "Eczema", False),
        LesionClass("exanthems", "Exanthems and drug eruptions", False),
        LesionClass("hair_loss", "Hair loss (alopecia)", False),
        LesionClass("herpes_hpv", "Herpes, HPV and other STDs", False),
        LesionClass("pigmentation", "Light diseases and pigmentation disorders", False),
        LesionClass("lupus", "Lupus and connective tissue diseases", False),
        LesionClass("melanoma_nevi", "Melanoma skin cancer, nevi and moles", True),
        LesionClass("nail_fungus", "Nail fungus and other nail disease", False),
        LesionClass("poison_ivy", "Poison ivy and contact dermatitis", False),
        LesionClass("psoriasis", "Psoriasis, lichen planus and related diseases", False),
        LesionClass("scabies", "Scabies, Lyme disease and infestations", False),
        LesionClass("seborrheic_keratoses", "Seborrheic keratoses and benign tumors", False),
        LesionClass("systemic", "Systemic disease", False),
        LesionClass("tinea", "Tinea, ringworm, candidiasis and fungal infections", False),
        LesionClass("urticaria", "Urticaria (hives)", False),
        LesionClass("vascular_tumors", "Vascular tumors", False),
        LesionClass("vasculitis", "Vasculitis", False),
        LesionClass("warts", "Warts, molluscum and viral infections", False),
        LesionClass("actinic_keratosis_bcc", "Actinic keratosis, BCC and malignant lesions", True),
    ]
}

HAM10000_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")

# Source label (normalised by `_slug`) -> canonical code.
ALIASES: dict[str, str] = {
    # ISIC 2019 ground-truth columns
    "ak": "akiec",
    "mel": "mel",
    "nv": "nv",
    "bcc": "bcc",
    "bkl": "bkl",
    "df": "df",
    "vasc": "vasc",
    "scc": "scc",
    "unk": "unk",
    # spelled-out names
    "actinic_keratosis": "akiec",
    "actinic_keratoses": "akiec",
    "melanoma": "mel",
    "nevus": "nv",
    "melanocytic_nevi": "nv",
    "melanocytic_nevus": "nv",
    "basal_cell_carcinoma": "bcc",
    "benign_keratosis": "bkl",
    "dermatofibroma": "df",
    "vascular_lesion": "vasc",
    "vascular_lesions": "vasc",
    "squamous_cell_carcinoma": "scc",
    # DermNet folder names
    "acne_and_rosacea_photos": "acne_rosacea",
    "actinic_keratosis_basal_cell_carcinoma_and_other_malignant_lesions": ("actinic_keratosis_bcc"),
    "atopic_dermatitis_photos": "eczema",
    "bullous_disease_photos": "bullous",
    "cellulitis_impetigo_and_other_bacterial_infections": "cellulitis",
    "eczema_photos": "eczema",
    "exanthems_and_drug_eruptions": "exanthems",
    "hair_loss_photos_alopecia_and_other_hair_diseases": "hair_loss",
    "herpes_hpv_and_other_stds_photos": "herpes_hpv",
    "light_diseases_and_disorders_of_pigmentation": "pigmentation",
    "lupus_and_other_connective_tissue_diseases": "lupus",
    "melanoma_skin_cancer_nevi_and_moles": "melanoma_nevi",
    "nail_fungus_and_other_nail_disease": "nail_fungus",
    "poison_ivy_photos_and_other_contact_dermatitis": "poison_ivy",
    "psoriasis_pictures_lichen_planus_and_related_diseases": "psoriasis",
    "scabies_lyme_disease_and_other_infestations_and_bites": "scabies",
    "seborrheic_keratoses_and_other_benign_tumors": "seborrheic_keratoses",
    "systemic_disease": "systemic",
    "tinea_ringworm_candidiasis_and_other_fungal_infections": "tinea",
    "urticaria_hives": "urticaria",
    "vascular_tumors": "vascular_tumors",
    "vasculitis_photos": "vasculitis",
    "warts_molluscum_and_other_viral_infections": "warts",
}


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.strip().lower()).strip("_")


def canonical(label: str) -> str:
    """Map a source label to its canonical code; raise ValueError naming it if unknown."""
    slug = _slug(label)
    if slug in CLASSES:
        return slug
    if slug in ALIASES:
        return ALIASES[slug]
    raise ValueError(
        f"unknown class label {label!r}: add it to dermalens.taxonomy.ALIASES "
        f"or use one of {sorted(CLASSES)}"
    )


def display_name(code: str) -> str:
    return CLASSES[code].name if code in CLASSES else code


def is_malignant(code: str) -> bool:
    return code in CLASSES and CLASSES[code].malignant
