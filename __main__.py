"""`python -m comfyui_inverse run WORKFLOW.json ...`: see runner/cli.py."""

from .runner.cli import main

main()
