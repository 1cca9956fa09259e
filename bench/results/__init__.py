"""The results wing: the record format and the results folder, read and validated in one place."""
