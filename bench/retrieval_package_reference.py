"""Reference numbers from the `rwkv-emb` package (0.2.6) on the random checkpoints of
tests/retrieval_reference.py, for the fidelity tests: run on a CUDA machine with torch,
transformers and ninja installed and the package's wheel unpacked (its import path given).

    python bench/retrieval_package_reference.py --package /path/to/unpacked/wheel --out tests/data/retrieval-reference.json

Writes both checkpoints as .pth beside the output (the layout the package loads), then the
package's embeddings (task [RETR]) and reranker logits for the test texts.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from retrieval_reference import random_embedding_checkpoint, random_reranker_checkpoint  # noqa: E402

TEXTS = [[11, 2002, 305, 4, 17, 65535], [900, 65535], list(range(5, 26)) + [65535], [31, 65535, 32, 33, 65535]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--package", required=True, help="folder holding the rwkv_emb package")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import torch
    sys.path.insert(0, args.package)
    from rwkv_emb.model import EmbeddingRWKV, RWKVReRanker

    out = Path(args.out)
    emb_path, rer_path = out.with_name("retrieval-emb.pth"), out.with_name("retrieval-rer.pth")
    torch.save({k: torch.from_numpy(v.copy()) for k, v in random_embedding_checkpoint(64, 2).items()}, emb_path)
    torch.save({k: torch.from_numpy(v.copy()) for k, v in random_reranker_checkpoint(64, 2, layer_idx=[1, 0]).items()},
               rer_path)
    model, reranker = EmbeddingRWKV(str(emb_path)), RWKVReRanker(str(rer_path))
    embeddings, logits = [], []
    for tokens in TEXTS:  # one at a time: the package's batch path left-pads with token 0
        vector, state = model.forward(tokens, None)
        embeddings.append(vector.float().reshape(-1).tolist())
        logits.append(float(reranker.forward(state[1].unsqueeze(1)).float().reshape(-1)[0]))
    out.write_text(json.dumps({"package": "rwkv-emb 0.2.6", "texts": TEXTS, "embeddings": embeddings,
                               "rerank_logits": logits}))


if __name__ == "__main__":
    main()
