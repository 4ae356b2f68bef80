"""The application on top of the library: the command line (cli.py turns flags into typed configs and
requests), one function per subcommand, the resumable sample folder and the demo. Nothing below imports it."""
