"""The Raylane console: a Streamlit app over the services' own APIs (Serve HTTP, MLflow, Ray).

Page layouts live in ``console/pages/``; what they fetch and compute lives here, one module per
service, so it is tested without a browser. The console never loads a model in process.
"""
