"""Raylane console: `make console` (or `streamlit run console/app.py`).

Reads RAYLANE_SERVE_URL, MLFLOW_TRACKING_URI, RAY_ADDRESS, RAYLANE_PROMETHEUS_URL and RAYLANE_MODEL
(defaults: the local stack `make demo`, `make serve` and `make observe` start).
"""

from pathlib import Path

import streamlit as st

from raylane.console import identity, ui

PAGES = Path(__file__).parent / "pages"

st.set_page_config(page_title="Raylane", page_icon=":material/query_stats:", layout="wide")

navigation = st.navigation({
    "Use the model": [
        st.Page(PAGES / "predict.py", title="Predict", icon=":material/online_prediction:",
                default=True),
        st.Page(PAGES / "score_file.py", title="Score a file", icon=":material/upload_file:"),
    ],
    "Run it": [
        st.Page(PAGES / "models.py", title="Models", icon=":material/model_training:"),
        st.Page(PAGES / "monitoring.py", title="Monitoring", icon=":material/monitoring:"),
        st.Page(PAGES / "service.py", title="Service", icon=":material/dns:"),
        st.Page(PAGES / "metrics.py", title="Metrics", icon=":material/show_chart:"),
        st.Page(PAGES / "training.py", title="Training", icon=":material/tune:"),
    ],
})

config = ui.settings()
with st.sidebar:
    identity.sign_in_box(identity.current())
    st.caption(f"Model **{config.registered_model}**  \nServing `{config.serve_url}`  \n"
               f"MLflow `{config.tracking_uri}`  \nRay `{config.ray_address}`")

navigation.run()
