"""Every CLI command module, imported for the side effect of registering itself
on the groups in main.py. Add one line per command module."""
