"""A reproducible DVC pipeline that trains and studies MLPs on MNIST."""
