"""Command line: `python -m ai00_trio {serve,generate,adapters,convert,replicas}`."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__

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


def cmd_convert(args: argparse.Namespace) -> int:
    from .engine.formats import ModelFormatError
    from .engine.formats.convert import convert_checkpoint

    try:
        layout = convert_checkpoint(args.input, args.output, args.to)
    except (ModelFormatError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    names = {"ai00": "AI00 .st layout", "pytorch": "PyTorch names"}
    print(f"wrote {args.output} ({names[layout]}, {Path(args.output).stat().st_size / 2**20:.1f} MiB)")
    return 0


def cmd_replicas(args: argparse.Namespace) -> int:
    from .replicas import run

    serve_args = [*(["--config", args.config] if args.config else []), *(["--model", args.model] if args.model else [])]
    return run(args.count, args.port, Path(args.run_dir), serve_args)


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends with each flag's default; flags without one say what happens in their help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if not action.option_strings or default is None or default is False or default == [] \
                or default == argparse.SUPPRESS or "%(default)" in text:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    formatter = DefaultsFormatter
    parser = argparse.ArgumentParser(prog="ai00_trio", formatter_class=formatter,
                                     description="RWKV inference on WebGPU; without a command, serve")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands")
    gen = sub.add_parser("generate", help="continue a prompt from the command line", formatter_class=formatter)
    gen.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint (.st, .safetensors or .pth)")
    gen.add_argument("--prompt", default="The", help="text to continue")
    gen.add_argument("--tokens", type=int, default=64, help="tokens to generate")
    gen.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    gen.add_argument("--top-p", type=float, default=0.2, help="nucleus sampling mass")
    gen.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one each run)")
    gen.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="weight precision on the GPU")
    gen.add_argument("--adapter", default=None, help="adapter index or name, see `adapters` (default: the fastest)")
    gen.add_argument("--quant", type=int, default=0, metavar="LAYERS",
                     help="quantize the projections of the first LAYERS layers (see --quant-type)")
    gen.add_argument("--quant-type", choices=("int8", "nf4"), default="int8", help="quantization of --quant")
    gen.add_argument("--lora", action="append", default=[], metavar="PATH[=ALPHA]",
                     help="merge a LoRA adapter, alpha 1 when not given; repeatable, applied in order (default: none)")
    gen.add_argument("--tokenizer", choices=("world", "bytes"), default=None,
                     help="tokenizer (default: bytes for a 256-token vocab, else world)")
    gen.add_argument("--vocab", default=None, help="World vocab file (default: the bundled one)")
    gen.set_defaults(func=cmd_generate)
    ada = sub.add_parser("adapters", help="list the GPU adapters wgpu can use", formatter_class=formatter)
    ada.set_defaults(func=cmd_adapters)
    conv = sub.add_parser("convert", formatter_class=formatter,
                          help="convert a checkpoint to AI00's .st layout or back to PyTorch names (no torch needed)")
    conv.add_argument("input", help="a .pth, PyTorch-named safetensors or AI00 .st file")
    conv.add_argument("output", help="the safetensors file to write")
    conv.add_argument("--to", choices=("auto", "ai00", "pytorch"), default="auto",
                      help="layout to write; auto: AI00's for .pth and PyTorch-named input, PyTorch names for AI00 input")
    conv.set_defaults(func=cmd_convert)
    rep = sub.add_parser("replicas", formatter_class=formatter,
                         help="run several servers on loopback ports with HAProxy in front (deploy/haproxy.cfg)")
    rep.add_argument("--count", "-n", type=int, default=2, help="servers to start")
    rep.add_argument("--port", "-p", type=int, default=65530,
                     help="HAProxy's port on 127.0.0.1; the servers take the next ports")
    rep.add_argument("--config", "-c", default=None, help="Config.toml of every server (default: as for serve)")
    rep.add_argument("--model", "-m", default=None, metavar="PATH", help="model file of every server (as for serve)")
    rep.add_argument("--run-dir", default="replicas-run", help="folder for the HAProxy config, logs and socket")
    rep.set_defaults(func=cmd_replicas)
    serve = sub.add_parser("serve", help="start the HTTP server (the default command)", formatter_class=formatter)
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)
    add_serve_arguments(parser)
    return parser


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=None,
                        help=f"Config.toml (default: {DEFAULT_CONFIG} if it exists, else the built-in defaults)")
    parser.add_argument("--model", "-m", default=None, metavar="PATH",
                        help="serve this model file; its folder becomes [model] path (default: the config's model)")
    parser.add_argument("--ip", "-i", default=None, help="listen address (default: [listen] ip)")
    parser.add_argument("--port", "-p", type=int, default=None, help="listen port (default: [listen] port)")
    parser.add_argument("--keep-serving", action="store_true",
                        help="if the model fails to load, keep answering (503 with the reason) instead of exiting (default: exit 1)")


def cmd_serve(args: argparse.Namespace) -> int:
    import trio

    from .config import ConfigError, load_config
    from .server.fault_injection import FaultPlan
    from .server.main import run_server

    path = args.config
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    try:
        config = load_config(path)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.model:
        model = Path(args.model)
        if not model.is_file():
            print(f"error: --model {args.model}: no such file", file=sys.stderr)
            return 2
        config.model.path, config.model.name = str(model.parent), model.name
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
        faults = FaultPlan.from_environment(os.environ)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        return trio.run(run_server, config, args.keep_serving, faults)
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return getattr(args, "func", cmd_serve)(args)


if __name__ == "__main__":
    sys.exit(main())
