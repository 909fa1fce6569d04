"""The ``hologram`` command: ``hologram convert SRC_DIR OUT.gguf [--type f32|f16|q8_0]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hologram", description="hologram model tools")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser(
        "convert",
        help="convert a Hugging Face BERT-family model folder to GGUF",
        description="Convert a Hugging Face BERT-family encoder (safetensors + WordPiece "
        "tokenizer, optionally a sentence-transformers pooling config) to a GGUF file that "
        "hologram and llama.cpp load.",
    )
    c.add_argument("src_dir", metavar="SRC_DIR", help="Hugging Face model folder")
    c.add_argument("out", metavar="OUT.gguf", help="output GGUF file")
    c.add_argument(
        "--type",
        dest="out_type",
        choices=("f32", "f16", "q8_0"),
        default="f32",
        help="type of the transformer-block matrices (embeddings, norms and biases stay f32); "
        "default f32",
    )
    c.add_argument("--name", default=None, help="general.name (default: the folder name)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "convert":
        from hologram.convert import ConversionError, convert

        try:
            res = convert(args.src_dir, args.out, args.out_type, name=args.name)
        except ConversionError as e:
            print(f"hologram convert: error: {e}", file=sys.stderr)
            return 2
        pooling = {None: "none", 1: "mean", 2: "cls", 3: "last"}.get(res.pooling, "?")
        print(
            f"wrote {res.path} ({res.out_type}, {res.n_tensors} tensors, vocab {res.n_vocab}, "
            f"pooling {pooling}{', normalize' if res.normalize else ''})"
        )
        return 0
    return 2  # unreachable: argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
