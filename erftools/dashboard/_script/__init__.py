"""Holds only the script that ``erftools dashboard`` hands to ``streamlit run`` (Streamlit puts the script's folder
on ``sys.path``, so it lives alone in this folder where it cannot shadow other modules)."""
