from lossbench.cli.app import main

main()
