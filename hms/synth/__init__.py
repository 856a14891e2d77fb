"""`python -m hms.synth OUT_DIR`: the command. The generator it calls is `hms.synthetic`."""
