"""tinycalc command line: python cli.py OP A B"""

import sys

import calc
import store


def main(argv: list[str]) -> int:
    op, a, b = argv[1], float(argv[2]), float(argv[3])
    result = getattr(calc, op)(a, b)
    store.save(op, a, b, result)
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
