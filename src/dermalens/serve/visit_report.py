"""The printable PDF report for a patient file: images, heatmaps, probabilities, triage,
model version and the notice, one section per stored prediction.

Built with fpdf2 (pure Python, maintained, embeds and subsets a TrueType font, so any
Unicode text prints: accents, ß, ł, Greek, Cyrillic); the font is DejaVu Sans from Debian's
`fonts-dejavu-core` (`Settings.report_font`). Heatmap overlays are never stored: the report
redraws one from the kept image, and only when the serving model is the one that made the
prediction. Every sentence is in `TEXT`, marked for the gettext catalogues (`serve.i18n`),
and printed in the request's language (`?lang=`, the cookie or Accept-Language), with class
names from that language's glossary and numbers and dates in its locale.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from PIL import Image

from dermalens import clinical_codes
from dermalens.imageio import load_image
from dermalens.preprocess import resize
from dermalens.runtime.explain import overlay
from dermalens.runtime.predictor import DISCLAIMER, Predictor
from dermalens.serve import i18n
from dermalens.serve.i18n import N_, _, pgettext
from dermalens.serve.localize import class_name, localized
from dermalens.serve.report_items import ReportItem

TEXT = {
    "title": N_("Skin lesion report"),
    "preliminary": N_("Preliminary software result, not a diagnosis."),
    "printed": N_("Printed"),
    "model": N_("Model"),
    "prediction": N_("Prediction"),
    "date": N_("Date"),
    "patient": N_("Patient"),
    "lesion": N_("Lesion"),
    "image": N_("Image"),
    "heatmap": N_("Heatmap (where the model looked)"),
    "no_image": N_("Image not kept (no consent to store it), so no image or heatmap."),
    "no_heatmap": N_(
        "No heatmap: this prediction was made by %(made)s; the server now runs %(now)s."
    ),
    "no_heatmap_drawn": N_("No heatmap could be drawn for this image."),
    "class": N_("Class"),
    "probability": N_("Probability"),
    "triage": N_("Triage"),
    "triage_rule": N_("Rule"),
    "p_malignant": N_("P(malignant)"),
    "uncertain": N_("Uncertain: the most likely class is below the confidence threshold."),
    "not_skin": N_("The image was not read as a skin lesion: %(reason)s"),
    "codes": N_("Codes of the most likely class"),
    "page": N_("Page"),
}


def triage_word(result: str) -> str:
    """The page's words for a triage result (the same catalogue entries)."""
    words = {
        "benign": pgettext("triage", "Likely benign"),
        "malignant": pgettext("triage", "Possibly malignant: refer"),
        "uncertain": pgettext("triage", "Uncertain: refer"),
        "not_skin": pgettext("triage", "Not recognised as a skin image"),
    }
    return words.get(result, result)


class ReportFontMissing(RuntimeError):
    """The configured TrueType font is absent; the message says how to install it."""


