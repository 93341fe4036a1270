"""What Scrapifie is compared with: raw HTTP client loops, Scrapy, other Markdown converters."""
