"""Tokenizer recipe: ``python -m numpyro_slt.data OUT.json [--vocab-size N] [--max-chars N]
[--seed N]`` trains :func:`numpyro_slt.data.train_tokenizer` on the offline corpora and writes it
with :func:`numpyro_slt.data.save_tokenizer` (deterministic on the same Python installation)."""

import argparse

from .tokenizer import save_tokenizer, train_tokenizer


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m numpyro_slt.data",
        description="Train the offline byte-level BPE tokenizer and save it as JSON.",
    )
    parser.add_argument("out", help="path of the tokenizer JSON file to write")
    parser.add_argument("--vocab-size", type=int, default=5000)
    parser.add_argument("--max-chars", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    tok = train_tokenizer(args.vocab_size, args.max_chars, args.seed)
    path = save_tokenizer(tok, args.out)
    print(f"wrote {path} ({tok.get_vocab_size()} tokens)")


if __name__ == "__main__":
    main()
