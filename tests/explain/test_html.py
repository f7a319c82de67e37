"""The explain page: one self-contained HTML file whose charts load and show in a real browser
(headless Chromium). Chromium is not part of the Python environment: the browser test skips,
saying so, when /usr/bin/chromium is absent (``apt-get install -y chromium`` installs it)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from marginopt.cli import sample_paths
from marginopt.explain import explain
from marginopt.reports import write_explanation

CHROMIUM = Path("/usr/bin/chromium")

#: appended to a copy of the page: after load, each image's decoded size, laid-out height and
#: visibility are written into the DOM that --dump-dom prints
PROBE = """<script>
window.addEventListener("load", () => {
  const found = [...document.querySelectorAll("img")].map(i => {
    const style = getComputedStyle(i), box = i.getBoundingClientRect();
    return {id: i.id, complete: i.complete, natural_width: i.naturalWidth,
            natural_height: i.naturalHeight, height: box.height, width: box.width,
            shown: style.display !== "none" && style.visibility === "visible"};
  });
  document.body.setAttribute("data-probe", JSON.stringify(found));
});
</script>"""


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> dict[str, Path]:
    p = sample_paths()
    e = explain(p["portfolio"], p["market"], "deribit-pm", equity=400_000.0, spec=p["spec"])
    return write_explanation(e, tmp_path_factory.mktemp("explain"))


def test_page_is_self_contained(page):
    html = page["html"].read_text()
    assert html.count('src="data:image/png;base64,') == 2
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)
    for section in ("What drives the margin", "Distance to liquidation", "Capacity"):
        assert section in html


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium not installed at /usr/bin/chromium "
                    "(apt-get install -y chromium); the page's charts are not checked in a browser")
def test_charts_are_visible_in_headless_chromium(page, tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text(page["html"].read_text().replace("</body>", PROBE + "</body>"))
    env = {**os.environ, "HOME": str(tmp_path)}  # Chromium writes its profile under HOME
    done = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000",
         "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'data-probe="([^"]*)"', done.stdout)
    assert found, done.stdout[-2000:]
    images = json.loads(found.group(1).replace("&quot;", '"'))
    assert {i["id"] for i in images} == {"chart-contributors", "chart-liquidation"}
    for img in images:
        assert img["complete"] and img["shown"], img
        assert img["natural_width"] > 400 and img["natural_height"] > 300, img
        assert img["height"] > 200 and img["width"] > 400, img   # laid out at a readable size
