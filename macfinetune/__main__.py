from macfinetune.cli import main

raise SystemExit(main())
