"""The browser tier against raw Playwright loops (``tier``), and what each part of its fetch
costs (``costs``)."""
