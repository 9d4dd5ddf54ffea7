"""The search service: a JSON API and one web page, on FastAPI (served by uvicorn: ``contrastkit serve``).

    GET  /                         the page (search box, upload / drag-and-drop, results grid)
    GET  /api/info                 items, skipped records, sources, the faiss indexes, max k
    GET  /api/search?text=..&k=..[&source=..]          text -> images
    POST /api/search/image?k=..    (multipart field ``image``) image -> images
    GET  /api/similar/{id}?k=..    item -> similar items
    GET  /api/captions?text=..&k=..                    text -> indexed captions
    POST /api/captions/image?k=..  image -> indexed captions
    GET  /thumb/{id}               the thumbnail the index stored for item ``id``

Concurrent text (and image) queries share one forward pass of the tower (:mod:`~contrastkit.serve.batcher`).
Only the index's own thumbnails are served, addressed by integer id: no request names a path. Bad
requests get a 4xx with ``{"detail": message}``: an empty or too long query, k outside 1..max_k, an
unknown id or source, an upload that is too large or not an image. With ``token`` set, every request
but the page itself needs ``Authorization: Bearer <token>`` (or ``?token=`` for images in the page).
"""

from __future__ import annotations

import io
from importlib import resources
from typing import Annotated

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from PIL import Image, UnidentifiedImageError

from .batcher import QueryBatcher
from .search import MAX_K, Hit, Searcher, as_json

MAX_QUERY_CHARS = 500
MAX_UPLOAD_BYTES = 8 << 20
K = Annotated[int, Query(description=f"number of results, 1..{MAX_K}")]  # module level: FastAPI resolves it here
UPLOAD_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp")


def respond(hits: list[Hit]) -> JSONResponse:
    """The hits as JSON, serialised directly (FastAPI's response validation costs more than the search)."""
    return JSONResponse(as_json(hits))


def check_k_and_source(k: int, source: str | None, sources: list[str]) -> None:
    if not 1 <= k <= MAX_K:
        raise HTTPException(422, f"k must be between 1 and {MAX_K}, got {k}")
    if source is not None and source not in sources:
        raise HTTPException(404, f"unknown source {source!r}; the index holds {', '.join(sources)}")


def text_query(text: str) -> str:
    """The stripped query, or a 422 saying why it cannot be one."""
    text = text.strip()
    if not text:
        raise HTTPException(422, "the query text is empty: type what to look for")
    if len(text) > MAX_QUERY_CHARS:
        raise HTTPException(422, f"the query text is {len(text)} characters; at most {MAX_QUERY_CHARS}")
    return text


async def read_upload(upload: UploadFile, max_bytes: int) -> Image.Image:
    """The uploaded image, or a 413 / 415 saying why not (size read up to the limit only)."""
    if upload.content_type not in UPLOAD_TYPES:
        raise HTTPException(415, f"upload type {upload.content_type!r} is not an image ({', '.join(UPLOAD_TYPES)})")
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(413, f"the upload is larger than the limit of {max_bytes:,} bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError):
        raise HTTPException(415, "the upload is not a readable image") from None


def create_app(searcher: Searcher, token: str | None = None, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    """The FastAPI application over ``searcher``."""
    app = FastAPI(title="contrastkit search", docs_url=None, redoc_url=None)
    page = resources.files("contrastkit.serve").joinpath("page.html").read_text(encoding="utf-8")

    def authorised(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if given != token and request.query_params.get("token") != token:
            raise HTTPException(401, "this server needs a token: send 'Authorization: Bearer <token>'")

    guard = [Depends(authorised)]
    embed_text: QueryBatcher[str] = QueryBatcher(searcher.embed_texts)
    embed_image: QueryBatcher[Image.Image] = QueryBatcher(searcher.embed_images, max_batch=8)

    def check(k: int, source: str | None) -> None:
        check_k_and_source(k, source, searcher.sources)

    async def read_image(upload: UploadFile) -> Image.Image:
        return await read_upload(upload, max_upload_bytes)

    @app.get("/", response_class=HTMLResponse)
    def index_page() -> str:
        return page

    @app.get("/api/info", dependencies=guard)
    def info() -> dict:
        return searcher.info()

    @app.get("/api/search", dependencies=guard)
    async def search_text(text: str, k: K = 24, source: str | None = None) -> JSONResponse:
        check(k, source)
        return respond(searcher.images_near(await embed_text(text_query(text)), k, source))

    @app.post("/api/search/image", dependencies=guard)
    async def search_image(image: Annotated[UploadFile, File()], k: K = 24, source: str | None = None) -> JSONResponse:
        check(k, source)
        return respond(searcher.images_near(await embed_image(await read_image(image)), k, source))

    @app.get("/api/similar/{item_id}", dependencies=guard)
    def similar(item_id: int, k: K = 24, source: str | None = None) -> JSONResponse:
        check(k, source)
        try:
            return respond(searcher.similar(item_id, k, source))
        except KeyError:
            raise HTTPException(404, f"no item {item_id}; ids run from 0 to {len(searcher) - 1}") from None

    @app.get("/api/captions", dependencies=guard)
    async def captions_text(text: str, k: K = 10, source: str | None = None) -> JSONResponse:
        check(k, source)
        return respond(searcher.captions_near(await embed_text(text_query(text)), k, source))

    @app.post("/api/captions/image", dependencies=guard)
    async def captions_image(
        image: Annotated[UploadFile, File()], k: K = 10, source: str | None = None
    ) -> JSONResponse:
        check(k, source)
        return respond(searcher.captions_near(await embed_image(await read_image(image)), k, source))

    @app.get("/thumb/{item_id}", dependencies=guard)
    def thumb(item_id: int) -> FileResponse:
        path = searcher.files.thumb_path(item_id)
        if not 0 <= item_id < len(searcher) or not path.exists():
            raise HTTPException(404, f"no item {item_id}")
        return FileResponse(path, media_type="image/jpeg")

    return app
