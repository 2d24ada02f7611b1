"""The script ``erftools dashboard`` hands to ``streamlit run`` (absolute imports: Streamlit runs it as __main__)."""
from erftools.dashboard.app import main

main()
