"""Command line: `python -m ai00_trio {generate,adapters,serve}`."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_MODEL = "assets/models/tiny-rwkv-7v0-834K.st"
DEFAULT_CONFIG = "assets/configs/Config.toml"


def cmd_adapters(args: argparse.Namespace) -> int:
    from .gpu.context import list_adapters

    adapters = list_adapters()
    if not adapters:
        print("no WebGPU adapter found (install a GPU driver or mesa-vulkan-drivers)", file=sys.stderr)
        return 1
    for a in adapters:
        print(f"{a.index}: {a.name} ({a.backend}, {a.adapter_type})")
    return 0


def _lora_arg(text: str) -> tuple[str, float]:
    """`PATH` or `PATH=ALPHA` (alpha 1 by default)."""
    path, sep, alpha = text.rpartition("=")
    if not sep:
        return text, 1.0
    try:
        return path, float(alpha)
    except ValueError:
        raise ValueError(f"--lora {text!r}: expected PATH or PATH=ALPHA") from None


def cmd_generate(args: argparse.Namespace) -> int:
    from .engine import load_model
    from .gpu.context import NoAdapterError
    from .sampling import sample_logits
    from .tokenizer import load_tokenizer

    started = time.perf_counter()
    try:
        loras = [_lora_arg(text) for text in args.lora]
        model = load_model(args.model, precision=args.precision, adapter=args.adapter, loras=loras,
                           quant=args.quant, quant_type=args.quant_type)
    except (ValueError, NoAdapterError) as error:  # a bad --lora, or an unreadable file (ModelFormatError)
        print(f"error: {error}", file=sys.stderr)
        return 2
    kind = args.tokenizer or ("bytes" if model.info.n_vocab == 256 else "world")
    tokenizer = load_tokenizer(kind, args.vocab)
    info = model.info
    print(f"# {info.version} model: {info.n_layer} layers, {info.n_embd} channels, vocab {info.n_vocab}; "
          f"{model.precision} on {model.ctx.info.name} ({model.ctx.info.backend}); "
          f"loaded in {time.perf_counter() - started:.2f}s", file=sys.stderr)
    rng = np.random.default_rng(args.seed)
    decoder = tokenizer.incremental_decoder()
    state = model.new_state()
    prompt = tokenizer.encode(args.prompt)
    if not prompt:
        print("error: the prompt encodes to no tokens", file=sys.stderr)
        return 2
    started = time.perf_counter()
    logits = model.forward(prompt, state)
    sys.stdout.write(args.prompt)
    for _ in range(args.tokens):
        token = sample_logits(logits, rng, args.temperature, args.top_p)
        if token == 0 and kind == "world":
            break
        sys.stdout.write(decoder.feed([token]))
        sys.stdout.flush()
        logits = model.forward([token], state)
    sys.stdout.write(decoder.flush() + "\n")
    elapsed = time.perf_counter() - started
    print(f"# {len(prompt)} prompt + {args.tokens} generated tokens in {elapsed:.2f}s", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ai00_trio", description="RWKV inference on WebGPU")
    sub = parser.add_subparsers(dest="command")
    gen = sub.add_parser("generate", help="continue a prompt from the command line")
    gen.add_argument("--model", default=DEFAULT_MODEL)
    gen.add_argument("--prompt", default="The")
    gen.add_argument("--tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-p", type=float, default=0.2)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    gen.add_argument("--adapter", default=None, help="adapter index or name (see `adapters`)")
    gen.add_argument("--quant", type=int, default=0, metavar="LAYERS",
                     help="quantize the projections of the first LAYERS layers (see --quant-type)")
    gen.add_argument("--quant-type", choices=("int8", "nf4"), default="int8")
    gen.add_argument("--lora", action="append", default=[], metavar="PATH[=ALPHA]",
                     help="merge a LoRA adapter (repeatable, applied in order)")
    gen.add_argument("--tokenizer", choices=("world", "bytes"), default=None,
                     help="default: bytes for a 256-token vocab, else world")
    gen.add_argument("--vocab", default=None, help="World vocab file")
    gen.set_defaults(func=cmd_generate)
    ada = sub.add_parser("adapters", help="list the GPU adapters wgpu can use")
    ada.set_defaults(func=cmd_adapters)
    serve = sub.add_parser("serve", help="start the HTTP server (the default command)")
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)
    add_serve_arguments(parser)
    return parser


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=DEFAULT_CONFIG, help="Config.toml")
    parser.add_argument("--ip", "-i", default=None, help="listen address (overrides [listen] ip)")
    parser.add_argument("--port", "-p", type=int, default=None, help="listen port (overrides [listen] port)")
    parser.add_argument("--keep-serving", action="store_true",
                        help="if the model fails to load, keep answering (503 with the reason) instead of exiting")


def cmd_serve(args: argparse.Namespace) -> int:
    import trio

    from .config import ConfigError, load_config
    from .server.main import run_server

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.ip:
        config.listen.ip = args.ip
    if args.port:
        config.listen.port = args.port
    listen = config.listen
    missing = [path for path in (listen.cert, listen.key) if listen.tls and not Path(path).is_file()]
    if missing:
        print(f"error: [listen] tls = true, but {' and '.join(missing)} cannot be read (set cert and key)",
              file=sys.stderr)
        return 2
    try:
        return trio.run(run_server, config, args.keep_serving)
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return getattr(args, "func", cmd_serve)(args)


if __name__ == "__main__":
    sys.exit(main())
