"""Render `dvc plots show` (or `dvc plots diff REV ...`) in a real headless browser and check every plot.

    python bench/plots_check.py [--repo .] [--out plots_check] [--diff REV ...] [--vega-dir DIR]

What it does, in order:

1. Vega, Vega-Lite and Vega-Embed at the versions DVC's page loads from a CDN, as local files (the check
   runs offline): from ``--vega-dir``, else from ``~/.cache/psdif/vega``, else fetched once with
   ``npm pack`` from the npm registry into that cache.
2. ``dvc plots show`` (or ``dvc plots diff``) with an HTML template that loads those local files, into
   ``--out``.
3. Headless Chromium opens the page, lets the scripts run, dumps the DOM and takes a screenshot
   (``--out/screenshot.png``, the whole page).
4. Checks: every Vega plot of the page drew its marks (a canvas or an SVG inside its div), every image plot
   is there, and every Vega plot has a title and titled x and y axes (from ``dvc plots show --json``).

Exit status 0 when every check passes; 1 with the failures listed; 2 when a tool is missing (the message
says which and how to get it). Chromium: Debian's ``chromium`` package (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# the versions dvc_render's page takes from the CDN (dvc_render.vega.VegaRenderer.SCRIPTS)
VEGA = {"vega": "5.20.2", "vega-lite": "5.2.0", "vega-embed": "6.18.2"}
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--hide-scrollbars"]
TEMPLATE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    <title>PSDIF plots check</title>
    <script src="vega.min.js"></script>
    <script src="vega-lite.min.js"></script>
    <script src="vega-embed.min.js"></script>
    <style> table { border-spacing: 15px; } body { font-family: sans-serif; } </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


class MissingTool(RuntimeError):
    pass


def find_browser() -> str | None:
    for name in BROWSERS:
        if found := shutil.which(name):
            return found
    return None


def vega_scripts(vega_dir: Path | None = None) -> dict[str, Path]:
    """``{package: path of its build/<package>.min.js}``, fetched with ``npm pack`` into the cache if needed."""
    cache = vega_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "psdif" / "vega"
    paths = {name: cache / f"{name}-{version}.min.js" for name, version in VEGA.items()}
    missing = [n for n, p in paths.items() if not p.is_file()]
    if not missing:
        return paths
    if vega_dir is not None:
        raise MissingTool(f"{vega_dir} lacks {', '.join(paths[n].name for n in missing)}")
    if shutil.which("npm") is None:
        raise MissingTool("Vega scripts are not cached and npm is not installed: install npm, or pass --vega-dir "
                          f"with {', '.join(p.name for p in paths.values())}")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        specs = [f"{n}@{VEGA[n]}" for n in missing]
        r = subprocess.run(["npm", "pack", "--silent", *specs, "--pack-destination", tmp], capture_output=True,
                           text=True, timeout=600)
        if r.returncode != 0:
            raise MissingTool(f"npm pack {' '.join(specs)} failed: {r.stderr.strip()[-500:]}")
        for name in missing:
            with tarfile.open(Path(tmp) / f"{name}-{VEGA[name]}.tgz") as tar:
                member = tar.extractfile(f"package/build/{name}.min.js")
                if member is None:
                    raise MissingTool(f"{name}@{VEGA[name]} has no build/{name}.min.js")
                part = paths[name].with_suffix(".tmp")
                part.write_bytes(member.read())
                part.replace(paths[name])
    return paths


def dvc(repo: Path, *args: str) -> str:
    exe = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    r = subprocess.run([exe, *args], cwd=repo, capture_output=True, text=True,
                       env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if r.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r.stdout


def render(repo: Path, out: Path, diff: list[str] | None, scripts: dict[str, Path]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    template = out / "template.html"
    template.write_text(TEMPLATE)
    command = ["plots", "diff", *diff] if diff else ["plots", "show"]
    dvc(repo, *command, "--html-template", str(template.resolve()), "-o", str(out.resolve()))
    for name, path in scripts.items():
        shutil.copyfile(path, out / f"{name}.min.js")
    return out / "index.html"


def browse(browser: str, page: Path, screenshot: Path, height: int) -> str:
    """The page's DOM after its scripts ran; writes the screenshot."""
    with tempfile.TemporaryDirectory() as profile:
        common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000"]
        url = page.resolve().as_uri()
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=300).stdout
        subprocess.run([*common, f"--window-size=1500,{height}", f"--screenshot={screenshot.resolve()}", url],
                       capture_output=True, text=True, timeout=300)
    return dom


def check(repo: Path, out: Path, diff: list[str] | None = None, vega_dir: Path | None = None) -> list[str]:
    """Render, browse, check; the list of failures (empty: every plot renders with titled axes)."""
    browser = find_browser()
    if browser is None:
        raise MissingTool("no Chromium found (tried " + ", ".join(BROWSERS) + "); apt-get install chromium")
    page = render(repo, out, diff, vega_scripts(vega_dir))
    html = page.read_text()
    vega_divs = re.findall(r'<div id\s*=\s*"([^"]+)">\s*<script', html)
    images = re.findall(r"<img ", html)
    height = 420 * ((len(vega_divs) + 1) // 2) + 700 * len(images) + 200  # two Vega plots a row at 1500 px
    dom = browse(browser, page, out / "screenshot.png", height)
    failures = []
    for div in vega_divs:
        start = dom.find(f'id="{div}"')
        end = dom.find('<div id="', start + 1)
        body = dom[start:end if end > 0 else len(dom)]
        if start < 0 or not re.search(r"<canvas|<svg", body):
            failures.append(f"plot {div}: nothing drawn (see {out}/screenshot.png)")
    if len(re.findall(r"<img ", dom)) < len(images):
        failures.append(f"{len(images)} image plots in the page, fewer in the browser")
    specs = json.loads(dvc(repo, *(["plots", "diff", *diff] if diff else ["plots", "show"]), "--json"))
    for name, entries in specs.get("data", {}).items():
        for entry in entries:
            if entry.get("type") != "vega":
                continue
            content = entry.get("content", {})
            enc = content.get("encoding", {})
            if "layer" in content:  # DVC's linear template layers its marks
                enc = next((layer.get("encoding") for layer in content["layer"] if layer.get("encoding")), enc)
            title = (content.get("title") or {}).get("text") if isinstance(content.get("title"), dict) \
                else content.get("title")
            for axis in ("x", "y"):
                if not (enc.get(axis) or {}).get("title"):
                    failures.append(f"plot {name}: the {axis} axis has no title")
            if not title:
                failures.append(f"plot {name}: no title")
    print(f"{page}: {len(vega_divs)} Vega plots, {len(images)} images; screenshot {out / 'screenshot.png'}")
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, default=Path("plots_check"))
    parser.add_argument("--diff", nargs="+", metavar="REV", help="check `dvc plots diff REV ...` instead")
    parser.add_argument("--vega-dir", type=Path, help="folder with vega-<v>.min.js, vega-lite-<v>.min.js, "
                                                      "vega-embed-<v>.min.js (default: cache, npm)")
    args = parser.parse_args(argv)
    try:
        failures = check(args.repo, args.out, args.diff, args.vega_dir)
    except MissingTool as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for f in failures:
        print(f"FAIL {f}")
    print("every plot renders with a title and titled axes" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
