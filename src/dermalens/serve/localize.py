"""Medical terms per language (the glossary) and a prediction's response in the request's
language.

Each language keeps its glossary in `locale/<lang>/glossary.csv` (`key,term,forms,note`):
`class:<code>` rows are the class display names shown for the taxonomy's codes, and
`term:<english>` rows are the words every catalogue sentence must use for that term (`forms`:
the accepted inflections, `;`-separated). `tests/test_i18n.py` holds the catalogues to them.
Classes with no glossary row (an image folder's open classes) keep the bundle's name.

A prediction is stored in English; `localized` translates a copy on the way out.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass

from dermalens.runtime.predictor import DISCLAIMER
from dermalens.serve import i18n
from dermalens.serve.i18n import _
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


def localized(out: PredictionOut) -> PredictionOut:
    """A copy of a stored or new prediction with its words in the current language."""
    if i18n.current() == i18n.DEFAULT:
        return out
    top = [c.model_copy(update={"name": class_name(c.code, c.name)}) for c in out.top]
    return out.model_copy(update={"top": top, "disclaimer": _(DISCLAIMER)})
