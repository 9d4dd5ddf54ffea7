"""The built-in world of coloured shapes (``synthetic:shapes``): scenes, captions, negatives, pictures.

- :mod:`~contrastkit.data.shapes.grammar`: the scene and caption structure, caption text and parsing,
  and the truth checker;
- :mod:`~contrastkit.data.shapes.layout`: the held-out shape-colour combinations and random scenes;
- :mod:`~contrastkit.data.shapes.describe`: a scene's true captions and hard negatives by category;
- :mod:`~contrastkit.data.shapes.render`: drawing a scene;
- :mod:`~contrastkit.data.shapes.dataset`: :class:`SyntheticShapes`, one split as records and
  zero-shot tasks;
- :mod:`~contrastkit.data.shapes.lexicon`: the packaged synonym lexicon (``data.synonyms: builtin``),
  which leaves out every word whose replacement would falsify a caption of this world.
"""

from .dataset import SyntheticShapes

__all__ = ["SyntheticShapes"]
