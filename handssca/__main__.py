"""``python -m handssca`` and the ``handssca`` command's entry point."""

import sys


def main() -> int:
    """The ``handssca`` command. The CLI is imported here, inside the guard, so that a Ctrl-C
    while its modules load (numpy, OpenCV, ONNX Runtime: a second or so) ends in one line, not a
    traceback; from then on ``handssca.cli.main`` handles it."""
    try:
        from handssca.cli import main as cli_main
    except KeyboardInterrupt:
        print("handssca: interrupted", file=sys.stderr)
        return 130
    except ImportError as exc:
        from handssca.errors import interrupted_import

        if not interrupted_import(exc):
            raise
        print("handssca: interrupted", file=sys.stderr)
        return 130
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
