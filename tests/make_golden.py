"""Record the bundled default model's probabilities on the fixture images.

python tests/make_golden.py     # after replacing the default model, never otherwise
"""

import json
from pathlib import Path

from dermalens.bundle import default_model_path, load_bundle
from dermalens.runtime.predictor import Predictor

HERE = Path(__file__).parent
GOLDEN = HERE / "fixtures" / "golden_default.json"

if __name__ == "__main__":
    bundle = load_bundle(default_model_path())
    predictor = Predictor(bundle, backend="onnx")
    images = sorted((HERE / "fixtures" / "ham").glob("*.jpg"))
    record = {
        "model_version": bundle.version,
        "classes": bundle.classes,
        "probabilities": {p.name: predictor.predict(p).probabilities for p in images},
    }
    GOLDEN.write_text(json.dumps(record, indent=2))
    print(f"wrote {GOLDEN}")
