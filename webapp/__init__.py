"""The Streamlit app's back end (app.py is the page): runtime, uploads, results, display strings and the test harness."""
