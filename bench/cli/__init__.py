"""The command line: the only wing that prints."""
