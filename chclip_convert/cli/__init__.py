"""The ``chclip-convert`` command line: one subcommand per task, over the library's functions."""
