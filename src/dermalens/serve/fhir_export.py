"""Stored predictions as a FHIR R4B Bundle, built and validated with `fhir.resources.R4B`.

One `DiagnosticReport` (status `preliminary`: decision support, never a final result) with
the answer as conclusion and conclusion codes (SNOMED CT and ICD-11 from `clinical_codes`),
one `Observation` per top class (the calibrated probability as a `valueQuantity`) and one for
the triage, the model as a `Device` (name and version) that every Observation names, the
kept image (consent only) as a `Media` whose attachment gives size, hash and type but no
pixels, and the PDF report as `presentedForm` by URL. A visit report holds the predictions
of several lesions in one DiagnosticReport with a pseudonymous `Patient` as subject.

Why a Bundle, not one DiagnosticReport with `contained` resources: an EHR or integration
engine files Observations, Device and Media as resources of their own (contained ones cannot
be searched or referenced from elsewhere). `type=collection` is for reading; `type=transaction`
adds `request: POST` to each entry, so the same body can be POSTed to a FHIR server as is.
Ids are UUIDs derived from the prediction ids: the same prediction always gives the same ids.
"""

from __future__ import annotations

import html
import uuid
from datetime import UTC, datetime

from fhir.resources.R4B.bundle import Bundle

from dermalens import clinical_codes
from dermalens.runtime.predictor import DISCLAIMER
from dermalens.serve.report_items import PatientRef, ReportItem, StoredImage
from dermalens.serve.schemas import ClassScore, PredictionOut

LOCAL = "urn:dermalens:fhir"  # code system of this service's own codes (report, triage)
UCUM = "http://unitsofmeasure.org"
RFC3986 = "urn:ietf:rfc:3986"
BUNDLE_TYPES = ("collection", "transaction")


def _urn(seed: str, role: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'dermalens:{seed}:{role}')}"


def _concept(class_code: str, name: str) -> dict:
    """A class as a CodeableConcept: the emitted SNOMED CT / ICD-11 codings and its name."""
    codings = [
        {"system": c.system, "code": c.code, "display": c.display}
        for c in clinical_codes.emitted(class_code)
    ]
    codings.append({"system": f"{LOCAL}/class", "code": class_code, "display": name})
    return {"coding": codings, "text": name}


def _device(out: PredictionOut) -> dict:
    return {
        "resourceType": "Device",
        "identifier": [{"system": f"{LOCAL}/model-version", "value": out.model.version}],
        "deviceName": [{"name": f"dermalens {out.model.name}", "type": "model-name"}],
        "version": [{"value": out.model.version}],
        "manufacturer": "dermalens (open-source software)",
        "note": [{"text": DISCLAIMER}],
    }


def _media(image: StoredImage, out: PredictionOut, url: str | None) -> dict:
    content = {
        "contentType": "image/jpeg",
        "size": image.size,
        "hash": image.sha1_b64,
        "title": f"lesion image {image.path.name} (kept with consent, held by the service)",
    }
    if url:
        content["url"] = url  # staff only: the route asks for an account
    return {
        "resourceType": "Media",
        "status": "completed",
        "createdDateTime": out.created_at.isoformat(),
        "width": image.width,
        "height": image.height,
        "content": content,
    }


def _probability(score: ClassScore, out: PredictionOut, device: str, media: str | None) -> dict:
    obs = {
        "resourceType": "Observation",
        "status": "preliminary",
        "code": _concept(score.code, score.name),
        "effectiveDateTime": out.created_at.isoformat(),
        "valueQuantity": {
            "value": round(score.probability, 4),
            "unit": "probability",
            "system": UCUM,
            "code": "1",
        },
        "method": {"text": "calibrated probability from an image classifier (decision support)"},
        "device": {"reference": device},
    }
    if media:
        obs["derivedFrom"] = [{"reference": media}]
    return obs


def _triage(out: PredictionOut, device: str) -> dict:
    obs = {
        "resourceType": "Observation",
        "status": "preliminary",
        "code": {
            "coding": [{"system": f"{LOCAL}/report", "code": "triage", "display": "Triage"}],
            "text": "Benign / malignant triage hint (decision support)",
        },
        "effectiveDateTime": out.created_at.isoformat(),
        "valueCodeableConcept": {
            "coding": [{"system": f"{LOCAL}/triage", "code": out.triage.result}],
            "text": out.triage.result,
        },
        "component": [
            {
                "code": {"text": "summed probability of the classes flagged malignant"},
                "valueQuantity": {
                    "value": round(out.triage.malignant_probability, 4),
                    "unit": "probability",
                    "system": UCUM,
                    "code": "1",
                },
            }
        ],
        "note": [{"text": out.triage.rule}],
        "device": {"reference": device},
    }
    if out.triage.malignant_probability is None:  # out of scope: no model answered
        del obs["component"]
    return obs


