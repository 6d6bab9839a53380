"""What the `uns` commands do (cli.py parses; these modules act and print)."""
