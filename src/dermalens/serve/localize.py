"""Medical terms per language (the glossary) and a prediction's response in the request's
language.

Each language keeps its glossary in `locale/<lang>/glossary.csv` (`key,term,forms,note`):
`class:<code>` rows are the class display names shown for the taxonomy's codes, and
`term:<english>` rows are the words every catalogue sentence must use for that term (`forms`:
the accepted inflections, `;`-separated). `tests/test_i18n.py` holds the catalogues to them.
Classes with no glossary row (an image folder's open classes) keep the bundle's name.

A prediction is stored in English; `localized` translates a copy on the way out: class
names, the notice, and the triage rule and not-skin reason (matched against the English
templates below, their numbers written for the locale).
"""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass

from dermalens.runtime.predictor import DISCLAIMER
from dermalens.serve import i18n
from dermalens.serve.i18n import N_, _, pgettext
from dermalens.serve.schemas import PredictionOut

GLOSSARY = "glossary.csv"


@dataclass(frozen=True)
class Term:
    key: str  # "class:mel" or "term:melanoma"
    term: str  # the word in this language
    forms: tuple[str, ...]  # accepted inflections (lower case), the term itself included
    note: str  # why this word: the source or the usage it follows


@functools.cache
def glossary(lang: str) -> dict[str, Term]:
    """The glossary of `lang`, by key."""
    path = i18n.LOCALE_DIR / lang / GLOSSARY
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    terms = {}
    for row in rows:
        forms = {f.strip().lower() for f in (row.get("forms") or "").split(";") if f.strip()}
        terms[row["key"]] = Term(
            row["key"], row["term"], tuple(sorted(forms | {row["term"].lower()})), row["note"]
        )
    return terms


def class_name(code: str, fallback: str | None = None) -> str:
    """The display name of class `code` in the current language; in English the bundle's own
    name (`fallback`) when it has one."""
    lang = i18n.current()
    term = glossary(lang).get(f"class:{code}") if lang != i18n.DEFAULT else None
    if term is not None:
        return term.term
    english = glossary(i18n.DEFAULT).get(f"class:{code}")
    return fallback or (english.term if english else code)


# The English sentences of `runtime.predictor` (triage rule, one part per "; ") and
# `runtime.ood` (why an image is not skin), as templates: a stored sentence is matched
# against them and worded again in the reader's language. A sentence that matches none
# (a newer wording) is shown as it is; tests/test_i18n_serve.py matches every real one.
RULE_PARTS = [
    N_("malignant if P(malignant classes) >= %(threshold)s"),
    N_("uncertain if the answer's probability < %(threshold)s"),
    N_(
        "not_skin (and uncertain) if a flat frame, pixel noise or a greyscale frame, or OOD "
        "score > %(threshold)s"
    ),
    N_(
        "not_skin (and uncertain) if a flat frame, pixel noise or a greyscale frame, or OOD "
        "score > %(threshold)s, or colour score > %(colour)s"
    ),
    N_(
        "no benign / malignant triage (unavailable): the malignancy of %(classes)s is not "
        "known, so a clinician must decide"
    ),
]
REASONS = [
    N_("flat frame (pixel std %(value)s < %(limit)s)"),
    N_("pixel noise (neighbour correlation %(value)s < %(limit)s)"),
    N_("greyscale frame (colour spread %(value)s < %(limit)s; dermoscopic images are colour)"),
    N_("unlike dermoscopic images (OOD score %(value)s > %(limit)s)"),
    N_("colours unlike dermoscopic images (colour score %(value)s > %(limit)s)"),
]
# the shift warning's statistics (runtime.shift STATS) and the side of its band
MEASURES = {
    "brightness": N_("brightness"),
    "contrast": N_("contrast"),
    "saturation": N_("saturation"),
    "red_chroma": N_("red tint"),
    "green_chroma": N_("green tint"),
    "sharpness": N_("sharpness"),
    "noise": N_("fine-grain noise"),
    "dark_border": N_("dark border"),
    "hue": N_("hue"),
    "corner_light": N_("corner brightness"),
    "fine_detail": N_("fine detail"),
    "ood_score": N_("unfamiliar image features"),
    "colour_score": N_("unfamiliar colours"),
}
SIDES = {"low": N_("%(measure)s low"), "high": N_("%(measure)s high")}
MORE_CLASSES = N_("%(classes)s and %(more)s more")
_NUMBER = re.compile(r"-?\d+(?:\.(\d+))?")
_CLASS = re.compile(r"\s*(?P<name>[^,]+?) \((?P<code>[^()]+)\)")


