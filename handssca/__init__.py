"""HandSSCA: 3D hand mesh reconstruction with State Space Channel Attention.

The package is split by job: ``handssca.models`` (the network), ``handssca.ops`` (the selective
scan op), ``handssca.training``, ``handssca.export`` and ``handssca.runtime`` (torch-free
inference). Importing ``handssca`` itself pulls in nothing heavy.
"""

__version__ = "0.1.0"
