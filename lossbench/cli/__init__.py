"""The ``lossbench`` command line. Only this package knows Typer.

Each command lives in its own module and imports heavy packages (torch, monai, mlflow)
inside the command function, so that ``lossbench --help`` stays fast.
"""
