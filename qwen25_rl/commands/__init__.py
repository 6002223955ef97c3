"""CLI subcommands; each module registers its commands with `qwen25_rl.cli.cli_command`."""
