"""`python -m hms.data check DIR`: the command. The library it calls is `hms.dataset`."""
