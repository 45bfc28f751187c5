"""Train and study MLPs on MNIST. Importing the package pins the CPU numerics before torch loads."""

from pipeline.lib.pinning import pin_numerics

pin_numerics()
