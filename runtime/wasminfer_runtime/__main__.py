from wasminfer_runtime.cli import main

raise SystemExit(main())
