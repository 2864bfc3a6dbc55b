"""Make sure the book's data sets can be loaded.

Uses the folder in $HESSLIB_DATA when it holds them; otherwise downloads
them with torchvision into the cache folder ($HESSLIB_CACHE, default
~/.cache/hesslib). CIFAR-100 is optional: the book says so where it is
missing.
"""

from __future__ import annotations

import logging
import sys

from hesslib.data import DataError, load

REQUIRED = ("mnist", "cifar10")
OPTIONAL = ("cifar100",)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in REQUIRED + OPTIONAL:
        try:
            load(name, download=True)
        except DataError as error:
            if name in REQUIRED:
                logging.error("%s", error)
                return 1
            logging.warning("optional data set missing: %s", error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
