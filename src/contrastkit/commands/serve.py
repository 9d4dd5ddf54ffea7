"""contrastkit serve: the search service and web page over an index made by `contrastkit index`.

contrastkit serve indexes/shapes                       # http://127.0.0.1:8000
contrastkit serve indexes/shapes --port 8080 --token s3cret
"""

from __future__ import annotations

import argparse
import ipaddress
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve an index: JSON search API and a web page",
        description="Text -> images, image upload -> images, item -> similar items, text/image -> captions, "
        "and a page with a search box, drag-and-drop and a results grid. Binds to 127.0.0.1 unless told "
        "otherwise; serves only the index's own thumbnails.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("index", metavar="INDEX", help="index directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per forward pass (default 1: concurrent requests already share the cores)",
    )
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (the page takes ?token=TOKEN)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from ..serve.app import create_app
    from ..serve.search import Searcher

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback and args.token is None:
        print(f"warning: serving on {args.host} without --token: anyone who reaches it can search", file=sys.stderr)
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    searcher = Searcher(args.index)
    print(f"serving {len(searcher)} images of {args.index} on http://{args.host}:{args.port}/")
    uvicorn.run(create_app(searcher, token=args.token), host=args.host, port=args.port, log_level="warning")
    return 0
