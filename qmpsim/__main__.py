from qmpsim.cli import main

raise SystemExit(main())
