"""Bundled real face models (mini-XCEPTION ports) and the Keras-HDF5 -> PyTorch converter."""
