"""The API and bulk scoring on Ray: Ray Serve for online requests (serving/api.py), Ray Data for files
(serving/bulk.py), both around the project's one Predictor. Not in the base install:
pip install -r requirements-serve.txt. Nothing outside this package imports it, and nothing here is
imported by the command line or the app, so they never load Ray. Guide: docs/serving.md.
"""
