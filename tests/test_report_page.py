"""report.html in a real browser: headless Chromium (Debian's ``chromium``, installed by
``.ci/run``) opens it from disk, the page's own check says every image decoded, and a
screenshot shows a page, not a blank."""

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image


def _chromium(tmp_path, *args):
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "headless Chromium is needed: apt-get install -y chromium (.ci/run does)"
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=10000", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )


@pytest.mark.slow
def test_the_report_page_shows_every_image_in_chromium(trained_run, tmp_path):
    page = trained_run.run_dir / "report" / "report.html"
    pictures = sorted(p.name for p in page.parent.glob("*.png"))
    assert pictures == ["confusion_matrix.png", "curves.png", "mistakes.png",
                        "reliability.png"]
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    check = re.search(r'<p id="image-check" data-ok="(\w+)">([^<]*)</p>', dom)
    assert check, dom[-2000:]
    assert check.groups() == ("true", f"all {len(pictures)} images loaded")
    shot = tmp_path / "report.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1600, 1200)
    not_white = (pixels < 235).any(axis=2).mean()
    assert not_white > 0.01, f"only {not_white:.1%} of the screenshot is not white"  # blank: 0
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # text and plots, not a fill
