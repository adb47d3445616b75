"""The router: the scope gate in front of the installed models; one `predict` for every image.

    from dermalens.runtime.router import Router
    router = Router.installed()                  # the bundled models and gate
    result = router.predict("photo.jpg")         # a Prediction
    result.status, result.scope.model, result.scope.why
    router.predict_batch(paths, batch)           # a preprocessed batch: one forward pass

The gate (`runtime.scope`) reads the feature model's forward pass (the default bundle) and
its scene model's (`runtime.scene`, on the same batch) and puts the image in one of four
kinds. A dermoscopic close-up goes to the model for
dermoscopy (reusing that forward pass), a clinical close-up of a lesion to the clinical
model; each model's own OOD check and thresholds still apply. Anything else, or a kind
no installed model covers, gets an answer with status "out_of_scope" or "not_skin": no
classes, no probabilities and no benign / malignant triage, a sentence naming what the
image seems to be, what the installed models cover, and what to do.

`pin` (the CLI's `--model`, the service's DERMALENS_MODEL) makes one bundle answer every
image the gate accepts as a lesion close-up; when the gate sees a kind that bundle was
not made for (the gate's routes, or `image_kind` in its bundle.json, say which kind it
is), the answer is "out_of_scope: this model was not made for this image". A pinned
bundle of unknown kind answers close-ups of both kinds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dermalens.bundle import Bundle, BundleError, load_bundle
from dermalens.imageio import ImageSource
from dermalens.runtime.checks import ImageStats, image_checks
from dermalens.runtime.predictor import Prediction, Predictor
from dermalens.runtime.scope import (
    COVERS,
    KIND_WORDS,
    LESION_KINDS,
    Gate,
    Scope,
    ScopeDecision,
    load_gate,
)

BUNDLED = Path(__file__).resolve().parents[1] / "bundled"
SEE_A_CLINICIAN = (
    "Please show the skin to a doctor or dermatologist: this tool cannot assess this image."
)
NOT_MADE_FOR = "out_of_scope"


class Router:
    """The gate and the predictors it routes to (kind -> Predictor), or one pinned one."""

    def __init__(
        self,
        feature: Predictor,
        routes: dict[str, Predictor],
        gate: Gate | None,
        pinned: Predictor | None = None,
    ):
        self.feature, self.routes, self.gate, self.pinned = feature, routes, gate, pinned
        self.pinned_kind = self._kind_of(pinned) if pinned is not None else None

    @classmethod
    def installed(
        cls,
        pin: str | Path | None = None,
        gate: Gate | None | str = "bundled",
        root: Path = BUNDLED,
        **options,
    ) -> Router:
        """The gate and bundles under `root` (bundled/); `options` go to every `Predictor`."""
        gate = load_gate(root / "gate") if gate == "bundled" else gate
        if gate is not None:  # the scene model runs beside the feature model, as it does
            gate.open_scene(options.get("threads", 0))
        folders = installed_folders(gate, root)
        feature_name, *_ = folders
        feature = Predictor(folders[feature_name], **options)
        check_fitted(gate, feature.bundle)
        loaded = {feature_name: feature}
        for name, folder in list(folders.items())[1:]:
            loaded[name] = Predictor(folder, **options)
        routes = {
            kind: loaded[name]
            for kind, name in (gate.routes if gate is not None else {}).items()
            if name in loaded
        }
        pinned = None
        if pin is not None:
            bundle = load_bundle(pin)
            # the same folder only: a recalibrated copy keeps the version (the weights' hash)
            where = bundle.path.resolve()
            same = [p for p in routes.values() if p.bundle.path.resolve() == where]
            pinned = same[0] if same else Predictor(bundle, **options)
        return cls(feature, routes, gate, pinned)

    def _kind_of(self, predictor: Predictor) -> str | None:
        for kind, routed in self.routes.items():
            if routed.bundle.version == predictor.bundle.version:
                return kind
        kind = predictor.bundle.info.get("image_kind")
        return kind if kind in LESION_KINDS else None

    @property
    def pre(self):
        """The feature model's preprocessing: what a folder's batches are decoded for."""
        return self.feature.pre

    @property
    def decode_size(self) -> tuple[int, int]:
        """(width, height) an upload is decoded for (JPEG draft): the pinned model's input,
        as `Predictor.predict` decodes a file for it, else the largest routed input."""
        if self.pinned is not None:
            return self.pinned.pre.width, self.pinned.pre.height
        models = [self.feature, *self.routes.values()]
        return max(m.pre.width for m in models), max(m.pre.height for m in models)

    def answered_by(self, result: Prediction) -> Predictor | None:
        """The predictor whose answer `result` is; None when no model answered."""
        for predictor in (self.pinned, self.feature, *self.routes.values()):
            if predictor is not None and predictor.bundle.version == result.model_version:
                return predictor
        return None

    def covers(self) -> list[str]:
        """What the models that can answer cover, in plain words."""
        if self.pinned is not None:
            kinds = [self.pinned_kind] if self.pinned_kind else list(LESION_KINDS)
        else:
            kinds = [k for k in LESION_KINDS if k in self.routes]
        return [COVERS[k] for k in kinds]

    def predict(
        self,
        source: ImageSource,
        top_k: int = 3,
        explain: bool = False,
        age: float | None = None,
        sex: str | None = None,
        site: str | None = None,
        tta: bool | None = None,
        **extra,
    ) -> Prediction:
        """Gate, then the model made for the image (or an out-of-scope answer). `extra`
        keywords (a clinical model's further inputs) go to a routed model's `predict`."""
        given = {"top_k": top_k, "explain": explain, "age": age, "sex": sex, "site": site}
        if self.gate is None:  # no gate installed: the one model answers, as before
            return (self.pinned or self.feature).predict(source, **given, tta=tta, **extra)
        x = self.feature.prepare(source)[None]
        meta = self.feature.meta_vector(age, sex, site, extra.get("clinical"))
        name = str(source) if isinstance(source, str | Path) else ""
        tta = self.feature.tta if tta is None else tta
        forwarded = self.feature.forward(x, meta, tta)
        stats = ImageStats(x, forwarded[1], self.feature.pre)  # read by the gate and the checks
        decision = self.decide(stats)[0]
        target = self.target(decision)
        if isinstance(target, Prediction):
            target.source = name
            return target
        if target is self.feature:
            result = target.predict_input(
                x, meta, top_k, explain, tta, name, forwarded, stats=stats
            )
        else:
            result = target.predict(source, **given, tta=tta, **extra)
            result.source = name
        return self.answered(result, decision, target)

    def predict_batch(
        self,
        sources: Sequence[ImageSource],
        batch: np.ndarray,
        stats: np.ndarray | None = None,
        top_k: int = 3,
        patients: Sequence[tuple] | None = None,
        names: Sequence[str] | None = None,
    ) -> list[Prediction]:
        """`predict` on images already preprocessed for the feature model (`batch`, with its
        `pixel_stats` when computed): one forward pass and one gate call for all. A model
        other than the feature model decodes the image's `sources` entry (a path or the
        file's bytes) again. `patients`: each image's (age, sex, site), else unknown (as a
        folder's); `names`: each result's `source` (default: the path)."""
        if names is None:
            names = [str(s) if isinstance(s, str | Path) else "" for s in sources]
        meta = None
        if patients is not None and self.feature.bundle.metadata_fields:
            meta = np.concatenate([self.feature.meta_vector(*p) for p in patients])
        logits, fmap = self.feature.forward(batch, meta)
        measured = ImageStats(batch, fmap, self.feature.pre, stats)
        decisions = self.decide(measured) if self.gate is not None else None
        probs = self.feature.calibrated(logits)
        ood, shift = image_checks(self.feature.ood, self.feature.shift, measured)
        out = []
        for j, name in enumerate(names):
            target = self.target(decisions[j]) if decisions else self.pinned or self.feature
            if isinstance(target, Prediction):
                result = target
            elif target is self.feature:
                result = target.result(
                    probs[j],
                    top_k,
                    name,
                    ood_score=None if ood is None else float(ood[0][j]),
                    not_skin_reason="" if ood is None else ood[2][j],
                    shift=None if shift is None else shift[j],
                )
                result.tta = bool(target.tta)
            else:
                age, sex, site = patients[j] if patients is not None else (None, None, None)
                result = target.predict(sources[j], top_k=top_k, age=age, sex=sex, site=site)
            result.source = name
            if decisions is not None and not isinstance(target, Prediction):
                result = self.answered(result, decisions[j], target)
            out.append(result)
        return out

    def decide(self, stats: ImageStats) -> list[ScopeDecision]:
        """The gate's decision per image of a batch preprocessed for the feature model."""
        scene = self.gate.scene_features(stats.batch)
        return self.gate.decide(stats.features, stats.pixels, stats.thumbs, scene)

    def target(self, decision: ScopeDecision) -> Predictor | Prediction:
        """The predictor that answers this kind, or the out-of-scope answer."""
        kind = decision.kind
        if kind not in LESION_KINDS:
            return self.refusal(
                decision, decision.kind if kind == "not_skin" else NOT_MADE_FOR, "", kind
            )
        if self.pinned is not None:
            if self.pinned_kind in (None, kind):
                return self.pinned
            name = self.pinned.bundle.name
            why = (
                f"This image seems to be {KIND_WORDS[kind]}, but the chosen model ({name}) was "
                f"made for {COVERS[self.pinned_kind]}, so it gives no answer for it."
            )
            return self.refusal(decision, NOT_MADE_FOR, why, "not_made_for")
        if kind in self.routes:
            return self.routes[kind]
        why = (
            f"This image seems to be {KIND_WORDS[kind]}, but no installed model covers such "
            f"photos, so none gives an answer for it."
        )
        return self.refusal(decision, NOT_MADE_FOR, why, "no_model")

    def refusal(
        self, decision: ScopeDecision, status: str, why: str = "", reason: str = ""
    ) -> Prediction:
        """An answer from no model: no classes, probabilities or triage."""
        if not why:
            why = f"This image seems to be {decision.sentence}, so no installed model answers it."
        covers = self.covers()
        scope = Scope(
            kind=decision.kind,
            reason=reason or decision.kind,
            model=None,
            why=why,
            rule=decision.rule,
            scores=decision.scores,
            covers=covers,
            advice=SEE_A_CLINICIAN,
        )
        return Prediction(
            classes=[],
            probabilities=[],
            top=[],
            malignant_probability=None,
            triage=status,
            triage_rule=f"no triage: {decision.rule}",
            uncertain=True,
            model_version=f"scope-gate@{str(self.gate.info.get('gate_sha256', ''))[:12]}",
            not_skin=status == "not_skin",
            not_skin_reason=decision.rule if status == "not_skin" else "",
            status=status,
            scope=scope,
        )

    def answered(self, result: Prediction, decision: ScopeDecision, by: Predictor) -> Prediction:
        """`result` from `by`, with the scope saying which model answered and why."""
        if result.not_skin and decision.kind == "clinical":
            # the clinical model's own check: skin, but unlike its lesion close-ups
            rule = f"{decision.rule}; then {by.bundle.name}'s OOD check: {result.not_skin_reason}"
            other = ScopeDecision("other_skin", decision.scores, rule, KIND_WORDS["other_skin"])
            refused = self.refusal(other, NOT_MADE_FOR, "", "model_check")
            refused.source = result.source
            return refused
        name = by.bundle.name
        chosen = "the chosen model" if by is self.pinned else "the model"
        why = f"Answered by {name}, {chosen} for {COVERS[decision.kind]}."
        if by is self.pinned and self.pinned_kind is None:
            why = f"Answered by {name}, the chosen model (its image kind is not recorded)."
        if result.not_skin:
            why = (
                f"{name} was chosen for {KIND_WORDS[decision.kind]}, but its own check found "
                f"that the image does not look like those, so it gives no triage."
            )
        result.scope = Scope(
            kind=decision.kind,
            reason="model_check" if result.not_skin else "answered",
            model=name,
            why=why,
            rule=decision.rule,
            scores=decision.scores,
            covers=self.covers(),
            advice="" if result.status == "ok" else SEE_A_CLINICIAN,
        )
        return result


def installed_folders(gate: Gate | None, root: Path = BUNDLED) -> dict[str, Path]:
    """The bundle folders under `root` a `Router` with this gate loads, by folder name: the
    gate's feature model first, then each routed one that is installed."""
    feature = gate.feature_model if gate is not None else "default"
    folders = {feature: root / feature}
    for name in (gate.routes if gate is not None else {}).values():
        if (root / name / "bundle.json").is_file():
            folders.setdefault(name, root / name)
    return folders


def check_fitted(gate: Gate | None, feature: Bundle) -> None:
    """The gate reads `feature`'s pooled features: it must be the model it was fitted on."""
    fitted = gate.info.get("feature_model_version") if gate is not None else None
    if fitted and fitted != feature.version:
        raise BundleError(
            f"the scope gate was fitted on {fitted}'s features but {feature.path} is "
            f"{feature.version}: refit it (python -m dermalens.evaluation.scope_fit)"
        )


def summarise(predictions: Sequence[Prediction]) -> dict[str, int]:
    """Counts of a run's answers: by status, and by the model that answered."""
    counts: dict[str, int] = {}
    for p in predictions:
        counts[p.status] = counts.get(p.status, 0) + 1
        if p.scope is not None and p.scope.model:
            key = f"answered by {p.scope.model}"
            counts[key] = counts.get(key, 0) + 1
    return counts
