"""What the command line runs: serve, the client commands, configure and its host detection, the zipapp build."""
