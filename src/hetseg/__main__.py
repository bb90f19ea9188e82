from hetseg.cli import main

raise SystemExit(main())
