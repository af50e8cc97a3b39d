"""Embeddings per second for documents of `--tokens` tokens in batches, on our engine, with the
`rwkv-emb` package on torch CUDA as the peer in the same process (`--reference`).

    python bench/bench_embed.py --shape 0.1b --batches 1,8,32 --reference
    python bench/bench_embed.py --shape tiny --batches 2 --docs 4 --tokens 64   # lavapipe smoke run

The checkpoint is a random-weight EmbeddingRWKV of the real layout (tests/retrieval_reference.py:
0.1b = 12 layers of 768, 0.4b = 24 of 1024, tiny = 2 of 64), written as .st for us and .pth
for the package. Documents are random token ids ending in EOS, all of one length (the package's
batch path left-pads shorter ones). Prints one `RESULT {json}` line per measurement; with
`--reference`, each of ours says its cosine against the package's vectors (the same documents).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from ai00_trio.engine.formats.safetensors_writer import write_safetensors  # noqa: E402
from ai00_trio.engine.retrieval import load_embedding_model  # noqa: E402
from retrieval_reference import EOS, random_embedding_checkpoint  # noqa: E402

SHAPES = {"tiny": (64, 2), "0.1b": (768, 12), "0.4b": (1024, 24)}
DEFAULT_PACKAGE = "/work/refs/rwkv_emb/pkg"


def report(**fields) -> None:
    print("RESULT", json.dumps(fields), flush=True)


def documents(count: int, tokens: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(0, EOS, tokens - 1)] + [EOS] for _ in range(count)]


def timed(run, docs: list[list[int]], batch: int, repeat: int) -> tuple[float, np.ndarray]:
    """Docs per second of `run(group)` over `docs` in groups of `batch` (after one warm-up
    group), the best of `repeat` passes, and the vectors of the last pass."""
    run(docs[:batch])
    best, vectors = 0.0, None
    for _ in range(repeat):
        started = time.perf_counter()
        vectors = np.concatenate([run(docs[i:i + batch]) for i in range(0, len(docs), batch)])
        best = max(best, len(docs) / (time.perf_counter() - started))
    return best, vectors


def reference_runner(pth: Path, package: str):
    import torch

    sys.path.insert(0, package)
    from rwkv_emb.model import EmbeddingRWKV

    model = EmbeddingRWKV(str(pth))

    def run(group: list[list[int]]) -> np.ndarray:
        with torch.no_grad():
            vectors, _ = model.forward(group if len(group) > 1 else group[0], None)
            vectors = torch.nn.functional.normalize(vectors.float().reshape(len(group), -1), dim=-1)
        torch.cuda.synchronize()
        return vectors.cpu().numpy()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="0.1b")
    parser.add_argument("--batches", default="1,8,32", help="documents per GPU batch (comma-separated)")
    parser.add_argument("--tokens", type=int, default=512, help="tokens per document (EOS included)")
    parser.add_argument("--docs", type=int, default=128, help="documents per measured pass")
    parser.add_argument("--chunk", type=int, default=4096, help="our tokens per GPU step (token_chunk_size)")
    parser.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--adapter", default=None, help="our GPU: index or part of its name")
    parser.add_argument("--reference", action="store_true", help="also run the rwkv-emb package (torch CUDA)")
    parser.add_argument("--package", default=DEFAULT_PACKAGE, help="folder holding the rwkv_emb package")
    args = parser.parse_args()

    width, layers = SHAPES[args.shape]
    batches = [int(b) for b in args.batches.split(",")]
    docs = documents(max(args.docs, max(batches)), args.tokens)
    tensors = random_embedding_checkpoint(width, layers)
    folder = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    st = folder / f"embed-{args.shape}.st"
    write_safetensors(st, tensors)
    peer = None
    if args.reference:
        import torch

        pth = folder / f"embed-{args.shape}.pth"
        torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, pth)
        peer = reference_runner(pth, args.package)
    del tensors
    common = dict(shape=args.shape, n_layer=layers, n_embd=width, tokens=args.tokens, docs=len(docs))
    for batch in batches:
        model = load_embedding_model(st, args.precision, args.adapter, max_batch=batch,
                                     max_tokens=max(args.chunk, batch))
        ours, vectors = timed(model.embed, docs, batch, args.repeat)
        fields = dict(engine="ai00-trio", precision=args.precision, batch=batch, embeddings_per_s=round(ours, 2),
                      tokens_per_s=round(ours * args.tokens), adapter=model.ctx.info.name, **common)
        if peer is not None:
            theirs, want = timed(peer, docs, batch, args.repeat)
            cosines = np.sum(vectors * want, axis=1)
            report(engine="rwkv-emb", batch=batch, embeddings_per_s=round(theirs, 2),
                   tokens_per_s=round(theirs * args.tokens), **common)
            fields.update(min_cosine=round(float(cosines.min()), 6), speedup=round(ours / theirs, 2))
        report(**fields)
        del model


if __name__ == "__main__":
    main()
