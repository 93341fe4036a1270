from scrapifie.cli import main

raise SystemExit(main())
