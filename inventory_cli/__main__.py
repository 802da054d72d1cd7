from inventory_cli.cli import main

main()
