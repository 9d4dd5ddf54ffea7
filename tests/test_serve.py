"""contrastkit serve: the JSON API answers what the model ranks first, bad requests get a 4xx, and the page
works in a real headless Chromium."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from contrastkit.config import load_config
from contrastkit.data.sources import open_source
from contrastkit.engine.trainer import train
from contrastkit.serve.app import create_app
from contrastkit.serve.index_build import build_index
from contrastkit.serve.search import Searcher
from helpers import TINY_TRAINING
from search_page import search_in_browser, serving

SETTINGS = ["data.eval_size=48"]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    train(load_config("configs/demo.yaml", TINY_TRAINING + ["data.train_size=32"]), root / "run")
    build_index(root / "run", "synthetic:shapes", root / "index", split="test", progress=False, data_overrides=SETTINGS)
    return root


@pytest.fixture(scope="module")
def client(index):
    return TestClient(create_app(Searcher(index / "index"), max_upload_bytes=50_000))


def exact_ranking(searcher: Searcher, query_vector: np.ndarray) -> list[int]:
    scores = np.asarray(searcher.files.vectors("images")) @ query_vector
    return [int(i) for i in np.argsort(-scores, kind="stable")]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_text_image_similar_and_caption_queries_return_what_the_model_ranks_first(index, client):
    searcher = Searcher(index / "index")
    hits = client.get("/api/search", params={"text": "a large red circle", "k": 5}).json()
    query = searcher.embedder.embed_texts(["a large red circle"]).numpy()[0]
    assert [h["id"] for h in hits] == exact_ranking(searcher, query)[:5]
    assert hits[0]["score"] >= hits[-1]["score"] and hits[0]["thumbnail"] == f"/thumb/{hits[0]['id']}"

    data = open_source("synthetic:shapes", "test", load_config(index / "run" / "config.json", SETTINGS).data)
    upload = {"image": ("scene.png", png(data[7].load_image()), "image/png")}
    found = client.post("/api/search/image", params={"k": 3}, files=upload).json()
    assert found[0]["id"] == 7 and found[0]["score"] == pytest.approx(1.0, abs=1e-4)

    similar = client.get("/api/similar/7", params={"k": 4}).json()
    assert 7 not in [h["id"] for h in similar]
    assert [h["id"] for h in similar] == [
        i for i in exact_ranking(searcher, searcher.files.vectors("images")[7]) if i != 7
    ][:4]

    captions = client.get("/api/captions", params={"text": data[3].captions[0], "k": 1}).json()
    assert captions[0]["caption"] == data[3].captions[0]
    thumb = client.get(f"/thumb/{hits[0]['id']}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    info = client.get("/api/info").json()
    assert info["items"] == 48 and info["sources"] == ["synthetic:shapes"]


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "message"),
    [
        ("get", "/api/search", {"params": {"text": "   "}}, 422, "the query text is empty"),
        ("get", "/api/search", {"params": {"text": "x" * 501}}, 422, "at most 500"),
        ("get", "/api/search", {"params": {"text": "a circle", "k": 0}}, 422, "k must be between 1 and 200"),
        ("get", "/api/search", {"params": {"text": "a circle", "k": 10**9}}, 422, "k must be between 1 and 200"),
        ("get", "/api/search", {"params": {"text": "a circle", "source": "folder:/etc"}}, 404, "unknown source"),
        ("get", "/api/similar/4800", {}, 404, "no item 4800; ids run from 0 to 47"),
        ("get", "/api/similar/-1", {}, 404, "no item -1"),
        ("get", "/thumb/999", {}, 404, "no item 999"),
        ("get", "/thumb/..%2F..%2Fitems.sqlite", {}, 404, None),
        ("get", "/thumbs/0.jpg", {}, 404, None),
        ("get", "/items.sqlite", {}, 404, None),
        ("post", "/api/search/image", {"files": {"image": ("a.txt", b"hello", "text/plain")}}, 415, "not an image"),
        (
            "post",
            "/api/search/image",
            {"files": {"image": ("a.png", b"\x89PNG garbage", "image/png")}},
            415,
            "not a readable image",
        ),
        (
            "post",
            "/api/search/image",
            {"files": {"image": ("big.png", b"\0" * 60_000, "image/png")}},
            413,
            "larger than",
        ),
        ("post", "/api/search/image", {}, 422, None),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(client, method, url, kwargs, status, message):
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status, response.text
    if message:
        assert message in response.json()["detail"]


def test_a_token_guards_everything_but_the_page(index):
    guarded = TestClient(create_app(Searcher(index / "index"), token="s3cret"))
    assert guarded.get("/").status_code == 200
    assert guarded.get("/api/info").status_code == 401
    assert guarded.get("/api/info", headers={"Authorization": "Bearer s3cret"}).json()["items"] == 48
    assert guarded.get("/thumb/0", params={"token": "s3cret"}).status_code == 200
    assert guarded.get("/thumb/0", params={"token": "wrong"}).status_code == 401


@pytest.mark.slow
def test_the_page_in_headless_chromium_shows_the_expected_images_first(index, tmp_path):
    searcher = Searcher(index / "index")
    query = "a small green triangle"
    expected = exact_ranking(searcher, searcher.embedder.embed_texts([query]).numpy()[0])
    with serving(index / "index") as url:
        assert urllib.request.urlopen(url + "/api/info").status == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url + "/api/search?text=%20")
        assert err.value.code == 422 and "empty" in json.loads(err.value.read())["detail"]
        cards = search_in_browser(url, query, tmp_path / "search_page.png")
    assert [int(c["id"]) for c in cards] == expected[:24]
    assert all(c["loaded"] == "true" for c in cards)
    captions = {i: searcher.files.item(i).caption for i in expected[:24]}
    assert [c["caption"] for c in cards] == [captions[int(c["id"])] for c in cards]
    assert (tmp_path / "search_page.png").stat().st_size > 20_000
