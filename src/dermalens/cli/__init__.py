"""`dermalens` command line: a thin shim over the library.

dermalens predict IMAGE_OR_FOLDER...       # bundled default model
dermalens predict-batch SOURCE --out DIR [--address ray://HOST:10001]   # Ray Data, Parquet
dermalens train [config.json] key=value ...
dermalens evaluate MODEL DATA [--split test --split-file runs/x/split.csv]
dermalens export MODEL [--check-images DIR] [--precision fp32 --data DATA --split-file S]
dermalens calibrate MODEL DATA --split-file runs/x/split.csv
dermalens ensemble MODEL MODEL... --out DIR [--data DATA --split-file runs/x/split.csv]
dermalens soup RUN --out DIR (--epochs N... | --greedy)
dermalens data check DATA
dermalens serve [--model M --host H --port P]
dermalens info [MODEL]
"""

from __future__ import annotations

import logging
import sys

from dermalens.cli.parser import parser
from dermalens.errors import USER_ERRORS


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"dermalens {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; earlier runs and bundles are untouched", file=sys.stderr)
        return 130
