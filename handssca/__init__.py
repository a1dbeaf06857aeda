"""HandSSCA: 3D hand mesh reconstruction with State Space Channel Attention.

The package is split by job: ``handssca.models`` (the network), ``handssca.ops`` (the selective
scan op), ``handssca.training``, ``handssca.export`` and ``handssca.runtime`` (torch-free
inference). Importing ``handssca`` itself pulls in nothing heavy.
"""

import sys

__version__ = "0.1.0"


def main() -> int:
    """The ``handssca`` command. The CLI is imported here, inside the guard, so that a Ctrl-C
    while its modules load (numpy, ONNX Runtime: a second or so) ends in one line, not a
    traceback; from then on ``handssca.cli.main`` handles it."""
    try:
        from handssca.cli import main as cli_main
    except KeyboardInterrupt:
        print("handssca: interrupted", file=sys.stderr)
        return 130
    return cli_main()
