"""Candles out of the database: CSV and Parquet files (`market-data export`) and the CSV answer
of `GET /candles?format=csv`.

`formats.py` turns the store's column chunks into Arrow tables, CSV bytes and Parquet row
groups; `files.py` decides which series go to which file; `exporter.py` streams the chunks of
each series into its file with flat memory.
"""
