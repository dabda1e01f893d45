"""The dashboard's engine, plain Python with no Streamlit import: personas, token accounting,
conversations fitted to a budget, model backends, and the figures the dashboard shows."""
