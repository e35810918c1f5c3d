"""`python -m market_data` runs the command line."""

from market_data.cli import main

if __name__ == "__main__":
    main()
