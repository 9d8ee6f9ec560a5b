"""This machine's fp32 matmul ceiling (GFLOP/s), the yardstick the training MFU is measured by."""

from __future__ import annotations

from benchmarks import common


def main(argv: list[str] | None = None) -> int:
    """Print the machine description and its measured fp32 matmul rate."""
    args = common.base_parser(__doc__.splitlines()[0]).parse_args(argv)
    size = 512 if args.quick else 2048
    common.emit({"machine": common.machine(), "matmul": common.measure_matmul_gflops(size)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
