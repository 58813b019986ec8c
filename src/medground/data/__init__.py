"""The data engine: segmentation collections in, verified refer-and-ground conversations out."""
