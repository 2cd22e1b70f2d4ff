"""Open an HTML page in headless Chromium with the network off and report what its charts drew.

    python -m tests.browser dvc_plots/index.html [--screenshot shot.png]

Used by tests/test_plots_page.py on the pages `dvc plots show` / `dvc plots diff` write; by hand,
it prints the same check and takes a screenshot to look at.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# Headless, no sandbox (CI runs as root), no GPU, nothing fetched in the background, an empty
# profile, and every request that is not a file sent to a dead proxy: the page gets no network.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-extensions", "--disable-sync", "--proxy-server=http://127.0.0.1:9",
         "--proxy-bypass-list=<-loopback>", "--hide-scrollbars")

# Before any other script: collect errors (a library that failed to load shows here).
CATCH = "<script>window.__errors=[];addEventListener('error',e=>__errors.push(String(e.message)));</script>"
# After the charts had time to draw: per chart div, whether it holds an SVG or canvas and how many
# marks it drew (canvas: coloured pixels, since axes and text are grey; SVG: the drawn items of the
# data marks, not of axes or legends), and which resources came from the network.
CHECK = """<script>
setTimeout(function () {
  var charts = Array.prototype.map.call(document.querySelectorAll('body > div[id]'), function (div) {
    var canvas = div.querySelector('canvas'), svg = div.querySelector('svg'), marks = 0;
    if (canvas && canvas.width && canvas.height) {
      var d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      for (var i = 0; i < d.length; i += 4) {
        if (d[i + 3] > 0 && Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 60) marks++;
      }
    }
    if (svg) marks += Array.prototype.filter.call(svg.querySelectorAll('g.role-mark path, g.role-mark rect'),
                                                  function (e) { return (e.getAttribute('d') || e.getAttribute('width')); }).length;
    return {id: div.id, canvas: !!canvas, svg: !!svg, marks: marks};
  });
  var external = performance.getEntriesByType('resource').map(function (e) { return e.name; })
    .filter(function (n) { return !/^(file|data|blob):/.test(n); });
  var out = document.createElement('pre');
  out.id = 'detpipe-check';
  out.textContent = JSON.stringify({vegaEmbed: typeof vegaEmbed, charts: charts, external: external,
                                    errors: window.__errors});
  document.body.appendChild(out);
}, 4000);
</script>"""


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def _run(chromium: str, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="detpipe-chromium-") as profile:
        return subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def check_page(page: Path, chromium: str) -> dict:
    """Load a copy of `page` with the check script in it; returns the check's result: vegaEmbed's
    type, per chart {id, canvas, svg, marks}, the network resources requested and page errors."""
    text = Path(page).read_text(encoding="utf-8")
    probe = Path(page).with_name(f".check-{Path(page).name}")
    end = text.rindex("</body>")  # the last: vega-embed's bundle holds the string "</body>" too
    probe.write_text(text.replace("<head>", "<head>" + CATCH, 1)[:end + len(CATCH)] + CHECK
                     + text[end:], encoding="utf-8")
    try:
        done = _run(chromium, ["--virtual-time-budget=20000", "--dump-dom", probe.resolve().as_uri()])
    finally:
        probe.unlink()
    found = re.search(r'<pre id="detpipe-check">(.*?)</pre>', done.stdout, re.S)
    if not found:
        raise AssertionError(f"the check did not run in Chromium ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                      .replace("&amp;", "&"))


def screenshot(page: Path, out: Path, chromium: str, size: str = "1300,1500") -> Path:
    _run(chromium, ["--virtual-time-budget=20000", f"--window-size={size}", f"--screenshot={Path(out).resolve()}",
                    Path(page).resolve().as_uri()])
    return Path(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page")
    ap.add_argument("--screenshot")
    args = ap.parse_args()
    chromium = find_chromium()
    if chromium is None:
        print("no Chromium on PATH (Debian: apt-get install -y chromium)", file=sys.stderr)
        return 2
    print(json.dumps(check_page(Path(args.page), chromium), indent=1))
    if args.screenshot:
        print(f"screenshot: {screenshot(Path(args.page), Path(args.screenshot), chromium)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
