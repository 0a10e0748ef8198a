"""Build the docs site and photograph a few of its pages in headless Chromium.

    uv run python tools/docsite/screenshot.py            # into docs/images/site/
    uv run python tools/docsite/screenshot.py --out /tmp/shots --page reference/client/

It builds the site strict (``mkdocs build --strict``) into a temporary
folder, serves it on a free port of 127.0.0.1, and has Chromium
(``/usr/bin/chromium``, or ``--chromium``; Debian's ``chromium`` package)
write one PNG per page. Chromium runs with no network of its own
(``--disable-background-networking`` and friends), so it works offline.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("s3torch.docsite.screenshot")

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PAGES = ["", "datasets/", "reference/client/", "troubleshooting/"]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "site")
    parser.add_argument(
        "--page",
        action="append",
        help="a page's path in the site, e.g. 'reference/client/' (default: a few pages)",
    )
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--size", default="1280,900", help="window width,height in pixels")
    return parser.parse_args(argv)


def build_site(into: Path) -> None:
    """``mkdocs build --strict`` into ``into``: a warning fails it, as in the tests."""
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(into)],
        cwd=REPO,
        check=True,
    )


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on a free port of 127.0.0.1; yields the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            log.debug(format, *args)

    handler = functools.partial(Quiet, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            thread.join()


def photograph(chromium: str, url: str, png: Path, size: str, profile: Path) -> None:
    """Have headless Chromium render ``url`` into ``png``."""
    subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={size}",
            f"--screenshot={png}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    if not png.is_file() or png.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise RuntimeError(f"Chromium wrote no PNG for {url} at {png}")


def file_name(page: str) -> str:
    return (page.strip("/").replace("/", "-") or "index") + ".png"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not Path(args.chromium).exists():
        log.error(
            "no Chromium at %s: install Debian's chromium package, or pass --chromium",
            args.chromium,
        )
        return 2
    pages = args.page or DEFAULT_PAGES
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="s3torch-site-") as work:
        site, profile = Path(work) / "site", Path(work) / "profile"
        log.info("building the site (mkdocs build --strict)")
        build_site(site)
        with serve(site) as base:
            for index, page in enumerate(pages, 1):
                png = args.out / file_name(page)
                log.info("[%d/%d] %s%s -> %s", index, len(pages), base, page, png)
                photograph(args.chromium, base + page, png, args.size, profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
