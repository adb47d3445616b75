"""One taxonomy for every data source: canonical codes, display names, malignancy.

Each loader maps its own labels onto these codes, so a model trained on HAM10000 and
one trained on ISIC 2019 or an image-folder set speak the same language.

Image-folder sets may hold classes the taxonomy does not know (DermNet NZ has 381). The
folder loader registers them as *open* classes (`register_class`): a code that is the
folder name's slug, a display name, and a malignant flag that is None (unknown) unless a
`classes.csv` declares it. `is_malignant` returns None for unknown malignancy, and for
the taxonomy's own groups that are not skin lesions (DermNet's rash and infection groups):
such a class counts as not malignant in a summed P(malignant), and a model with one gives
no benign / malignant triage ("unavailable", see `runtime.predictor`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class LesionClass:
    code: str
    name: str
    # None: unknown (an open class nobody has declared) or not a lesion class (a rash)
    malignant: bool | None


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
        # Actinic keratosis alone (PAD-UFES-20's ACK; its SCC holds Bowen's disease), narrower
        # than HAM10000's akiec; pre-malignant, so flagged True for the triage.
        LesionClass("ack", "Actinic keratosis", True),
        LesionClass("unk", "Other / unknown", False),
        # DermNet (Kaggle, 23 classes) folder names, normalised by `_slug`. Each group is
        # either a lesion group, flagged True (it holds skin cancers; a mixed group such as
        # "melanoma, nevi and moles" counts as malignant, the safe side) or False (benign
        # growths: seborrhoeic keratoses and benign tumours; vascular tumours, mostly
        # haemangiomas and pyogenic granulomas), or a group of rashes, infections, hair, nail
        # and pigment disorders or systemic disease: None, not a lesion class, so a model
        # with it gives no triage. The benign / malignant triage is meant for skin lesions;
        # a photo of a rash must never be called "benign" (or "malignant") by it. Warts and
        # molluscum are lesions, but their group is "viral infections" (also exanthems such
        # as chickenpox), so it is None too.
        LesionClass("acne_rosacea", "Acne and rosacea", None),
        LesionClass("bullous", "Bullous disease", None),
        LesionClass("cellulitis", "Cellulitis, impetigo and bacterial infections", None),
        LesionClass("eczema", "Eczema", None),
        LesionClass("exanthems", "Exanthems and drug eruptions", None),
        LesionClass("hair_loss", "Hair loss (alopecia)", None),
        LesionClass("herpes_hpv", "Herpes, HPV and other STDs", None),
        LesionClass("pigmentation", "Light diseases and pigmentation disorders", None),
        LesionClass("lupus", "Lupus and connective tissue diseases", None),
        LesionClass("melanoma_nevi", "Melanoma skin cancer, nevi and moles", True),
        LesionClass("nail_fungus", "Nail fungus and other nail disease", None),
        LesionClass("poison_ivy", "Poison ivy and contact dermatitis", None),
        LesionClass("psoriasis", "Psoriasis, lichen planus and related diseases", None),
        LesionClass("scabies", "Scabies, Lyme disease and infestations", None),
        LesionClass("seborrheic_keratoses", "Seborrheic keratoses and benign tumors", False),
        LesionClass("systemic", "Systemic disease", None),
        LesionClass("tinea", "Tinea, ringworm, candidiasis and fungal infections", None),
        LesionClass("urticaria", "Urticaria (hives)", None),
        LesionClass("vascular_tumors", "Vascular tumors", False),
        LesionClass("vasculitis", "Vasculitis", None),
        LesionClass("warts", "Warts, molluscum and viral infections", None),
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
    "melanocytic_naevus": "nv",
    "melanocytic_naevi": "nv",
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


# Classes read from image-folder names (or a classes.csv) at load time: code -> class.
OPEN_CLASSES: dict[str, LesionClass] = {}


def _slug(label: str) -> str:
    """Lowercase ascii, accents folded (é -> e), every other run of characters -> '_'."""
    decomposed = unicodedata.normalize("NFKD", label)
    folded = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9]+", "_", folded.strip().lower()).strip("_")


def known_code(label: str) -> str | None:
    """The taxonomy's code for a label (a code or an alias), or None if it is not known."""
    slug = _slug(label)
    return slug if slug in CLASSES else ALIASES.get(slug)


def open_code(label: str) -> str:
    """A stable code for a label the taxonomy does not know: its slug, e.g.
    "Acute febrile neutrophilic dermatosis (Sweet syndrome)" ->
    "acute_febrile_neutrophilic_dermatosis_sweet_syndrome"; a label with no ascii
    letters or digits gets "class_" and 8 hex digits of its SHA-1."""
    slug = _slug(label)
    return slug or "class_" + hashlib.sha1(label.encode()).hexdigest()[:8]


def register_class(code: str, name: str, malignant: bool | None = None) -> LesionClass:
    """Record an open class so `display_name` and `is_malignant` know it (the last wins)."""
    if code in CLASSES:
        raise ValueError(f"class code {code!r} is the taxonomy's own: it cannot be redefined")
    OPEN_CLASSES[code] = LesionClass(code, name, malignant)
    return OPEN_CLASSES[code]


def canonical(label: str) -> str:
    """Map a source label to its canonical code; raise ValueError naming it if unknown."""
    code = known_code(label)
    if code is not None:
        return code
    raise ValueError(
        f"unknown class label {label!r}: add it to dermalens.taxonomy.ALIASES "
        f"or use one of {sorted(CLASSES)}"
    )


def lookup(code: str) -> LesionClass | None:
    """The taxonomy's class, else the registered open class, else None."""
    return CLASSES.get(code) or OPEN_CLASSES.get(code)


def display_name(code: str) -> str:
    found = lookup(code)
    return found.name if found else code


def is_malignant(code: str) -> bool | None:
    """True or False when known; None when nobody has said (an open or unknown class) or
    the class is not a skin lesion (a rash or infection group: no triage for it).

    Callers summing P(malignant) count None as not malignant, and must give no triage
    for a model with such classes (see the module docstring)."""
    found = lookup(code)
    return found.malignant if found else None
