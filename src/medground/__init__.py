"""medground: refer, ground and segment in biomedical images."""

__version__ = "0.1.0"
__all__ = ["__version__"]
