"""What leaves the program for other tools: hand meshes and records in one convention
(``hands``), a recording of each tracked hand's parameters (``recording``), and the files made
from it (glTF 2.0, ``gltf``; BVH, ``bvh``). Camera space throughout: metres, OpenCV's axes
(x right, y down, z forward)."""
