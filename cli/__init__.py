"""The terraseg command line and the worker process entry point."""
