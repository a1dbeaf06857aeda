"""handssca.export: the network to ONNX, with each selective scan as one custom node."""