def conclusion_line(entry: ReportItem) -> str:
    """One sentence for an item: the answer, its probability, the triage (and the lesion)."""
    out = entry.out
    where = f"{entry.label}: " if entry.label else ""
    if not out.top:  # the scope gate: no installed model is made for this image
        return f"{where}no answer ({out.status}): {out.scope.why if out.scope else ''}"
    answer = out.top[0]
    if out.not_skin:
        return f"{where}not read as a skin lesion image ({out.not_skin_reason})."
    doubt = " (uncertain)" if out.uncertain else ""
    return (
        f"{where}most likely {answer.name} (p={answer.probability:.2f}){doubt}; "
        f"triage {out.triage.result} (P(malignant)={out.triage.malignant_probability:.2f})."
    )


def _narrative(lines: list[str]) -> dict:
    body = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'}


def report_bundle(
    items: list[ReportItem],
    report_id: str,
    pdf_url: str | None = None,
    subject: PatientRef | None = None,
    bundle_type: str = "collection",
) -> Bundle:
    """A validated Bundle: the DiagnosticReport first, then Observations, Device, Media."""
    if bundle_type not in BUNDLE_TYPES:
        raise ValueError(f"bundle type {bundle_type!r}: use one of {list(BUNDLE_TYPES)}")
    if not items:
        raise ValueError("a report needs at least one prediction")
    entries: list[tuple[str, dict]] = []
    devices: dict[str, str] = {}  # model version -> its Device (a visit may span two models)
    results, media_refs, conclusions, codes = [], [], [], []
    for entry in items:
        out = entry.out
        if out.model.version not in devices:
            devices[out.model.version] = _urn(out.model.version, "device")
            entries.append((devices[out.model.version], _device(out)))
        device = devices[out.model.version]
        media = _urn(out.id, "media") if entry.image else None
        if entry.image:
            entries.append((media, _media(entry.image, out, entry.image_url)))
            media_refs.append(
                {"comment": entry.label or "lesion image", "link": {"reference": media}}
            )
        for rank, score in enumerate(out.top):
            ref = _urn(out.id, f"class-{rank}")
            entries.append((ref, _probability(score, out, device, media)))
            results.append({"reference": ref})
        ref = _urn(out.id, "triage")
        entries.append((ref, _triage(out, device)))
        results.append({"reference": ref})
        conclusions.append(conclusion_line(entry))
        if not out.not_skin and out.top:
            codes.append(_concept(out.top[0].code, out.top[0].name))
    subject_ref = None
    if subject is not None:
        subject_ref = _urn(f"{subject.system}|{subject.value}", "patient")
        patient = {"resourceType": "Patient", "identifier": [vars(subject)]}
        entries.append((subject_ref, patient))
        for _, resource in entries:
            if resource["resourceType"] in ("Observation", "Media"):
                resource["subject"] = {"reference": subject_ref}
    conclusion = " ".join(conclusions) + f" {DISCLAIMER}"
    report = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": RFC3986, "value": _urn(report_id, "report")}],
        "status": "preliminary",
        "code": {
            "coding": [{"system": f"{LOCAL}/report", "code": "skin-lesion-classification"}],
            "text": "Skin lesion image classification (decision support, not a diagnosis)",
        },
        "effectiveDateTime": items[0].out.created_at.isoformat(),
        "issued": datetime.now(UTC).isoformat(),
        "result": results,
        "conclusion": conclusion,
        "text": _narrative([*conclusions, DISCLAIMER]),
    }
    if codes:
        report["conclusionCode"] = codes
    if media_refs:
        report["media"] = media_refs
    if subject_ref:
        report["subject"] = {"reference": subject_ref}
    if pdf_url:
        report["presentedForm"] = [
            {"contentType": "application/pdf", "url": pdf_url, "title": "printable report"}
        ]
    entries.insert(0, (_urn(report_id, "report"), report))
    return _bundle(entries, report_id, bundle_type)


def _bundle(entries: list[tuple[str, dict]], report_id: str, bundle_type: str) -> Bundle:
    listed = []
    for full_url, resource in entries:
        row = {"fullUrl": full_url, "resource": resource}
        if bundle_type == "transaction":
            row["request"] = {"method": "POST", "url": resource["resourceType"]}
        listed.append(row)
    return Bundle.model_validate(
        {
            "resourceType": "Bundle",
            "identifier": {"system": RFC3986, "value": _urn(report_id, "bundle")},
            "type": bundle_type,
            "timestamp": datetime.now(UTC).isoformat(),
            "entry": listed,
        }
    )
