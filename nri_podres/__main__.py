from nri_podres import cli

raise SystemExit(cli.main())
