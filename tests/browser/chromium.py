"""Debian's Chromium, headless, as the browser tests launch it (Playwright drives it and
downloads no browser): /usr/bin/chromium, or TARN_TEST_CHROMIUM."""
import os

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(playwright):
    """A headless Chromium for `playwright` (a sync_playwright() context)."""
    return playwright.chromium.launch(
        executable_path=os.environ.get("TARN_TEST_CHROMIUM", "/usr/bin/chromium"),
        args=ARGS,
    )
