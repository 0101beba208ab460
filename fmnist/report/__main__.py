"""`python -m fmnist.report`: see fmnist/report/cli.py."""

from fmnist.report.cli import main

main()
