"""The shifted domain synthetic:shapes-clutter: the same scenes and captions, other images."""

from __future__ import annotations

import numpy as np
import pytest

from contrastkit.config import DataConfig
from contrastkit.data.shapes import SyntheticShapes
from contrastkit.data.shapes.grammar import caption_is_true, parse_caption
from contrastkit.data.shapes.render import BACKGROUND, CLUTTER_NOISE, COLOUR_RGB, DARK_GAIN, render_scene
from contrastkit.data.sources import open_source

N = 60


@pytest.fixture(scope="module")
def pairs():
    plain = open_source("synthetic:shapes", "test", DataConfig(eval_size=N))
    clutter = open_source("synthetic:shapes-clutter", "test", DataConfig(eval_size=N))
    return plain, clutter


def test_same_scenes_same_true_captions(pairs):
    plain, clutter = pairs
    assert clutter.name == "synthetic:shapes-clutter" and len(clutter) == len(plain) == N
    for i in range(N):
        a, b = plain[i], clutter[i]
        assert a.captions == b.captions and a.neg_captions == b.neg_captions and a.meta == b.meta
        scene = clutter.scene(i)
        assert all(caption_is_true(scene, parse_caption(c)) for c in b.captions)
        assert not any(caption_is_true(scene, parse_caption(c)) for group in b.neg_captions.values() for c in group)
    assert [t.indices for t in clutter.zeroshot_tasks()] == [t.indices for t in plain.zeroshot_tasks()]


def test_objects_are_drawn_alike_and_only_the_background_shifts(pairs):
    plain, clutter = pairs
    object_colours = np.array(list(COLOUR_RGB.values()), dtype=np.int16)
    for i in range(N):
        a = np.asarray(plain[i].image, dtype=np.int16)
        b = np.asarray(clutter[i].image, dtype=np.int16)
        on_object = (a != np.array(BACKGROUND)).any(axis=-1)
        assert on_object.any()
        assert (a[on_object] == b[on_object]).all()  # every object pixel keeps its exact colour
        background = b[~on_object]
        assert background.std(axis=0).mean() > CLUTTER_NOISE / 2  # textured, not flat
        assert not (background == np.array(BACKGROUND)).all(axis=-1).mean() > 0.5  # not the plain grey
        nearest = np.abs(background[:, None, :] - object_colours[None]).sum(-1).min(1)
        assert (nearest < 30).mean() < 0.01  # the clutter never passes for an object colour


def test_rendering_is_deterministic_and_styles_are_checked(pairs):
    _, clutter = pairs
    assert np.array_equal(np.asarray(clutter[5].image), np.asarray(clutter[5].image))
    with pytest.raises(ValueError, match="unknown style 'fog'"):
        SyntheticShapes("train", 4, style="fog")
    with pytest.raises(ValueError, match="needs an rng"):
        render_scene(clutter.scene(0), "clutter")
    with pytest.raises(ValueError, match="unknown synthetic world"):
        open_source("synthetic:shapes-fog", "train", DataConfig())


def test_the_dark_domain_scales_every_pixel_and_keeps_the_captions():
    plain = open_source("synthetic:shapes", "test", DataConfig(eval_size=20))
    dark = open_source("synthetic:shapes-dark", "test", DataConfig(eval_size=20))
    assert dark.name == "synthetic:shapes-dark"
    for i in range(20):
        a, b = plain[i], dark[i]
        assert a.captions == b.captions and a.neg_captions == b.neg_captions
        assert all(caption_is_true(dark.scene(i), parse_caption(c)) for c in b.captions)
        pixels, darker = np.asarray(a.image, dtype=np.float64), np.asarray(b.image, dtype=np.float64)
        assert np.abs(darker - np.round(pixels * DARK_GAIN)).max() == 0
        assert darker.mean() < 0.4 * pixels.mean()
