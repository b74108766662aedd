"""Fills in and sends the leads-form example page in headless Chromium, as a visitor would.

Usage: python submit_form.py <page url>
Prints the URL the browser ends on and the heading of that page. Chromium is Debian's
(/usr/bin/chromium, or TARN_TEST_CHROMIUM); Playwright drives it and downloads no browser.
"""
import os
import sys

from playwright.sync_api import sync_playwright

import chromium

url = sys.argv[1]
with sync_playwright() as p:
    browser = chromium.launch(p)
    page = browser.new_page()
    # What the browser asked for, shown when the test fails.
    page.on("request", lambda r: print("request:", r.method, r.url, file=sys.stderr))
    page.on("response", lambda r: print("response:", r.status, r.url, r.headers.get("location", ""), file=sys.stderr))
    page.goto(url)
    page.fill("#name", "Ada Lovelace")
    page.fill("#email", "ada@example.com")
    page.fill("#company", "Analytical Engines")
    page.check("#consent")
    page.click("button[type=submit]")
    page.wait_for_url("**/thanks.html", timeout=20_000)
    print(page.url)
    print(page.inner_text("#thanks"))
    browser.close()
