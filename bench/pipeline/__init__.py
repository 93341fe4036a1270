"""The Scrapifie pipeline under load: the stack, the target, the driver, and the suites that
run through them."""
