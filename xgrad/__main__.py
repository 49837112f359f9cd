from xgrad.cli import main

raise SystemExit(main())