@functools.cache
def _pattern(template: str) -> re.Pattern:
    """'x > %(limit)s' -> a regex with a named group per placeholder."""
    parts = re.split(r"%\((\w+)\)s", template)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>.+?)" for i, part in enumerate(parts)
    )
    return re.compile(f"{regex}$")


def _value(key: str, text: str) -> str:
    """A number in the locale's notation, with as many decimals; a class list translated."""
    if match := _NUMBER.fullmatch(text):
        return i18n.number(float(text), len(match.group(1) or ""))
    if key == "classes":
        if more := re.fullmatch(r"(.+) and (\d+) more", text):
            listed = _value("classes", more.group(1))
            return _(MORE_CLASSES) % {"classes": listed, "more": i18n.number(int(more.group(2)))}
        return ", ".join(
            f"{class_name(m['code'], m['name'])} ({m['code']})" for m in _CLASS.finditer(text)
        )
    return text


def reword(sentence: str, templates: list[str]) -> str:
    """`sentence` in the current language when it matches one of the English `templates`."""
    for template in templates:
        if match := _pattern(template).match(sentence):
            values = {k: _value(k, v) for k, v in match.groupdict().items()}
            return _(template) % values
    return sentence


def triage_rule(rule: str) -> str:
    return "; ".join(reword(part, RULE_PARTS) for part in rule.split("; "))


def measure(text: str) -> str:
    """'saturation low' -> 'saturação baixa'; an unknown statistic stays as it is."""
    name, _sep, side = text.rpartition(" ")
    if name not in MEASURES or side not in SIDES:
        return text
    return _(SIDES[side]) % {"measure": _(MEASURES[name])}


def shift_words(out: PredictionOut) -> dict:
    """The shift warning's sentences (runtime.shift's, marked N_) and statistics, translated."""
    update = {}
    if out.shift is not None:
        update["shift"] = out.shift.model_copy(
            update={
                "measures": [measure(m) for m in out.shift.measures],
                "message": _(out.shift.message) if out.shift.message else "",
            }
        )
    if out.shift_recent is not None and out.shift_recent.message:
        update["shift_recent"] = out.shift_recent.model_copy(
            update={"message": _(out.shift_recent.message)}
        )
    return update


# triage.result codes in words: the page's badges (routes/page.py), "unavailable" apart
TRIAGE_WORDS = {
    "benign": "Likely benign",
    "malignant": "Possibly malignant: refer",
    "uncertain": "Uncertain: refer",
    "not_skin": "Not recognised as a skin image",
}
NO_TRIAGE = N_("no benign / malignant hint")
# runtime.change.since_last_visit's reasons for "changed since last visit"
CHANGE_REASONS = [
    N_("malignant probability rose by %(rise)s (more than %(margin)s)"),
    N_("change score %(score)s reached %(threshold)s"),
    N_("lesion area grew by %(grew)s (limit %(limit)s of the image share)"),
]


def triage_word(code: str) -> str:
    if code in TRIAGE_WORDS:
        return pgettext("triage", TRIAGE_WORDS[code])
    return _(NO_TRIAGE) if code == "unavailable" else code


def change_reason(reason: str) -> str:
    return reword(reason, CHANGE_REASONS)


def localized(out: PredictionOut) -> PredictionOut:
    """A copy of a stored or new prediction with its words in the current language."""
    if i18n.current() == i18n.DEFAULT:
        return out
    top = [c.model_copy(update={"name": class_name(c.code, c.name)}) for c in out.top]
    triage = out.triage.model_copy(update={"rule": triage_rule(out.triage.rule)})
    reason = reword(out.not_skin_reason, REASONS) if out.not_skin_reason else ""
    return out.model_copy(
        update={
            "top": top,
            "triage": triage,
            "not_skin_reason": reason,
            "disclaimer": _(DISCLAIMER),
            **shift_words(out),
        }
    )
