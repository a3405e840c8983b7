"""Tests that need Nova 21.2.4 and os-xenapi 0.3.4 (.venv-nova21)."""