class _Pdf(FPDF):
    def __init__(self, footer_text: str, page_word: str):
        super().__init__(format="A4")
        self.footer_text, self.page_word = footer_text, page_word

    def footer(self) -> None:
        self.set_y(-16)
        self.set_font("report", size=7)
        self.multi_cell(0, 3.5, self.footer_text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.cell(0, 3.5, f"{self.page_word} {self.page_no()}/{{nb}}", align="R")


def heatmap_image(predictor: Predictor, entry: ReportItem, width: int = 320) -> Image.Image | None:
    """The heatmap over the kept image, redrawn by the serving model (None if it cannot be)."""
    if entry.image is None or predictor.bundle.version != entry.out.model.version:
        return None
    image = load_image(entry.image.path)
    patient = entry.out.patient
    result = predictor.predict(image, 1, True, patient.age, patient.sex, patient.site)
    if result.heatmap is None:
        return None
    pre = predictor.pre
    display = replace(pre, width=width, height=max(8, round(width * pre.height / pre.width)))
    return overlay(resize(image, display), result.heatmap)


def _fonts(pdf: FPDF, font: Path) -> None:
    if not font.is_file():
        raise ReportFontMissing(
            _(
                "PDF reports need a Unicode TrueType font; %(font)s is missing: install "
                "Debian's fonts-dejavu-core (apt-get install fonts-dejavu-core) or set "
                "DERMALENS_REPORT_FONT"
            )
            % {"font": font}
        )
    bold = font.with_name(font.stem + "-Bold" + font.suffix)
    pdf.add_font("report", "", str(font))
    pdf.add_font("report", "B", str(bold if bold.is_file() else font))


def render(
    items: list[ReportItem],
    font: Path,
    heatmaps: dict[str, Image.Image] | None = None,
    patient: str | None = None,
    serving_version: str | None = None,
) -> bytes:
    """The report as PDF bytes; `heatmaps` maps prediction id -> overlay (see `heatmap_image`),
    `serving_version` names the model now served (said when a heatmap cannot be redrawn)."""

    def say(key: str, **values: str) -> str:
        return _(TEXT[key]) % values if values else _(TEXT[key])

    notice = _(DISCLAIMER)
    pdf = _Pdf(f"{say('preliminary')} {notice}", say("page"))
    _fonts(pdf, font)
    pdf.set_auto_page_break(True, margin=22)
    pdf.add_page()
    pdf.set_font("report", "B", 16)
    pdf.cell(0, 9, say("title"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    _notice(pdf, say("preliminary"), notice)
    pdf.set_font("report", size=9)
    printed = f"{i18n.when(datetime.now(UTC))} UTC"
    model = items[0].out.model
    _line(pdf, f"{say('printed')}: {printed}   {say('model')}: {model.name} ({model.version})")
    if patient:
        _line(pdf, f"{say('patient')}: {patient}")
    for entry in items:
        entry = replace(entry, out=localized(entry.out))  # names, rule, reason in the language
        _section(pdf, entry, (heatmaps or {}).get(entry.out.id), say, serving_version)
    return bytes(pdf.output())


def _line(pdf: FPDF, text: str, height: float = 5) -> None:
    pdf.multi_cell(0, height, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _notice(pdf: FPDF, first: str, second: str) -> None:
    pdf.set_fill_color(255, 243, 205)
    pdf.set_font("report", "B", 10)
    pdf.multi_cell(0, 5.5, f"{first} {second}", border=1, fill=True, padding=2)
    pdf.ln(3)


def _section(pdf: FPDF, entry: ReportItem, heatmap, say, serving: str | None) -> None:
    out = entry.out
    pdf.ln(3)
    pdf.set_font("report", "B", 12)
    head = entry.label or f"{say('prediction')} {out.id[:8]}"
    _line(pdf, f"{say('lesion')}: {head}" if entry.label else head, 7)
    pdf.set_font("report", size=9)
    when = f"{i18n.when(out.created_at)} UTC"
    _line(pdf, f"{say('date')}: {when}   {say('model')}: {out.model.version}   id {out.id}")
    _pictures(pdf, entry, heatmap, say, serving)
    if out.not_skin:
        _line(pdf, say("not_skin", reason=out.not_skin_reason))
    _scores(pdf, entry, say)
    pdf.set_font("report", "B", 10)
    p_mal = out.triage.malignant_probability  # None: no model answered (out of scope)
    p = "-" if p_mal is None else i18n.number(p_mal, 2)
    word = triage_word(out.triage.result)
    _line(pdf, f"{say('triage')}: {word}   {say('p_malignant')} = {p}", 6)
    pdf.set_font("report", size=8)
    _line(pdf, f"{say('triage_rule')}: {out.triage.rule}", 4)
    if out.uncertain:
        _line(pdf, say("uncertain"), 4)
    codes = _code_lines(out.top[0].code) if out.top else []
    _line(pdf, f"{say('codes')}: {'; '.join(codes) or '-'}", 4)


def _code_lines(class_code: str) -> list[str]:
    names = {clinical_codes.SNOMED: "SNOMED CT", clinical_codes.ICD11: "ICD-11"}
    return [f"{names[c.system]} {c.code} {c.display}" for c in clinical_codes.emitted(class_code)]


def _pictures(pdf: FPDF, entry: ReportItem, heatmap, say, serving: str | None) -> None:
    if entry.image is None:
        _line(pdf, say("no_image"))
        return
    with Image.open(entry.image.path) as opened:
        photo = opened.convert("RGB")
    photo.thumbnail((640, 640))
    width, top = 80.0, pdf.get_y() + 1
    height = width * photo.height / photo.width
    if top + height > pdf.h - 30:
        pdf.add_page()
        top = pdf.get_y()
    pdf.image(photo, x=pdf.l_margin, y=top, w=width)
    if heatmap is not None:
        pdf.image(heatmap, x=pdf.l_margin + width + 6, y=top, w=width)
    pdf.set_y(top + max(height, width * heatmap.height / heatmap.width if heatmap else 0) + 2)
    pdf.set_font("report", size=8)
    made = entry.out.model.version
    if heatmap is None and serving and serving != made:
        _line(pdf, say("no_heatmap", made=made, now=serving), 4)
    elif heatmap is None:
        _line(pdf, say("no_heatmap_drawn"), 4)
    else:
        _line(pdf, f"{say('image')}  |  {say('heatmap')}", 4)
    pdf.set_font("report", size=9)


def _scores(pdf: FPDF, entry: ReportItem, say) -> None:
    pdf.set_font("report", size=9)
    with pdf.table(col_widths=(70, 30), width=100, align="LEFT", line_height=5) as table:
        head = table.row()
        head.cell(say("class"))
        head.cell(say("probability"))
        for score in entry.out.top:
            row = table.row()
            row.cell(class_name(score.code, score.name))
            row.cell(i18n.number(score.probability, 3))
    pdf.ln(2)
