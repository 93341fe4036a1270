"""The browser tiers: pages rendered in Chromium (Playwright), every connection through the guard
proxy."""
