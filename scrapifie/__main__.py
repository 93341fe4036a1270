from scrapifie.cli import main

# Guarded: worker processes start child processes (extraction rules run in one, with a
# deadline), and a spawned child imports this module again without being the program.
if __name__ == "__main__":
    raise SystemExit(main())
