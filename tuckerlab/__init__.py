"""tuckerlab: compress convolutional networks by tensor decomposition."""
__version__ = "0.1.0"
