"""contrastkit: contrastive image-text learning — train, adapt, evaluate, diagnose."""

from .encoded import Encoded

__version__ = "0.1.0"
__all__ = ["Encoded", "__version__"]
