"""One module per `forksim` subcommand; each exposes `register(subparsers)`."""
